//! `catch-up`: DynamoDB incremental exports (windows `[from, to)`) applied, in order, to the
//! tables a full run loaded, so a cut-over only waits for the last few minutes of changes.
//!
//! # Order and continuity (the ledger decides)
//! A full run's windows form a chain in `ferry.windows`. A window applies only when:
//! - the full run it follows is complete (an incremental export before its full run is refused);
//! - it starts exactly where the chain ends: the last applied window's `exportToTime`, or, for the
//!   first window, the full export's `exportTime`. A window starting later is a **gap** (changes
//!   are missing), one starting earlier an **overlap**, and another export of a window already
//!   applied is a window **applied twice**: each is refused naming both windows, before anything
//!   is written;
//! - the window before it is complete (every shard applied, deferred records resolved).
//!
//! The same export given again is the same window (the same run): complete, it is skipped as
//! already applied; unfinished, it resumes. So the same command can be repeated after a crash, or
//! run periodically over a prefix that keeps receiving new windows. Two such commands at once (a
//! periodic one overlapping a manual one) apply the windows together: the second to record a
//! window in the chain finds the first's record of the same run there and applies it beside it
//! (racing loaders of one shard commit each chunk once, since a chunk commits only where the
//! checkpoint still stands; a deferred record is taken off the list by the one that applies it).
//!
//! # On one machine or through the fleet
//! Without a queue each window is applied by in-process loaders; with `--queue-url` its shards go
//! to the SQS queue for `ferry-worker`s, and the next window is submitted only once this one is
//! complete (workers also refuse a window whose predecessor is not, whoever submitted it). Either
//! way the coordinator then retries the window's deferred records, reconciles every shard against
//! the manifest and records the window complete.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_ledger::run_state;
use ferry_ledger::runs as ledger;
use ferry_ledger::window::{self as windows, WindowRecord};
use ferry_ledger::window_state;
use ferry_ledger::RunRecord;
use ferry_shared::config::Settings;
use ferry_shared::manifest::{locate_windows, micros_of, ExportListing};
use ferry_shared::queue::MemoryQueue;
use ferry_shared::sqs::SqsQueue;
use ferry_shared::store::{open_export, ObjectStore};
use ferry_worker::pool::{pending_tasks, run_pool, PoolSettings, RunContexts};
use ferry_worker::progress::Progress;
use ferry_worker::sink::deferred::DeferredOutcome;
use ferry_worker::sink::LoadContext;
use ferry_worker::target::{Target, TargetKind};
use serde::Serialize;
use tokio_postgres::Client;

use crate::{CoordinatorError, Result};

/// What the user asked for.
#[derive(Clone, Debug)]
pub struct CatchUpRequest {
    /// Windows: export folders or prefixes (each `…/AWSDynamoDB/<ExportId>/`, or a folder or
    /// prefix holding several), in any order.
    pub exports: Vec<String>,
    /// The full run the windows follow (default: the one full run of the windows' table).
    pub base_run_id: Option<String>,
    /// The target's URL.
    pub target_url: String,
    /// Loaders on this machine (no queue).
    pub workers: Option<usize>,
    /// Settings.
    pub settings: Settings,
    /// Seconds between looks at the ledger while the fleet applies a window.
    pub poll_interval: Duration,
}

/// One window as found in an export.
#[derive(Debug)]
pub struct FoundWindow {
    /// Its manifests and files.
    pub listing: ExportListing,
    /// Where its files are.
    pub store: Arc<dyn ObjectStore>,
    /// Where it is, for the ledger.
    pub location: String,
    /// `exportFromTime` in microseconds.
    pub from_micros: i64,
    /// `exportToTime` in microseconds.
    pub to_micros: i64,
}

impl FoundWindow {
    fn summary(&self) -> &ferry_shared::manifest::ExportSummary {
        self.listing
            .summary
            .as_ref()
            .expect("windows come from manifests")
    }

    /// The export's id.
    pub fn name(&self) -> String {
        self.summary()
            .export_id()
            .map(str::to_string)
            .unwrap_or_else(|| self.location.clone())
    }

    /// `[from, to)` as written.
    pub fn span(&self) -> String {
        let s = self.summary();
        format!(
            "[{}, {})",
            s.export_from_time.as_deref().unwrap_or_default(),
            s.export_to_time.as_deref().unwrap_or_default()
        )
    }
}

/// How one window ended.
#[derive(Clone, Debug, Serialize)]
pub struct WindowLine {
    /// The export's id.
    pub window: String,
    /// `[from, to)`.
    pub span: String,
    /// The window's run.
    pub run_id: String,
    /// `applied`, `already applied`, `failed`.
    pub outcome: String,
    /// Change records applied (upserts and deletes).
    pub applied: u64,
    /// Records rejected.
    pub rejected: u64,
    /// Records skipped by a routing filter (their keys deleted).
    pub filtered: u64,
    /// Deferred records: applied at the window's end, or rejected then.
    pub deferred: DeferredOutcome,
    /// Seconds this command spent on it.
    pub seconds: f64,
    /// What went wrong.
    pub problems: Vec<String>,
}

/// What `catch-up` did.
#[derive(Clone, Debug, Serialize)]
pub struct CatchUpReport {
    /// The full run.
    pub base_run_id: String,
    /// Its table.
    pub table: String,
    /// Each window given, in order.
    pub windows: Vec<WindowLine>,
    /// Where the tables are now: the last applied window's `exportToTime` (or the full export's
    /// time).
    pub caught_up_to: Option<String>,
}

impl CatchUpReport {
    /// Every window given is applied.
    pub fn complete(&self) -> bool {
        self.windows.iter().all(|w| w.problems.is_empty())
    }

    /// The report in words.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "catch-up of run {} (table {:?})",
            self.base_run_id, self.table
        );
        for w in &self.windows {
            let _ = writeln!(
                out,
                "  window {} {}: {} — {} changes applied, {} rejected, {} filtered, {} deferred then applied, {} deferred then rejected ({:.1} s)",
                w.window,
                w.span,
                w.outcome,
                w.applied,
                w.rejected,
                w.filtered,
                w.deferred.applied,
                w.deferred.rejected.len(),
                w.seconds
            );
            for problem in &w.problems {
                let _ = writeln!(out, "    problem: {problem}");
            }
        }
        let _ = writeln!(
            out,
            "caught up to {}",
            self.caught_up_to.as_deref().unwrap_or("(unknown)")
        );
        out
    }
}

/// Finds every window of `exports`, in window order; refuses full exports and a window given
/// twice.
pub async fn find_windows(exports: &[String], settings: &Settings) -> Result<Vec<FoundWindow>> {
    let mut found = Vec::new();
    for export in exports {
        let opened = open_export(export, &settings.aws).await?;
        let store: Arc<dyn ObjectStore> = opened.store;
        for listing in locate_windows(store.as_ref(), &opened.prefix).await? {
            for warning in &listing.warnings {
                tracing::warn!(export = %listing.location, "{warning}");
            }
            let summary = listing.summary.clone().unwrap_or_default();
            if !summary.is_incremental() {
                return Err(CoordinatorError::Invalid(format!(
                    "{} is a full export (exportType {}): load it with `ferry-coordinator migrate`; catch-up applies incremental exports",
                    listing.location,
                    summary.export_type.as_deref().unwrap_or("FULL_EXPORT")
                )));
            }
            let micros = |t: &Option<String>| t.as_deref().and_then(micros_of).unwrap_or_default();
            found.push(FoundWindow {
                from_micros: micros(&summary.export_from_time),
                to_micros: micros(&summary.export_to_time),
                location: listing.location.clone(),
                listing,
                store: store.clone(),
            });
        }
    }
    found.sort_by_key(|w| (w.from_micros, w.to_micros));
    let mut seen = HashSet::new();
    for window in &found {
        if !seen.insert(window.name()) {
            return Err(CoordinatorError::Invalid(format!(
                "window {} is given twice (under {})",
                window.name(),
                window.location
            )));
        }
    }
    Ok(found)
}

/// The table part of an export or table ARN (`arn:…:table/Name`).
fn table_arn_of(arn: &str) -> &str {
    arn.split("/export/").next().unwrap_or(arn)
}

/// The full run the windows follow: the one named, or the one full run of their table.
async fn base_run(
    client: &Client,
    requested: Option<&str>,
    first: &FoundWindow,
) -> Result<RunRecord> {
    if let Some(run_id) = requested {
        let run = ledger::get_run(client, run_id).await?.ok_or_else(|| {
            CoordinatorError::Invalid(format!(
                "window {} {} follows run {run_id}, which is not in this database's ledger: load the full export first (`ferry-coordinator migrate`)",
                first.name(),
                first.span()
            ))
        })?;
        if windows::get_window(client, run_id).await?.is_some() {
            return Err(CoordinatorError::Invalid(format!(
                "run {run_id} is a catch-up window, not a full run: give the full run's id"
            )));
        }
        return Ok(run);
    }
    let table_arn = first.summary().table_arn.clone().unwrap_or_default();
    let rows = client
        .query(
            "SELECT run_id, export_arn FROM ferry.runs ORDER BY created_at",
            &[],
        )
        .await
        .map_err(CoordinatorError::db("cannot list the ledger's runs"))?;
    let mut candidates = Vec::new();
    for row in rows {
        let run_id: String = row.get(0);
        let arn: Option<String> = row.get(1);
        let same_table = arn
            .as_deref()
            .is_some_and(|a| !table_arn.is_empty() && table_arn_of(a) == table_arn);
        if same_table && windows::get_window(client, &run_id).await?.is_none() {
            candidates.push(run_id);
        }
    }
    match candidates.as_slice() {
        [one] => Ok(ledger::get_run(client, one)
            .await?
            .expect("listed a moment ago")),
        [] => Err(CoordinatorError::Invalid(format!(
            "window {} {} is an incremental export of table {}, and this database's ledger has no full run of it: an incremental export applies only after the full run it follows (load the full export with `ferry-coordinator migrate`, then catch up)",
            first.name(),
            first.span(),
            if table_arn.is_empty() { "(unknown)" } else { table_arn.as_str() }
        ))),
        many => Err(CoordinatorError::Invalid(format!(
            "several full runs of table {table_arn} are in the ledger ({}): say which one the windows follow with --run-id",
            many.join(", ")
        ))),
    }
}

/// What to do with a window, given the chain so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// A new window at `seq`.
    Apply {
        /// Its place in the chain.
        seq: i64,
    },
    /// The same export, recorded and not finished: go on with it.
    Resume(WindowRecord),
    /// The same export, already complete.
    AlreadyApplied(WindowRecord),
}

/// The window's run id: its export's id and the full run's.
pub fn window_run_id(window: &FoundWindow, base_run_id: &str) -> String {
    let digest =
        ferry_shared::manifest::md5_hex(format!("{base_run_id}\n{}", window.name()).as_bytes());
    format!("{}-{}", window.name(), &digest[..8])
}

/// Decides whether `window` may apply after `chain` (the full run `base`'s windows, in order):
/// refusals name both windows.
pub fn decide(
    base: &RunRecord,
    chain: &[WindowRecord],
    window: &FoundWindow,
    run_id: &str,
) -> Result<Decision> {
    let refuse = |message: String| Err(CoordinatorError::Invalid(message));
    if let Some(recorded) = chain.iter().find(|w| w.run_id == run_id) {
        return Ok(if recorded.state == window_state::COMPLETE {
            Decision::AlreadyApplied(recorded.clone())
        } else {
            Decision::Resume(recorded.clone())
        });
    }
    if base.state != run_state::COMPLETE {
        return refuse(format!(
            "window {} {} cannot be applied before the full run {} it follows is complete (its state is {}): finish it with `ferry-coordinator migrate` (or finalize) first",
            window.name(),
            window.span(),
            base.run_id,
            base.state
        ));
    }
    if let Some(same) = chain
        .iter()
        .find(|w| w.from_micros == window.from_micros && w.to_micros == window.to_micros)
    {
        return refuse(format!(
            "window {} {} was already applied as window {} {} (run {}): a window's changes are applied once; nothing was done",
            window.name(),
            window.span(),
            same.name(),
            same.span(),
            same.run_id
        ));
    }
    let (expected, after) = match chain.last() {
        Some(last) => {
            if last.state != window_state::COMPLETE {
                return refuse(format!(
                    "window {} {} cannot start before window {} {} is complete (it is {}): catch up with that window first",
                    window.name(),
                    window.span(),
                    last.name(),
                    last.span(),
                    last.state
                ));
            }
            (
                last.to_micros,
                format!("window {} {}", last.name(), last.span()),
            )
        }
        None => {
            let start = base.export_time.as_deref().and_then(micros_of).ok_or_else(|| {
                CoordinatorError::Invalid(format!(
                    "full run {} has no export time in the ledger, so window {} {} cannot be placed after it",
                    base.run_id,
                    window.name(),
                    window.span()
                ))
            })?;
            (
                start,
                format!(
                    "the full export of run {} (exportTime {})",
                    base.run_id,
                    base.export_time.as_deref().unwrap_or_default()
                ),
            )
        }
    };
    if window.from_micros > expected {
        return refuse(format!(
            "gap: window {} {} does not start where {} ends: the changes between them are missing; export and apply the window in between first",
            window.name(),
            window.span(),
            after
        ));
    }
    if window.from_micros < expected {
        let overlapped: Vec<String> = chain
            .iter()
            .filter(|w| w.from_micros < window.to_micros && window.from_micros < w.to_micros)
            .map(|w| format!("window {} {}", w.name(), w.span()))
            .collect();
        let overlapped = if overlapped.is_empty() {
            after
        } else {
            overlapped.join(" and ")
        };
        return refuse(format!(
            "overlap: window {} {} overlaps {}, already applied: windows must follow each other exactly, each starting where the last one ends",
            window.name(),
            window.span(),
            overlapped
        ));
    }
    Ok(Decision::Apply {
        seq: chain.last().map(|w| w.seq + 1).unwrap_or(1),
    })
}

/// Refuses a table whose unique constraint over the key is not exactly the key columns: the
/// upserts' `ON CONFLICT (key)` needs one.
async fn check_conflict_targets(client: &Client, base: &RunRecord, target: &Target) -> Result<()> {
    for table in ferry_worker::sink::run_tables(&base.schema) {
        let keys: HashSet<String> = table.key_columns().map(|c| c.name.clone()).collect();
        let sets = crate::catalog::unique_column_sets(client, &table.table, target).await?;
        if !sets
            .iter()
            .any(|set| set.iter().cloned().collect::<HashSet<_>>() == keys)
        {
            // A key built after the full run's load that is not built yet: say whose it is.
            let pending = match ferry_ledger::keys::pending_key(client, &table.table).await? {
                Some(key) if !key.built() => format!(
                    "; run {} created the table and builds its key after its load (the key is {}): \
                     finish that run first (`ferry-coordinator finalize --run-id {}`)",
                    key.run_id, key.state, key.run_id
                ),
                _ => String::new(),
            };
            return Err(CoordinatorError::Invalid(format!(
                "table {:?} has no PRIMARY KEY or UNIQUE constraint over exactly its key columns ({}): the upserts of an incremental export need one (`ON CONFLICT` on the key){pending}",
                table.table,
                keys.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    Ok(())
}

/// Applies the windows of `request`, in order, on this machine or (with `queue`) through the
/// fleet. Refusals are errors and happen before anything is written.
pub async fn catch_up(request: &CatchUpRequest, queue: Option<&SqsQueue>) -> Result<CatchUpReport> {
    let found = find_windows(&request.exports, &request.settings).await?;
    let first = found
        .first()
        .ok_or_else(|| CoordinatorError::Invalid("no incremental exports to apply".into()))?;
    let mut client = ferry_worker::conn::control(&request.target_url).await?;
    ledger::ensure_ledger(&client).await?;
    let target = Target::detect(&client, request.settings.load.copy_format).await?;
    let base = base_run(&client, request.base_run_id.as_deref(), first).await?;
    for window in &found {
        if let (Some(table_arn), Some(base_arn)) = (&window.summary().table_arn, &base.export_arn) {
            if table_arn_of(base_arn) != table_arn {
                return Err(CoordinatorError::Invalid(format!(
                    "window {} {} is an export of {table_arn}, but run {} loaded {}",
                    window.name(),
                    window.span(),
                    base.run_id,
                    table_arn_of(base_arn)
                )));
            }
        }
    }
    check_conflict_targets(&client, &base, &target).await?;

    // Every decision before anything is written: a refusal leaves the ledger as it was.
    let chain = windows::get_chain(&client, &base.run_id).await?;
    let mut simulated = chain.clone();
    let mut plans = Vec::new();
    for window in &found {
        let run_id = window_run_id(window, &base.run_id);
        let decision = decide(&base, &simulated, window, &run_id)?;
        if let Decision::Resume(resumed) = &decision {
            // Finished before the next window starts.
            if let Some(record) = simulated.iter_mut().find(|w| w.run_id == resumed.run_id) {
                record.state = window_state::COMPLETE.into();
            }
        }
        if let Decision::Apply { seq } = &decision {
            simulated.push(WindowRecord {
                run_id: run_id.clone(),
                base_run_id: base.run_id.clone(),
                seq: *seq,
                export_arn: window.summary().export_arn.clone(),
                export_from: window
                    .summary()
                    .export_from_time
                    .clone()
                    .unwrap_or_default(),
                export_to: window.summary().export_to_time.clone().unwrap_or_default(),
                from_micros: window.from_micros,
                to_micros: window.to_micros,
                output_view: window.summary().output_view.clone(),
                // Applied before the next one starts.
                state: window_state::COMPLETE.into(),
            });
        }
        plans.push((window, run_id, decision));
    }

    let mut report = CatchUpReport {
        base_run_id: base.run_id.clone(),
        table: base.target_table.clone(),
        windows: Vec::new(),
        caught_up_to: None,
    };
    for (window, run_id, decision) in plans {
        let started = Instant::now();
        let mut line = WindowLine {
            window: window.name(),
            span: window.span(),
            run_id: run_id.clone(),
            outcome: String::new(),
            applied: 0,
            rejected: 0,
            filtered: 0,
            deferred: DeferredOutcome::default(),
            seconds: 0.0,
            problems: Vec::new(),
        };
        let record = match decision {
            Decision::AlreadyApplied(record) => {
                tracing::info!(window = %window.name(), span = %window.span(), "window already applied: skipped");
                line.outcome = "already applied".into();
                count_into(&client, &run_id, &mut line).await?;
                report.windows.push(line);
                report.caught_up_to = Some(record.export_to.clone());
                continue;
            }
            Decision::Resume(record) => record,
            Decision::Apply { seq } => {
                plan_window(&mut client, &base, window, &run_id, seq, &request.settings).await?
            }
        };
        let run = ledger::get_run(&client, &run_id)
            .await?
            .ok_or_else(|| CoordinatorError::Invalid(format!("run {run_id} vanished")))?;
        // The predecessor must be complete now (another coordinator may have changed things).
        if let Err(message) = windows::predecessor_complete(&client, &record).await? {
            return Err(CoordinatorError::Invalid(message));
        }
        let mut ctx = LoadContext::new(
            run.clone(),
            window.store.clone(),
            &request.settings.load,
            target.clone(),
            &request.target_url,
        )?;
        ferry_worker::sink::prepare_context(&client, &mut ctx).await?;
        tracing::info!(window = %window.name(), span = %window.span(), run = %run_id, shards = window.listing.files.len(), records = window.listing.manifest_items().unwrap_or(0), "applying window");
        match queue {
            None => apply_here(&client, &ctx, request).await?,
            Some(queue) => {
                apply_through_fleet(&client, queue, &run_id, request.poll_interval).await?
            }
        }
        finish_window(&client, &run, &ctx, target.kind, &mut line).await?;
        line.seconds = started.elapsed().as_secs_f64();
        let failed = !line.problems.is_empty();
        if !failed {
            report.caught_up_to = Some(record.export_to.clone());
        }
        report.windows.push(line);
        if failed {
            break;
        }
    }
    if report.caught_up_to.is_none() {
        report.caught_up_to = ferry_ledger::lineage::caught_up_to(&client, &base).await?;
    }
    Ok(report)
}

/// Records a new window: its run (the full run's schema and load path, the window's files as
/// shards) and its place in the chain.
async fn plan_window(
    client: &mut Client,
    base: &RunRecord,
    window: &FoundWindow,
    run_id: &str,
    seq: i64,
    settings: &Settings,
) -> Result<WindowRecord> {
    let summary = window.summary();
    let run = RunRecord {
        run_id: run_id.to_string(),
        export_location: window.location.clone(),
        export_arn: summary.export_arn.clone(),
        export_time: summary.export_to_time.clone(),
        target_table: base.target_table.clone(),
        schema: base.schema.clone(),
        chunk_lines: settings.load.chunk_lines.get(),
        max_rejects: settings.load.max_rejects,
        manifest_verified: window.listing.verified,
        manifest_items: window.listing.manifest_items(),
        state: run_state::LOADING.to_string(),
        load_path: base.load_path.clone(),
    };
    ledger::insert_run(client, &run, &window.listing.files).await?;
    let record = WindowRecord {
        run_id: run_id.to_string(),
        base_run_id: base.run_id.clone(),
        seq,
        export_arn: summary.export_arn.clone(),
        export_from: summary.export_from_time.clone().unwrap_or_default(),
        export_to: summary.export_to_time.clone().unwrap_or_default(),
        from_micros: window.from_micros,
        to_micros: window.to_micros,
        output_view: summary.output_view.clone(),
        state: window_state::APPLYING.into(),
    };
    if !windows::insert_window(client, &record).await? {
        let chain = windows::get_chain(client, &base.run_id).await?;
        // Another catch-up of the same export recorded this very window a moment ago: it is the
        // same run, so this one applies it beside the other (shards are claimed one loader at a
        // time, as on a resume) instead of refusing.
        if let Some(same) = chain.iter().find(|w| w.run_id == run_id && w.seq == seq) {
            tracing::info!(window = %window.name(), seq, run = run_id, "window recorded by another catch-up a moment ago: applying it beside it");
            return Ok(same.clone());
        }
        let holder = chain
            .iter()
            .find(|w| w.seq == seq || w.from_micros == window.from_micros)
            .map(|w| format!("window {} {}", w.name(), w.span()))
            .unwrap_or_else(|| "another window".into());
        return Err(CoordinatorError::Invalid(format!(
            "window {} {} cannot take its place in the chain of run {}: {holder} was recorded there a moment ago (another catch-up is running?)",
            window.name(),
            window.span(),
            base.run_id
        )));
    }
    tracing::info!(window = %window.name(), seq, run = run_id, "window recorded in the chain");
    Ok(record)
}

/// Loads every pending shard of the window with in-process loaders.
async fn apply_here(client: &Client, ctx: &LoadContext, request: &CatchUpRequest) -> Result<()> {
    let shards = ledger::get_shards(client, &ctx.run.run_id).await?;
    let tasks = pending_tasks(&ctx.run.run_id, &shards);
    let workers = request
        .workers
        .unwrap_or(
            request
                .settings
                .load
                .workers_for(ctx.target.kind == TargetKind::Postgres),
        )
        .max(1);
    let pool = PoolSettings::in_process(
        &request.target_url,
        workers,
        request.settings.load.connect_attempts,
    );
    let mut ctx = ctx.clone();
    ctx.progress = Arc::new(Progress::default());
    let errors = run_pool(
        Arc::new(RunContexts::single(ctx)),
        Arc::new(MemoryQueue::new(tasks)),
        pool,
    )
    .await;
    for error in errors {
        tracing::error!(shard = %error.shard_id, error = %error.error, "a window's shard could not be applied");
    }
    Ok(())
}

/// Submits the window's shards to the queue and waits until they settle.
async fn apply_through_fleet(
    client: &Client,
    queue: &SqsQueue,
    run_id: &str,
    interval: Duration,
) -> Result<()> {
    let submitted = crate::fleet::submit(client, queue, run_id).await?;
    tracing::info!(
        run = run_id,
        sent = submitted.sent,
        "window submitted to the fleet"
    );
    loop {
        let run = ledger::get_run(client, run_id)
            .await?
            .ok_or_else(|| CoordinatorError::Invalid(format!("run {run_id} vanished")))?;
        let now = crate::fleet::status(client, &run, Some(queue), None).await?;
        if now.complete() || now.stuck() {
            return Ok(());
        }
        tracing::info!(
            run = run_id,
            done = now.shards_done,
            total = now.shards_total,
            "waiting for the fleet"
        );
        tokio::time::sleep(interval).await;
    }
}

async fn count_into(client: &Client, run_id: &str, line: &mut WindowLine) -> Result<()> {
    for shard in ledger::get_shards(client, run_id).await? {
        line.applied += shard.loaded_rows;
        line.rejected += shard.rejected_rows;
        line.filtered += shard.filtered_rows;
    }
    Ok(())
}

/// The end of a window: deferred records retried, every shard reconciled, rejects within the
/// limit; the window (and its run) recorded complete, or failed with its problems.
async fn finish_window(
    client: &Client,
    run: &RunRecord,
    ctx: &LoadContext,
    kind: TargetKind,
    line: &mut WindowLine,
) -> Result<()> {
    let shards = ledger::get_shards(client, &run.run_id).await?;
    for shard in &shards {
        if shard.state != ferry_ledger::shard_state::DONE {
            line.problems.push(format!(
                "shard {} ({}) is {}{}",
                shard.shard_id,
                shard.data_key,
                shard.state,
                shard
                    .error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
    }
    if line.problems.is_empty() {
        line.deferred =
            ferry_worker::sink::deferred::resolve_deferred(client, run, &ctx.encoder, kind).await?;
        for shard in ledger::get_shards(client, &run.run_id).await? {
            if !shard.reconciled() {
                line.problems.push(format!(
                    "shard {} does not reconcile: {} applied + {} rejected + {} filtered against {} records in the manifest",
                    shard.shard_id,
                    shard.loaded_rows,
                    shard.rejected_rows,
                    shard.filtered_rows,
                    shard.item_count.map(|n| n.to_string()).unwrap_or_else(|| "?".into())
                ));
            }
        }
    }
    count_into(client, &run.run_id, line).await?;
    if line.problems.is_empty() && line.rejected > run.max_rejects {
        line.problems.push(format!(
            "{} records rejected, over load.max_rejects = {} (see ferry.rejects; raise the limit and run catch-up again to accept them)",
            line.rejected, run.max_rejects
        ));
    }
    let (state, run_state_now) = if line.problems.is_empty() {
        line.outcome = "applied".into();
        (window_state::COMPLETE, run_state::COMPLETE)
    } else {
        line.outcome = "failed".into();
        (window_state::FAILED, run_state::FAILED)
    };
    windows::set_window_state(client, &run.run_id, state).await?;
    let report = serde_json::to_string(line).unwrap_or_default();
    ledger::finish_run(client, &run.run_id, run_state_now, &report).await?;
    Ok(())
}
