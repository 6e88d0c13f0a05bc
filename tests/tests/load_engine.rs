//! The load engine's guarantees, tried as a user would, on every load path: PostgreSQL's binary
//! COPY in a transaction, the CSV COPY in autocommit on PostgreSQL (HeliosDB's protocol on a
//! server whose every step can be inspected) and on a real HeliosDB server.
//! - a key already in the table from elsewhere (an `--append` overlap) fails its shard naming the
//!   key, and nothing of its chunk is skipped;
//! - a table without a unique key over the key columns is refused at plan;
//! - a data file that changes never mixes with chunks committed from the old one: a file that
//!   fails its checksum leaves no row behind, a resume on a changed file is refused, and
//!   `reset` starts the shard over;
//! - a routed `numeric` column on HeliosDB refuses what its 96-bit NUMERIC would round.

use std::io::Read;

use ferry_coordinator::migrate::{migrate, MigrateRequest};
use ferry_coordinator::plan::PlanRequest;
use ferry_coordinator::report::Report;
use ferry_shared::config::{CopyFormat, KeyAttribute, Settings};
use ferry_tests::gen::{add_data_file, GenOptions};
use ferry_tests::harness::{
    assert_exit, assert_fixture_matches, connect, fixture_on, gen_options, query_text,
    run_coordinator, small_chunks, stderr_of, Fixture, TestTarget,
};

/// The three load paths.
#[derive(Clone, Copy, Debug)]
enum Path {
    PostgresBinary,
    PostgresCsv,
    HeliosDb,
}

const PATHS: [Path; 3] = [Path::PostgresBinary, Path::PostgresCsv, Path::HeliosDb];

impl Path {
    fn target(self) -> TestTarget {
        match self {
            Path::HeliosDb => TestTarget::HeliosDb,
            _ => TestTarget::Postgres,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Path::PostgresBinary => "pg_binary",
            Path::PostgresCsv => "pg_csv",
            Path::HeliosDb => "heliosdb",
        }
    }

    fn copy_format(self) -> &'static str {
        match self {
            Path::PostgresBinary => "binary",
            _ => "csv",
        }
    }

    fn settings(self, chunk_lines: u64) -> Settings {
        let mut settings = small_chunks(chunk_lines);
        settings.load.copy_format = match self {
            Path::PostgresBinary => CopyFormat::Binary,
            _ => CopyFormat::Csv,
        };
        settings
    }
}

async fn run_migrate(
    fixture: &Fixture,
    settings: Settings,
    table: Option<&str>,
    append: bool,
    run_id: Option<&str>,
) -> anyhow::Result<Report> {
    let request = MigrateRequest {
        plan: PlanRequest {
            export: fixture.dir.path().display().to_string(),
            keys: KeyAttribute::parse_list("PK,SK")?,
            table: table.map(str::to_string),
            append,
            run_id: run_id.map(str::to_string),
            settings,
        },
        target_url: fixture.url.clone(),
        workers: None,
        allow_unverified: false,
        progress_bar: false,
        live_metrics: false,
    };
    Ok(migrate(request).await?)
}

/// `migrate --json` of the fixture's export with a config file, into `table`.
fn migrate_with_config(
    fixture: &Fixture,
    config: &std::path::Path,
    table: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<std::process::Output> {
    let export = fixture.dir.path().display().to_string();
    run_coordinator(
        &[
            "migrate",
            "--export",
            &export,
            "--target",
            &fixture.url,
            "--config",
            config.to_str().unwrap(),
            "--table",
            table,
            "--json",
        ],
        env,
    )
}

/// The lines of a gzip data file.
fn lines_of(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path)?).read_to_string(&mut text)?;
    Ok(text.lines().map(str::to_string).collect())
}

/// The `PK` and `SK` strings of an export line.
fn key_of(line: &str) -> anyhow::Result<(String, String)> {
    let item: serde_json::Value = serde_json::from_str(line)?;
    let text = |name: &str| -> anyhow::Result<String> {
        Ok(item["Item"][name]["S"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("{name} is not a string key: {line}"))?
            .to_string())
    };
    Ok((text("PK")?, text("SK")?))
}

async fn execute(url: &str, sql: &str) -> anyhow::Result<()> {
    connect(url).await?.batch_execute(sql).await?;
    Ok(())
}

async fn count(url: &str, sql: &str) -> anyhow::Result<i64> {
    Ok(query_text(url, sql).await?.unwrap_or_default().parse()?)
}

/// The issue's reproduction: a copy of the table holding one row, the one whose key is the last
/// line of a data file; `migrate --table <copy> --append`.
async fn append_overlap(path: Path) -> anyhow::Result<()> {
    let fixture = fixture_on(
        path.target(),
        &format!("overlap_{}", path.name()),
        &gen_options(31, 3_000, 3),
    )
    .await?;
    let url = fixture.url.clone();
    // The copy: the whole export loaded into "Overlap", then every row but one deleted.
    let first = run_migrate(
        &fixture,
        path.settings(100_000),
        Some("Overlap"),
        false,
        None,
    )
    .await?;
    assert!(first.verified(), "{}", first.to_text());
    let file = &fixture.export.data_files[0];
    let lines = lines_of(&file.path)?;
    let (pk, sk) = key_of(lines.last().unwrap())?;
    execute(
        &url,
        &format!(
            "DELETE FROM \"Overlap\" WHERE NOT (\"PK\" = '{}' AND \"SK\" = '{}')",
            pk.replace('\'', "''"),
            sk.replace('\'', "''")
        ),
    )
    .await?;
    assert_eq!(count(&url, "SELECT count(*) FROM \"Overlap\"").await?, 1);

    // Another run appends the export into the copy.
    let report = run_migrate(
        &fixture,
        path.settings(100_000),
        Some("Overlap"),
        true,
        Some("overlap-append"),
    )
    .await?;
    assert!(!report.verified(), "{}", report.to_text());
    let client = connect(&url).await?;
    let failed = client
        .query(
            "SELECT data_key, error, committed_lines, loaded_rows FROM ferry.shards \
             WHERE run_id = 'overlap-append' AND state = 'failed'",
            &[],
        )
        .await?;
    assert_eq!(failed.len(), 1, "{}", report.to_text());
    let (data_key, error, committed, loaded): (String, String, i64, i64) = (
        failed[0].get(0),
        failed[0].get(1),
        failed[0].get(2),
        failed[0].get(3),
    );
    assert_eq!(data_key, file.key);
    assert!(error.contains(&pk), "the reason names the key: {error}");
    if let Path::PostgresCsv | Path::HeliosDb = path {
        assert!(
            error.contains(&format!("line {} holds key", lines.len())),
            "the reason names the line: {error}"
        );
    }
    assert_eq!(
        (committed, loaded),
        (0, 0),
        "no line of the file is counted as loaded"
    );
    // Exactly the other files' items, plus the row from elsewhere; nothing of the failed file.
    let others: u64 = fixture.export.data_files[1..]
        .iter()
        .map(|f| f.item_count)
        .sum();
    assert_eq!(
        count(&url, "SELECT count(*) FROM \"Overlap\"").await?,
        others as i64 + 1
    );
    assert_eq!(report.rows_loaded, others);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_overlap_fails_the_shard_naming_the_key_on_every_path() -> anyhow::Result<()> {
    for path in PATHS {
        append_overlap(path).await?;
    }
    Ok(())
}

/// A user's table without a unique key over the key columns: table mode (`--append` into a
/// table made by `CREATE TABLE … AS`) and a routed run whose DDL forgot the UNIQUE.
async fn no_unique_key(path: Path) -> anyhow::Result<()> {
    let fixture = fixture_on(
        path.target(),
        &format!("nokey_{}", path.name()),
        &gen_options(41, 600, 2),
    )
    .await?;
    let loaded = run_migrate(&fixture, path.settings(100), None, false, None).await?;
    assert!(loaded.verified(), "{}", loaded.to_text());
    execute(
        &fixture.url,
        "CREATE TABLE \"NoKey\" AS SELECT * FROM \"AppTable\" WHERE 1 = 0",
    )
    .await?;
    let error = run_migrate(&fixture, path.settings(100), Some("NoKey"), true, None)
        .await
        .expect_err("a table without a unique key must be refused");
    let message = format!("{error:#}");
    assert!(
        message.contains("table \"NoKey\" has no PRIMARY KEY or UNIQUE constraint over its key columns (\"PK\", \"SK\")")
            && message.contains("Add `UNIQUE (\"PK\", \"SK\")`"),
        "{message}"
    );
    assert_eq!(
        count(&fixture.url, "SELECT count(*) FROM \"NoKey\"").await?,
        0
    );

    // A routed run whose setup DDL has no UNIQUE.
    let config = fixture.dir.path().join("routed.toml");
    std::fs::write(
        &config,
        r#"
[mapping]
key = ["PK", "SK"]
[[routing.rules]]
name = "all"
table = "items"
columns = [
  { name = "pk", from = "PK", type = "text" },
  { name = "sk", from = "SK", type = "text" },
]
[[setup]]
sql = "CREATE TABLE IF NOT EXISTS items (pk TEXT NOT NULL, sk TEXT NOT NULL, attrs JSONB)"
"#,
    )?;
    let output = migrate_with_config(
        &fixture,
        &config,
        "routed",
        &[("FERRY_LOAD__COPY_FORMAT", path.copy_format())],
    )?;
    assert_exit(&output, 2);
    assert!(
        stderr_of(&output)
            .contains("table \"items\" has no PRIMARY KEY or UNIQUE constraint over its key columns (\"pk\", \"sk\")"),
        "{}",
        stderr_of(&output)
    );
    assert_eq!(count(&fixture.url, "SELECT count(*) FROM items").await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_a_unique_key_is_refused_at_plan() -> anyhow::Result<()> {
    for path in [Path::PostgresCsv, Path::HeliosDb] {
        no_unique_key(path).await?;
    }
    Ok(())
}

/// Lines of a 601-line data file, `extra` added to every item.
fn file_lines(extra: &str) -> Vec<String> {
    (0..601)
        .map(|i| {
            format!(
                r#"{{"Item":{{"PK":{{"S":"FILE#{i}"}},"SK":{{"S":"A"}},"n":{{"N":"{i}.25"}}{extra}}}}}"#
            )
        })
        .collect()
}

/// Writes `lines` gzip-compressed to `path`.
fn write_gz(path: &std::path::Path, lines: &[String]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for line in lines {
        writeln!(gz, "{line}")?;
    }
    std::fs::write(path, gz.finish()?)?;
    Ok(())
}

/// The issue's reproduction (`load.chunk_lines = 100`): a data file whose 601 lines each carry one
/// extra attribute fails its MD5 check at the end; the right file is put back and `migrate` run
/// again. Then a resume on a changed file is refused, and `reset` starts the shard over.
async fn changed_file(path: Path) -> anyhow::Result<()> {
    let mut fixture = fixture_on(
        path.target(),
        &format!("changed_{}", path.name()),
        &gen_options(51, 1_000, 2),
    )
    .await?;
    let good = file_lines("");
    let file = add_data_file(&mut fixture.export, &good)?;
    let original = std::fs::read(&file)?;
    write_gz(&file, &file_lines(r#","extra":{"S":"wrong file"}"#))?;

    let report = run_migrate(&fixture, path.settings(100), None, false, None).await?;
    assert!(!report.verified(), "{}", report.to_text());
    let client = connect(&fixture.url).await?;
    let error: String = client
        .query_one("SELECT error FROM ferry.shards WHERE state = 'failed'", &[])
        .await?
        .get(0);
    assert!(error.contains("MD5 mismatch"), "{error}");
    assert!(
        error.contains("rows already loaded from it were removed"),
        "{error}"
    );
    assert_eq!(
        count(
            &fixture.url,
            "SELECT count(*) FROM \"AppTable\" WHERE \"PK\" LIKE 'FILE#%'"
        )
        .await?,
        0,
        "no row of the wrong file stays"
    );

    // The right file back: `migrate` again, as the README says.
    std::fs::write(&file, &original)?;
    let report = run_migrate(&fixture, path.settings(100), None, false, None).await?;
    assert!(report.verified(), "{}", report.to_text());
    assert_eq!(
        assert_fixture_matches(&fixture, "AppTable", &[]).await?,
        1_601
    );

    // A resume on a changed file: crash after 3 chunks of that file, change it, resume.
    let other = fixture_on(
        path.target(),
        &format!("changed2_{}", path.name()),
        &GenOptions {
            seed: 52,
            items: 200,
            files: 1,
            ..GenOptions::default()
        },
    )
    .await?;
    let mut other = other;
    let file = add_data_file(&mut other.export, &good)?;
    let original = std::fs::read(&file)?;
    let export = other.dir.path().display().to_string();
    let args = [
        "migrate",
        "--export",
        export.as_str(),
        "--target",
        other.url.as_str(),
        "--key",
        "PK,SK",
    ];
    let env = [
        ("FERRY_LOAD__CHUNK_LINES", "100"),
        ("FERRY_LOAD__WORKERS", "1"),
        ("FERRY_LOAD__COPY_FORMAT", path.copy_format()),
    ];
    let mut crash_env = env.to_vec();
    crash_env.push(("FERRY_FAILPOINTS", "after_commit=exit@4"));
    let crashed = run_coordinator(&args, &crash_env)?;
    assert_exit(&crashed, 86);
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_gz(&file, &file_lines(r#","extra":{"S":"changed"}"#))?;
    let refused = run_coordinator(&args, &env)?;
    assert_exit(&refused, 1);
    let client = connect(&other.url).await?;
    let (run_id, shard_id, error): (String, String, String) = {
        let row = client
            .query_one(
                "SELECT run_id, shard_id, error FROM ferry.shards WHERE state = 'failed'",
                &[],
            )
            .await?;
        (row.get(0), row.get(1), row.get(2))
    };
    assert!(
        error.contains("changed since this shard's load began")
            && error.contains(&format!(
                "ferry-coordinator reset --run-id {run_id} --shard {shard_id}"
            )),
        "{error}"
    );
    // The right file back and `reset`: the shard loads again from the start, exactly.
    std::fs::write(&file, &original)?;
    let reset = run_coordinator(
        &[
            "reset", "--target", &other.url, "--run-id", &run_id, "--shard", &shard_id,
        ],
        &[],
    )?;
    assert_exit(&reset, 0);
    assert_eq!(
        count(
            &other.url,
            "SELECT count(*) FROM \"AppTable\" WHERE \"PK\" LIKE 'FILE#%'"
        )
        .await?,
        0,
        "reset removed the shard's rows"
    );
    let resumed = run_coordinator(&args, &env)?;
    assert_exit(&resumed, 0);
    assert_eq!(assert_fixture_matches(&other, "AppTable", &[]).await?, 801);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_data_file_never_mixes_with_committed_chunks() -> anyhow::Result<()> {
    for path in PATHS {
        changed_file(path).await?;
    }
    Ok(())
}

/// The issue's reproduction: a routed `numeric` column receiving a 32-digit fraction and a
/// 38-digit integer. HeliosDB's NUMERIC would round the first and refuse the second: both become
/// rejects with their reason; PostgreSQL stores them exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_numbers_a_96_bit_numeric_cannot_hold_are_rejects() -> anyhow::Result<()> {
    for target in [TestTarget::Postgres, TestTarget::HeliosDb] {
        let mut fixture = fixture_on(target, "routed_numbers", &gen_options(61, 10, 1)).await?;
        add_data_file(
            &mut fixture.export,
            &[
                r#"{"Item":{"PK":{"S":"V#1"},"SK":{"S":"A"},"v":{"N":"1.2345678901234567890123456789012"}}}"#.to_string(),
                r#"{"Item":{"PK":{"S":"V#2"},"SK":{"S":"A"},"v":{"N":"12345678901234567890123456789012345678"}}}"#.to_string(),
                r#"{"Item":{"PK":{"S":"V#3"},"SK":{"S":"A"},"v":{"N":"-1.25"}}}"#.to_string(),
            ],
        )?;
        let config = fixture.dir.path().join("numbers.toml");
        std::fs::write(
            &config,
            r#"
[load]
max_rejects = 10
[mapping]
key = ["PK", "SK"]
[[routing.rules]]
name = "values"
table = "vals"
match = { pk_prefix = "V#" }
columns = [
  { name = "pk", from = "PK", type = "text" },
  { name = "sk", from = "SK", type = "text" },
  { name = "v", from = "v", type = "numeric" },
]
[[routing.rules]]
name = "rest"
table = "rest"
columns = [
  { name = "pk", from = "PK", type = "text" },
  { name = "sk", from = "SK", type = "text" },
]
"#,
        )?;
        let output = migrate_with_config(&fixture, &config, "numbers", &[])?;
        assert_exit(&output, 0);
        let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        let values = |sql: &str| {
            let url = fixture.url.clone();
            let sql = sql.to_string();
            async move {
                let client = connect(&url).await?;
                let mut out = Vec::new();
                for message in client.simple_query(&sql).await? {
                    if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
                        out.push((
                            row.get(0).unwrap().to_string(),
                            row.get(1).unwrap().to_string(),
                        ));
                    }
                }
                anyhow::Ok(out)
            }
        };
        let rows = values("SELECT pk, v::text FROM vals ORDER BY pk").await?;
        match target {
            TestTarget::Postgres => {
                assert_eq!(report["rows_rejected"], 0, "{report:#}");
                assert_eq!(
                    rows,
                    [
                        ("V#1", "1.2345678901234567890123456789012"),
                        ("V#2", "12345678901234567890123456789012345678"),
                        ("V#3", "-1.25"),
                    ]
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                );
            }
            TestTarget::HeliosDb => {
                assert_eq!(report["rows_rejected"], 2, "{report:#}");
                assert_eq!(rows, [("V#3".to_string(), "-1.25".to_string())]);
                let reasons =
                    values("SELECT line_no::text, reason FROM ferry.rejects ORDER BY line_no")
                        .await?;
                assert_eq!(reasons.len(), 2);
                for (_, reason) in &reasons {
                    assert!(
                        reason.contains("column \"v\"")
                            && reason.contains("does not fit the target's NUMERIC exactly"),
                        "{reason}"
                    );
                }
            }
        }
    }
    Ok(())
}

/// A ledger written by an earlier Ferry (schema version 1: no `ferry.meta` row, no generation,
/// no loads or steps tables) is migrated in place, keeping its rows; a ledger from a newer Ferry
/// is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_migrates_in_place_and_refuses_a_newer_one() -> anyhow::Result<()> {
    for target in [TestTarget::Postgres, TestTarget::HeliosDb] {
        let fixture = fixture_on(target, "ledger_migration", &gen_options(71, 10, 1)).await?;
        let client = connect(&fixture.url).await?;
        // The version-1 ledger: its three tables, with a shard in flight.
        for statement in &ferry_ledger::sql::CREATE_LEDGER[..4] {
            client.batch_execute(statement).await?;
        }
        client
            .batch_execute(
                "INSERT INTO ferry.shards (run_id, shard_id, data_key, committed_lines) \
                 VALUES ('old', 's1', 'data/a.json.gz', 40)",
            )
            .await?;
        ferry_ledger::runs::ensure_ledger(&client).await?;
        assert_eq!(
            ferry_ledger::runs::ledger_version(&client).await?,
            ferry_ledger::sql::SCHEMA_VERSION
        );
        let shard = ferry_ledger::Ledger::shard(&client, "old", "s1")
            .await?
            .expect("the shard survives");
        assert_eq!((shard.committed_lines, shard.generation), (40, 0));
        assert!(ferry_ledger::runs::get_steps(&client, "old")
            .await?
            .is_empty());
        // Running it again changes nothing.
        ferry_ledger::runs::ensure_ledger(&client).await?;
        // A ledger from a newer Ferry.
        client
            .execute(
                ferry_ledger::sql::SET_SCHEMA_VERSION,
                &[&(ferry_ledger::sql::SCHEMA_VERSION + 1).to_string()],
            )
            .await?;
        let refused = ferry_ledger::runs::ensure_ledger(&client)
            .await
            .expect_err("a newer ledger must be refused");
        assert!(
            refused.to_string().contains("written by a newer Ferry"),
            "{refused}"
        );
    }
    Ok(())
}
