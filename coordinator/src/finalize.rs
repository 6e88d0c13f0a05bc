//! `finalize` and `verify`: the end of a run, shared by the fleet's commands and `migrate`.
//!
//! `finalize`:
//! 1. Reconcile: every shard must be done, with loaded + rejected + filtered = the manifest's
//!    `itemCount` and its MD5 matched; rejects must stay within `max_rejects`.
//! 2. Post-load steps, once every shard reconciled: the keys of tables the run created without
//!    them (`crate::keys`: built after the load on PostgreSQL), then the config's `[[post_load]]` steps in order
//!    (SQL, or a foreign-key `link` Ferry computes itself), then `ANALYZE` of every table the run
//!    loaded (PostgreSQL; HeliosDB does not support it, and the report says it was skipped). A
//!    failing step is a problem (the run is not verified) and stops the steps after it. With no
//!    config step to run first and every shard done, `ANALYZE` runs on a second connection
//!    beside step 1's row count instead (both read the whole table); if the run then turns out
//!    not verified (too many rejects), its statistics were updated for nothing, which is harmless,
//!    and the report lists no post-load step.
//! 3. Verify (also the `verify` command): the tables must hold at least the rows the ledger says
//!    were loaded (more only with `--append`), and each `[[verify]]` query runs; its rows go into
//!    the report, and a query marked `expect_empty` that returns rows is a problem.
//! 4. Write the report into `ferry.runs` and set the run's state.
//!
//! # Post-load steps resume
//! Each step is marked `started` in `ferry.steps` before it runs and `done` after, so a
//! `finalize` (or `migrate`) after a crash skips the steps done and resumes at the first that is
//! not. On PostgreSQL a SQL step and its `done` mark commit in one transaction, so a step is done
//! exactly when its mark says so (a statement that cannot run in a transaction block runs
//! alone, then is marked). HeliosDB's DDL is not transactional: a step that was `started` but not
//! marked may have taken effect before the crash, so when its re-run fails because what it
//! creates already exists, it counts as done (and the report says so). A `link` step only fills
//! rows that are still NULL, so re-running it is harmless. The report gives each step's time.
//!
//! On a partial load the post-load steps are skipped: they would be wasted work, and the run will
//! be finalized again. On a run already complete they are not repeated; only the verification
//! runs again.

use std::collections::HashMap;
use std::time::Instant;

use ferry_ledger::runs as ledger;
use ferry_ledger::RunRecord;
use ferry_ledger::{run_state, step_state};
use ferry_shared::config::{LinkStep, PostLoadStep, RejectLines, VerifyQuery};
use ferry_shared::failpoint;
use ferry_shared::ident::quote_ident;
use ferry_worker::target::{Target, TargetKind};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::plan::applies;
use crate::report::{build_report, run_tables, PostLoadLine, Report, ReportContext, Verification};
use crate::Result;

/// The config's end-of-run steps, for the detected target.
#[derive(Clone, Debug)]
pub struct EndSteps {
    /// `[[post_load]]` steps.
    pub post_load: Vec<PostLoadStep>,
    /// `[[verify]]` queries.
    pub verify: Vec<VerifyQuery>,
    /// The target, for `only_on`.
    pub target: Target,
    /// Post-load steps and verify queries not run because the run writes a Parquet dataset.
    pub skipped: usize,
    /// The target's URL, for a second connection: with it, on PostgreSQL, when no config step
    /// comes first, the tables' `ANALYZE` runs beside the row count instead of after it.
    pub target_url: Option<String>,
    /// `load.reject_lines`: whether the steps' notes may quote the values they found (a link
    /// step's orphans).
    pub reject_lines: RejectLines,
    /// The terminal's phase line (`migrate` in a terminal): each post-load step and verification
    /// query is named on it while it runs.
    pub phase: Option<indicatif::ProgressBar>,
    /// How to reach the export (a key the export holds twice is named with its lines, read
    /// again from the export).
    pub aws: ferry_shared::config::AwsSettings,
    /// `load.statistics_target`: the sample of finalize's `ANALYZE` (`None`: the server's).
    pub statistics_target: Option<u32>,
}

impl EndSteps {
    /// The steps of `settings` on `target`. A Parquet run has none: its tables are datasets, not
    /// tables of the ledger's database, so SQL steps and queries have nothing to run on (the
    /// report says they were not run).
    pub fn new(settings: &ferry_shared::config::Settings, target: Target) -> EndSteps {
        let parquet = target.load_path == ferry_worker::target::LoadPath::Parquet;
        EndSteps {
            post_load: if parquet {
                Vec::new()
            } else {
                settings.post_load.clone()
            },
            verify: if parquet {
                Vec::new()
            } else {
                settings.verify.clone()
            },
            skipped: if parquet {
                settings.post_load.len() + settings.verify.len()
            } else {
                0
            },
            target,
            target_url: None,
            reject_lines: settings.load.reject_lines,
            phase: None,
            aws: settings.aws.clone(),
            statistics_target: settings.load.statistics_target,
        }
    }

    /// These steps, naming each on `phase` while it runs.
    pub fn with_phase(mut self, phase: Option<indicatif::ProgressBar>) -> EndSteps {
        self.phase = phase;
        self
    }

    /// Shows `what` on the phase line, if there is one.
    fn show(&self, what: impl FnOnce() -> String) {
        if let Some(phase) = &self.phase {
            phase.set_message(what());
        }
    }

    /// These steps, with `url` for the second connection of [`EndSteps::target_url`].
    pub fn with_target_url(mut self, url: &str) -> EndSteps {
        self.target_url = Some(url.to_string());
        self
    }
}

/// Finalizes `run`: reconcile, post-load steps, verify, record. Returns the report; its
/// [`Report::verified`] decides the exit code.
pub async fn finalize(
    client: &Client,
    run: &RunRecord,
    context: &ReportContext,
    steps: &EndSteps,
) -> Result<Report> {
    // A complete run was finalized before: its post-load steps ran once and are not repeated
    // (adding a constraint twice fails); the verification runs again.
    let already_complete = run.state == run_state::COMPLETE;
    steps.show(|| "reconciling every shard, counting the tables' rows".into());
    let (mut report, analyzed) = match analyze_url(client, run, steps, already_complete).await? {
        // Both read the whole table: on two connections they take the time of the longer.
        Some(url) => {
            let (report, analyzed) = tokio::join!(
                counted_report(client, run, context, already_complete),
                analyze_beside(url, run, steps.statistics_target)
            );
            (report?, analyzed)
        }
        None => (
            counted_report(client, run, context, already_complete).await?,
            None,
        ),
    };
    note_skipped(steps, &mut report);
    if report.verified() && !already_complete {
        post_load(client, run, steps, &mut report, analyzed).await?;
        // The row count taken before the steps against the ledger, then the `[[verify]]`
        // queries, which see what the steps did. (The table is not counted again: a step that
        // removes rows is not caught here.)
        verify_into(client, run, steps, &mut report).await?;
    }
    record(client, run, &mut report).await?;
    Ok(report)
}

/// `text` on one line of at most 100 characters (a step's SQL on the phase line).
fn one_line(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(100) {
        Some((at, _)) => format!("{}…", &flat[..at]),
        None => flat,
    }
}

/// `verify`: the verification queries and row checks on the run as it is, recorded in its report.
pub async fn verify(
    client: &Client,
    run: &RunRecord,
    context: &ReportContext,
    steps: &EndSteps,
) -> Result<Report> {
    let mut report = counted_report(client, run, context, false).await?;
    note_skipped(steps, &mut report);
    verify_into(client, run, steps, &mut report).await?;
    record(client, run, &mut report).await?;
    Ok(report)
}

/// Adds a deep verification's result ([`crate::deep`]) to `report` and records the report again:
/// a difference is a problem (the run is then not verified).
pub async fn record_deep(
    client: &Client,
    run: &RunRecord,
    report: &mut Report,
    deep: crate::deep::DeepReport,
) -> Result<()> {
    report.problems.extend(deep.problems());
    report.deep = Some(deep);
    record(client, run, report).await
}

fn note_skipped(steps: &EndSteps, report: &mut Report) {
    if steps.skipped > 0 {
        report.notes.push(format!(
            "{} [[post_load]]/[[verify]] entries of the config were not run: the run writes a \
             Parquet dataset, not database tables",
            steps.skipped
        ));
    }
}

/// The ledger's report with the tables' rows counted.
async fn counted_report(
    client: &Client,
    run: &RunRecord,
    context: &ReportContext,
    already_complete: bool,
) -> Result<Report> {
    let mut context = context.clone();
    context.count_table_rows = true;
    context.already_complete |= already_complete;
    build_report(client, run, &context).await
}

async fn record(client: &Client, run: &RunRecord, report: &mut Report) -> Result<()> {
    if !report.verified() && report.state == run_state::COMPLETE {
        report.state = run_state::FAILED.to_string();
    }
    let json = serde_json::to_string(&report).unwrap_or_default();
    ledger::finish_run(client, &run.run_id, &report.state, &json).await?;
    Ok(())
}

/// The URL to run the tables' `ANALYZE` on beside the row count, when that is the same as
/// running it after: a PostgreSQL run being finalized for the first time, with no config step
/// (which may change what the statistics should see) to run first, and every shard done (a
/// partial load skips its post-load steps). Otherwise `None`: `ANALYZE` runs in its place.
async fn analyze_url<'s>(
    client: &Client,
    run: &RunRecord,
    steps: &'s EndSteps,
    already_complete: bool,
) -> Result<Option<&'s str>> {
    let Some(url) = steps.target_url.as_deref() else {
        return Ok(None);
    };
    if already_complete
        || steps.target.kind != TargetKind::Postgres
        || steps
            .post_load
            .iter()
            .any(|step| applies(step.only_on, &steps.target))
    {
        return Ok(None);
    }
    let shards = ledger::get_shards(client, &run.run_id).await?;
    let all_done = !shards.is_empty()
        && shards
            .iter()
            .all(|s| s.state == ferry_ledger::shard_state::DONE);
    Ok(all_done.then_some(url))
}

/// `ANALYZE` of the run's tables on a connection of its own; `None` when that connection cannot
/// be opened (then it runs on the finalizing connection, as without one).
async fn analyze_beside(
    url: &str,
    run: &RunRecord,
    statistics_target: Option<u32>,
) -> Option<Vec<PostLoadLine>> {
    match ferry_worker::conn::control(url).await {
        Ok(client) => Some(analyze_tables(&client, run, statistics_target).await),
        Err(e) => {
            tracing::warn!(error = %e, "no second connection for ANALYZE: it runs after the row count");
            None
        }
    }
}

/// `ANALYZE` of every table the run loaded; a refusal is noted, not an error. With
/// `statistics_target` (`load.statistics_target`), it samples for that target instead of the
/// server's `default_statistics_target` (its cost grows with the sample: 300 rows per unit).
async fn analyze_tables(
    client: &Client,
    run: &RunRecord,
    statistics_target: Option<u32>,
) -> Vec<PostLoadLine> {
    let mut lines = Vec::new();
    for table in run_tables(run) {
        let analyze = format!("ANALYZE {}", quote_ident(&table));
        let started = Instant::now();
        let statement = match statistics_target {
            // `SET LOCAL` ends with the transaction: nothing else on this session samples less.
            Some(target) => {
                format!("BEGIN; SET LOCAL default_statistics_target = {target}; {analyze}; COMMIT")
            }
            None => analyze.clone(),
        };
        let (refused, note) = match client.batch_execute(&statement).await {
            Ok(()) => (
                false,
                statistics_target.map(|t| format!("statistics target {t}")),
            ),
            Err(e) => {
                if statistics_target.is_some() {
                    let _ = client.batch_execute("ROLLBACK").await;
                }
                let message = ferry_worker::server_message(&e);
                tracing::warn!(table = %table, error = %message, "the target refused ANALYZE: statistics not updated");
                (true, Some(format!("refused by the server: {message}")))
            }
        };
        lines.push(PostLoadLine {
            step: analyze,
            state: if refused { "refused" } else { "ran" }.into(),
            seconds: started.elapsed().as_secs_f64(),
            note,
        });
    }
    lines
}

/// The config's post-load steps, then `ANALYZE` (already run beside the count when `analyzed`).
async fn post_load(
    client: &Client,
    run: &RunRecord,
    steps: &EndSteps,
    report: &mut Report,
    analyzed: Option<Vec<PostLoadLine>>,
) -> Result<()> {
    // Keys built after the load come first: the config's steps may add foreign keys that need
    // them, and a key the export holds twice stops the steps after it like a failed step.
    let show = |text: String| steps.show(|| text);
    let (lines, problem) = crate::keys::build_run_keys(
        client,
        run,
        &steps.target,
        &steps.aws,
        steps.reject_lines,
        &show,
    )
    .await?;
    report.post_load.extend(lines);
    if let Some(problem) = problem {
        report.problems.push(problem);
        return Ok(());
    }
    let recorded = ledger::get_steps(client, &run.run_id).await?;
    for (number, step) in steps.post_load.iter().enumerate() {
        let description = step.describe();
        if !applies(step.only_on, &steps.target) {
            continue;
        }
        let step_no = number as i64;
        let mark = recorded.iter().find(|r| r.step_no == step_no);
        if let Some(mark) = mark {
            if mark.description != description {
                report.problems.push(format!(
                    "post-load step {} changed since it {} (it was `{}`, the config now says `{description}`): \
                     restore the step as it was, or finish the run's post-load steps by hand",
                    number + 1,
                    if mark.state == step_state::DONE { "ran" } else { "started" },
                    mark.description
                ));
                return Ok(());
            }
            if mark.state == step_state::DONE {
                report.post_load.push(PostLoadLine {
                    step: description,
                    state: "done earlier".into(),
                    seconds: mark.millis.unwrap_or(0) as f64 / 1e3,
                    note: mark.note.clone(),
                });
                continue;
            }
        }
        let resumed = mark.is_some();
        steps.show(|| {
            format!(
                "post-load step {} of {}: {}",
                number + 1,
                steps.post_load.len(),
                one_line(&description)
            )
        });
        ledger::start_step(client, &run.run_id, step_no, &description).await?;
        ferry_shared::failpoint::hit("post_load_step")
            .map_err(|e| crate::CoordinatorError::Invalid(e.to_string()))?;
        let started = Instant::now();
        let place = (&steps.target, steps.reject_lines);
        match run_step(client, run, step, place, step_no, resumed, &started).await {
            Ok(note) => report.post_load.push(PostLoadLine {
                step: description,
                state: "ran".into(),
                seconds: started.elapsed().as_secs_f64(),
                note,
            }),
            Err(StepError::Failed(message)) => {
                report.problems.push(format!(
                    "post-load step {} failed: {message}: {description}",
                    number + 1
                ));
                return Ok(());
            }
            Err(StepError::Ledger(e)) => return Err(e),
        }
    }
    if steps.target.kind == TargetKind::HeliosDb {
        // "Analyze is not supported by HeliosDB Nano": say so once instead of failing per table.
        report.post_load.push(PostLoadLine {
            step: "ANALYZE".into(),
            state: "skipped".into(),
            seconds: 0.0,
            note: Some("HeliosDB does not support it".into()),
        });
        return Ok(());
    }
    let lines = match analyzed {
        Some(lines) => lines,
        None => analyze_tables(client, run, steps.statistics_target).await,
    };
    report.post_load.extend(lines);
    Ok(())
}

/// Why a post-load step did not finish.
enum StepError {
    /// The step itself failed (the server's words): a problem in the report.
    Failed(String),
    /// The ledger could not be written: an error of the command.
    Ledger(crate::CoordinatorError),
}

impl From<tokio_postgres::Error> for StepError {
    fn from(e: tokio_postgres::Error) -> StepError {
        StepError::Failed(ferry_worker::server_message(&e))
    }
}

/// Runs one step and marks it done; returns its note.
async fn run_step(
    client: &Client,
    run: &RunRecord,
    step: &PostLoadStep,
    (target, mode): (&Target, RejectLines),
    step_no: i64,
    resumed: bool,
    started: &Instant,
) -> Result<Option<String>, StepError> {
    let millis = || started.elapsed().as_millis() as i64;
    let mark_done = |note: Option<String>| async move {
        failpoint::hit("after_post_load_step")
            .map_err(|e| StepError::Ledger(ferry_worker::WorkerError::from(e).into()))?;
        ledger::finish_step(client, &run.run_id, step_no, millis(), note.as_deref())
            .await
            .map_err(|e| {
                StepError::Ledger(
                    ferry_worker::WorkerError::Db {
                        context: "cannot record a post-load step".into(),
                        source: e,
                    }
                    .into(),
                )
            })?;
        Ok::<_, StepError>(note)
    };
    match (target.kind, &step.sql, &step.link) {
        (TargetKind::Postgres, Some(sql), _) => {
            // The statement and its mark in one transaction: done exactly when marked.
            client.batch_execute("BEGIN").await?;
            match client.batch_execute(sql).await {
                Ok(()) => {
                    let note = mark_done(None).await;
                    if note.is_err() {
                        let _ = client.batch_execute("ROLLBACK").await;
                        return note;
                    }
                    client.batch_execute("COMMIT").await?;
                    note
                }
                Err(e) if e.code() == Some(&SqlState::ACTIVE_SQL_TRANSACTION) => {
                    // CREATE INDEX CONCURRENTLY and the like: alone, then marked.
                    client.batch_execute("ROLLBACK").await?;
                    client.batch_execute(sql).await?;
                    mark_done(None).await
                }
                Err(e) => {
                    let _ = client.batch_execute("ROLLBACK").await;
                    Err(e.into())
                }
            }
        }
        (TargetKind::HeliosDb, Some(sql), _) => match client.batch_execute(sql).await {
            Ok(()) => mark_done(None).await,
            Err(e) if resumed && already_exists(&e) => {
                mark_done(Some(format!(
                    "it had taken effect before an interruption ({})",
                    ferry_worker::server_message(&e)
                )))
                .await
            }
            Err(e) => Err(e.into()),
        },
        (_, None, Some(link)) => {
            let note = link_step(client, link, target, mode).await?;
            mark_done(Some(note)).await
        }
        (_, None, None) => Err(StepError::Failed("an empty step".into())),
    }
}

/// Whether an error says that what a statement creates is already there.
fn already_exists(error: &tokio_postgres::Error) -> bool {
    let codes = [
        SqlState::DUPLICATE_OBJECT,
        SqlState::DUPLICATE_TABLE,
        SqlState::DUPLICATE_COLUMN,
    ];
    error.code().is_some_and(|c| codes.contains(c))
        || error
            .as_db_error()
            .is_some_and(|db| db.message().to_ascii_lowercase().contains("already exists"))
}

/// Rows of a simple query, every value as text.
async fn text_rows(client: &Client, sql: &str) -> Result<Vec<Vec<Option<String>>>, StepError> {
    let mut rows = Vec::new();
    for message in client.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(row) = message {
            rows.push(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            );
        }
    }
    Ok(rows)
}

/// Fills `link.table.link.column` from `link.from_table` (see [`LinkStep`]); returns a note with
/// the rows linked and the orphans (their values as `mode` allows, see [`orphan_examples`]).
async fn link_step(
    client: &Client,
    link: &LinkStep,
    target: &Target,
    mode: RejectLines,
) -> Result<String, StepError> {
    let table = quote_ident(&link.table);
    let from = quote_ident(&link.from_table);
    let column = quote_ident(&link.column);
    let linked = match target.kind {
        TargetKind::Postgres => {
            let on: Vec<String> = link
                .on
                .iter()
                .map(|[a, b]| format!("t.{} = f.{}", quote_ident(a), quote_ident(b)))
                .collect();
            let sql = format!(
                "UPDATE {table} AS t SET {column} = f.{} FROM {from} AS f WHERE {} AND t.{column} IS NULL",
                quote_ident(&link.from_column),
                on.join(" AND ")
            );
            client.execute(sql.as_str(), &[]).await?
        }
        TargetKind::HeliosDb => link_by_key(client, link, target).await?,
    };
    // Orphans: rows whose match has no counterpart stay NULL; count and name a few.
    let matches: Vec<String> = link.on.iter().map(|[a, _]| quote_ident(a)).collect();
    let orphans = text_rows(
        client,
        &format!(
            "SELECT {} FROM {table} WHERE {column} IS NULL",
            matches
                .iter()
                .map(|m| format!("{m}::text"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
    .await?;
    let mut note = format!("{linked} rows linked");
    if !orphans.is_empty() {
        note.push_str(&format!(
            "; {} rows have no counterpart in {} (orphans, left NULL), e.g. {}",
            orphans.len(),
            link.from_table,
            orphan_examples(link, &orphans, mode)
        ));
    }
    Ok(note)
}

/// Up to three orphans of a link step by their match columns: `a=VALUE` when `mode` is `raw`,
/// else the value's length only (`a=<6 bytes, redacted>`): these are often key values.
fn orphan_examples(link: &LinkStep, orphans: &[Vec<Option<String>>], mode: RejectLines) -> String {
    let examples: Vec<String> = orphans
        .iter()
        .take(3)
        .map(|row| {
            let values: Vec<String> = link
                .on
                .iter()
                .zip(row)
                .map(|([a, _], v)| match (v.as_deref(), mode) {
                    (None, _) => format!("{a}=NULL"),
                    (Some(v), RejectLines::Raw) => format!("{a}={v}"),
                    (Some(v), _) => format!("{a}={}", ferry_worker::redact::key_value(v, mode)),
                })
                .collect();
            values.join(", ")
        })
        .collect();
    examples.join("; ")
}

/// The link on a server without `UPDATE … FROM` whose correlated subqueries run row by row
/// (HeliosDB): read the mapping, compute each row's value, write it by the row's unique key,
/// many statements in flight. A single-column unique key is preferred (HeliosDB looks it up by
/// index; a multi-column key makes each UPDATE scan the table).
async fn link_by_key(client: &Client, link: &LinkStep, target: &Target) -> Result<u64, StepError> {
    let ledger_error = |e: crate::CoordinatorError| StepError::Ledger(e);
    let sets = crate::catalog::unique_column_sets(client, &link.table, target)
        .await
        .map_err(ledger_error)?;
    let Some(key) = sets
        .iter()
        .filter(|s| !s.is_empty() && s.iter().all(|c| !c.is_empty()))
        .min_by_key(|s| s.len())
        .cloned()
    else {
        return Err(StepError::Failed(format!(
            "table {:?} has no unique key to write the link by",
            link.table
        )));
    };
    if key.len() > 1 {
        tracing::warn!(table = %link.table, "no single-column unique key: each linked row is written by a multi-column key, which HeliosDB answers with a scan");
    }
    let as_text = |columns: &[String]| {
        columns
            .iter()
            .map(|c| format!("{}::text", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let from_match: Vec<String> = link.on.iter().map(|[_, b]| b.clone()).collect();
    let mut mapping_columns = from_match.clone();
    mapping_columns.push(link.from_column.clone());
    let mapping: HashMap<Vec<Option<String>>, Option<String>> = text_rows(
        client,
        &format!(
            "SELECT {} FROM {}",
            as_text(&mapping_columns),
            quote_ident(&link.from_table)
        ),
    )
    .await?
    .into_iter()
    .map(|mut row| {
        let value = row.pop().flatten();
        (row, value)
    })
    .collect();
    let own_match: Vec<String> = link.on.iter().map(|[a, _]| a.clone()).collect();
    let mut wanted = key.clone();
    wanted.extend(own_match);
    let rows = text_rows(
        client,
        &format!(
            "SELECT {} FROM {} WHERE {} IS NULL",
            as_text(&wanted),
            quote_ident(&link.table),
            quote_ident(&link.column)
        ),
    )
    .await?;
    // Parameters bound in their columns' own types where the driver can (HeliosDB looks a key up
    // by index only when it is compared with a value of its type, not with a cast), else as text
    // cast in SQL.
    let conditions: Vec<String> = key
        .iter()
        .enumerate()
        .map(|(i, column)| format!("{} = ${}", quote_ident(column), i + 2))
        .collect();
    let native = format!(
        "UPDATE {} SET {} = $1 WHERE {}",
        quote_ident(&link.table),
        quote_ident(&link.column),
        conditions.join(" AND ")
    );
    let statement = match client.prepare(&native).await {
        Ok(statement)
            if statement
                .params()
                .iter()
                .all(|t| typed_param(t, &None).is_some()) =>
        {
            statement
        }
        _ => {
            let mut casted = Vec::new();
            for (i, column) in key.iter().enumerate() {
                let udt = crate::catalog::column_udt(client, target.kind, &link.table, column)
                    .await
                    .map_err(StepError::Ledger)?
                    .unwrap_or_else(|| "text".into());
                casted.push(format!(
                    "{} = CAST(${}::text AS {})",
                    quote_ident(column),
                    i + 2,
                    crate::catalog::cast_type(&udt)
                ));
            }
            let udt = crate::catalog::column_udt(client, target.kind, &link.table, &link.column)
                .await
                .map_err(StepError::Ledger)?
                .unwrap_or_else(|| "text".into());
            tracing::warn!(table = %link.table, "the link's key is bound as text cast in SQL: each row's UPDATE may scan the table");
            client
                .prepare(&format!(
                    "UPDATE {} SET {} = CAST($1::text AS {}) WHERE {}",
                    quote_ident(&link.table),
                    quote_ident(&link.column),
                    crate::catalog::cast_type(&udt),
                    casted.join(" AND ")
                ))
                .await?
        }
    };
    let types = statement.params().to_vec();
    let assignments: Vec<Vec<Param>> = rows
        .iter()
        .filter_map(|row| {
            let (row_key, row_match) = row.split_at(key.len());
            let value = mapping.get(row_match).filter(|v| v.is_some())?;
            std::iter::once(value)
                .chain(row_key.iter())
                .zip(&types)
                .map(|(text, ty)| typed_param(ty, text))
                .collect::<Option<Vec<Param>>>()
        })
        .collect();
    let mut linked = 0u64;
    for batch in assignments.chunks(64) {
        let updates: Vec<_> = batch
            .iter()
            .map(|params| {
                let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    params.iter().map(Param::as_sql).collect();
                let statement = &statement;
                async move { client.execute(statement, &params).await }
            })
            .collect();
        for updated in futures_util::future::join_all(updates).await {
            linked += updated?;
        }
    }
    Ok(linked)
}

async fn verify_into(
    client: &Client,
    run: &RunRecord,
    steps: &EndSteps,
    report: &mut Report,
) -> Result<()> {
    if let Some(rows) = report.table_rows {
        if rows < report.rows_loaded as i64 {
            report.problems.push(format!(
                "the tables of run {} hold {rows} rows, fewer than the {} the ledger says were loaded",
                run.run_id, report.rows_loaded
            ));
        }
    }
    let queries = steps.verify.len();
    for (number, query) in steps
        .verify
        .iter()
        .enumerate()
        .filter(|(_, q)| applies(q.only_on, &steps.target))
    {
        steps.show(|| format!("verify query {} of {queries}: {}", number + 1, query.name));
        let mut check = Verification {
            name: query.name.clone(),
            columns: Vec::new(),
            rows: Vec::new(),
            problem: None,
            seconds: 0.0,
        };
        let started = std::time::Instant::now();
        let result = client.simple_query(&query.sql).await;
        check.seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(messages) => {
                for message in messages {
                    if let SimpleQueryMessage::Row(row) = message {
                        if check.columns.is_empty() {
                            check.columns =
                                row.columns().iter().map(|c| c.name().to_string()).collect();
                        }
                        check.rows.push(
                            (0..row.len())
                                .map(|i| row.get(i).map(str::to_string))
                                .collect(),
                        );
                    }
                }
                if query.expect_empty && !check.rows.is_empty() {
                    check.problem = Some(format!("{} rows, expected none", check.rows.len()));
                }
            }
            Err(e) => {
                let message = ferry_worker::server_message(&e);
                check.problem = Some(format!("the query failed: {message}"));
            }
        }
        if let Some(problem) = &check.problem {
            report
                .problems
                .push(format!("verify {:?}: {problem}", query.name));
        }
        report.verification.push(check);
    }
    Ok(())
}

/// A link parameter in its column's type.
#[derive(Debug)]
enum Param {
    Text(Option<String>),
    I16(Option<i16>),
    I32(Option<i32>),
    I64(Option<i64>),
}

impl Param {
    fn as_sql(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        match self {
            Param::Text(v) => v,
            Param::I16(v) => v,
            Param::I32(v) => v,
            Param::I64(v) => v,
        }
    }
}

/// `text` as a parameter of type `ty`, when the driver binds that type natively (`None` for a
/// type bound as text cast in SQL instead, or a value that does not parse).
fn typed_param(ty: &tokio_postgres::types::Type, text: &Option<String>) -> Option<Param> {
    use tokio_postgres::types::Type;
    let parse = |t: &Option<String>| -> Option<Option<i64>> {
        match t {
            None => Some(None),
            Some(v) => v.parse().ok().map(Some),
        }
    };
    Some(match *ty {
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => Param::Text(text.clone()),
        Type::INT2 => Param::I16(parse(text)?.map(i16::try_from).transpose().ok()?),
        Type::INT4 => Param::I32(parse(text)?.map(i32::try_from).transpose().ok()?),
        Type::INT8 => Param::I64(parse(text)?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphan_notes_name_values_only_when_reject_lines_is_raw() {
        let link = LinkStep {
            table: "orders".into(),
            column: "customer_id".into(),
            from_table: "customers".into(),
            from_column: "id".into(),
            on: vec![["customer_pk".into(), "pk".into()]],
        };
        let orphans = vec![vec![Some("CUSTOMER#ann@example.com".into())], vec![None]];
        assert_eq!(
            orphan_examples(&link, &orphans, RejectLines::Raw),
            "customer_pk=CUSTOMER#ann@example.com; customer_pk=NULL"
        );
        for mode in [RejectLines::Redacted, RejectLines::Omitted] {
            let note = orphan_examples(&link, &orphans, mode);
            assert_eq!(note, "customer_pk=<24 bytes, redacted>; customer_pk=NULL");
        }
        // The steps carry the setting from the configuration.
        let mut settings = ferry_shared::config::Settings::default();
        settings.load.reject_lines = RejectLines::Redacted;
        let target = Target {
            kind: TargetKind::Postgres,
            server_version: "test".into(),
            load_path: ferry_worker::target::LoadPath::BinaryCopyInTransaction,
        };
        assert_eq!(
            EndSteps::new(&settings, target).reject_lines,
            RejectLines::Redacted
        );
    }
}
