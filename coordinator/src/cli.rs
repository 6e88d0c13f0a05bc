//! The `ferry-coordinator` command line.
//!
//! Commands, in the order a cluster run uses them: `queue create`, `plan`, `submit`, `status`,
//! `finalize`; and `migrate`, which is plan + in-process workers + finalize on one machine.
//! `probe` measures this machine, the target and the source for `plan --dry-run`'s estimate.
//!
//! Exit codes an orchestrator can act on: 0 the run is complete and verified; 1 it is not (the last
//! line says why); 2 the request could not be carried out (bad arguments, configuration, export,
//! queue or target).
//!
//! For schedulers that run one command per step with no shell (Kubernetes Jobs, Argo, Batch):
//! `plan --submit` plans and queues the run in one command, and `finalize --wait` waits until
//! every shard is done (or failed for good) before it finalizes.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::{Args, Parser, Subcommand};
use ferry_ledger::runs as ledger;
use ferry_shared::config::{KeyAttribute, Settings};
use ferry_shared::telemetry::{LogFormat, Verbosity};

use crate::embedded::EmbeddedHelios;
use crate::finalize::{finalize, verify, EndSteps};
use crate::fleet::{status, submit, FleetStatus};
use crate::migrate::{migrate_observed, MigrateRequest};
use crate::plan::open_listing;
use crate::plan::{plan, PlanRequest};
use crate::report::{Report, ReportContext};
use ferry_shared::sqs::SqsQueue;

#[derive(Debug, Parser)]
#[command(
    name = "ferry-coordinator",
    version,
    about = "Migrate DynamoDB exports into HeliosDB (its own embedded server by default) or PostgreSQL, exactly once"
)]
struct Cli {
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text")]
    log_format: LogFormat,
    /// Log every shard's start too (left out by default in a terminal, where the progress bar
    /// shows the run).
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    verbose: bool,
    /// Log only warnings and errors, with no progress display: the result is all that is printed.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Plan, load and verify a whole export on this machine (resumes an interrupted run).
    Migrate(MigrateArgs),
    /// Plan a run: infer the schema, prepare the table, record the run and its shards.
    Plan(PlanCommandArgs),
    /// Manage the SQS shard queue.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Send every shard of a planned run that is not done to the queue (safe to repeat).
    Submit(SubmitArgs),
    /// Show a run's progress: the ledger against the manifest, the queue and its dead letters.
    Status(StatusArgs),
    /// Reconcile every shard, run the post-load steps and verification, and write the report.
    Finalize(FinalizeArgs),
    /// Run the verification queries (row counts, the config's [[verify]]) and record the results.
    Verify(FinalizeArgs),
    /// Start shards over: remove every row they loaded (by provenance) and their rejects, so they
    /// load again from the start (after a data file changed, for instance).
    Reset(ResetArgs),
    /// Apply DynamoDB incremental exports (windows [from, to)) in order to the tables a full run
    /// loaded, on this machine or through the queue and the fleet: the cut-over's catch-up.
    CatchUp(CatchUpArgs),
    /// Write a run's tables, as they are now, back as a DynamoDB import (gzip DynamoDB JSON lines
    /// for ImportTable), locally or to S3: the migration's rollback.
    ExportBack(ExportBackArgs),
    /// Measure the decode rate per core on this machine, the target's ingest ceiling (COPY into a
    /// scratch table through 1, 2, 4, … connections, dropped after) and, with --export, the
    /// source's read rate; record them in the target's ledger for `plan --dry-run`.
    Probe(ProbeArgs),
    /// Profile an export before a run: every attribute's types, presence, sizes and numbers, the
    /// key's uniqueness, a single-table design's entities and references, and what a run would
    /// reject, spill or do slowly (a sample, or every item with --full).
    Assess(AssessArgs),
}

#[derive(Debug, Args)]
struct AssessArgs {
    /// The export: a folder or s3://bucket/prefix/ (JSON or Ion, as a run reads it).
    #[arg(long)]
    export: String,
    /// Key attributes, e.g. PK,SK (default: mapping.key, else one proposed from a sample).
    #[arg(long)]
    key: Option<String>,
    /// Items to sample, spread over the first data files.
    #[arg(long, default_value_t = 100_000, conflicts_with = "full")]
    sample: usize,
    /// Read every item of every data file.
    #[arg(long)]
    full: bool,
    /// Data files read at once (default: the machine's cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the assessment as JSON.
    #[arg(long)]
    json: bool,
    /// Write the draft configs and DDL here: ferry-postgres.toml, ferry-heliosdb.toml,
    /// schema-postgres.sql, schema-heliosdb.sql.
    #[arg(long)]
    draft: Option<PathBuf>,
    /// Write the report as one self-contained HTML page (charts inline, nothing fetched).
    #[arg(long)]
    html: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ProbeArgs {
    /// The target database (or FERRY_TARGET__URL, or [target] url).
    #[arg(long)]
    target: Option<String>,
    /// An export to measure with: its first items are decoded, its rows' width copied, its data
    /// files read (a folder or s3://bucket/prefix/).
    #[arg(long)]
    export: Option<String>,
    /// Key attributes of the export's items (default: mapping.key, else an attribute every
    /// sampled item has stands in).
    #[arg(long)]
    key: Option<String>,
    /// The most parallel COPY connections to measure through (default: probe.max_connections).
    #[arg(long)]
    max_connections: Option<usize>,
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the measurements as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ExportBackArgs {
    /// The database holding the run's tables and its ledger.
    #[arg(long)]
    target: Option<String>,
    /// The run whose tables are exported (its schema and routing say how rows become items).
    #[arg(long)]
    run_id: String,
    /// Where the import goes: a folder or s3://bucket/prefix/ (ImportTable reads `<output>/data/`).
    #[arg(long)]
    output: String,
    /// Items per import file, at most.
    #[arg(long, default_value_t = 500_000)]
    part_items: u64,
    /// Tables exported at once (default: load.workers, else 2).
    #[arg(long)]
    workers: Option<usize>,
    /// Remove the files an earlier export-back left in the output (its parts, their counts, its
    /// summary and attempt marker) before exporting; without it such an output is refused.
    #[arg(long)]
    replace: bool,
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct CatchUpArgs {
    /// An incremental export (…/AWSDynamoDB/<ExportId>/), or a folder or s3:// prefix holding
    /// several; repeat for more. Windows apply in time order; those already applied are skipped.
    #[arg(long, required = true)]
    export: Vec<String>,
    /// Target database URL (its ledger holds the full run).
    #[arg(long)]
    target: Option<String>,
    /// The full run the windows follow (default: the one full run of their table in the ledger).
    #[arg(long)]
    run_id: Option<String>,
    /// Loaders on this machine (default: load.workers).
    #[arg(long)]
    workers: Option<usize>,
    /// Apply through the fleet: each window's shards go to this queue (default: queue.url when
    /// --fleet is given), the next window only once this one is complete.
    #[arg(long)]
    queue_url: Option<String>,
    /// Use the configured queue (queue.url) and the fleet's workers.
    #[arg(long)]
    fleet: bool,
    /// Seconds between looks at the ledger while the fleet applies a window.
    #[arg(long, default_value_t = 5)]
    interval: u64,
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ResetArgs {
    /// Target database URL.
    #[arg(long)]
    target: Option<String>,
    /// The run.
    #[arg(long)]
    run_id: String,
    /// A shard to start over (its id or its data file's key); repeat for more.
    #[arg(long, required_unless_present = "failed")]
    shard: Vec<String>,
    /// Every failed shard of the run.
    #[arg(long, conflicts_with = "shard")]
    failed: bool,
    /// Reset a shard even while a chunk of it is marked in flight (ahead of its checkpoint):
    /// only when no worker is alive, since rows a live worker commits afterwards would stay.
    #[arg(long)]
    force: bool,
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// Create the shard queue and its dead-letter queue (`<name>-dlq`), or update their settings.
    Create(QueueCreateArgs),
}

#[derive(Debug, Args)]
struct QueueCreateArgs {
    /// The queue's name.
    #[arg(long)]
    name: String,
    /// The target the queue serves (default: target.url): the queue is tagged with its ledger's
    /// token, and workers and submits of any other target refuse it. Without a target the queue
    /// is left untagged.
    #[arg(long)]
    target: Option<String>,
    /// Receives of one shard before it moves to the dead-letter queue (default: queue.max_receive_count).
    #[arg(long)]
    max_receive_count: Option<u32>,
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct PlanCommandArgs {
    #[command(flatten)]
    plan: PlanArgs,
    /// Print the shards, their bytes and items, and a time estimate from the target's measured
    /// constants (its ledger's latest run and probe, read only) or the configuration's; touch
    /// nothing.
    #[arg(long)]
    dry_run: bool,
    /// Workers to estimate the time for (with --dry-run).
    #[arg(long)]
    workers: Option<usize>,
    /// Then send every shard that is not done to the queue (plan + submit in one command).
    #[arg(long, conflicts_with = "dry_run")]
    submit: bool,
    /// The queue for --submit (default: queue.url).
    #[arg(long, requires = "submit")]
    queue_url: Option<String>,
}

#[derive(Debug, Args)]
struct SubmitArgs {
    /// Target database URL (its ledger holds the run).
    #[arg(long)]
    target: Option<String>,
    /// The run.
    #[arg(long)]
    run_id: String,
    /// The queue's URL (default: queue.url).
    #[arg(long)]
    queue_url: Option<String>,
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// How the final report is shown and kept.
#[derive(Debug, Args)]
struct ReportArgs {
    /// Print the report as JSON (every shard, every problem).
    #[arg(long)]
    json: bool,
    /// List every shard and every problem in the printed report (by default only the shards
    /// that need attention, then one line for the rest).
    #[arg(long)]
    all: bool,
    /// Also write the whole report (every shard) to this file; `migrate` on the embedded
    /// default writes it into the data folder as `ferry-report-<run>.txt` unless this is given.
    #[arg(long)]
    report_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct FinalizeArgs {
    /// Target database URL.
    #[arg(long)]
    target: Option<String>,
    /// The run.
    #[arg(long)]
    run_id: String,
    /// Accept an export without a verified manifest.
    #[arg(long)]
    allow_unverified: bool,
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    report: ReportArgs,
    /// Wait until every shard is done, or failed with nothing left queued, before finalizing
    /// (for a finalize Job started beside the workers).
    #[arg(long)]
    wait: bool,
    /// The queue --wait watches for shards still waiting or in flight (default: queue.url).
    #[arg(long)]
    queue_url: Option<String>,
    /// Seconds between --wait samples.
    #[arg(long, default_value_t = 10)]
    interval: u64,
    /// Also prove every value: each row turned into its item and compared, per chunk, with the
    /// digest its load recorded; the items that differ are named (`verify --deep`).
    #[arg(long)]
    deep: bool,
    /// With --deep: compare this share of the chunks (a percentage, 0.1 to 100; `10` or `10%`).
    #[arg(long, requires = "deep", value_parser = parse_sample)]
    sample: Option<u32>,
    /// With --deep: tables verified at once.
    #[arg(long, requires = "deep", default_value_t = 2)]
    deep_workers: usize,
    /// Set by `verify`: run only the verification.
    #[arg(skip)]
    verify_only: bool,
}

/// A sample percentage (`10`, `2.5%`) as per mille of the chunks.
fn parse_sample(text: &str) -> std::result::Result<u32, String> {
    let number = text.trim().trim_end_matches('%');
    let percent: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a percentage (such as 10 or 2.5%)"))?;
    if !(0.1..=100.0).contains(&percent) {
        return Err(format!(
            "--sample {text} must be between 0.1 and 100 (percent)"
        ));
    }
    Ok((percent * 10.0).round() as u32)
}

#[derive(Debug, Args)]
struct PlanArgs {
    /// The export: a folder or s3://bucket/prefix (…/AWSDynamoDB/<ExportId>/, or a folder or
    /// prefix holding exactly one export).
    #[arg(long)]
    export: String,
    /// Target database URL, postgres://user@host:port/db (or FERRY_TARGET__URL, or [target] url).
    /// Without one, `migrate` starts its own HeliosDB with its data in ./ferry-data. With
    /// --parquet it holds only the run's ledger (`--ledger` says so).
    #[arg(long, visible_alias = "ledger")]
    target: Option<String>,
    /// Write a Parquet dataset here instead of database tables: a folder or s3://bucket/prefix/
    /// (or parquet.location); the ledger stays in the --target/--ledger database.
    #[arg(long)]
    parquet: Option<String>,
    /// Key attributes forming the primary key: pk[,sk], optionally typed (pk:S,sk:N).
    #[arg(long)]
    key: Option<String>,
    /// Target table (default: the export's table name).
    #[arg(long)]
    table: Option<String>,
    /// Load into a table that already holds rows.
    #[arg(long)]
    append: bool,
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run id (default: derived from the export, the table and the mapping).
    #[arg(long)]
    run_id: Option<String>,
}

#[derive(Debug, Args)]
struct MigrateArgs {
    #[command(flatten)]
    plan: PlanArgs,
    /// Shards loaded at once (default: load.workers, else cores + 1 on PostgreSQL and 2 on HeliosDB).
    #[arg(long)]
    workers: Option<usize>,
    /// Accept an export without a verified manifest.
    #[arg(long)]
    allow_unverified: bool,
    #[command(flatten)]
    report: ReportArgs,
    /// Serve Prometheus metrics on this address while loading, e.g. 0.0.0.0:9464 (default:
    /// metrics.addr).
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Push the final metrics to this Pushgateway when done (default: metrics.pushgateway_url).
    #[arg(long)]
    pushgateway_url: Option<String>,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// Target database URL.
    #[arg(long)]
    target: Option<String>,
    /// The run.
    #[arg(long)]
    run_id: String,
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The queue's URL, for its depth and dead letters (default: queue.url).
    #[arg(long)]
    queue_url: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Follow the run: print the status every --interval seconds until it is complete or stuck.
    #[arg(long)]
    watch: bool,
    /// Seconds between --watch samples.
    #[arg(long, default_value_t = 10)]
    interval: u64,
    /// With --watch: serve the run's counts as Prometheus metrics (the `ferry_run_*` gauges of
    /// each sample) on this address, e.g. 0.0.0.0:9465, for a fleet whose coordinator is not
    /// running while the workers load.
    #[arg(long, requires = "watch")]
    metrics_addr: Option<std::net::SocketAddr>,
}

/// Reads the configuration and applies its connection settings (TLS, password, timeouts) to
/// every connection this process opens to the target.
fn load_settings(file: Option<&std::path::Path>) -> anyhow::Result<Settings> {
    let settings = ferry_shared::config::load_settings(file)?;
    ferry_worker::conn::configure(ferry_worker::conn::ConnectOptions::from_settings(
        &settings,
    )?);
    ferry_worker::redact::configure(settings.load.reject_lines);
    Ok(settings)
}

fn queue_url(cli: Option<&String>, settings: &Settings) -> anyhow::Result<String> {
    cli.cloned().or_else(|| settings.queue.url.clone()).ok_or_else(|| {
        anyhow!("no queue: pass --queue-url (or set FERRY_QUEUE__URL, or [queue] url); `ferry-coordinator queue create` makes one")
    })
}

async fn open_queue(url: String, settings: &Settings) -> SqsQueue {
    SqsQueue::connect(&url, &settings.aws, &settings.queue).await
}

/// The queue named on the command line or in the config, if any.
async fn optional_queue(cli: Option<&String>, settings: &Settings) -> Option<SqsQueue> {
    match cli.cloned().or_else(|| settings.queue.url.clone()) {
        Some(url) => Some(open_queue(url, settings).await),
        None => None,
    }
}

/// The run as the ledger holds it.
async fn recorded_run(
    client: &tokio_postgres::Client,
    run_id: &str,
) -> anyhow::Result<ferry_ledger::RunRecord> {
    ledger::get_run(client, run_id)
        .await?
        .with_context(|| format!("run {run_id} is not in the ledger"))
}

fn target_url(cli: Option<&String>, settings: &Settings) -> anyhow::Result<String> {
    cli.cloned().or_else(|| settings.target_url.clone()).ok_or_else(|| {
        anyhow!("no target database: pass --target postgres://user@host:port/db (or set FERRY_TARGET__URL)")
    })
}

fn plan_request(args: &PlanArgs, mut settings: Settings) -> anyhow::Result<PlanRequest> {
    if let Some(location) = &args.parquet {
        settings.parquet.location = Some(location.clone());
    }
    let keys = match &args.key {
        Some(spec) => KeyAttribute::parse_list(spec)?,
        None => Vec::new(),
    };
    Ok(PlanRequest {
        export: args.export.clone(),
        keys,
        table: args.table.clone(),
        append: args.append,
        run_id: args.run_id.clone(),
        settings,
    })
}

/// Prints the report (short, whole with `--all`, or JSON) and writes the whole text to the report
/// file, when there is one; a file that cannot be written is a warning, not a lost run.
fn print_report(report: &Report, args: &ReportArgs, default_file: Option<PathBuf>) {
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
    } else if args.all {
        print!("{}", report.full_text());
    } else {
        print!("{}", report.to_text());
    }
    if let Some(path) = args.report_file.clone().or(default_file) {
        match std::fs::write(&path, report.full_text()) {
            Ok(()) => {
                if !args.json {
                    println!("report  {} (every shard)", path.display());
                }
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot write the report file")
            }
        }
    }
}

/// Runs the command line; returns the process exit code.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbosity = match (cli.verbose, cli.quiet) {
        (true, _) => Verbosity::Verbose,
        (_, true) => Verbosity::Quiet,
        _ => Verbosity::Normal,
    };
    // In a terminal `migrate` and `assess` draw a progress display (see `migrate::watch`), except
    // with `-q`;
    // other commands keep their per-shard lines.
    let bar = (matches!(cli.command, Command::Migrate(_) | Command::Assess(_))
        || matches!(&cli.command, Command::Verify(a) | Command::Finalize(a) if a.deep && !a.report.json))
        && std::io::stderr().is_terminal()
        && verbosity != Verbosity::Quiet;
    ferry_shared::telemetry::init_with(cli.log_format, verbosity, bar);
    match run(cli.command, bar).await {
        Ok(code) => code,
        Err(e) => {
            // Whatever the error quotes, no URL's password (the last line of defence).
            let text = ferry_shared::redact::text(&ferry_worker::chain_text(e.as_ref()));
            eprintln!("ferry: {text}");
            ExitCode::from(2)
        }
    }
}

fn verdict(report: &Report) -> ExitCode {
    if report.verified() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "ferry: run {} is not verified: {}",
            report.run_id,
            report.reason()
        );
        ExitCode::from(1)
    }
}

async fn run(command: Command, bar: bool) -> anyhow::Result<ExitCode> {
    let command = match command {
        Command::Verify(mut args) => {
            args.verify_only = true;
            Command::Verify(args)
        }
        other => other,
    };
    match command {
        Command::Migrate(args) => {
            let mut settings = load_settings(args.plan.config.as_deref())?;
            ferry_worker::sink::parquet::set_aws_settings(settings.aws.clone());
            if let Some(addr) = args.metrics_addr {
                settings.metrics.addr = Some(addr);
            }
            if let Some(url) = &args.pushgateway_url {
                settings.metrics.pushgateway_url = Some(url.clone());
            }
            let progress = std::sync::Arc::new(ferry_worker::progress::Progress::default());
            let exporter = ferry_worker::metrics::Exporter::start(
                &settings.metrics,
                progress.clone(),
                "ferry-migrate",
                "ferry-migrate",
            )
            .await?;
            // No target: the embedded default, a HeliosDB server of our own.
            let explicit = args
                .plan
                .target
                .clone()
                .or_else(|| settings.target_url.clone());
            let embedded = match explicit {
                Some(_) => None,
                None => {
                    // Check the export before starting a server for it.
                    crate::migrate::check_local_export(&args.plan.export)?;
                    Some(EmbeddedHelios::start(&settings.embedded).await?)
                }
            };
            let target_url = match &embedded {
                Some(server) => server.url(),
                None => target_url(args.plan.target.as_ref(), &settings)?,
            };
            let request = MigrateRequest {
                plan: plan_request(&args.plan, settings)?,
                target_url,
                workers: args.workers,
                allow_unverified: args.allow_unverified,
                progress_bar: bar,
                live_metrics: exporter.active(),
            };
            // SIGTERM or SIGINT stops the load (an open chunk rolls back or, committed, stays)
            // and, with it, the embedded server: nothing is left running.
            let stopped_by = {
                use tokio::signal::unix::{signal, SignalKind};
                let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
                let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
                async move {
                    tokio::select! {
                        _ = term.recv() => "SIGTERM",
                        _ = int.recv() => "SIGINT",
                    }
                }
            };
            let result = tokio::select! {
                result = migrate_observed(request, progress) => Ok(result),
                name = stopped_by => Err(name),
            };
            exporter.finish().await;
            let data_dir = embedded
                .as_ref()
                .map(|server| server.data_dir().to_path_buf());
            let connect_hint = match embedded {
                Some(server) => Some(server.stop().await),
                None => None,
            };
            let result = match result {
                Ok(result) => result,
                Err(signal) => {
                    tracing::warn!(
                        signal,
                        "migrate stopped; run the same command again to resume"
                    );
                    eprintln!(
                        "ferry: stopped by {signal}; committed chunks stay, and the same command resumes the run"
                    );
                    return Ok(ExitCode::from(1));
                }
            };
            let report = result?;
            // On the embedded default the run's folder keeps the whole report.
            let default_file =
                data_dir.map(|dir| dir.join(format!("ferry-report-{}.txt", report.run_id)));
            print_report(&report, &args.report, default_file);
            if let Some(hint) = connect_hint {
                eprintln!("{hint}");
            }
            Ok(verdict(&report))
        }
        Command::Plan(PlanCommandArgs {
            plan: args,
            dry_run: true,
            workers,
            ..
        }) => {
            let mut settings = load_settings(args.config.as_deref())?;
            if let Some(location) = &args.parquet {
                settings.parquet.location = Some(location.clone());
            }
            let (_, listing) = open_listing(&args.export, &settings).await?;
            let workers = workers.unwrap_or(settings.load.workers_for(true)).max(1);
            // The measured constants, read only; the embedded default is not started for it.
            let readings = match args.target.as_ref().or(settings.target_url.as_ref()) {
                Some(url) => crate::estimate::read_ledger(url).await,
                None => crate::estimate::Readings::without_ledger(
                    "no target given (--target or FERRY_TARGET__URL), so no ledger to read",
                ),
            };
            print!("{}", dry_run_text(&listing, workers, &settings, &readings));
            if settings.parquet.location.is_some() {
                print!("{}", parquet_dry_run_text(&listing, &args, &settings)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan(PlanCommandArgs {
            plan: args,
            submit: and_submit,
            queue_url: submit_queue,
            ..
        }) => {
            let settings = load_settings(args.config.as_deref())?;
            let target_url = target_url(args.target.as_ref(), &settings)?;
            // Check the queue's configuration before planning anything.
            let queue = if and_submit {
                let url = queue_url(submit_queue.as_ref(), &settings)?;
                Some(open_queue(url, &settings).await)
            } else {
                None
            };
            let request = plan_request(&args, settings)?;
            let mut client = ferry_worker::conn::control(&target_url).await?;
            let planned = plan(&mut client, &request).await?;
            println!("{}", planned.run.run_id);
            eprintln!(
                "{} run {}: table {:?}, {} shards, {} items, {} typed columns + {:?}",
                if planned.resumed {
                    "existing"
                } else {
                    "planned"
                },
                planned.run.run_id,
                planned.run.target_table,
                planned.listing.files.len(),
                planned
                    .run
                    .manifest_items
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "unknown".into()),
                planned.run.schema.columns.len(),
                planned.run.schema.overflow_column
            );
            if let Some(queue) = &queue {
                let submitted = submit(&client, queue, &planned.run.run_id).await?;
                eprintln!(
                    "submitted {} shards of run {} to {} ({} already done)",
                    submitted.sent,
                    planned.run.run_id,
                    queue.url(),
                    submitted.already_done
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Queue(QueueCommand::Create(args)) => {
            let mut settings = load_settings(args.config.as_deref())?;
            if let Some(count) = args.max_receive_count {
                if count == 0 {
                    anyhow::bail!("--max-receive-count must be at least 1");
                }
                settings.queue.max_receive_count = count;
            }
            let config = ferry_shared::aws::sdk_config(&settings.aws).await;
            let client = ferry_shared::aws::sqs_client(&config);
            let created = SqsQueue::create(&client, &args.name, &settings.queue).await?;
            match args.target.clone().or_else(|| settings.target_url.clone()) {
                Some(target) => {
                    let db = ferry_worker::conn::control(&target).await?;
                    ledger::ensure_ledger(&db).await?;
                    let token = ledger::ensure_target_token(&db).await?;
                    SqsQueue::new(client.clone(), created.url.clone(), settings.queue.clone())
                        .bind_to_target(&token)
                        .await?;
                }
                None => tracing::warn!(
                    queue = %created.url,
                    "the queue is bound to no target (no --target): workers of any target may receive its messages"
                ),
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                println!("{}", created.url);
                eprintln!(
                    "queue {} ready; dead-letter queue {} after {} receives",
                    created.url, created.dead_letter_url, created.max_receive_count
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit(args) => {
            let settings = load_settings(args.config.as_deref())?;
            let target_url = target_url(args.target.as_ref(), &settings)?;
            let queue = open_queue(queue_url(args.queue_url.as_ref(), &settings)?, &settings).await;
            let client = ferry_worker::conn::control(&target_url).await?;
            ledger::get_run(&client, &args.run_id)
                .await?
                .with_context(|| {
                    format!("run {} is not in the ledger: plan it first", args.run_id)
                })?;
            let submitted = submit(&client, &queue, &args.run_id).await?;
            println!(
                "submitted {} shards of run {} to {} ({} already done)",
                submitted.sent,
                args.run_id,
                queue.url(),
                submitted.already_done
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(args) => {
            let settings = load_settings(args.config.as_deref())?;
            let target_url = target_url(args.target.as_ref(), &settings)?;
            let queue = optional_queue(args.queue_url.as_ref(), &settings).await;
            let client = ferry_worker::conn::control(&target_url).await?;
            // Only the run's gauges: this process loads nothing, and pushes nothing.
            let sampled = std::sync::Arc::new(ferry_worker::progress::Progress::default());
            let _exporter = match args.metrics_addr {
                Some(addr) => {
                    let serve = ferry_shared::config::MetricsSettings {
                        addr: Some(addr),
                        pushgateway_url: None,
                        ..settings.metrics.clone()
                    };
                    let exporter = ferry_worker::metrics::Exporter::start(
                        &serve,
                        sampled.clone(),
                        "ferry-status",
                        "ferry-status",
                    )
                    .await?;
                    Some(exporter)
                }
                None => None,
            };
            let mut previous: Option<(FleetStatus, std::time::Instant)> = None;
            loop {
                let run = recorded_run(&client, &args.run_id).await?;
                let earlier = previous
                    .as_ref()
                    .map(|(s, at)| (s, at.elapsed().as_secs_f64()));
                let now = status(&client, &run, queue.as_ref(), earlier).await?;
                sampled.set_run_sample(now.sample());
                if args.json {
                    println!("{}", serde_json::to_string(&now)?);
                } else {
                    print!("{}", now.to_text());
                }
                let finished = now.complete() || now.stuck();
                let code = if now.complete() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                };
                if !args.watch || finished {
                    return Ok(code);
                }
                previous = Some((now, std::time::Instant::now()));
                tokio::time::sleep(std::time::Duration::from_secs(args.interval.max(1))).await;
                if !args.json {
                    println!();
                }
            }
        }
        Command::CatchUp(args) => {
            let settings = load_settings(args.config.as_deref())?;
            let target_url = target_url(args.target.as_ref(), &settings)?;
            let queue = if args.fleet || args.queue_url.is_some() {
                let url = queue_url(args.queue_url.as_ref(), &settings)?;
                Some(open_queue(url, &settings).await)
            } else {
                None
            };
            let request = crate::catch_up::CatchUpRequest {
                exports: args.export,
                base_run_id: args.run_id,
                target_url,
                workers: args.workers,
                settings,
                poll_interval: std::time::Duration::from_secs(args.interval.max(1)),
            };
            let report = crate::catch_up::catch_up(&request, queue.as_ref()).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            if report.complete() {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "ferry: catch-up of run {} stopped: a window is not applied (see its problems)",
                    report.base_run_id
                );
                Ok(ExitCode::from(1))
            }
        }
        Command::Reset(args) => {
            let settings = load_settings(args.config.as_deref())?;
            ferry_worker::sink::parquet::set_aws_settings(settings.aws.clone());
            let target_url = target_url(args.target.as_ref(), &settings)?;
            let client = ferry_worker::conn::control(&target_url).await?;
            ledger::ensure_ledger(&client).await?;
            let run = recorded_run(&client, &args.run_id).await?;
            let shards = if args.failed {
                crate::reset::Shards::Failed
            } else {
                crate::reset::Shards::Named(args.shard)
            };
            let reset = crate::reset::reset(&client, &run, &shards, args.force).await?;
            println!(
                "reset {} shard(s) of run {}: {}; load them with `migrate` (or `submit` and workers)",
                reset.len(),
                run.run_id,
                if reset.is_empty() { "none".to_string() } else { reset.join(", ") }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::ExportBack(args) => {
            let settings = load_settings(args.config.as_deref())?;
            ferry_worker::sink::parquet::set_aws_settings(settings.aws.clone());
            let target_url = target_url(args.target.as_ref(), &settings)?;
            let request = crate::export_back::ExportBackRequest {
                target_url,
                run_id: args.run_id.clone(),
                output: args.output.clone(),
                part_items: args.part_items.max(1),
                workers: args
                    .workers
                    .or(settings.load.workers.map(|w| w.get()))
                    .unwrap_or(2)
                    .max(1),
                aws: settings.aws.clone(),
                replace: args.replace,
            };
            let summary = crate::export_back::export_back(&request).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", summary.to_text());
            }
            Ok(if summary.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Assess(args) => {
            fixed_mmap_threshold();
            let settings = load_settings(args.config.as_deref())?;
            let keys = match &args.key {
                Some(spec) => Some(KeyAttribute::parse_list(spec)?),
                None => (!settings.mapping.key.is_empty()).then(|| settings.mapping.key.clone()),
            };
            let request = crate::assess::AssessRequest {
                export: args.export.clone(),
                keys: keys.map(|keys| keys.into_iter().map(|k| k.name).collect()),
                sample: (!args.full).then_some(args.sample.max(1)),
                workers: args
                    .workers
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
                settings,
                progress_bar: bar,
            };
            let assessment = crate::assess::assess(&request).await?;
            if let Some(dir) = &args.draft {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                for draft in &assessment.drafts {
                    let target = match draft.target {
                        crate::assess::draft::DraftTarget::Postgres => "postgres",
                        crate::assess::draft::DraftTarget::Heliosdb => "heliosdb",
                    };
                    for (name, text) in [
                        (format!("ferry-{target}.toml"), &draft.config),
                        (format!("schema-{target}.sql"), &draft.ddl),
                    ] {
                        let path = dir.join(name);
                        std::fs::write(&path, text)
                            .with_context(|| format!("cannot write {}", path.display()))?;
                    }
                }
                anyhow::ensure!(
                    !assessment.drafts.is_empty(),
                    "no draft: no key, or no entity found (pass --key)"
                );
            }
            if let Some(path) = &args.html {
                std::fs::write(path, assessment.to_html())
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&assessment)?);
            } else {
                print!("{}", assessment.to_text());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Probe(args) => {
            let mut settings = load_settings(args.config.as_deref())?;
            if let Some(max) = args.max_connections {
                anyhow::ensure!(
                    (1..=64).contains(&max),
                    "--max-connections must be between 1 and 64"
                );
                settings.probe.max_connections =
                    std::num::NonZeroUsize::new(max).context("--max-connections")?;
            }
            let target_url = target_url(args.target.as_ref(), &settings)?;
            let keys = match &args.key {
                Some(spec) => KeyAttribute::parse_list(spec)?,
                None => Vec::new(),
            };
            let request = crate::probe::ProbeRequest {
                target_url,
                export: args.export.clone(),
                keys,
                settings,
            };
            let report = crate::probe::probe(&request).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Finalize(args) | Command::Verify(args) => {
            let settings = load_settings(args.config.as_deref())?;
            ferry_worker::sink::parquet::set_aws_settings(settings.aws.clone());
            let target_url = target_url(args.target.as_ref(), &settings)?;
            let client = ferry_worker::conn::control(&target_url).await?;
            if args.wait && !args.verify_only {
                let queue = optional_queue(args.queue_url.as_ref(), &settings).await;
                wait_for_shards(&client, &args.run_id, queue.as_ref(), args.interval).await?;
            }
            let run = recorded_run(&client, &args.run_id).await?;
            let mut target =
                ferry_worker::target::Target::detect(&client, settings.load.copy_format).await?;
            if let Some(path) = run
                .load_path
                .as_deref()
                .and_then(ferry_worker::target::LoadPath::parse)
            {
                target.load_path = path;
            }
            let context = ReportContext {
                allow_unverified: args.allow_unverified,
                load_path: Some(target.describe()),
                ..Default::default()
            };
            let steps = EndSteps::new(&settings, target).with_target_url(&target_url);
            let mut report = if args.verify_only {
                verify(&client, &run, &context, &steps).await?
            } else {
                finalize(&client, &run, &context, &steps).await?
            };
            if args.deep {
                let request = crate::deep::DeepRequest {
                    target_url: target_url.clone(),
                    run_id: run.run_id.clone(),
                    sample_per_mille: args.sample.unwrap_or(1000),
                    workers: args.deep_workers.max(1),
                    reject_lines: settings.load.reject_lines,
                    aws: settings.aws.clone(),
                    progress: bar,
                };
                let deep = crate::deep::verify_deep(&request).await?;
                if !args.report.json {
                    print!("{}", deep.to_text());
                }
                crate::finalize::record_deep(&client, &run, &mut report, deep).await?;
            }
            if !args.verify_only && crate::report::is_parquet(&run) {
                crate::migrate::seal_dataset(&client, &run, report.verified()).await?;
            }
            print_report(&report, &args.report, None);
            Ok(verdict(&report))
        }
    }
}

/// Waits until the run exists and every shard is done, or failed with nothing left in the queue
/// (`finalize --wait`).
async fn wait_for_shards(
    client: &tokio_postgres::Client,
    run_id: &str,
    queue: Option<&SqsQueue>,
    interval: u64,
) -> anyhow::Result<()> {
    let interval = std::time::Duration::from_secs(interval.max(1));
    let mut announced = false;
    loop {
        if let Some(run) = ledger::get_run(client, run_id).await? {
            let now = status(client, &run, queue, None).await?;
            if now.complete() || now.stuck() {
                tracing::info!(
                    run = run_id,
                    done = now.shards_done,
                    failed = now.shards_failed.len(),
                    "shards settled: finalizing"
                );
                return Ok(());
            }
            tracing::info!(
                run = run_id,
                done = now.shards_done,
                total = now.shards_total,
                "waiting for shards"
            );
        } else if !announced {
            tracing::info!(run = run_id, "waiting for the run to be planned");
            announced = true;
        }
        tokio::time::sleep(interval).await;
    }
}

/// The `plan --dry-run` text: every shard with its bytes and items, the totals, and the estimate
/// of [`crate::estimate`] for `workers` from the constants `readings` measured (or the
/// configuration's).
fn dry_run_text(
    listing: &ferry_shared::manifest::ExportListing,
    workers: usize,
    settings: &Settings,
    readings: &crate::estimate::Readings,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "export {}", listing.location);
    let _ = writeln!(out, "{:<40} {:>14} {:>12}", "shard", "bytes", "items");
    for file in &listing.files {
        let items = file
            .item_count
            .map(|n| n.to_string())
            .unwrap_or_else(|| "?".into());
        let _ = writeln!(out, "{:<40} {:>14} {:>12}", file.shard_id, file.size, items);
    }
    let _ = writeln!(
        out,
        "{:<40} {:>14} {:>12}",
        format!("{} shards", listing.files.len()),
        listing.total_bytes(),
        listing
            .manifest_items()
            .map(|n| n.to_string())
            .unwrap_or_else(|| "?".into())
    );
    out.push_str(&crate::estimate::estimate_text(
        listing,
        workers,
        &settings.load,
        readings,
    ));
    out
}

/// The Parquet files `plan --dry-run --parquet …` would write: one per table and chunk of each
/// shard, named by shard, load (claimed by the shard's first worker) and chunk.
fn parquet_dry_run_text(
    listing: &ferry_shared::manifest::ExportListing,
    args: &PlanArgs,
    settings: &Settings,
) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let location = ferry_shared::output::canonical_location(
        settings.parquet.location.as_deref().unwrap_or_default(),
    )?;
    let table = args
        .table
        .clone()
        .or_else(|| settings.mapping.table.clone())
        .or_else(|| {
            listing
                .summary
                .as_ref()
                .and_then(|s| s.table_name())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "<table>".into());
    let tables: Vec<String> = if settings.routing.is_enabled() {
        let keys: Vec<String> = settings
            .mapping
            .key
            .iter()
            .map(|k| k.name.clone())
            .collect();
        settings
            .routing
            .tables(&keys)
            .into_iter()
            .map(|t| t.table)
            .collect()
    } else {
        vec![table]
    };
    let chunk = settings.load.chunk_lines.get();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "parquet dataset {location} ({:?}, row groups of up to {} rows); one file per table and \
         chunk of {chunk} lines; <load> is the load id the shard's first worker claims",
        settings.parquet.compression, settings.parquet.row_group_rows
    );
    let mut files = 0u64;
    for table in &tables {
        let _ = writeln!(
            out,
            "table {table}: {location}{table}/ (+ _manifest.json at finalize)"
        );
        for file in &listing.files {
            let chunks = match file.item_count {
                Some(0) => 0,
                Some(items) => items.div_ceil(chunk),
                None => file.size.max(1).div_ceil(chunk * 200).max(1),
            };
            if chunks == 0 {
                continue;
            }
            files += chunks;
            let first = ferry_worker::sink::parquet::object_key(table, &file.shard_id, 0, 0)
                .replace("-l000000-", "-l<load>-");
            let last = format!("c{:06}.parquet", chunks - 1);
            let _ = writeln!(
                out,
                "  {first}{}  ({chunks} file{})",
                if chunks > 1 {
                    format!(" … {last}")
                } else {
                    String::new()
                },
                if chunks > 1 { "s" } else { "" }
            );
        }
    }
    let _ = writeln!(
        out,
        "{files} Parquet files at most{}",
        if tables.len() > 1 {
            " (a routed chunk without rows for a table writes no file for it)"
        } else {
            ""
        }
    );
    Ok(out)
}

/// Large blocks come from `mmap` and go back to the system when freed, for `assess`: its key check
/// rebuilds a table of a few MiB each time its share of the key space halves, and glibc's default
/// (a threshold that rises to the largest block freed) kept the freed tables in the worker
/// threads' heaps, so a 3M-item pass peaked 13 MiB above a 300k one (41 against 28 MiB); with
/// the threshold fixed both peak at about 30 MiB, at the same speed. Setting it turns glibc's
/// adjustment off; `migrate`, whose Arrow and COPY buffers gain from it, keeps the default.
fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt sets an allocator parameter under the allocator's own lock; nothing else.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
