//! The `ferry-coordinator` command line.
//!
//! Exit codes an orchestrator can act on: 0 the run is complete and verified; 1 it is not (the last
//! line says why); 2 the request could not be carried out (bad arguments, configuration, export or
//! target).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::{Args, Parser, Subcommand};
use ferry_shared::config::{load_settings, KeyAttribute, Settings};
use ferry_shared::telemetry::LogFormat;
use ferry_worker::ledger;

use crate::embedded::EmbeddedHelios;
use crate::migrate::{migrate, MigrateRequest};
use crate::plan::{plan, PlanRequest};
use crate::report::{build_report, Report, ReportContext};

#[derive(Debug, Parser)]
#[command(
    name = "ferry-coordinator",
    version,
    about = "Migrate DynamoDB exports into PostgreSQL, exactly once"
)]
struct Cli {
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Plan, load and verify a whole export on this machine (resumes an interrupted run).
    Migrate(MigrateArgs),
    /// Plan a run: infer the schema, prepare the table, record the run and its shards.
    Plan(PlanArgs),
    /// Show a run's progress and reconciliation from the ledger.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
struct PlanArgs {
    /// The export folder (…/AWSDynamoDB/<ExportId>, or a folder holding exactly one export).
    #[arg(long)]
    export: PathBuf,
    /// Target database URL, postgres://user@host:port/db (or FERRY_TARGET__URL, or [target] url).
    /// Without one, `migrate` starts its own HeliosDB with its data in ./ferry-data.
    #[arg(long)]
    target: Option<String>,
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
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
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
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn target_url(cli: Option<&String>, settings: &Settings) -> anyhow::Result<String> {
    cli.cloned().or_else(|| settings.target_url.clone()).ok_or_else(|| {
        anyhow!("no target database: pass --target postgres://user@host:port/db (or set FERRY_TARGET__URL)")
    })
}

fn plan_request(args: &PlanArgs, settings: Settings) -> anyhow::Result<PlanRequest> {
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

fn print_report(report: &Report, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
    } else {
        print!("{}", report.to_text());
    }
}

/// Runs the command line; returns the process exit code.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    ferry_shared::telemetry::init(cli.log_format);
    match run(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferry: {e:#}");
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

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Migrate(args) => {
            let settings = load_settings(args.plan.config.as_deref())?;
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
                    ferry_shared::store::LocalStore::for_export_path(&args.plan.export)?;
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
                progress_bar: std::io::stderr().is_terminal(),
            };
            let result = migrate(request).await;
            let connect_hint = match embedded {
                Some(server) => Some(server.stop().await),
                None => None,
            };
            let report = result?;
            print_report(&report, args.json);
            if let Some(hint) = connect_hint {
                eprintln!("{hint}");
            }
            Ok(verdict(&report))
        }
        Command::Plan(args) => {
            let settings = load_settings(args.config.as_deref())?;
            let target_url = target_url(args.target.as_ref(), &settings)?;
            let request = plan_request(&args, settings)?;
            let mut client = ledger::connect(&target_url).await?;
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
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(args) => {
            let settings = load_settings(args.config.as_deref())?;
            let target_url = target_url(args.target.as_ref(), &settings)?;
            let client = ledger::connect(&target_url).await?;
            let run = ledger::get_run(&client, &args.run_id)
                .await?
                .with_context(|| format!("run {} is not in the ledger", args.run_id))?;
            let report = build_report(
                &client,
                &run,
                &ReportContext {
                    allow_unverified: true,
                    ..Default::default()
                },
            )
            .await?;
            print_report(&report, args.json);
            Ok(if report.verified() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
