//! The run report: rows per table, rejects, per-shard reconciliation, elapsed time and rate, and
//! the verdict. `migrate` prints it at the end and stores it in `ferry.runs.report`; `status`
//! builds the same view from the ledger at any time.

use std::fmt::Write as _;

use ferry_ledger::runs as ledger;
use ferry_ledger::{run_state, shard_state};
use ferry_ledger::{RejectRecord, RunRecord, ShardRecord};
use ferry_shared::ident::quote_ident;
use serde::Serialize;
use tokio_postgres::Client;

use crate::{CoordinatorError, Result};

/// Shards needing attention the short report lists; `--all` lists every shard.
pub const SHARDS_SHOWN: usize = 20;
/// Problems the short report lists.
pub const PROBLEMS_SHOWN: usize = 10;

/// One shard's line in the report.
#[derive(Clone, Debug, Serialize)]
pub struct ShardLine {
    /// The shard.
    pub shard_id: String,
    /// Its data file's key.
    pub data_key: String,
    /// Items per the manifest.
    pub item_count: Option<u64>,
    /// Input lines committed.
    pub committed_lines: u64,
    /// Rows loaded.
    pub loaded: u64,
    /// Lines rejected.
    pub rejected: u64,
    /// Items filtered.
    pub filtered: u64,
    /// Values spilled to overflow.
    pub spilled: u64,
    /// pending, done, failed.
    pub state: String,
    /// Whether the MD5 matched.
    pub md5_ok: Option<bool>,
    /// loaded + rejected + filtered = itemCount, MD5 held, done.
    pub reconciled: bool,
    /// Why it failed.
    pub error: Option<String>,
    /// Seconds from the start of the load that finished it to its end (done shards).
    pub seconds: Option<f64>,
}

/// A table's row count.
#[derive(Clone, Debug, Serialize)]
pub struct TableRows {
    /// The table.
    pub table: String,
    /// Its rows.
    pub rows: i64,
}

/// One verification query's result.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    /// Its name.
    pub name: String,
    /// Column names.
    pub columns: Vec<String>,
    /// Rows, values as text.
    pub rows: Vec<Vec<Option<String>>>,
    /// Why it failed, if it did.
    pub problem: Option<String>,
    /// How long the query took (the server's time for the user's SQL, reported so a slow check
    /// is visible beside the load it checks).
    pub seconds: f64,
}

/// One post-load step in the report.
#[derive(Clone, Debug, Serialize)]
pub struct PostLoadLine {
    /// The step in words.
    pub step: String,
    /// `ran`, `done earlier` (a finalize before this one finished it) or `skipped`.
    pub state: String,
    /// How long it took (when done earlier: then).
    pub seconds: f64,
    /// What it reported (rows linked, orphans, a refusal).
    pub note: Option<String>,
}

/// The report of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The run.
    pub run_id: String,
    /// The export.
    pub export: String,
    /// The target table.
    pub table: String,
    /// The run's state after this report: loading, complete or failed.
    pub state: String,
    /// Whether the export's manifests were present and verified.
    pub manifest_verified: bool,
    /// The run was already complete before this command.
    pub already_complete: bool,
    /// How rows were loaded.
    pub load_path: String,
    /// Items per the manifest.
    pub manifest_items: Option<u64>,
    /// Rows this run loaded.
    pub rows_loaded: u64,
    /// Lines this run rejected.
    pub rows_rejected: u64,
    /// Items filtered out.
    pub rows_filtered: u64,
    /// Values sent to the overflow column for a type mismatch.
    pub values_spilled: u64,
    /// `max_rejects` of the run.
    pub max_rejects: u64,
    /// Rows in the table now (it may hold more than this run's with `--append`); for a routed
    /// run, in all its tables.
    pub table_rows: Option<i64>,
    /// Rows per table, when counted (one entry, or one per routed table).
    pub tables: Vec<TableRows>,
    /// Results of the verification queries (`[[verify]]`).
    pub verification: Vec<Verification>,
    /// Shards in the run.
    pub shards_total: usize,
    /// Shards reconciled.
    pub shards_reconciled: usize,
    /// Every shard.
    pub shards: Vec<ShardLine>,
    /// The first rejects.
    pub first_rejects: Vec<RejectRecord>,
    /// Wall time of this command, when it loaded.
    pub elapsed_seconds: Option<f64>,
    /// Items per second over that time.
    pub items_per_second: Option<f64>,
    /// Post-load steps: what `finalize` ran, found done earlier, or skipped.
    pub post_load: Vec<PostLoadLine>,
    /// Why the run is not verified; empty when it is.
    pub problems: Vec<String>,
    /// What the user should know about the source (no manifest, a scan dump that cannot be
    /// exact).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The deep verification, when one ran (`--deep`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deep: Option<crate::deep::DeepReport>,
}

impl Report {
    /// Whether the run is verified (exit code 0).
    pub fn verified(&self) -> bool {
        self.problems.is_empty()
    }

    /// One line saying why the run is not verified.
    pub fn reason(&self) -> String {
        match self.problems.as_slice() {
            [] => "verified".into(),
            [one] => one.clone(),
            [first, rest @ ..] => format!("{first} (and {} more problems)", rest.len()),
        }
    }

    /// The human-readable report, short at any size: totals, the shards that need attention (at
    /// most [`SHARDS_SHOWN`]) and one line for the rest, the first [`PROBLEMS_SHOWN`] problems.
    pub fn to_text(&self) -> String {
        self.render(false)
    }

    /// The whole report: every shard and every problem (`--all`, the report file).
    pub fn full_text(&self) -> String {
        self.render(true)
    }

    fn render(&self, all: bool) -> String {
        let mut out = String::new();
        let verdict = if self.verified() {
            "verified"
        } else {
            "NOT verified"
        };
        let _ = writeln!(out, "run {}: {} ({verdict})", self.run_id, self.state);
        if self.already_complete {
            let _ = writeln!(out, "the run was already complete: nothing to do");
        }
        let _ = writeln!(
            out,
            "export  {}{}",
            self.export,
            if self.manifest_verified {
                ""
            } else {
                " (no verified manifest)"
            }
        );
        for note in &self.notes {
            let _ = writeln!(out, "note    {note}");
        }
        let _ = writeln!(out, "load    {}", self.load_path);
        let table_rows = self
            .table_rows
            .map(|n| format!(", {n} rows in the table"))
            .unwrap_or_default();
        if self.tables.len() > 1 {
            let _ = writeln!(
                out,
                "tables  {} rows loaded by this run{table_rows}",
                self.rows_loaded
            );
            for table in &self.tables {
                let _ = writeln!(
                    out,
                    "  {:<30} {:>12} rows",
                    quote_ident(&table.table),
                    table.rows
                );
            }
        } else {
            let _ = writeln!(
                out,
                "table   {}: {} rows loaded by this run{table_rows}",
                quote_ident(&self.table),
                self.rows_loaded
            );
        }
        let accounted = self.rows_loaded + self.rows_rejected + self.rows_filtered;
        let manifest = self
            .manifest_items
            .map(|n| n.to_string())
            .unwrap_or_else(|| "unknown".into());
        let _ = writeln!(
            out,
            "items   {accounted} accounted for of {manifest} in the manifest: {} loaded + {} rejected (max {}) + {} filtered; {} values spilled to overflow",
            self.rows_loaded, self.rows_rejected, self.max_rejects, self.rows_filtered, self.values_spilled
        );
        let _ = writeln!(
            out,
            "shards  {} of {} reconciled",
            self.shards_reconciled, self.shards_total
        );
        // Every shard with --all; otherwise only those a person should look at, then one line
        // for the rest, so 10,000 shards print no more than a few.
        let attention: Vec<&ShardLine> =
            self.shards.iter().filter(|s| s.needs_attention()).collect();
        let shown: Vec<&ShardLine> = if all {
            self.shards.iter().collect()
        } else {
            attention.iter().take(SHARDS_SHOWN).copied().collect()
        };
        if !shown.is_empty() {
            if !all {
                let _ = writeln!(
                    out,
                    "  needing attention (not reconciled, rejects, spilled values or a bad MD5): {} of {}",
                    attention.len(),
                    self.shards.len()
                );
            }
            let _ = writeln!(
                out,
                "  {:<28} {:>10} {:>10} {:>9} {:>9} {:>8}  {:<8} {:<4} reconciled",
                "shard", "manifest", "loaded", "rejected", "filtered", "spilled", "state", "md5"
            );
            for s in &shown {
                let md5 = match s.md5_ok {
                    Some(true) => "ok",
                    Some(false) => "BAD",
                    None => "-",
                };
                let manifest = s
                    .item_count
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into());
                let _ = writeln!(
                    out,
                    "  {:<28} {:>10} {:>10} {:>9} {:>9} {:>8}  {:<8} {:<4} {}",
                    s.shard_id,
                    manifest,
                    s.loaded,
                    s.rejected,
                    s.filtered,
                    s.spilled,
                    s.state,
                    md5,
                    if s.reconciled { "yes" } else { "NO" }
                );
            }
        }
        if !all {
            let more = attention.len() - shown.len();
            if more > 0 {
                let _ = writeln!(
                    out,
                    "  … and {more} more shards needing attention (--all, --json or the report file list every shard)"
                );
            }
            let slowest = slowest(&self.shards);
            if !slowest.is_empty() {
                let named: Vec<String> = slowest
                    .iter()
                    .map(|s| format!("{} {:.1} s", s.shard_id, s.seconds.unwrap_or_default()))
                    .collect();
                let _ = writeln!(out, "  slowest: {}", named.join(", "));
            }
            let rest = self.shards.len() - attention.len();
            if rest > 0 {
                let items: u64 = self
                    .shards
                    .iter()
                    .filter(|s| !s.needs_attention())
                    .map(|s| s.loaded + s.filtered)
                    .sum();
                let _ = writeln!(
                    out,
                    "  {} {rest} shards reconciled with nothing to look at ({items} items)",
                    if attention.is_empty() {
                        "all"
                    } else {
                        "the other"
                    }
                );
            }
        }
        if !self.first_rejects.is_empty() {
            let _ = writeln!(out, "first rejects (all of them are in ferry.rejects):");
            for r in &self.first_rejects {
                let _ = writeln!(
                    out,
                    "  shard {} line {}: {}",
                    r.shard_id, r.line_no, r.reason
                );
            }
        }
        if let (Some(seconds), Some(rate)) = (self.elapsed_seconds, self.items_per_second) {
            let _ = writeln!(out, "elapsed {seconds:.1} s, {rate:.0} items/s");
        }
        for step in &self.post_load {
            let note = step
                .note
                .as_ref()
                .map(|n| format!("; {n}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "post-load: {} ({}, {:.2} s{note})",
                step.step, step.state, step.seconds
            );
        }
        for check in &self.verification {
            let _ = writeln!(out, "verify: {} ({:.2} s)", check.name, check.seconds);
            if !check.columns.is_empty() {
                let _ = writeln!(out, "  {}", check.columns.join(" | "));
            }
            for row in check.rows.iter().take(20) {
                let cells: Vec<&str> = row.iter().map(|v| v.as_deref().unwrap_or("NULL")).collect();
                let _ = writeln!(out, "  {}", cells.join(" | "));
            }
            if check.rows.len() > 20 {
                let _ = writeln!(out, "  … {} rows in all", check.rows.len());
            }
            if let Some(problem) = &check.problem {
                let _ = writeln!(out, "  problem: {problem}");
            }
        }
        let problems = if all {
            self.problems.len()
        } else {
            self.problems.len().min(PROBLEMS_SHOWN)
        };
        for problem in &self.problems[..problems] {
            let _ = writeln!(out, "problem: {problem}");
        }
        if problems < self.problems.len() {
            let _ = writeln!(
                out,
                "problem: … and {} more (--all, --json or the report file list them)",
                self.problems.len() - problems
            );
        }
        out
    }
}

/// Inputs for a report beyond the ledger.
#[derive(Clone, Debug, Default)]
pub struct ReportContext {
    /// The run was complete before this command.
    pub already_complete: bool,
    /// Wall time spent loading.
    pub elapsed_seconds: Option<f64>,
    /// Items committed during that time.
    pub items_this_command: u64,
    /// Unverified runs are acceptable.
    pub allow_unverified: bool,
    /// Shards that failed for reasons outside their data.
    pub load_errors: Vec<String>,
    /// Count the table's rows.
    pub count_table_rows: bool,
    /// How rows were loaded, when this command loaded.
    pub load_path: Option<String>,
    /// Notes about the source for the report (from the export's listing).
    pub notes: Vec<String>,
}

/// Builds the report from the ledger.
pub async fn build_report(
    client: &Client,
    run: &RunRecord,
    context: &ReportContext,
) -> Result<Report> {
    let shards = ledger::get_shards(client, &run.run_id).await?;
    let first_rejects = ledger::get_rejects(client, &run.run_id).await?;
    let mut tables = Vec::new();
    if context.count_table_rows && is_parquet(run) {
        // A Parquet run's rows are in its committed files (each shard's current load).
        let files = ferry_worker::sink::parquet::current_files(client, &run.run_id).await?;
        for table in ferry_worker::sink::run_tables(&run.schema) {
            let rows = files
                .get(&table.table)
                .map(|f| f.iter().map(|f| f.rows).sum::<u64>())
                .unwrap_or(0);
            tables.push(TableRows {
                table: table.table,
                rows: rows as i64,
            });
        }
    } else if context.count_table_rows {
        for table in run_tables(run) {
            let sql = format!("SELECT count(*)::int8 FROM {}", quote_ident(&table));
            let rows = client
                .query_one(&sql, &[])
                .await
                .map_err(CoordinatorError::db("cannot count the table's rows"))?
                .get::<_, i64>(0);
            tables.push(TableRows { table, rows });
        }
    }
    let table_rows = context
        .count_table_rows
        .then(|| tables.iter().map(|t| t.rows).sum::<i64>());
    // A ledger that cannot say (an old one) leaves the times out; the report does not fail.
    let seconds = ledger::shard_seconds(client, &run.run_id)
        .await
        .unwrap_or_default();
    let lines: Vec<ShardLine> = shards
        .iter()
        .map(|s| ShardLine {
            seconds: seconds.get(&s.shard_id).copied(),
            ..shard_line(s)
        })
        .collect();
    let sum = |f: fn(&ShardRecord) -> u64| shards.iter().map(f).sum::<u64>();
    let rows_loaded = sum(|s| s.loaded_rows);
    let rows_rejected = sum(|s| s.rejected_rows);
    let rows_filtered = sum(|s| s.filtered_rows);
    let shards_reconciled = lines.iter().filter(|l| l.reconciled).count();

    // The cause first: rejects over the limit stop the run and leave shards unfinished.
    let mut problems = Vec::new();
    if rows_rejected > run.max_rejects {
        problems.push(format!(
            "{rows_rejected} lines rejected, over max_rejects = {} (see ferry.rejects)",
            run.max_rejects
        ));
    }
    for line in lines.iter().filter(|l| !l.reconciled) {
        let what = match (&line.error, line.state.as_str()) {
            (Some(error), _) => error.clone(),
            (None, shard_state::PENDING) => {
                format!("not finished ({} lines committed)", line.committed_lines)
            }
            (None, state) => format!(
                "{state}: loaded {} + rejected {} does not match the manifest's {:?}",
                line.loaded, line.rejected, line.item_count
            ),
        };
        problems.push(format!("shard {}: {what}", line.shard_id));
    }
    for error in &context.load_errors {
        problems.push(error.clone());
    }
    if !run.manifest_verified && !context.allow_unverified {
        problems.push(
            "the export has no verified manifest: pass --allow-unverified to accept the run".into(),
        );
    }
    let state = if problems.is_empty() {
        run_state::COMPLETE
    } else if lines.iter().any(|l| l.state == shard_state::PENDING)
        && context.load_errors.is_empty()
        && rows_rejected <= run.max_rejects
    {
        run_state::LOADING
    } else {
        run_state::FAILED
    };
    let items_per_second = context
        .elapsed_seconds
        .map(|s| context.items_this_command as f64 / s.max(1e-6));
    Ok(Report {
        run_id: run.run_id.clone(),
        export: run.export_location.clone(),
        table: run.target_table.clone(),
        state: state.to_string(),
        manifest_verified: run.manifest_verified,
        already_complete: context.already_complete,
        load_path: context.load_path.clone().unwrap_or_else(|| "-".into()),
        manifest_items: run.manifest_items,
        rows_loaded,
        rows_rejected,
        rows_filtered,
        values_spilled: sum(|s| s.spilled_values),
        max_rejects: run.max_rejects,
        table_rows,
        tables,
        verification: Vec::new(),
        shards_total: lines.len(),
        shards_reconciled,
        shards: lines,
        first_rejects,
        elapsed_seconds: context.elapsed_seconds,
        items_per_second,
        post_load: Vec::new(),
        notes: context.notes.clone(),
        deep: None,
        problems,
    })
}

/// Whether the run writes a Parquet dataset (its ledger is the only thing in the database).
pub fn is_parquet(run: &RunRecord) -> bool {
    run.load_path.as_deref() == Some(ferry_worker::target::LoadPath::Parquet.as_str())
}

/// The run `run_id`, for a command that reads its database tables (`command`): refused when it is
/// not in the ledger, or wrote a Parquet dataset (`parquet` says what to do instead).
pub async fn run_with_tables(
    client: &tokio_postgres::Client,
    run_id: &str,
    command: &str,
    parquet: &str,
) -> crate::Result<RunRecord> {
    let run = ferry_ledger::runs::get_run(client, run_id)
        .await?
        .ok_or_else(|| {
            crate::CoordinatorError::Invalid(format!("run {run_id} is not in the ledger"))
        })?;
    if is_parquet(&run) {
        return Err(crate::CoordinatorError::Invalid(format!(
            "run {run_id} wrote a Parquet dataset, not database tables: {command} reads a database{parquet}"
        )));
    }
    Ok(run)
}

/// The database tables a run loads: its table, or every routed table (none for a Parquet run,
/// whose tables are datasets).
pub fn run_tables(run: &RunRecord) -> Vec<String> {
    if is_parquet(run) {
        return Vec::new();
    }
    match &run.schema.routing {
        None => vec![run.target_table.clone()],
        Some(routing) => {
            let keys: Vec<String> = run.schema.key_columns().map(|c| c.name.clone()).collect();
            routing.tables(&keys).into_iter().map(|t| t.table).collect()
        }
    }
}

/// Slowest shards the short report names.
pub const SLOWEST_SHOWN: usize = 3;

/// The [`SLOWEST_SHOWN`] done shards that took longest, slowest first (none for a run of one
/// shard, where the total says it).
fn slowest(shards: &[ShardLine]) -> Vec<&ShardLine> {
    if shards.len() < 2 {
        return Vec::new();
    }
    let mut timed: Vec<&ShardLine> = shards.iter().filter(|s| s.seconds.is_some()).collect();
    timed.sort_by(|a, b| {
        b.seconds
            .partial_cmp(&a.seconds)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    timed.truncate(SLOWEST_SHOWN);
    timed
}

impl ShardLine {
    /// Whether a person should look at this shard: not reconciled, or some of its lines
    /// rejected, values spilled or its MD5 wrong.
    pub fn needs_attention(&self) -> bool {
        !self.reconciled || self.rejected > 0 || self.spilled > 0 || self.md5_ok == Some(false)
    }
}

fn shard_line(s: &ShardRecord) -> ShardLine {
    ShardLine {
        shard_id: s.shard_id.clone(),
        data_key: s.data_key.clone(),
        item_count: s.item_count,
        committed_lines: s.committed_lines,
        loaded: s.loaded_rows,
        rejected: s.rejected_rows,
        filtered: s.filtered_rows,
        spilled: s.spilled_values,
        state: s.state.clone(),
        md5_ok: s.md5_ok,
        reconciled: s.reconciled(),
        error: s.error.clone(),
        seconds: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(n: usize) -> ShardLine {
        ShardLine {
            shard_id: format!("shard-{n:05}"),
            data_key: format!("data/shard-{n:05}.json.gz"),
            item_count: Some(30),
            committed_lines: 30,
            loaded: 30,
            rejected: 0,
            filtered: 0,
            spilled: 0,
            state: "done".into(),
            md5_ok: Some(true),
            reconciled: true,
            error: None,
            seconds: Some(0.5 + (n % 7) as f64 / 10.0),
        }
    }

    fn report(shards: Vec<ShardLine>, problems: Vec<String>) -> Report {
        Report {
            run_id: "run".into(),
            export: "s3://bucket/export/".into(),
            table: "items".into(),
            state: if problems.is_empty() {
                "complete"
            } else {
                "failed"
            }
            .into(),
            manifest_verified: true,
            already_complete: false,
            load_path: "binary COPY".into(),
            manifest_items: Some(30 * shards.len() as u64),
            rows_loaded: shards.iter().map(|s| s.loaded).sum(),
            rows_rejected: shards.iter().map(|s| s.rejected).sum(),
            rows_filtered: 0,
            values_spilled: 0,
            max_rejects: 10,
            table_rows: None,
            tables: Vec::new(),
            verification: Vec::new(),
            shards_total: shards.len(),
            shards_reconciled: shards.iter().filter(|s| s.reconciled).count(),
            shards,
            first_rejects: Vec::new(),
            elapsed_seconds: Some(12.0),
            items_per_second: Some(25_000.0),
            post_load: Vec::new(),
            problems,
            notes: Vec::new(),
            deep: None,
        }
    }

    #[test]
    fn ten_thousand_shards_with_one_failed_print_a_short_report() {
        let mut shards: Vec<ShardLine> = (0..10_000).map(shard).collect();
        shards[7_321].state = "failed".into();
        shards[7_321].reconciled = false;
        shards[7_321].loaded = 12;
        shards[7_321].error = Some("gzip: corrupt deflate stream at line 13".into());
        shards[7_321].seconds = None;
        shards[42].rejected = 1;
        shards[42].loaded = 29;
        let problem = "shard shard-07321: gzip: corrupt deflate stream at line 13".to_string();
        let report = report(shards, vec![problem.clone()]);

        let text = report.to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() <= 15, "{} lines:\n{text}", lines.len());
        assert!(text.contains("shards  9999 of 10000 reconciled"), "{text}");
        assert!(text.contains("needing attention (not reconciled, rejects, spilled values or a bad MD5): 2 of 10000"), "{text}");
        let failed = lines
            .iter()
            .find(|l| l.contains("shard-07321"))
            .expect(&text);
        assert!(
            failed.contains("failed") && failed.ends_with("NO"),
            "{failed}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("shard-00042") && l.ends_with("yes")),
            "{text}"
        );
        assert!(
            text.contains(
                "the other 9998 shards reconciled with nothing to look at (299940 items)"
            ),
            "{text}"
        );
        assert!(text.contains(&format!("problem: {problem}")), "{text}");
        assert!(!text.contains("shard-00043"), "{text}");

        // The whole table: every shard once.
        let full = report.full_text();
        assert_eq!(
            full.matches("shard-0").count(),
            10_000 + 1,
            "every shard, and the problem"
        );
        assert!(!full.contains("needing attention"));
    }

    #[test]
    fn many_failed_shards_and_problems_stay_bounded() {
        let mut shards: Vec<ShardLine> = (0..5_000).map(shard).collect();
        let mut problems = Vec::new();
        for s in shards.iter_mut().skip(100) {
            s.state = "pending".into();
            s.reconciled = false;
            s.seconds = None;
            problems.push(format!(
                "shard {}: not finished (0 lines committed)",
                s.shard_id
            ));
        }
        let report = report(shards, problems);
        let text = report.to_text();
        assert!(
            text.lines().count() <= SHARDS_SHOWN + PROBLEMS_SHOWN + 13,
            "{text}"
        );
        assert!(
            text.contains("… and 4880 more shards needing attention"),
            "{text}"
        );
        assert!(
            text.contains("the other 100 shards reconciled with nothing to look at (3000 items)"),
            "{text}"
        );
        assert!(
            text.contains("problem: … and 4890 more (--all, --json or the report file list them)"),
            "{text}"
        );
        let full = report.full_text();
        assert_eq!(full.matches("problem: shard").count(), 4_900);
    }

    #[test]
    fn a_clean_run_prints_one_line_for_its_shards() {
        let report = report((0..24).map(shard).collect(), Vec::new());
        let text = report.to_text();
        assert!(
            text.contains("  all 24 shards reconciled with nothing to look at (720 items)"),
            "{text}"
        );
        // The three slowest are named (ties in shard order), and no other shard.
        assert!(
            text.contains("  slowest: shard-00006 1.1 s, shard-00013 1.1 s, shard-00020 1.1 s"),
            "{text}"
        );
        assert_eq!(text.matches("shard-0").count(), 3, "{text}");
        assert!(report.full_text().contains("shard-00023"));
    }
}
