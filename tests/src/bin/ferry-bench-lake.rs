//! `ferry-bench-lake`: the Parquet sink and `export-back` against the load of the same export, in
//! the same run on the same machine (a command, not a test).
//!
//! For each target (PostgreSQL, HeliosDB): generates an export of N items (every DynamoDB type),
//! then times, with the real `ferry-coordinator` beside this binary:
//! 1. `migrate` into the database (the load);
//! 2. `export-back` of the loaded table (the rollback), checking it wrote every item;
//! 3. `migrate --parquet` of the same export into a local dataset, the ledger in the same database;
//!
//! and prints items per second of each, and the sizes of the gzip JSON export, the Parquet dataset
//! and the rollback's import files. Build with `--release`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use ferry_tests::gen::{generate_export, GenOptions};
use ferry_tests::harness::binary;

#[derive(Debug, Parser)]
#[command(
    name = "ferry-bench-lake",
    about = "Parquet sink and export-back throughput against the load"
)]
struct Args {
    /// Items to generate.
    #[arg(long, default_value_t = 100_000)]
    items: u64,
    /// Data files.
    #[arg(long, default_value_t = 8)]
    files: usize,
    /// Targets: postgres, heliosdb.
    #[arg(long, value_delimiter = ',', default_value = "postgres,heliosdb")]
    targets: Vec<String>,
}

fn bytes_under(dir: &Path, suffix: &str) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                total += entry.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

/// Runs ferry-coordinator; returns (seconds, stdout).
fn timed(args: &[&str]) -> anyhow::Result<(f64, String)> {
    let started = Instant::now();
    let output = Command::new(binary("ferry-coordinator"))
        .args(args)
        .env("FERRY_LOG", "warn")
        .output()
        .context("running ferry-coordinator")?;
    let seconds = started.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "ferry-coordinator {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok((
        seconds,
        String::from_utf8_lossy(&output.stdout).into_owned(),
    ))
}

fn run_id(url: &str, table: &str) -> anyhow::Result<String> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let client = ferry_worker::conn::control(url).await?;
        for message in client
            .simple_query("SELECT run_id, target_table, load_path FROM ferry.runs")
            .await?
        {
            if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
                if row.get(1) == Some(table) && row.get(2) != Some("parquet") {
                    return Ok(row.get(0).unwrap_or_default().to_string());
                }
            }
        }
        bail!("no run loads {table}")
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let export = generate_export(
        dir.path(),
        &GenOptions {
            items: args.items,
            files: args.files,
            ..GenOptions::default()
        },
    )?;
    let export_path = dir.path().display().to_string();
    let gz = bytes_under(&export.export_dir, ".json.gz");
    println!(
        "export: {} items in {} files, {} bytes of gzip JSON",
        args.items, args.files, gz
    );
    println!(
        "{:<10} {:>12} {:>12} {:>12} {:>14} {:>14} {:>14}",
        "target",
        "load it/s",
        "parquet it/s",
        "rollback it/s",
        "parquet bytes",
        "rollback bytes",
        "parquet/gzip"
    );
    for target in &args.targets {
        let (url, _pg, _helios) = match target.as_str() {
            "postgres" => {
                let cluster = ferry_tests::pg::PgCluster::start()?;
                (cluster.url("postgres"), Some(cluster), None)
            }
            "heliosdb" => {
                let server = ferry_tests::helios::HeliosServer::start()?;
                (server.url(), None, Some(server))
            }
            other => bail!("unknown target {other}"),
        };
        let (load_s, _) = timed(&[
            "migrate",
            "--export",
            &export_path,
            "--target",
            &url,
            "--key",
            "PK,SK",
        ])?;
        let run = run_id(&url, "AppTable")?;
        let rollback = dir.path().join(format!("rollback-{target}"));
        let (back_s, summary) = timed(&[
            "export-back",
            "--target",
            &url,
            "--run-id",
            &run,
            "--output",
            &rollback.display().to_string(),
            "--json",
        ])?;
        let summary: serde_json::Value = serde_json::from_str(&summary)?;
        if summary["items"].as_u64() != Some(args.items) {
            bail!(
                "export-back wrote {} items, not {}",
                summary["items"],
                args.items
            );
        }
        let lake = dir.path().join(format!("lake-{target}"));
        let (parquet_s, _) = timed(&[
            "migrate",
            "--export",
            &export_path,
            "--parquet",
            &lake.display().to_string(),
            "--ledger",
            &url,
            "--key",
            "PK,SK",
        ])?;
        let parquet_bytes = bytes_under(&lake, ".parquet");
        let rollback_bytes = bytes_under(&rollback, ".json.gz");
        let rate = |s: f64| args.items as f64 / s;
        println!(
            "{:<10} {:>12.0} {:>12.0} {:>12.0} {:>14} {:>14} {:>14.2}",
            target,
            rate(load_s),
            rate(parquet_s),
            rate(back_s),
            parquet_bytes,
            rollback_bytes,
            parquet_bytes as f64 / gz as f64
        );
    }
    Ok(())
}
