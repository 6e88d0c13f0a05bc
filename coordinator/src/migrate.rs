//! `migrate`: the single-machine path. Plan (or resume) the run, load every pending shard with N
//! in-process workers fed by an in-memory queue, then [`finalize`](crate::finalize) it, as the
//! fleet's `finalize` command does, so both paths write the same report. The decode, load and
//! checkpoint code is the workers' own; only the queue is in-process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_ledger::run_state;
use ferry_ledger::runs as ledger;
use ferry_shared::queue::MemoryQueue;
use ferry_worker::pool::{pending_tasks, run_pool, PoolSettings, RunContexts};
use ferry_worker::progress::{Progress, RunSample};
use ferry_worker::sink::LoadContext;
use indicatif::{HumanBytes, HumanCount, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::finalize::{finalize, EndSteps};
use crate::plan::{plan, PlanRequest};
use crate::report::{build_report, Report, ReportContext};
use crate::Result;

/// A migrate request.
#[derive(Clone, Debug)]
pub struct MigrateRequest {
    /// What to plan.
    pub plan: PlanRequest,
    /// The target's URL.
    pub target_url: String,
    /// Concurrent shard loaders (default from the config).
    pub workers: Option<usize>,
    /// Accept a run without a verified manifest.
    pub allow_unverified: bool,
    /// Draw a progress bar (on a terminal).
    pub progress_bar: bool,
    /// Metrics are served or pushed: keep the run's ledger sample fresh for them.
    pub live_metrics: bool,
}

/// Runs the whole migration and returns its report.
pub async fn migrate(request: MigrateRequest) -> Result<Report> {
    migrate_observed(request, Arc::new(Progress::default())).await
}

/// [`migrate`], counting its loading into `progress` (which the caller may serve as metrics).
pub async fn migrate_observed(request: MigrateRequest, progress: Arc<Progress>) -> Result<Report> {
    let settings = &request.plan.settings;
    // A wrong export path is the user's most likely mistake: say so before touching the target.
    check_local_export(&request.plan.export)?;
    let mut client = ferry_worker::conn::control(&request.target_url).await?;
    let planning = phase_line(
        request.progress_bar,
        "plan: reading the export's manifest, planning the run",
    );
    let plan = plan(&mut client, &request.plan).await;
    end_phase(planning);
    let plan = plan?;
    let run = plan.run.clone();
    let mut context = ReportContext {
        load_path: Some(plan.target.describe()),
        allow_unverified: request.allow_unverified,
        count_table_rows: true,
        notes: plan.listing.warnings.clone(),
        ..Default::default()
    };
    if run.state == run_state::COMPLETE {
        context.already_complete = true;
        return build_report(&client, &run, &context).await;
    }

    let shards = ledger::get_shards(&client, &run.run_id).await?;
    let tasks = pending_tasks(&run.run_id, &shards);
    let committed_items: u64 = shards
        .iter()
        .map(|s| s.loaded_rows + s.rejected_rows + s.filtered_rows)
        .sum();
    let committed_rejects: u64 = shards.iter().map(|s| s.rejected_rows).sum();
    let parquet = plan.target.load_path == ferry_worker::target::LoadPath::Parquet;
    // Parquet files are encoded on this machine's cores, like PostgreSQL's concurrent COPYs.
    let concurrent_copy_helps =
        parquet || plan.target.kind == ferry_worker::target::TargetKind::Postgres;
    let workers = request
        .workers
        .unwrap_or(settings.load.workers_for(concurrent_copy_helps))
        .max(1);
    tracing::info!(
        run = %run.run_id,
        table = %run.target_table,
        shards = shards.len(),
        pending = tasks.len(),
        workers,
        chunk_lines = run.chunk_lines,
        "loading"
    );
    let mut ctx = LoadContext::new(
        run.clone(),
        plan.store.clone(),
        &settings.load,
        plan.target.clone(),
        &request.target_url,
    )?;
    ctx.progress = progress;
    // The path the run loads with (recorded when it was planned).
    context.load_path = Some(ctx.target.describe());
    let total_items = run.manifest_items.unwrap_or(0);
    let total_bytes = plan.listing.total_bytes();
    let finished = Arc::new(AtomicBool::new(false));
    // The display's own ledger connection (a sample every second; none if it cannot open one).
    let display_ledger = ferry_worker::conn::control(&request.target_url)
        .await
        .ok()
        .map(|client| (client, run.clone()));
    let watcher = tokio::spawn(watch(Watched {
        ledger: display_ledger,
        progress: ctx.progress.clone(),
        stop: ctx.stop.clone(),
        finished: finished.clone(),
        committed_items,
        committed_rejects,
        max_rejects: run.max_rejects,
        total_items,
        total_bytes,
        draw: request.progress_bar,
        metrics: request.live_metrics,
    }));
    let started = Instant::now();
    let pool =
        PoolSettings::in_process(&request.target_url, workers, settings.load.connect_attempts);
    let contexts = Arc::new(RunContexts::single(ctx.clone()));
    let errors = run_pool(contexts, Arc::new(MemoryQueue::new(tasks)), pool).await;
    let elapsed = started.elapsed();
    finished.store(true, Ordering::Relaxed);
    let _ = watcher.await;

    context.elapsed_seconds = Some(elapsed.as_secs_f64());
    context.items_this_command = ctx.progress.items.load(Ordering::Relaxed);
    context.load_errors = errors
        .iter()
        .map(|e| format!("shard {}: {}", e.shard_id, e.error))
        .collect();
    let ending = phase_line(request.progress_bar, "reconciling every shard");
    let steps = EndSteps::new(settings, plan.target.clone())
        .with_target_url(&request.target_url)
        .with_phase(ending.clone());
    let report = finalize(&client, &run, &context, &steps).await;
    end_phase(ending);
    let report = report?;
    if parquet {
        seal_dataset(&client, &run, report.verified()).await?;
    }
    Ok(report)
}

/// A Parquet run's end: stale files removed, each table's `_manifest.json` written.
pub async fn seal_dataset(
    client: &tokio_postgres::Client,
    run: &ferry_ledger::RunRecord,
    verified: bool,
) -> Result<()> {
    let tables = ferry_worker::sink::run_tables(&run.schema);
    let sealed = ferry_worker::sink::parquet::seal(client, run, &tables, verified).await?;
    for (table, files, rows, bytes) in &sealed.tables {
        tracing::info!(run = %run.run_id, table = %table, files, rows, bytes, complete = verified, "parquet dataset sealed: _manifest.json written");
    }
    Ok(())
}

/// Checks a local export folder before anything else happens (S3 is checked when it is listed).
pub fn check_local_export(export: &str) -> Result<()> {
    if !ferry_shared::store::is_s3(export) {
        ferry_shared::store::LocalStore::for_export_path(std::path::Path::new(export))?;
    }
    Ok(())
}

/// The terminal's one-line display of a phase without a bar (plan, then post-load and verify),
/// with log lines printed above it; `None` without a terminal.
fn phase_line(draw: bool, first: &str) -> Option<ProgressBar> {
    if !draw {
        return None;
    }
    let line = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    line.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    line.set_message(first.to_string());
    line.enable_steady_tick(Duration::from_millis(120));
    logs_above(&line);
    Some(line)
}

/// Prints log lines above `display` while it is on screen, never through it (until
/// `set_around_bar(None)`).
pub(crate) fn logs_above(display: &ProgressBar) {
    let around = display.clone();
    ferry_shared::telemetry::set_around_bar(Some(Arc::new(move |write: &mut dyn FnMut()| {
        around.suspend(&mut *write)
    })));
}

/// Clears a phase's line (and stops routing log lines around it).
fn end_phase(line: Option<ProgressBar>) {
    if let Some(line) = line {
        ferry_shared::telemetry::set_around_bar(None);
        line.finish_and_clear();
    }
}

/// How often the progress bar samples the ledger.
const LEDGER_SAMPLE: Duration = Duration::from_secs(1);
/// How often a run without a terminal logs a progress line.
const PROGRESS_LOG: Duration = Duration::from_secs(10);

/// What the progress display shows: the run's committed counts as the ledger's last sample gave
/// them ([`crate::fleet::status`], the code `status` uses, stored in [`Progress::run_sample`]
/// where the metrics read it too), so `migrate`'s bar, `status --watch` and the `ferry_run_*`
/// metrics show the same figures. Until a sample exists (or without a ledger connection of its
/// own), this process's committed counters stand in, without the shards row.
fn shown(progress: &Progress, committed_items: u64, committed_rejects: u64) -> (RunSample, bool) {
    match progress.run_sample() {
        Some(sample) => (sample, true),
        None => (
            RunSample {
                items_committed: committed_items + progress.items.load(Ordering::Relaxed),
                rows_rejected: committed_rejects + progress.rejects.load(Ordering::Relaxed),
                // The process counts no spills; only the ledger's sample shows them.
                bytes_committed: progress.bytes.load(Ordering::Relaxed),
                ..RunSample::default()
            },
            false,
        ),
    }
}

/// What [`watch`] watches.
struct Watched {
    /// Its own ledger connection and the run, if it could open one.
    ledger: Option<(tokio_postgres::Client, ferry_ledger::RunRecord)>,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
    finished: Arc<AtomicBool>,
    committed_items: u64,
    committed_rejects: u64,
    max_rejects: u64,
    total_items: u64,
    total_bytes: u64,
    /// Draw the bar (a terminal).
    draw: bool,
    /// Metrics are served or pushed: sample the ledger as often as the bar does.
    metrics: bool,
}

/// Reads the ledger into `watched.progress`'s run sample (a failed read keeps the last one).
async fn sample_ledger(watched: &Watched) {
    if let Some((client, run)) = &watched.ledger {
        match crate::fleet::status(client, run, None, None).await {
            Ok(status) => watched.progress.set_run_sample(status.sample()),
            Err(e) => {
                tracing::debug!(error = %e, "cannot sample the ledger for the progress display")
            }
        }
    }
}

/// Draws the progress bar (committed items, bytes and shards against the run's totals), logs a
/// progress line every [`PROGRESS_LOG`] when no terminal is attached, and stops the workers once
/// rejects pass `max_rejects`. With metrics on, its last act is one more ledger sample, so the
/// metrics pushed at exit hold the load's final counts.
async fn watch(watched: Watched) {
    let Watched {
        ref progress,
        committed_items,
        committed_rejects,
        total_items,
        total_bytes,
        draw,
        ..
    } = watched;
    let bar = if draw {
        ProgressBar::with_draw_target(Some(total_items), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    if draw {
        logs_above(&bar);
    }
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] load {wide_bar} {human_pos}/{human_len} items, ETA {eta}\n  {msg}",
        )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut last_log = Instant::now();
    let mut last_sample: Option<Instant> = None;
    // A bar or the metrics sample every second; otherwise only the progress line reads it.
    let every = if draw || watched.metrics {
        LEDGER_SAMPLE
    } else {
        PROGRESS_LOG
    };
    loop {
        if last_sample.is_none_or(|at| at.elapsed() >= every) {
            last_sample = Some(Instant::now());
            sample_ledger(&watched).await;
        }
        let (shown, sampled) = shown(progress, committed_items, committed_rejects);
        bar.set_position(shown.items_committed);
        // The rate of this command, in whole items per second.
        let rate = shown.items_committed.saturating_sub(committed_items) as f64
            / started.elapsed().as_secs_f64().max(1e-3);
        // Three short rows (the bar, the rates, the shards), so an 80-column terminal holds them.
        let shards = if sampled {
            format!(
                "\n  shards: {} done, {} loading, {} waiting, {} failed",
                shown.shards_done, shown.shards_loading, shown.shards_waiting, shown.shards_failed
            )
        } else {
            String::new()
        };
        bar.set_message(format!(
            "{} items/s, {} of {} committed, {} rejected, {} spilled{shards}",
            HumanCount(rate.round() as u64),
            HumanBytes(shown.bytes_committed),
            HumanBytes(total_bytes),
            HumanCount(shown.rows_rejected),
            HumanCount(shown.values_spilled)
        ));
        // The stop decision counts this process's rejects as they happen, not the sample.
        let rejects = committed_rejects + progress.rejects.load(Ordering::Relaxed);
        if rejects > watched.max_rejects && !watched.stop.swap(true, Ordering::Relaxed) {
            tracing::error!(
                rejects,
                max_rejects = watched.max_rejects,
                "too many rejected lines: stopping after the current chunks"
            );
        }
        if bar.is_hidden() && last_log.elapsed() >= PROGRESS_LOG {
            last_log = Instant::now();
            tracing::info!(
                items = shown.items_committed,
                total_items,
                bytes = shown.bytes_committed,
                total_bytes,
                rejected = shown.rows_rejected,
                shards_done = shown.shards_done,
                shards_loading = shown.shards_loading,
                shards_waiting = shown.shards_waiting,
                shards_failed = shown.shards_failed,
                items_per_second = rate.round() as u64,
                elapsed_s = started.elapsed().as_secs(),
                "progress"
            );
        }
        if watched.finished.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if watched.metrics {
        sample_ledger(&watched).await;
    }
    ferry_shared::telemetry::set_around_bar(None);
    bar.finish_and_clear();
}
