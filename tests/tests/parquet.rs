//! The Parquet sink end to end: an export holding every DynamoDB type (38-digit numbers, sets,
//! binary, deep maps, the edge items) written as a Parquet dataset by the real
//! `ferry-coordinator`, crashed (a failpoint between a file's publication and its checkpoint, and
//! kill -9 mid-run) and resumed, then read back by pyarrow and compared value by value with the
//! export; on a local folder with the ledger in PostgreSQL, on S3 (moto) with the same crashes,
//! and with the embedded HeliosDB as the ledger.

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_tests::compare::{compare, read_source_items};
use ferry_tests::gen::generate_export;
use ferry_tests::harness::{assert_exit, binary, gen_options, run_coordinator, stderr_of};
use ferry_tests::moto::shared_moto;
use ferry_tests::parquet::read_dataset;
use ferry_tests::pg::shared_cluster;

/// Reads `<dataset>/AppTable` back and requires it to equal the export's items exactly, in files
/// that are zstd-compressed, carry statistics and are listed by `_manifest.json`.
fn assert_dataset_matches(dataset: &Path, export_dir: &Path, items: usize) {
    let read = read_dataset(&dataset.join("AppTable")).expect("pyarrow reads the dataset");
    let source = read_source_items(export_dir, &["PK", "SK"]).unwrap();
    assert_eq!(source.len(), items);
    let diffs = compare(&source, &["PK", "SK"], &read.columns, "attrs", &read.rows);
    assert!(
        diffs.is_empty(),
        "{} differences: {:#?}",
        diffs.len(),
        &diffs[..diffs.len().min(20)]
    );
    assert_eq!(read.rows.len(), items, "no row twice");
    assert_eq!(read.manifest["complete"], true);
    assert_eq!(read.manifest["rows"].as_u64(), Some(items as u64));
    for file in &read.files {
        assert_eq!(file.codecs, ["ZSTD"], "{}", file.name);
        assert!(file.statistics, "{} has column statistics", file.name);
        assert!(file.row_groups >= 1 && file.rows > 0, "{file:?}");
    }
    // The sample's typed choices: 38-digit numbers stay exact text where they would not fit a
    // decimal, binary is binary, sets are lists.
    let types = &read.files[0].types;
    assert_eq!(types["avatar"], "binary", "{types:?}");
    assert_eq!(types["tags"], "list<item: string>", "{types:?}");
    assert_eq!(types["thumbnails"], "list<item: binary>", "{types:?}");
    assert_eq!(types["balance"], "decimal128(38, 2)", "{types:?}");
    assert_eq!(types["_ferry_chunk"], "int64");
    assert!(
        read.columns.iter().any(|c| c.decimal128_scale.is_some()),
        "some N column is decimal128: {types:?}"
    );
}

fn migrate_parquet(
    export: &Path,
    parquet: &str,
    ledger: Option<&str>,
    env: &[(String, String)],
) -> std::process::Output {
    let mut args = vec![
        "migrate".to_string(),
        "--export".into(),
        export.display().to_string(),
        "--parquet".into(),
        parquet.into(),
        "--key".into(),
        "PK,SK".into(),
    ];
    if let Some(ledger) = ledger {
        args.extend(["--ledger".into(), ledger.into()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    run_coordinator(&args, &env).unwrap()
}

fn small_chunks() -> Vec<(String, String)> {
    vec![
        ("FERRY_LOAD__CHUNK_LINES".into(), "300".into()),
        ("FERRY_LOAD__WORKERS".into(), "2".into()),
        ("FERRY_PARQUET__ROW_GROUP_ROWS".into(), "128".into()),
        // Sparse attributes (binary, binary sets) get columns too.
        ("FERRY_MAPPING__MIN_PRESENCE".into(), "0.01".into()),
    ]
}

/// Runs migrate until `dir` holds `files` Parquet files, then kill -9.
fn kill_mid_run(args: &[String], env: &[(String, String)], dir: &Path, files: usize) {
    let mut command = std::process::Command::new(binary("ferry-coordinator"));
    command.args(args).envs(env.iter().map(|(k, v)| (k, v)));
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let published = walk(dir).iter().filter(|p| p.ends_with(".parquet")).count();
        if published >= files {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "migrate ended before the kill"
        );
        assert!(Instant::now() < deadline, "no files appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.display().to_string());
            }
        }
    }
    out
}

#[tokio::test]
async fn every_type_round_trips_through_pyarrow_after_crashes_and_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let export = generate_export(dir.path(), &gen_options(11, 2500, 3)).unwrap();
    let ledger = shared_cluster()
        .create_database("parquet_local")
        .await
        .unwrap();
    let out = dir.path().join("lake");
    let location = out.display().to_string();

    // A crash between a file's publication and its checkpoint.
    let mut env = small_chunks();
    env.push(("FERRY_FAILPOINTS".into(), "after_copy=exit@3".into()));
    let crashed = migrate_parquet(dir.path(), &location, Some(&ledger), &env);
    assert_exit(&crashed, 86);
    // kill -9 while files are being written (commits slowed so the kill lands mid-run).
    let mut env = small_chunks();
    env.push(("FERRY_FAILPOINTS".into(), "after_commit=sleep150@1+".into()));
    let args: Vec<String> = [
        "migrate",
        "--export",
        &dir.path().display().to_string(),
        "--parquet",
        &location,
        "--key",
        "PK,SK",
        "--ledger",
        &ledger,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let already = walk(&out)
        .iter()
        .filter(|p| p.ends_with(".parquet"))
        .count();
    kill_mid_run(&args, &env, &out, already + 2);
    // Resume to the end: exit 0, verified.
    let done = migrate_parquet(dir.path(), &location, Some(&ledger), &small_chunks());
    assert_exit(&done, 0);
    assert_dataset_matches(&out, &export.export_dir, 2500);
    // The report counts the dataset's rows.
    let report = String::from_utf8_lossy(&done.stdout);
    assert!(report.contains("Parquet files"), "{report}");
    // Running it again changes nothing.
    let again = migrate_parquet(dir.path(), &location, Some(&ledger), &small_chunks());
    assert_exit(&again, 0);
    assert_dataset_matches(&out, &export.export_dir, 2500);

    // plan --dry-run names the files a run would write.
    let dry = run_coordinator(
        &[
            "plan",
            "--dry-run",
            "--export",
            &dir.path().display().to_string(),
            "--parquet",
            "s3://lake/app/",
            "--key",
            "PK,SK",
        ],
        &[("FERRY_LOAD__CHUNK_LINES", "300")],
    )
    .unwrap();
    assert_exit(&dry, 0);
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(text.contains("parquet dataset s3://lake/app/"), "{text}");
    assert!(text.contains("AppTable/part-"), "{text}");
    assert!(text.contains("-l<load>-c000000.parquet"), "{text}");
    assert!(!stderr_of(&dry).contains("ERROR"), "{}", stderr_of(&dry));
}

#[tokio::test]
async fn a_dataset_on_s3_is_written_once_through_crashes() {
    let moto = shared_moto();
    let s3 = moto.s3();
    s3.create_bucket().bucket("lake").send().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let export = generate_export(dir.path(), &gen_options(12, 1500, 2)).unwrap();
    let ledger = shared_cluster()
        .create_database("parquet_s3")
        .await
        .unwrap();
    let mut env = moto.env();
    env.extend(small_chunks());
    let mut crash = env.clone();
    crash.push(("FERRY_FAILPOINTS".into(), "after_copy=exit@2".into()));
    assert_exit(
        &migrate_parquet(dir.path(), "s3://lake/app/", Some(&ledger), &crash),
        86,
    );
    let done = migrate_parquet(dir.path(), "s3://lake/app/", Some(&ledger), &env);
    assert_exit(&done, 0);
    // Download the dataset and read it like the local one.
    let local = dir.path().join("download");
    let listed = s3
        .list_objects_v2()
        .bucket("lake")
        .prefix("app/")
        .send()
        .await
        .unwrap();
    let mut keys = Vec::new();
    for object in listed.contents() {
        let key = object.key().unwrap().to_string();
        let body = s3
            .get_object()
            .bucket("lake")
            .key(&key)
            .send()
            .await
            .unwrap();
        let bytes = body.body.collect().await.unwrap().into_bytes();
        let path = local.join(key.trim_start_matches("app/"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        keys.push(key);
    }
    assert!(
        keys.iter().any(|k| k == "app/AppTable/_manifest.json"),
        "{keys:?}"
    );
    assert_dataset_matches(&local, &export.export_dir, 1500);
}

#[tokio::test]
async fn the_embedded_heliosdb_keeps_the_ledger_of_a_parquet_run() {
    let dir = tempfile::tempdir().unwrap();
    let export = generate_export(dir.path(), &gen_options(13, 600, 2)).unwrap();
    let out = dir.path().join("lake");
    let data = dir.path().join("ledger");
    let mut env = small_chunks();
    env.push(("FERRY_TARGET__DATA_DIR".into(), data.display().to_string()));
    let done = migrate_parquet(dir.path(), &out.display().to_string(), None, &env);
    assert_exit(&done, 0);
    assert!(
        data.join("ferry-heliosdb.log").is_file(),
        "the embedded HeliosDB held the ledger"
    );
    assert_dataset_matches(&out, &export.export_dir, 600);
}

/// The migration guide's routed run into Parquet: one dataset per target table, in the
/// configured column types, with exactly the rows the database load holds.
#[tokio::test]
async fn a_routed_run_writes_one_dataset_per_table() {
    let dir = tempfile::tempdir().unwrap();
    let shop = ferry_tests::shop::generate_shop(41, 50, 12);
    let export = ferry_tests::shop::write_shop_export(dir.path(), &shop, 41, 2).unwrap();
    let ledger = shared_cluster()
        .create_database("parquet_routed")
        .await
        .unwrap();
    let lake = dir.path().join("lake");
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/examples/migration-guide.toml"
    );
    let out = run_coordinator(
        &[
            "migrate",
            "--export",
            &export.root.display().to_string(),
            "--parquet",
            &lake.display().to_string(),
            "--ledger",
            &ledger,
            "--config",
            config,
        ],
        &[("FERRY_LOAD__CHUNK_LINES", "97")],
    )
    .unwrap();
    assert_exit(&out, 0);
    // The guide's 12 post-load steps and 3 verify queries are SQL on tables that are datasets here.
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("15 [[post_load]]/[[verify]] entries of the config were not run"),
        "{printed}"
    );
    let expected = [
        ("users", shop.users.len()),
        ("orders", shop.orders.len()),
        ("products", shop.products.len()),
        ("reviews", shop.reviews.len()),
        ("sessions", shop.live_sessions().len()),
    ];
    for (table, rows) in expected {
        let read = read_dataset(&lake.join(table)).unwrap();
        assert_eq!(read.rows.len(), rows, "{table}");
        assert_eq!(read.manifest["rows"].as_u64(), Some(rows as u64), "{table}");
        let types = &read.files[0].types;
        match table {
            "orders" => {
                assert_eq!(types["total"], "decimal128(12, 2)", "{types:?}");
                assert_eq!(types["id"], "int32");
                assert_eq!(types["created_at"], "timestamp[us, tz=UTC]");
                for row in &read.rows {
                    assert!(row["dynamo_sk"].as_str().unwrap().starts_with("ORDER#"));
                }
            }
            "reviews" => assert_eq!(types["rating"], "int16", "{types:?}"),
            _ => {}
        }
    }
}
