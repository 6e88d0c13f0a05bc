//! `ferry-worker`: loads shards into the target, from an SQS queue (the fleet) or from a planned
//! run's pending shards in the ledger (`--run-id`, no queue).
//!
//! Queue mode is a long-running consumer: it holds up to `--workers` shards at once, renews their
//! visibility while they load, deletes a message only after its shard's last commit, and exits once
//! the queue has been empty for `queue.idle_exit_secs` (a Kubernetes Job or an AWS Batch array
//! job), or never with `--poll-forever` (a Deployment).
//!
//! On SIGTERM or SIGINT it stops receiving, lets each current chunk commit or roll back, returns
//! its unfinished shards to the queue, and exits 0. Exit 1 means a shard could not be loaded for a
//! reason outside its data (the target was unreachable); data failures are in the ledger and, in
//! queue mode, end in the dead-letter queue.
//!
//! Metrics: `--metrics-addr` serves Prometheus `/metrics` while it loads, `--pushgateway-url`
//! pushes the final values when it exits (see [`ferry_worker::metrics`]).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use ferry_ledger::runs as ledger;
use ferry_shared::queue::{MemoryQueue, WorkQueue};
use ferry_shared::sqs::SqsQueue;
use ferry_worker::pool::{connect_with_retry, pending_tasks, run_pool, PoolSettings, RunContexts};
use ferry_worker::sink::LoadContext;
use ferry_worker::target::{Target, TargetKind};

#[derive(Debug, Parser)]
#[command(
    name = "ferry-worker",
    version,
    about = "Load shards of planned Ferry runs: from an SQS queue, or a run's pending shards"
)]
struct Args {
    /// Target database URL (postgres://user@host:port/db); for a Parquet run, its ledger's
    /// (`--ledger`).
    #[arg(long, visible_alias = "ledger", env = "FERRY_TARGET__URL")]
    target: String,
    /// The SQS queue to consume (default: queue.url); the fleet mode.
    #[arg(long)]
    queue_url: Option<String>,
    /// Without a queue: load this run's pending shards from the ledger, then exit.
    #[arg(long)]
    run_id: Option<String>,
    /// Without a queue: the export, when it is not where the ledger says.
    #[arg(long)]
    export: Option<String>,
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Shards held and loaded at once.
    #[arg(long)]
    workers: Option<usize>,
    /// Seconds of empty queue before exiting (default: queue.idle_exit_secs).
    #[arg(long)]
    idle_exit: Option<u64>,
    /// Keep polling an empty queue (default: queue.poll_forever).
    #[arg(long)]
    poll_forever: bool,
    /// Serve Prometheus metrics on this address while loading, e.g. 0.0.0.0:9464 (default:
    /// metrics.addr).
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Push the final metrics to this Pushgateway when exiting, e.g. http://pushgateway:9091
    /// (default: metrics.pushgateway_url).
    #[arg(long)]
    pushgateway_url: Option<String>,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    log_format: ferry_shared::telemetry::LogFormat,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    ferry_shared::telemetry::init(args.log_format);
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            // Whatever the error quotes, no URL's password (the last line of defence).
            let text = ferry_shared::redact::text(&ferry_worker::chain_text(e.as_ref()));
            eprintln!("ferry-worker: {text}");
            ExitCode::from(2)
        }
    }
}

/// Sets `stop` on SIGTERM or SIGINT.
fn stop_on_signals(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "stopping: finishing current chunks and returning shards to the queue"
        );
        stop.store(true, Ordering::Relaxed);
    });
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let mut settings = ferry_shared::config::load_settings(args.config.as_deref())?;
    ferry_worker::sink::parquet::set_aws_settings(settings.aws.clone());
    ferry_worker::conn::configure(ferry_worker::conn::ConnectOptions::from_settings(
        &settings,
    )?);
    ferry_worker::redact::configure(settings.load.reject_lines);
    if let Some(addr) = args.metrics_addr {
        settings.metrics.addr = Some(addr);
    }
    if let Some(url) = &args.pushgateway_url {
        settings.metrics.pushgateway_url = Some(url.clone());
    }
    // A URL that does not parse cannot start (exit 2); a database that stays unreachable after
    // the retries is a reason outside the data (exit 1: an orchestrator retries the job).
    ferry_worker::conn::TargetSpec::parse(&args.target, &ferry_worker::conn::options())
        .with_context(|| "--target is not a usable database URL".to_string())?;
    let client = match connect_with_retry(&args.target, settings.load.connect_attempts).await {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot reach the target");
            eprintln!("ferry-worker: {e}");
            return Ok(false);
        }
    };
    let target = Target::detect(&client, settings.load.copy_format).await?;
    let workers = args
        .workers
        .unwrap_or(
            settings
                .load
                .workers_for(target.kind == TargetKind::Postgres),
        )
        .max(1);

    let (contexts, queue, pool): (RunContexts, Arc<dyn WorkQueue>, PoolSettings) = match (
        args.queue_url.clone().or(settings.queue.url.clone()),
        &args.run_id,
    ) {
        (Some(url), _) => {
            let queue = SqsQueue::connect(&url, &settings.aws, &settings.queue).await;
            // A queue bound to another target: exit 2 before receiving anything (every receive
            // counts towards that target's dead-letter queue).
            queue
                .check_target(
                    ledger::target_token(&client)
                        .await
                        .ok()
                        .flatten()
                        .as_deref(),
                )
                .await?;
            let pool = PoolSettings {
                target_url: args.target.clone(),
                workers,
                attempts: settings.load.connect_attempts,
                idle_exit: args
                    .idle_exit
                    .map(Duration::from_secs)
                    .unwrap_or(settings.queue.idle_exit),
                poll_forever: args.poll_forever || settings.queue.poll_forever,
                // The holder renews its visibility while it loads; if it dies, its message is back
                // within one visibility timeout. Looking again sooner would only spend receives,
                // which count towards the dead-letter queue.
                lost_race_delay: settings.queue.visibility_timeout,
                progress_timeout: settings.load.progress_timeout,
            };
            tracing::info!(queue = %url, workers, target = ?target.kind, "worker consuming the queue");
            let contexts = RunContexts::from_ledger(
                settings.load.clone(),
                settings.aws.clone(),
                target,
                &args.target,
            );
            (contexts, Arc::new(queue), pool)
        }
        (None, Some(run_id)) => {
            let Some(run) = ledger::get_run(&client, run_id).await? else {
                bail!("run {run_id} is not in the ledger of the target: plan it first");
            };
            let location = args
                .export
                .clone()
                .unwrap_or_else(|| run.export_location.clone());
            let export = ferry_shared::store::open_export(&location, &settings.aws)
                .await
                .with_context(|| format!("export {location}"))?;
            let shards = ledger::get_shards(&client, &run.run_id).await?;
            let tasks = pending_tasks(&run.run_id, &shards);
            tracing::info!(run = %run.run_id, pending = tasks.len(), workers, "worker starting");
            let ctx = LoadContext::new(run, export.store, &settings.load, target, &args.target)?;
            let pool =
                PoolSettings::in_process(&args.target, workers, settings.load.connect_attempts);
            (
                RunContexts::single(ctx),
                Arc::new(MemoryQueue::new(tasks)),
                pool,
            )
        }
        (None, None) => bail!(
            "nothing to do: pass --queue-url (or set FERRY_QUEUE__URL) for the fleet, or --run-id"
        ),
    };
    let exporter = ferry_worker::metrics::Exporter::start(
        &settings.metrics,
        contexts.progress.clone(),
        "ferry-worker",
        "ferry-worker",
    )
    .await?;
    stop_on_signals(contexts.stop.clone())?;
    let errors = run_pool(Arc::new(contexts), queue, pool).await;
    exporter.finish().await;
    for error in &errors {
        eprintln!("ferry-worker: shard {}: {}", error.shard_id, error.error);
    }
    tracing::info!(errors = errors.len(), "worker exits");
    Ok(errors.is_empty())
}
