//! `finalize` and `verify`: the end of a run, shared by the fleet's commands and `migrate`.
//!
//! `finalize`:
//! 1. Reconcile: every shard must be done, with loaded + rejected + filtered = the manifest's
//!    `itemCount` and its MD5 matched; rejects must stay within `max_rejects`.
//! 2. Post-load steps, once every shard reconciled: the config's `[[post_load]]` statements in
//!    order (deferred indexes, foreign-key linking, constraints), then `ANALYZE` of every table the
//!    run loaded (PostgreSQL; HeliosDB does not support it, and the report says it was skipped). A
//!    failing statement is a problem (the run is not verified) and stops the steps after it; a
//!    server that refuses `ANALYZE` gets a warning (statistics are not data).
//! 3. Verify (also the `verify` command): the tables must hold at least the rows the ledger says
//!    were loaded (more only with `--append`), and each `[[verify]]` query runs; its rows go into
//!    the report, and a query marked `expect_empty` that returns rows is a problem.
//! 4. Write the report into `ferry.runs` and set the run's state.
//!
//! On a partial load the post-load steps are skipped: they would be wasted work, and the run will
//! be finalized again. On a run already complete they are skipped too (they ran once; adding a
//! constraint twice fails), and only the verification runs again.

use ferry_shared::config::{SqlStep, VerifyQuery};
use ferry_shared::ident::quote_ident;
use ferry_shared::ledger::run_state;
use ferry_worker::ledger::{self, RunRecord};
use ferry_worker::target::{Target, TargetKind};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::plan::applies;
use crate::report::{build_report, run_tables, Report, ReportContext, Verification};
use crate::Result;

/// The config's end-of-run steps, for the detected target.
#[derive(Clone, Debug)]
pub struct EndSteps {
    /// `[[post_load]]` statements.
    pub post_load: Vec<SqlStep>,
    /// `[[verify]]` queries.
    pub verify: Vec<VerifyQuery>,
    /// The target, for `only_on`.
    pub target: Target,
}

impl EndSteps {
    /// The steps of `settings` on `target`.
    pub fn new(settings: &ferry_shared::config::Settings, target: Target) -> EndSteps {
        EndSteps {
            post_load: settings.post_load.clone(),
            verify: settings.verify.clone(),
            target,
        }
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
    let mut report = counted_report(client, run, context, already_complete).await?;
    if report.verified() && !already_complete {
        post_load(client, run, steps, &mut report).await;
        // Counts again: post-load statements may legitimately move rows (none of ours do).
        verify_into(client, run, steps, &mut report).await?;
    }
    record(client, run, &mut report).await?;
    Ok(report)
}

/// `verify`: the verification queries and row checks on the run as it is, recorded in its report.
pub async fn verify(
    client: &Client,
    run: &RunRecord,
    context: &ReportContext,
    steps: &EndSteps,
) -> Result<Report> {
    let mut report = counted_report(client, run, context, false).await?;
    verify_into(client, run, steps, &mut report).await?;
    record(client, run, &mut report).await?;
    Ok(report)
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

async fn post_load(client: &Client, run: &RunRecord, steps: &EndSteps, report: &mut Report) {
    for step in steps
        .post_load
        .iter()
        .filter(|s| applies(s.only_on, &steps.target))
    {
        match client.batch_execute(&step.sql).await {
            Ok(()) => report.post_load.push(one_line(&step.sql)),
            Err(e) => {
                let message = ferry_worker::server_message(&e);
                report.problems.push(format!(
                    "post-load statement failed: {message}: {}",
                    one_line(&step.sql)
                ));
                return;
            }
        }
    }
    if steps.target.kind == TargetKind::HeliosDb {
        // "Analyze is not supported by HeliosDB Nano": say so once instead of failing per table.
        report
            .post_load
            .push("ANALYZE skipped: HeliosDB does not support it".into());
        return;
    }
    for table in run_tables(run) {
        let analyze = format!("ANALYZE {}", quote_ident(&table));
        match client.batch_execute(&analyze).await {
            Ok(()) => report.post_load.push(analyze),
            Err(e) => {
                let message = ferry_worker::server_message(&e);
                tracing::warn!(table = %table, error = %message, "the target refused ANALYZE: statistics not updated");
                report
                    .post_load
                    .push(format!("{analyze} (refused by the server: {message})"));
            }
        }
    }
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
    for query in steps
        .verify
        .iter()
        .filter(|q| applies(q.only_on, &steps.target))
    {
        let mut check = Verification {
            name: query.name.clone(),
            columns: Vec::new(),
            rows: Vec::new(),
            problem: None,
        };
        match client.simple_query(&query.sql).await {
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

fn one_line(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}
