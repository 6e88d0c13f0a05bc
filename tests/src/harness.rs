//! Running Ferry from tests: the real binaries (for crash tests that kill a process) and the
//! in-process migration, plus fixtures (a generated export and a fresh database) and the
//! value-by-value table check.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::Context;
use ferry_coordinator::migrate::{migrate, MigrateRequest};
use ferry_coordinator::plan::PlanRequest;
use ferry_coordinator::report::Report;
use ferry_shared::config::{KeyAttribute, Settings};

use crate::compare::{compare, read_source_items, read_table, read_table_text};
use crate::gen::{generate_export, GenOptions, GeneratedExport};
use crate::pg::shared_cluster;

/// The path of a workspace binary built beside the running test (`cargo test --workspace` builds
/// them, because their crates have integration tests).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // Tests run from target/<profile>/deps, binaries (the benchmark) from target/<profile>.
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{} is not built: run `cargo build --workspace --bins` (scripts/test does)",
                candidates[candidates.len() - 1].display()
            )
        })
}

/// A generated export and a fresh database.
pub struct Fixture {
    /// Holds the export.
    pub dir: tempfile::TempDir,
    /// The export.
    pub export: GeneratedExport,
    /// The database's URL.
    pub url: String,
    /// Which server.
    pub target: TestTarget,
    /// The HeliosDB server, when the target is HeliosDB (stopped on drop).
    pub server: Option<crate::helios::HeliosServer>,
}

/// The servers every end-to-end test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestTarget {
    /// A database in the shared PostgreSQL cluster.
    Postgres,
    /// A HeliosDB server of the test's own.
    HeliosDb,
}

/// An empty database on `target`: a new database in the shared PostgreSQL cluster, or a HeliosDB
/// server of the caller's own (stopped when the returned server is dropped).
pub async fn empty_target(
    target: TestTarget,
    name: &str,
) -> anyhow::Result<(String, Option<crate::helios::HeliosServer>)> {
    Ok(match target {
        TestTarget::Postgres => (shared_cluster().create_database(name).await?, None),
        TestTarget::HeliosDb => {
            let server = crate::helios::HeliosServer::start()?;
            (server.url(), Some(server))
        }
    })
}

/// Generates an export with `options` and creates a PostgreSQL database for it.
pub async fn fixture(name: &str, options: &GenOptions) -> anyhow::Result<Fixture> {
    fixture_on(TestTarget::Postgres, name, options).await
}

/// Generates an export with `options` and prepares an empty target for it.
pub async fn fixture_on(
    target: TestTarget,
    name: &str,
    options: &GenOptions,
) -> anyhow::Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let export = generate_export(dir.path(), options)?;
    let (url, server) = match target {
        TestTarget::Postgres => (shared_cluster().create_database(name).await?, None),
        TestTarget::HeliosDb => {
            let server = crate::helios::HeliosServer::start()?;
            (server.url(), Some(server))
        }
    };
    Ok(Fixture {
        dir,
        export,
        url,
        target,
        server,
    })
}

/// Asserts that the run's table holds exactly the export's items (but the rejected ones), value
/// by value, reading it the way the target allows; returns the row count.
pub async fn assert_fixture_matches(
    fixture: &Fixture,
    table: &str,
    rejected_pks: &[&str],
) -> anyhow::Result<usize> {
    match fixture.target {
        TestTarget::Postgres => {
            assert_table_matches_except(
                &fixture.url,
                table,
                &fixture.export.export_dir,
                rejected_pks,
            )
            .await
        }
        TestTarget::HeliosDb => {
            let client = connect(&fixture.url).await?;
            let mut run_id = None;
            for message in client
                .simple_query("SELECT run_id, target_table FROM ferry.runs")
                .await?
            {
                if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
                    if row.get(1) == Some(table) {
                        run_id = row.get(0).map(str::to_string);
                    }
                }
            }
            let run_id = run_id.with_context(|| format!("no run loads table {table}"))?;
            assert_run_matches_text(
                &fixture.url,
                &run_id,
                &fixture.export.export_dir,
                rejected_pks,
            )
            .await
        }
    }
}

/// One value as text, through the simple protocol (HeliosDB's binary results are limited).
pub async fn query_text(url: &str, sql: &str) -> anyhow::Result<Option<String>> {
    let client = connect(url).await?;
    for message in client.simple_query(sql).await? {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            return Ok(row.get(0).map(str::to_string));
        }
    }
    anyhow::bail!("no row from {sql}")
}

/// Generator options with one 0-byte and one empty-gzip data file beside the real ones.
pub fn gen_options(seed: u64, items: u64, files: usize) -> GenOptions {
    GenOptions {
        seed,
        items,
        files,
        zero_byte_files: 1,
        empty_gzip_files: 1,
        ..GenOptions::default()
    }
}

/// Requires a finished process to have exited with `code`, showing its output otherwise.
pub fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        stderr_of(output)
    );
}

/// A finished process's stderr as text.
pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// Settings with a small chunk and block size, so a few thousand items make many chunks.
pub fn small_chunks(chunk_lines: u64) -> Settings {
    let mut settings = Settings::default();
    settings.load.chunk_lines = chunk_lines.try_into().expect("positive");
    settings.load.block_lines = 97.try_into().expect("positive");
    settings.load.workers = Some(2.try_into().expect("positive"));
    settings
}

/// Runs `migrate` in this process.
pub async fn migrate_in_process(
    fixture: &Fixture,
    settings: Settings,
    allow_unverified: bool,
) -> anyhow::Result<Report> {
    migrate_path(
        &fixture.url,
        fixture.dir.path(),
        settings,
        allow_unverified,
        None,
    )
    .await
}

/// Runs `migrate` in this process on an export path.
pub async fn migrate_path(
    url: &str,
    export: &Path,
    settings: Settings,
    allow_unverified: bool,
    table: Option<&str>,
) -> anyhow::Result<Report> {
    let request = MigrateRequest {
        plan: PlanRequest {
            export: export.display().to_string(),
            keys: KeyAttribute::parse_list("PK,SK")?,
            table: table.map(str::to_string),
            append: false,
            run_id: None,
            settings,
        },
        target_url: url.to_string(),
        workers: None,
        allow_unverified,
        progress_bar: false,
        live_metrics: false,
    };
    Ok(migrate(request).await?)
}

/// Connects to a test database.
pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    Ok(ferry_worker::conn::control(url).await?)
}

/// Asserts that `table` holds exactly the export's items, value by value; returns the row count.
pub async fn assert_table_matches(
    url: &str,
    table: &str,
    export_dir: &Path,
) -> anyhow::Result<usize> {
    assert_table_matches_except(url, table, export_dir, &[]).await
}

/// Like [`assert_table_matches`], for an export whose items with these partition keys are
/// expected in `ferry.rejects` instead of the table.
pub async fn assert_table_matches_except(
    url: &str,
    table: &str,
    export_dir: &Path,
    rejected_pks: &[&str],
) -> anyhow::Result<usize> {
    let client = connect(url).await?;
    let source = source_except(export_dir, rejected_pks)?;
    let (columns, rows) = read_table(&client, table).await?;
    anyhow::ensure!(!columns.is_empty(), "table {table} does not exist");
    let diffs = compare(&source, &["PK", "SK"], &columns, "attrs", &rows);
    no_differences(table, &diffs)?;
    Ok(rows.len())
}

/// The export's items, less those whose partition key is in `rejected_pks`.
fn source_except(
    export_dir: &Path,
    rejected_pks: &[&str],
) -> anyhow::Result<crate::compare::SourceItems> {
    let mut source = read_source_items(export_dir, &["PK", "SK"])?;
    source.retain(|key, _| {
        !rejected_pks
            .iter()
            .any(|pk| key.starts_with(&format!("[{}", serde_json::Value::from(*pk))))
    });
    Ok(source)
}

/// Fails listing the first differences, if any.
fn no_differences(table: &str, diffs: &[String]) -> anyhow::Result<()> {
    if !diffs.is_empty() {
        let shown: Vec<&String> = diffs.iter().take(20).collect();
        anyhow::bail!(
            "table {table} differs from the source in {} ways; first ones:\n{shown:#?}",
            diffs.len()
        );
    }
    Ok(())
}

/// Runs `ferry-coordinator` with `args` and extra environment; waits for it.
pub fn run_coordinator(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Output> {
    let mut command = Command::new(binary("ferry-coordinator"));
    command.args(args).env_remove("FERRY_FAILPOINTS");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().context("running ferry-coordinator")
}

/// `migrate` arguments for a fixture.
pub fn migrate_args(fixture: &Fixture) -> Vec<String> {
    vec![
        "migrate".into(),
        "--export".into(),
        fixture.dir.path().display().to_string(),
        "--target".into(),
        fixture.url.clone(),
        "--key".into(),
        "PK,SK".into(),
    ]
}

/// Scalar query helper.
pub async fn query_i64(url: &str, sql: &str) -> anyhow::Result<i64> {
    let client = connect(url).await?;
    Ok(client.query_one(sql, &[]).await?.get::<_, i64>(0))
}

/// Like [`assert_table_matches_except`], reading the table in text format typed by the run's
/// schema (for servers without `to_jsonb`, HeliosDB).
pub async fn assert_run_matches_text(
    url: &str,
    run_id: &str,
    export_dir: &Path,
    rejected_pks: &[&str],
) -> anyhow::Result<usize> {
    let client = connect(url).await?;
    let source = source_except(export_dir, rejected_pks)?;
    let (table, columns, rows) = read_table_text(&client, run_id).await?;
    let overflow = columns.last().map(|c| c.name.clone()).unwrap_or_default();
    let diffs = compare(&source, &["PK", "SK"], &columns, &overflow, &rows);
    no_differences(&table, &diffs)?;
    Ok(rows.len())
}
