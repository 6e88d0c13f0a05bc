//! Exports Ferry's generator did not shape, checked by readers that are not Ferry's:
//! `scripts/make-aws-export.py` writes 100k items the way AWS does (boto3's TypeSerializer; odd
//! attribute names, sets, deep maps, 38-digit numbers, strings of 100-300 KB with escapes), and
//! the real binary migrates them into PostgreSQL and into HeliosDB:
//! - routed with `tests/aws/storefront-routing.toml`, while `tests/aws/expected_routed.py`
//!   computes from the export alone, in Python, the rows every table must hold, the items that
//!   must be rejected and how many must be filtered. Every table is compared with it value by
//!   value, by the column's type (numbers by exact decimal value, JSON structurally, times as
//!   instants), and so are `ferry.rejects` and the run's report;
//! - in table mode, compared item by item with the export read by `ferry_tests::compare`
//!   (serde_json, no worker code);
//! - as a Parquet dataset (the ledger in PostgreSQL), read back by pyarrow and compared item by
//!   item the same way;
//! - in table mode with `nested_json = "dynamodb"`, then written back by `export-back`: the
//!   rollback must give the export's items again, exactly (numbers by value, sets in any order),
//!   as `tests/aws/round_trip.py` compares them, with no difference declared but the provenance
//!   column.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context};
use ferry_shared::schema::routing::Routing;
use ferry_shared::schema::PgType;
use ferry_tests::compare::{compare, json_eq, norm_number, parse_array_literal, read_source_items};
use ferry_tests::harness::{
    assert_exit, assert_run_matches_text, assert_table_matches, connect, run_coordinator, stderr_of,
};
use ferry_tests::history::python;
use serde_json::Value;
use tokio_postgres::SimpleQueryMessage;

const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/aws/storefront-routing.toml");
const CHECKER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/aws/expected_routed.py");
const WRITER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/make-aws-export.py");
const ROUND_TRIP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/aws/round_trip.py");
const ITEMS: u64 = 100_000;

/// The export, written once for all the tests here.
struct Export {
    /// The folder holding it, when it is not kept in the cache.
    _dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

fn export() -> anyhow::Result<&'static Export> {
    static EXPORT: OnceLock<Result<Export, String>> = OnceLock::new();
    EXPORT
        .get_or_init(|| write_export().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("writing the AWS-shaped export: {e}"))
}

/// Writes the export with `make-aws-export.py`, or finds it in the install cache
/// (`$FERRY_CACHE_DIR`, default `~/.cache/ferry`) under a hash of the script, its arguments and
/// the Python that runs it: the script is deterministic, and writing 100k items takes about 20 s.
fn write_export() -> anyhow::Result<Export> {
    use md5::{Digest, Md5};
    let args = [
        "--items".to_string(),
        ITEMS.to_string(),
        "--files".into(),
        "4".into(),
        "--seed".into(),
        "11".into(),
    ];
    // The script, its arguments and the Python (the moto install's, whose boto3 types the items).
    let python = python()?;
    let mut hash = Md5::new();
    hash.update(std::fs::read(WRITER)?);
    hash.update(args.join(" ").as_bytes());
    hash.update(python.display().to_string().as_bytes());
    let key: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let cache = std::env::var_os("FERRY_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ferry")))
        .map(|c| c.join("aws-exports"));
    let cached = cache.as_ref().map(|c| c.join(&key));
    if let Some(cached) = &cached {
        if let Ok(relative) = std::fs::read_to_string(cached.join("export-dir")) {
            return Ok(Export {
                _dir: None,
                path: cached.join(relative.trim()),
            });
        }
    }
    let dir = match &cache {
        Some(cache) => {
            std::fs::create_dir_all(cache)?;
            tempfile::tempdir_in(cache)?
        }
        None => tempfile::tempdir()?,
    };
    let written = Command::new(&python)
        .arg(WRITER)
        .arg(dir.path())
        .args(&args)
        .output()
        .context("running make-aws-export.py")?;
    anyhow::ensure!(
        written.status.success(),
        "make-aws-export.py failed: {}",
        String::from_utf8_lossy(&written.stderr)
    );
    let summary: Value = serde_json::from_slice(&written.stdout)?;
    anyhow::ensure!(summary["items"] == ITEMS, "unexpected summary {summary}");
    let path = PathBuf::from(
        summary["export_dir"]
            .as_str()
            .context("make-aws-export.py printed no export_dir")?,
    );
    let relative = path.strip_prefix(dir.path())?.to_path_buf();
    if let Some(cached) = cached {
        // Published whole, by a rename: a run that stops halfway leaves no half export there.
        std::fs::write(
            dir.path().join("export-dir"),
            relative.display().to_string(),
        )?;
        let kept = dir.keep();
        if std::fs::rename(&kept, &cached).is_err() {
            // Another run published it first.
            std::fs::remove_dir_all(&kept)?;
        }
        // Exports of other versions of the script (or another Python) are not read again: the
        // cache keeps the current one only (folders being written are `.tmp…`, not a key).
        if let Some(cache) = &cache {
            for entry in std::fs::read_dir(cache)?.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                let old_key = name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit());
                if old_key && name != key {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        return Ok(Export {
            _dir: None,
            path: cached.join(relative),
        });
    }
    Ok(Export {
        path,
        _dir: Some(dir),
    })
}

/// What the export must give on a target.
struct Expected {
    /// (table, PK, SK) → the row's expected values by column.
    rows: BTreeMap<(String, String, String), serde_json::Map<String, Value>>,
    /// (PK, SK) of the items that must be rejected.
    rejects: BTreeSet<(String, String)>,
    filtered: u64,
}

/// The checker's rows, rejects and filtered count for the export; `decimal96` for a target
/// whose NUMERIC is a 96-bit decimal (HeliosDB).
fn expected(export: &Export, decimal96: bool) -> anyhow::Result<Expected> {
    let mut command = Command::new(python()?);
    command.arg(CHECKER).arg(&export.path);
    if decimal96 {
        command.arg("--decimal96");
    }
    let checked = command.output().context("running expected_routed.py")?;
    anyhow::ensure!(
        checked.status.success(),
        "expected_routed.py failed: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let mut rows = BTreeMap::new();
    let mut rejects = BTreeSet::new();
    let mut filtered = None;
    for line in checked.stdout.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        let mut value: Value = serde_json::from_slice(line)?;
        let key = |v: &Value| -> anyhow::Result<(String, String)> {
            Ok((
                v[0].as_str().context("key")?.to_string(),
                v[1].as_str().context("key")?.to_string(),
            ))
        };
        if let Some(key_value) = value.get("reject") {
            anyhow::ensure!(rejects.insert(key(key_value)?), "reject twice: {value}");
        } else if let Some(n) = value.get("filtered") {
            filtered = n.as_u64();
        } else {
            let (pk, sk) = key(&value["key"])?;
            let table = value["table"].as_str().context("table")?.to_string();
            let Value::Object(row) = value["row"].take() else {
                bail!("no row in {value}");
            };
            anyhow::ensure!(
                rows.insert((table, pk, sk), row).is_none(),
                "a key twice in the expected rows"
            );
        }
    }
    let filtered = filtered.context("expected_routed.py printed no filtered count")?;
    // The checker must see the shapes this test is about, or it checks little.
    let tables: BTreeSet<&str> = rows.keys().map(|(t, _, _)| t.as_str()).collect();
    anyhow::ensure!(
        tables == BTreeSet::from(["customers", "orders", "products", "reviews"]),
        "{tables:?}"
    );
    anyhow::ensure!(
        rows.len() as u64 + rejects.len() as u64 + filtered == ITEMS,
        "the checker accounts for {} rows, {} rejects, {filtered} filtered of {ITEMS} items",
        rows.len(),
        rejects.len()
    );
    anyhow::ensure!(!rejects.is_empty() && filtered > 0);
    Ok(Expected {
        rows,
        rejects,
        filtered,
    })
}

/// Runs `migrate` of the export with `args` (where to, the key, the config) and `--json`,
/// requires it to succeed and returns its report.
fn migrate_export(export: &Export, args: &[&str]) -> anyhow::Result<Value> {
    let path = export.path.display().to_string();
    let mut all = vec!["migrate", "--export", &path];
    all.extend_from_slice(args);
    all.push("--json");
    let output = run_coordinator(&all, &[])?;
    assert_exit(&output, 0);
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("report: {}", stderr_of(&output)))
}

/// `verify --deep` of the run `report` names: every chunk of every table must verify (the digests
/// recorded at load against the rows read back, turned into items the way `export-back` does).
fn deep_verifies(url: &str, report: &Value, tables: usize) -> anyhow::Result<()> {
    let run_id = report["run_id"]
        .as_str()
        .context("no run_id in the report")?;
    let output = run_coordinator(
        &["verify", "--deep", "--target", url, "--run-id", run_id],
        &[],
    )?;
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert_exit(&output, 0);
    assert!(
        text.contains("every value matches what was loaded"),
        "{text}"
    );
    assert_eq!(
        text.matches(": verified — ").count(),
        tables,
        "every table verified:\n{text}"
    );
    Ok(())
}

/// Every routed table's column types, from the config.
fn column_types() -> anyhow::Result<BTreeMap<String, Vec<(String, PgType)>>> {
    let text = std::fs::read_to_string(CONFIG)?;
    let routing = Routing::from_toml(&text)?;
    let mut tables = BTreeMap::new();
    for rule in routing.rules {
        let mut columns: Vec<(String, PgType)> = rule
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.pg_type()))
            .collect();
        columns.push((rule.rest_column.clone(), PgType::Jsonb));
        tables.insert(rule.table.clone(), columns);
    }
    Ok(tables)
}

/// Rows of `sql` as text (the simple protocol, the same on both targets).
async fn text_rows(
    client: &tokio_postgres::Client,
    sql: &str,
) -> anyhow::Result<Vec<Vec<Option<String>>>> {
    let mut rows = Vec::new();
    for message in client
        .simple_query(sql)
        .await
        .with_context(|| sql.to_string())?
    {
        if let SimpleQueryMessage::Row(row) = message {
            rows.push(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            );
        }
    }
    Ok(rows)
}

/// A TIMESTAMPTZ in text format as microseconds since the epoch.
fn instant_micros(text: &str) -> anyhow::Result<i64> {
    let parsed = chrono::DateTime::parse_from_rfc3339(text)
        .or_else(|_| chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .with_context(|| format!("not a timestamptz: {text:?}"))?;
    Ok(parsed.timestamp_micros())
}

/// Whether the target's text `got` is the expected value `want` of a `pg_type` column.
fn same_value(pg_type: PgType, got: &str, want: &Value) -> anyhow::Result<bool> {
    let want_text = || want.as_str().context("expected text");
    Ok(match pg_type {
        PgType::Text | PgType::Int2 | PgType::Int4 | PgType::Int8 => got == want_text()?,
        PgType::Bytea => got.eq_ignore_ascii_case(want_text()?),
        PgType::Numeric | PgType::NumericScaled { .. } => {
            norm_number(got).context("numeric")? == norm_number(want_text()?).context("number")?
        }
        PgType::Float8 => got.parse::<f64>()? == want_text()?.parse::<f64>()?,
        PgType::Boolean => {
            matches!(got, "t" | "true") == want.as_bool().context("expected boolean")?
                && matches!(got, "t" | "true" | "f" | "false")
        }
        PgType::Timestamptz => instant_micros(got)? == want_text()?.parse::<i64>()?,
        PgType::Jsonb => json_eq(&serde_json::from_str(got)?, want),
        PgType::TextArray | PgType::ByteaArray => {
            let want: Vec<&str> = want
                .as_array()
                .context("expected array")?
                .iter()
                .map(|v| v.as_str().context("expected text elements"))
                .collect::<anyhow::Result<_>>()?;
            parse_array_literal(got)? == want
        }
        PgType::NumericArray => {
            let got: Vec<String> = parse_array_literal(got)?
                .iter()
                .map(|n| norm_number(n).context("numeric element"))
                .collect::<anyhow::Result<_>>()?;
            let want: Vec<String> = want
                .as_array()
                .context("expected array")?
                .iter()
                .map(|v| v.as_str().and_then(norm_number).context("number element"))
                .collect::<anyhow::Result<_>>()?;
            got == want
        }
    })
}

/// Migrates the export into the database at `url` and compares everything with the checker's
/// (`decimal96`: the target's NUMERIC is a 96-bit decimal).
async fn routed_aws_export(url: &str, decimal96: bool) -> anyhow::Result<()> {
    let export = export()?;
    let prepared = expected(export, decimal96)?;
    let report = migrate_export(export, &["--target", url, "--config", CONFIG])?;
    assert_eq!(report["state"], "complete", "{report}");
    assert_eq!(
        report["rows_loaded"],
        prepared.rows.len() as u64,
        "{report}"
    );
    assert_eq!(
        report["rows_rejected"],
        prepared.rejects.len() as u64,
        "{report}"
    );
    assert_eq!(report["rows_filtered"], prepared.filtered, "{report}");
    deep_verifies(url, &report, column_types()?.len())?;

    let client = connect(url).await?;
    let mut differences = Vec::new();
    let mut compared = 0usize;
    for (table, columns) in column_types()? {
        let list: Vec<String> = columns
            .iter()
            .map(|(name, _)| format!("\"{}\"", name.replace('"', "\"\"")))
            .collect();
        let sql = format!("SELECT {} FROM \"{table}\"", list.join(", "));
        let index = |name: &str| columns.iter().position(|(c, _)| c == name);
        let (pk_at, sk_at) = (
            index("dynamo_pk").context("dynamo_pk")?,
            index("dynamo_sk").context("dynamo_sk")?,
        );
        let mut seen = BTreeSet::new();
        for row in text_rows(&client, &sql).await? {
            let pk = row[pk_at].clone().unwrap_or_default();
            let sk = row[sk_at].clone().unwrap_or_default();
            let key = (table.clone(), pk.clone(), sk.clone());
            if !seen.insert(key.clone()) {
                differences.push(format!("{table}: ({pk}, {sk}) twice"));
                continue;
            }
            let Some(want) = prepared.rows.get(&key) else {
                differences.push(format!("{table}: ({pk}, {sk}) is not expected there"));
                continue;
            };
            // The checker and the config must name the same columns, or some go unchecked.
            let named: BTreeSet<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
            let modelled: BTreeSet<&str> = want.keys().map(String::as_str).collect();
            anyhow::ensure!(
                named == modelled,
                "{table}: the config's columns {named:?}, the checker's {modelled:?}"
            );
            for ((name, pg_type), got) in columns.iter().zip(&row) {
                let want = want.get(name).unwrap_or(&Value::Null);
                let same = match (got, want) {
                    (None, Value::Null) => true,
                    (None, _) | (Some(_), Value::Null) => false,
                    (Some(got), want) => same_value(*pg_type, got, want)
                        .with_context(|| format!("{table}.{name} of ({pk}, {sk})"))?,
                };
                if !same {
                    let shown = |s: String| s.chars().take(300).collect::<String>();
                    differences.push(format!(
                        "{table}.{name} of ({pk}, {sk}): got {}, want {}",
                        shown(format!("{got:?}")),
                        shown(want.to_string())
                    ));
                }
            }
            compared += 1;
        }
        for (t, pk, sk) in prepared.rows.keys() {
            if *t == table && !seen.contains(&(t.clone(), pk.clone(), sk.clone())) {
                differences.push(format!("{table}: ({pk}, {sk}) is missing"));
            }
        }
    }

    let mut rejected = BTreeSet::new();
    for row in text_rows(&client, "SELECT raw_line FROM ferry.rejects").await? {
        // BYTEA, in text format: `\x` and hex.
        let raw = row[0].clone().context("a reject without its line")?;
        let hex = raw
            .strip_prefix("\\x")
            .context("a reject's line is not hex")?;
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("?"), 16))
            .collect::<Result<Vec<u8>, _>>()
            .context("a reject's line is not hex")?;
        let line: Value = serde_json::from_slice(&bytes).context("a reject's line")?;
        let key = (
            line["Item"]["PK"]["S"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            line["Item"]["SK"]["S"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        if !rejected.insert(key.clone()) {
            differences.push(format!("reject of {key:?} twice"));
        }
    }
    for key in rejected.symmetric_difference(&prepared.rejects) {
        let side = if rejected.contains(key) {
            "rejected, not expected to be"
        } else {
            "expected to be rejected, is not"
        };
        differences.push(format!("{key:?}: {side}"));
    }

    if !differences.is_empty() {
        bail!(
            "{} differences from expected_routed.py; the first ones:\n{}",
            differences.len(),
            differences[..differences.len().min(25)].join("\n")
        );
    }
    assert_eq!(compared, prepared.rows.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_shaped_export_routes_as_an_independent_reader_says_on_postgres(
) -> anyhow::Result<()> {
    let url = ferry_tests::pg::shared_cluster()
        .create_database("routed_aws")
        .await?;
    routed_aws_export(&url, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_shaped_export_routes_as_an_independent_reader_says_on_heliosdb(
) -> anyhow::Result<()> {
    let server = ferry_tests::helios::HeliosServer::start()?;
    // HeliosDB's NUMERIC holds 28 digits: the items whose `lucky numbers` hold -1E-36 (36
    // digits after the point) are rejects there, each naming the value and the limit.
    routed_aws_export(&server.url(), true).await
}

/// Migrates the export in table mode into the database at `url` and compares the table with the
/// export, item by item.
async fn table_mode(url: &str, heliosdb: bool) -> anyhow::Result<()> {
    let export = export()?;
    let report = migrate_export(export, &["--target", url, "--key", "PK,SK"])?;
    assert_eq!(report["state"], "complete", "{report}");
    assert_eq!(report["rows_loaded"], ITEMS, "{report}");
    let table = report["table"].as_str().context("no table in the report")?;
    assert_eq!(table, "Storefront");
    deep_verifies(url, &report, 1)?;
    let rows = if heliosdb {
        // Read in text format, typed by the run's schema (HeliosDB has no `to_jsonb`).
        let run_id = report["run_id"]
            .as_str()
            .context("no run_id in the report")?;
        assert_run_matches_text(url, run_id, &export.path, &[]).await?
    } else {
        assert_table_matches(url, table, &export.path).await?
    };
    assert_eq!(rows as u64, ITEMS);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_shaped_export_loads_item_by_item_in_table_mode_on_postgres() -> anyhow::Result<()> {
    let url = ferry_tests::pg::shared_cluster()
        .create_database("aws_table_mode")
        .await?;
    table_mode(&url, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_shaped_export_loads_item_by_item_in_table_mode_on_heliosdb() -> anyhow::Result<()> {
    let server = ferry_tests::helios::HeliosServer::start()?;
    table_mode(&server.url(), true).await
}

/// Migrates the export with typed nested JSON, writes it back with `export-back` and compares
/// the items written with the export's.
async fn export_back_round_trip(url: &str) -> anyhow::Result<()> {
    let export = export()?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("typed.toml");
    std::fs::write(
        &config,
        "version = 1\n[mapping]\nnested_json = \"dynamodb\"\n",
    )?;
    let config = config.display().to_string();
    let report = migrate_export(
        export,
        &["--target", url, "--key", "PK,SK", "--config", &config],
    )?;
    assert_eq!(report["rows_loaded"], ITEMS, "{report}");
    let run_id = report["run_id"]
        .as_str()
        .context("no run_id in the report")?;
    let back = dir.path().join("back");
    let output = run_coordinator(
        &[
            "export-back",
            "--target",
            url,
            "--run-id",
            run_id,
            "--output",
            &back.display().to_string(),
            "--config",
            &config,
            "--json",
        ],
        &[],
    )?;
    assert_exit(&output, 0);
    let summary: Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("summary: {}", stderr_of(&output)))?;
    assert_eq!(summary["items"], ITEMS, "{summary}");
    assert_eq!(summary["problems"], serde_json::json!([]), "{summary}");
    let declared: Vec<&str> = summary["differences"]
        .as_array()
        .context("no differences in the summary")?
        .iter()
        .filter_map(|d| d["class"].as_str())
        .collect();
    assert_eq!(declared, ["provenance"], "{summary}");
    let compared = Command::new(python()?)
        .arg(ROUND_TRIP)
        .arg(&export.path)
        .arg(&back)
        .output()
        .context("running round_trip.py")?;
    let result: Value = serde_json::from_slice(&compared.stdout).with_context(|| {
        format!(
            "round_trip.py: {}",
            String::from_utf8_lossy(&compared.stderr)
        )
    })?;
    assert!(compared.status.success(), "{result:#}");
    assert_eq!(result["source"], ITEMS, "{result}");
    assert_eq!(result["exported"], ITEMS, "{result}");
    assert_eq!(result["differences"], 0, "{result}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_shaped_export_comes_back_exactly_from_postgres() -> anyhow::Result<()> {
    let url = ferry_tests::pg::shared_cluster()
        .create_database("aws_export_back")
        .await?;
    export_back_round_trip(&url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_shaped_export_comes_back_exactly_from_heliosdb() -> anyhow::Result<()> {
    let server = ferry_tests::helios::HeliosServer::start()?;
    export_back_round_trip(&server.url()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_shaped_export_reads_back_item_by_item_from_parquet() -> anyhow::Result<()> {
    let export = export()?;
    let ledger = ferry_tests::pg::shared_cluster()
        .create_database("aws_parquet")
        .await?;
    let dir = tempfile::tempdir()?;
    let dataset = dir.path().join("lake");
    let report = migrate_export(
        export,
        &[
            "--parquet",
            &dataset.display().to_string(),
            "--key",
            "PK,SK",
            "--ledger",
            &ledger,
        ],
    )?;
    assert_eq!(report["rows_loaded"], ITEMS, "{report}");
    let read = ferry_tests::parquet::read_dataset(&dataset.join("Storefront"))?;
    let source = read_source_items(&export.path, &["PK", "SK"])?;
    assert_eq!(source.len() as u64, ITEMS);
    assert_eq!(read.rows.len() as u64, ITEMS, "no row twice");
    let differences = compare(&source, &["PK", "SK"], &read.columns, "attrs", &read.rows);
    assert!(
        differences.is_empty(),
        "{} differences: {:#?}",
        differences.len(),
        &differences[..differences.len().min(20)]
    );
    Ok(())
}
