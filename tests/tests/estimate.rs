//! `ferry-coordinator probe` and `plan --dry-run`'s estimate against real servers: a probe on
//! PostgreSQL and on HeliosDB records its measurements in the ledger (and leaves no scratch table
//! behind), and the dry-run then names that probe as the source of its constants; after a finished
//! run, the run is the source of a worker's rate. A dry-run on a target without a ledger, or one
//! it cannot reach, creates nothing and estimates from the configuration's keys. Values only:
//! nothing here depends on how fast the machine is.

use std::process::Output;

use ferry_tests::gen::{generate_export, GenOptions};
use ferry_tests::harness::{assert_exit, connect, run_coordinator, stderr_of};
use ferry_tests::helios::HeliosServer;
use ferry_tests::pg::{free_port, shared_cluster};

/// A small probe: few rows per level, no time limit that a slow machine could reach.
const PROBE_ENV: &[(&str, &str)] = &[
    ("FERRY_PROBE__ROWS", "2000"),
    ("FERRY_PROBE__DECODE_ITEMS", "1000"),
    ("FERRY_PROBE__READ_BYTES", "100000"),
    ("FERRY_PROBE__LEVEL_SECONDS", "3600"),
];

fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every row of `sql`'s first column, as text, through the simple protocol (both servers).
async fn texts(url: &str, sql: &str) -> anyhow::Result<Vec<String>> {
    let client = connect(url).await?;
    let mut out = Vec::new();
    for message in client.simple_query(sql).await? {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            out.push(row.get(0).unwrap_or_default().to_string());
        }
    }
    Ok(out)
}

/// Every table the database has, schema-qualified and sorted.
async fn all_tables(url: &str) -> anyhow::Result<Vec<String>> {
    let mut tables = texts(
        url,
        "SELECT CAST(table_schema AS TEXT) || '.' || CAST(table_name AS TEXT) \
         FROM information_schema.tables",
    )
    .await?;
    tables.sort();
    Ok(tables)
}

/// The line of `text` that starts with `prefix`.
fn line<'t>(text: &'t str, prefix: &str) -> &'t str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"))
}

/// Runs `probe --json` and returns its measurements.
fn probe(url: &str, extra: &[&str]) -> anyhow::Result<serde_json::Value> {
    let mut args = vec!["probe", "--target", url, "--json"];
    args.extend_from_slice(extra);
    let output = run_coordinator(&args, PROBE_ENV)?;
    assert_exit(&output, 0);
    Ok(serde_json::from_slice(&output.stdout)?)
}

fn dry_run(export: &std::path::Path, url: &str, env: &[(&str, &str)]) -> anyhow::Result<String> {
    let export = export.display().to_string();
    let output = run_coordinator(
        &[
            "plan",
            "--dry-run",
            "--export",
            &export,
            "--key",
            "PK,SK",
            "--target",
            url,
            "--workers",
            "4",
        ],
        env,
    )?;
    assert_exit(&output, 0);
    assert!(
        !stderr_of(&output).contains("ERROR"),
        "{}",
        stderr_of(&output)
    );
    Ok(stdout_of(&output))
}

/// What a probe printed and what `ferry.probes` holds agree, and no scratch table is left.
async fn assert_recorded(url: &str, measured: &serde_json::Value) -> anyhow::Result<String> {
    let probe_id = measured["probe_id"].as_str().expect("probe_id").to_string();
    let levels: Vec<u64> = measured["levels"]
        .as_array()
        .expect("levels")
        .iter()
        .map(|l| l["connections"].as_u64().unwrap())
        .collect();
    assert_eq!(levels, vec![1, 2, 4], "{measured}");
    for level in measured["levels"].as_array().unwrap() {
        assert_eq!(level["rows"], 2000, "{measured}");
    }
    let cores = std::thread::available_parallelism()?.get() as u64;
    assert_eq!(measured["cores"], cores);
    assert_eq!(measured["decode_lines"].as_u64(), Some(1000), "{measured}");
    let rounded = |key: &str| measured[key].as_f64().unwrap().round() as i64;
    let row = texts(
        url,
        "SELECT probe_id || '|' || CAST(cores AS TEXT) || '|' || \
         CAST(decode_items_per_sec AS TEXT) || '|' || CAST(ceiling_rows_per_sec AS TEXT) || '|' || \
         CAST(ceiling_connections AS TEXT) FROM ferry.probes",
    )
    .await?;
    assert_eq!(
        row,
        vec![format!(
            "{probe_id}|{cores}|{}|{}|{}",
            rounded("decode_items_per_sec"),
            rounded("ceiling_rows_per_sec"),
            measured["ceiling_connections"]
        )]
    );
    assert!(rounded("ceiling_rows_per_sec") > 0 && rounded("decode_items_per_sec") > 0);
    let scratch = texts(
        url,
        "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
         WHERE table_name LIKE 'ferry_probe%'",
    )
    .await?;
    assert!(scratch.is_empty(), "scratch tables left: {scratch:?}");
    Ok(probe_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_probe_is_what_the_dry_run_estimates_from() -> anyhow::Result<()> {
    let url = shared_cluster().create_database("estimate_pg").await?;
    let dir = tempfile::tempdir()?;
    let export = generate_export(dir.path(), &GenOptions::sized(51, 3_000, 3))?;
    let export_arg = dir.path().display().to_string();

    let measured = probe(&url, &["--export", &export_arg, "--key", "PK,SK"])?;
    assert_eq!(measured["load_path"], "binary", "{measured}");
    let probe_id = assert_recorded(&url, &measured).await?;
    // The source: the export's data files, up to probe.read_bytes (whole reads, so maybe more).
    let stored: u64 = export.data_files.iter().map(|f| f.bytes).sum();
    let source = &measured["source"];
    assert!(
        source["bytes"].as_u64().unwrap() >= stored.min(100_000),
        "{source}"
    );
    assert_eq!(
        source["location"].as_str(),
        Some(format!("{}/", export.export_dir.display()).as_str())
    );
    let recorded_source = texts(
        &url,
        "SELECT source_location || '|' || CAST(source_bytes_read AS TEXT) FROM ferry.probes",
    )
    .await?;
    assert_eq!(
        recorded_source,
        vec![format!(
            "{}|{}",
            source["location"].as_str().unwrap(),
            source["bytes"]
        )]
    );

    // The dry-run reads it, writes nothing, and names it as each constant's source.
    let before = all_tables(&url).await?;
    let text = dry_run(dir.path(), &url, &[])?;
    assert_eq!(
        all_tables(&url).await?,
        before,
        "the dry-run changed the tables"
    );
    assert!(
        text.contains(
            "measurements: read from the target's ledger (no finished run with timed shards)"
        ),
        "{text}"
    );
    let decode = measured["decode_items_per_sec"].as_f64().unwrap().round();
    let worker = line(&text, "  worker");
    assert!(
        worker.contains(&format!(
            "{decode:.0} items/s per worker  <- probe {probe_id} ("
        )),
        "{text}"
    );
    assert!(
        worker.contains("× 1 (load.estimate_cores_per_worker)"),
        "{text}"
    );
    let ceiling = measured["ceiling_rows_per_sec"].as_f64().unwrap().round();
    let target = line(&text, "  target");
    assert!(
        target.contains(&format!(
            "{ceiling:.0} items/s in all       <- probe {probe_id} ("
        )),
        "{text}"
    );
    assert!(
        line(&text, "  source").contains(&format!("probe {probe_id} (")),
        "{text}"
    );
    assert!(text.contains("<- the target saturates"), "{text}");
    assert!(text.contains("estimate: "), "{text}");

    // A finished run: its shards' timings give a worker's rate (chunks of 200 lines, so each
    // shard of about 1,000 has several timed chunks); the probe still gives the ceiling.
    let output = run_coordinator(
        &[
            "migrate",
            "--export",
            &export_arg,
            "--target",
            &url,
            "--key",
            "PK,SK",
            "--json",
        ],
        &[("FERRY_LOAD__CHUNK_LINES", "200")],
    )?;
    assert_exit(&output, 0);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let run_id = report["run_id"].as_str().expect("run_id");
    // Binary COPY checkpoints in the chunk's transaction: the last chunk of each shard is untimed.
    let timed: u64 = export
        .data_files
        .iter()
        .map(|f| (f.item_count - 1) / 200 * 200)
        .sum();
    let text = dry_run(dir.path(), &url, &[])?;
    let worker = line(&text, "  worker");
    assert!(
        worker.contains(&format!(
            "<- latest finished run {run_id} ({timed} items timed in 3 shards"
        )),
        "{text}"
    );
    assert!(
        line(&text, "  target").contains(&format!("probe {probe_id} (")),
        "{text}"
    );
    assert!(
        text.contains("measurements: read from the target's ledger\n"),
        "{text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heliosdb_probe_is_what_the_dry_run_estimates_from() -> anyhow::Result<()> {
    let server = HeliosServer::start()?;
    let url = server.url();
    let dir = tempfile::tempdir()?;
    generate_export(dir.path(), &GenOptions::sized(52, 2_000, 2))?;

    // No ledger yet: the dry-run creates nothing and estimates from the configuration.
    let before = all_tables(&url).await?;
    let text = dry_run(dir.path(), &url, &[])?;
    assert_eq!(
        all_tables(&url).await?,
        before,
        "the dry-run changed the tables"
    );
    assert!(
        text.contains("measurements: none read (the target has no ferry ledger)"),
        "{text}"
    );
    assert!(
        line(&text, "  worker").ends_with("<- config load.estimate_items_per_second"),
        "{text}"
    );

    // A probe on synthetic items (no --export): CSV COPY in autocommit, the HeliosDB way.
    let measured = probe(&url, &[])?;
    assert_eq!(measured["load_path"], "csv", "{measured}");
    assert!(measured["source"].is_null(), "{measured}");
    assert_eq!(measured["items_source"], "synthetic lines");
    let probe_id = assert_recorded(&url, &measured).await?;

    let before = all_tables(&url).await?;
    let text = dry_run(dir.path(), &url, &[])?;
    assert_eq!(
        all_tables(&url).await?,
        before,
        "the dry-run changed the tables"
    );
    let decode = measured["decode_items_per_sec"].as_f64().unwrap().round();
    assert!(
        line(&text, "  worker").contains(&format!(
            "{decode:.0} items/s per worker  <- probe {probe_id} ("
        )),
        "{text}"
    );
    let ceiling = measured["ceiling_rows_per_sec"].as_f64().unwrap().round();
    assert!(
        line(&text, "  target").contains(&format!(
            "{ceiling:.0} items/s in all       <- probe {probe_id} ("
        )),
        "{text}"
    );
    assert!(
        line(&text, "  source")
            .ends_with("config load.estimate_source_bytes_per_second (the probe read no export)"),
        "{text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_without_a_ledger_touches_nothing_and_uses_the_config() -> anyhow::Result<()> {
    let url = shared_cluster().create_database("estimate_none").await?;
    let dir = tempfile::tempdir()?;
    let export = generate_export(dir.path(), &GenOptions::sized(53, 3_000, 3))?;
    let env = [
        ("FERRY_LOAD__ESTIMATE_ITEMS_PER_SECOND", "1000"),
        ("FERRY_LOAD__ESTIMATE_TARGET_ITEMS_PER_SECOND", "2500"),
        ("FERRY_LOAD__ESTIMATE_SOURCE_BYTES_PER_SECOND", "1000000000"),
    ];
    let schemas = "SELECT CAST(schema_name AS TEXT) FROM information_schema.schemata \
                   WHERE schema_name = 'ferry'";
    let before = all_tables(&url).await?;
    let text = dry_run(dir.path(), &url, &env)?;
    assert_eq!(
        all_tables(&url).await?,
        before,
        "the dry-run changed the tables"
    );
    assert!(
        texts(&url, schemas).await?.is_empty(),
        "a ferry schema appeared"
    );
    assert!(
        text.contains("measurements: none read (the target has no ferry ledger): the constants are the configuration's"),
        "{text}"
    );
    assert!(
        line(&text, "  worker")
            .ends_with("1000 items/s per worker  <- config load.estimate_items_per_second"),
        "{text}"
    );
    assert!(
        line(&text, "  target")
            .ends_with("2500 items/s in all       <- config load.estimate_target_items_per_second"),
        "{text}"
    );
    assert!(
        line(&text, "  source").ends_with("config load.estimate_source_bytes_per_second"),
        "{text}"
    );
    // 1,000 items/s per worker, a ceiling of 2,500: the third worker saturates it.
    assert!(
        text.contains("model: a worker loads min(worker, source) = 1000 items/s; w workers load min(w × 1000, 2500); the target saturates at 3 workers"),
        "{text}"
    );
    for (workers, rate) in [(1, 1000), (2, 2000)] {
        assert!(
            text.contains(&format!("\n{workers:>8} {rate:>14} ")),
            "{text}"
        );
    }
    assert!(
        line(&text, &format!("{:>8} {:>14} ", 3, 2500)).ends_with("  <- the target saturates"),
        "{text}"
    );
    assert!(!text.contains(&format!("\n{:>8} ", 4)), "{text}");
    // Four workers, three shards: three busy at 2,500 items/s; the largest shard alone at
    // 1,000 items/s bounds it from below.
    let total = export.total_items as f64;
    let largest = export
        .data_files
        .iter()
        .map(|f| f.item_count)
        .max()
        .unwrap() as f64;
    let seconds = (total / 2500.0).max(largest / 1000.0).ceil();
    assert!(
        text.contains(&format!(
            "estimate: {seconds:.0} s with 4 workers at 2500 items/s in all"
        )),
        "{text}"
    );

    // An unreachable target: said so, and the same estimate.
    let nowhere = format!("postgres://postgres@127.0.0.1:{}/nowhere", free_port()?);
    let text = dry_run(dir.path(), &nowhere, &env)?;
    assert!(
        text.contains("measurements: none read (the target is unreachable: "),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "estimate: {seconds:.0} s with 4 workers at 2500 items/s in all"
        )),
        "{text}"
    );
    Ok(())
}
