//! `ferry-worker`: loads the pending shards of a planned run, with N concurrent loaders.
//!
//! The run (its schema, chunk size and shards) comes from the ledger in the target database, so
//! any number of worker processes can load one run at once; the ledger's conditional checkpoint
//! keeps every item loaded exactly once. (The SQS-fed fleet worker builds on this.)

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use ferry_shared::queue::MemoryQueue;
use ferry_shared::store::LocalStore;
use ferry_worker::ledger;
use ferry_worker::load::LoadContext;
use ferry_worker::pool::{pending_tasks, run_pool, PoolSettings};

#[derive(Debug, Parser)]
#[command(
    name = "ferry-worker",
    version,
    about = "Load the pending shards of a planned Ferry run"
)]
struct Args {
    /// Target database URL (postgres://user@host:port/db).
    #[arg(long, env = "FERRY_TARGET__URL")]
    target: String,
    /// The run to work on (planned by `ferry-coordinator`).
    #[arg(long)]
    run_id: String,
    /// The export folder, when it is not where the ledger says.
    #[arg(long)]
    export: Option<std::path::PathBuf>,
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Concurrent shard loaders.
    #[arg(long)]
    workers: Option<usize>,
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
            eprintln!("ferry-worker: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let settings = ferry_shared::config::load_settings(args.config.as_deref())?;
    let client = ledger::connect(&args.target).await?;
    let Some(run) = ledger::get_run(&client, &args.run_id).await? else {
        bail!(
            "run {} is not in the ledger of the target: plan it first",
            args.run_id
        );
    };
    let export_path = args
        .export
        .clone()
        .unwrap_or_else(|| run.export_location.clone().into());
    let (store, _) = LocalStore::for_export_path(&export_path)
        .with_context(|| format!("export {}", export_path.display()))?;
    let shards = ledger::get_shards(&client, &run.run_id).await?;
    let tasks = pending_tasks(&run.run_id, &shards);
    tracing::info!(run = %run.run_id, pending = tasks.len(), "worker starting");
    let target = ferry_worker::target::Target::detect(&client, settings.load.copy_format).await?;
    let ctx = LoadContext::new(run, Arc::new(store), &settings.load, target, &args.target);
    let pool = PoolSettings {
        target_url: args.target.clone(),
        workers: args.workers.unwrap_or(
            settings
                .load
                .workers_for(ctx.target.kind == ferry_worker::target::TargetKind::Postgres),
        ),
        attempts: settings.load.connect_attempts,
    };
    let errors = run_pool(ctx, Arc::new(MemoryQueue::new(tasks)), pool).await;
    for error in &errors {
        eprintln!("ferry-worker: shard {}: {}", error.shard_id, error.error);
    }
    Ok(errors.is_empty())
}
