//! Keys built after the load (PostgreSQL, `coordinator/src/keys.rs`), with the real
//! `ferry-coordinator` binary:
//! - a 100k-item run's table is created without its key and the ledger says so; a crash after the
//!   key was built but before it committed (failpoint `key_built`) leaves no key and an unbuilt
//!   record; meanwhile `--append` of another export into the table is refused naming the run;
//!   `migrate` again builds the key, and the table equals the export; then the `--append` loads,
//!   and an overlapping `--append` is refused by the key;
//! - `load.defer_key = false` creates the key with the table;
//! - a key the export holds twice (in two files, beyond the inference sample) fails the run naming the key and both lines, the
//!   key is not added, and running again fails the same way without loading anything twice; the
//!   table dropped and a corrected export loaded under its name gets its key;
//! - two `finalize`s of the run at once: one builds the key, the other finds it built;
//! - a key a user added by hand before `finalize` is recorded built, not built twice; a row
//!   written by hand under a loaded key fails the key, named as not Ferry's.

use std::io::Read;

use ferry_tests::gen::{generate_export, rewrite_lines, GenOptions, GeneratedExport};
use ferry_tests::harness::{
    assert_exit, assert_table_matches, empty_target, query_i64, query_text, run_coordinator,
    stderr_of, TestTarget,
};

const EXIT_FAILPOINT: i32 = 86;

/// The primary keys on `table` (0 or 1).
async fn primary_keys(url: &str, table: &str) -> anyhow::Result<i64> {
    query_i64(
        url,
        &format!(
            "SELECT count(*) FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid \
             WHERE t.relname = '{table}' AND c.contype = 'p'"
        ),
    )
    .await
}

/// The key record's state of `table`, if any.
async fn key_state(url: &str, table: &str) -> anyhow::Result<Option<String>> {
    query_text(
        url,
        &format!("SELECT max(state) FROM ferry.pending_keys WHERE table_name = '{table}'"),
    )
    .await
}

fn migrate(
    export: &GeneratedExport,
    url: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let root = export.root.display().to_string();
    let mut args = vec![
        "migrate", "--export", &root, "--target", url, "--key", "PK,SK",
    ];
    args.extend_from_slice(extra);
    run_coordinator(&args, env).expect("ferry-coordinator runs")
}

fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        stderr_of(output)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_tables_key_is_built_after_the_load_and_survives_a_crash_in_the_build(
) -> anyhow::Result<()> {
    let (url, _server) = empty_target(TestTarget::Postgres, "deferred_key_crash").await?;
    let dir = tempfile::tempdir()?;
    let a = generate_export(&dir.path().join("a"), &GenOptions::sized(81, 100_000, 3))?;
    let table = a.table_name.clone();
    let env = [("FERRY_LOAD__CHUNK_LINES", "20000")];

    // Killed with the key built and marked, before COMMIT.
    let crashed = migrate(
        &a,
        &url,
        &[],
        &[env[0], ("FERRY_FAILPOINTS", "key_built=exit")],
    );
    assert_exit(&crashed, EXIT_FAILPOINT);
    assert_eq!(
        primary_keys(&url, &table).await?,
        0,
        "the build did not commit"
    );
    assert_eq!(
        key_state(&url, &table).await?.as_deref(),
        Some("building"),
        "the record says who started the build, and that it is not built"
    );
    assert_eq!(
        query_i64(&url, &format!("SELECT count(*) FROM \"{table}\"")).await?,
        100_000
    );
    let builder = query_text(
        &url,
        &format!("SELECT builder FROM ferry.pending_keys WHERE table_name = '{table}'"),
    )
    .await?
    .unwrap_or_default();
    assert!(builder.contains("pid"), "{builder}");
    // `status` says so.
    let run_id = query_text(&url, "SELECT max(run_id) FROM ferry.runs")
        .await?
        .unwrap_or_default();
    let status = run_coordinator(&["status", "--target", &url, "--run-id", &run_id], &[])?;
    let text = output_text(&status);
    assert!(
        text.contains("key     table \"AppTable\": building (") && text.contains(&builder),
        "{text}"
    );

    // Meanwhile, nothing else loads into the table: it has no key to refuse a key it holds.
    let b = generate_export(
        &dir.path().join("b"),
        &GenOptions {
            export_id: "01700000000001-0b0b0b0b".into(),
            ..GenOptions::sized(82, 2_000, 1)
        },
    )?;
    rewrite_lines(&b, |line| {
        line.replacen(r#""PK":{"S":""#, r#""PK":{"S":"B-"#, 1)
    })?;
    let refused = migrate(&b, &url, &["--append"], &env);
    assert_ne!(refused.status.code(), Some(0), "{}", output_text(&refused));
    let text = output_text(&refused);
    assert!(
        text.contains("has no key yet") && text.contains("builds its key after its load"),
        "{text}"
    );

    // The run again: the key is built, the table is the export; `ANALYZE` samples for the
    // configured statistics target.
    let resumed = migrate(
        &a,
        &url,
        &[],
        &[env[0], ("FERRY_LOAD__STATISTICS_TARGET", "10")],
    );
    assert_exit(&resumed, 0);
    let report = String::from_utf8_lossy(&resumed.stdout).to_string();
    assert!(report.contains("ADD PRIMARY KEY"), "{report}");
    assert!(report.contains("statistics target 10"), "{report}");
    let bounds = query_i64(
        &url,
        "SELECT coalesce(array_length(histogram_bounds::text::text[], 1), 0)::int8 FROM pg_stats \
         WHERE tablename = 'AppTable' AND attname = 'PK'",
    )
    .await?;
    assert!((2..=11).contains(&bounds), "{bounds} histogram bounds");
    assert_eq!(primary_keys(&url, &table).await?, 1);
    assert_eq!(key_state(&url, &table).await?.as_deref(), Some("built"));
    assert_table_matches(&url, &table, &a.export_dir).await?;

    // Now the append loads, and an overlapping one is refused by the key.
    let appended = migrate(&b, &url, &["--append"], &env);
    assert_exit(&appended, 0);
    assert_eq!(
        query_i64(&url, &format!("SELECT count(*) FROM \"{table}\"")).await?,
        102_000
    );
    // B's items again, in an export of their own.
    let overlap = generate_export(
        &dir.path().join("c"),
        &GenOptions {
            export_id: "01700000000002-0c0c0c0c".into(),
            ..GenOptions::sized(82, 2_000, 1)
        },
    )?;
    rewrite_lines(&overlap, |line| {
        line.replacen(r#""PK":{"S":""#, r#""PK":{"S":"B-"#, 1)
    })?;
    let refused = migrate(&overlap, &url, &["--append"], &env);
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        output_text(&refused).contains("already in table"),
        "{}",
        output_text(&refused)
    );
    assert_eq!(
        query_i64(&url, &format!("SELECT count(*) FROM \"{table}\"")).await?,
        102_000,
        "the overlapping append left nothing"
    );

    // `load.defer_key = false`: the key comes with the table, and no record is made.
    let (url2, _server2) = empty_target(TestTarget::Postgres, "deferred_key_off").await?;
    let small = generate_export(&dir.path().join("d"), &GenOptions::sized(83, 3_000, 1))?;
    let off = migrate(
        &small,
        &url2,
        &[],
        &[
            ("FERRY_LOAD__DEFER_KEY", "false"),
            ("FERRY_FAILPOINTS", "after_commit=exit"),
        ],
    );
    assert_exit(&off, EXIT_FAILPOINT);
    assert_eq!(primary_keys(&url2, &small.table_name).await?, 1);
    assert_eq!(key_state(&url2, &small.table_name).await?, None);
    Ok(())
}

/// An empty PostgreSQL database `name` and an export of `items` items (`seed`) in `files` files,
/// loaded by a `migrate` killed after building the key and before committing it: every shard in,
/// the key not there, the record unbuilt.
async fn loaded_without_key(
    name: &str,
    seed: u64,
    items: u64,
    files: usize,
) -> anyhow::Result<(String, tempfile::TempDir, GeneratedExport)> {
    let (url, _none) = empty_target(TestTarget::Postgres, name).await?;
    let dir = tempfile::tempdir()?;
    let export = generate_export(dir.path(), &GenOptions::sized(seed, items, files))?;
    let crashed = migrate(
        &export,
        &url,
        &[],
        &[("FERRY_FAILPOINTS", "key_built=exit")],
    );
    assert_exit(&crashed, EXIT_FAILPOINT);
    Ok((url, dir, export))
}

/// The first `n` lines of a gzip data file.
fn first_lines(path: &std::path::Path, n: usize) -> anyhow::Result<Vec<String>> {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path)?).read_to_string(&mut text)?;
    Ok(text.lines().take(n).map(str::to_string).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_export_holds_twice_fails_the_key_naming_both_lines() -> anyhow::Result<()> {
    let (url, _server) = empty_target(TestTarget::Postgres, "deferred_key_twice").await?;
    let dir = tempfile::tempdir()?;
    let export = generate_export(dir.path(), &GenOptions::sized(84, 20_000, 2))?;
    let files: Vec<_> = export
        .data_files
        .iter()
        .filter(|f| f.item_count > 0)
        .cloned()
        .collect();
    assert!(
        files.len() >= 2 && files[1].item_count >= 9_000,
        "{files:?}"
    );
    // Line 9000 of the second file becomes line 5 of the first: the same item, twice (beyond the
    // 500 items inference samples, which would refuse the key before anything loads).
    let twice = first_lines(&files[0].path, 5)?.pop().expect("5 lines");
    let target_line = files[1].path.clone();
    let seen = std::sync::atomic::AtomicU64::new(0);
    let first_count = files[0].item_count;
    // `rewrite_lines` visits the files in order; count lines to find the second file's 7th.
    let first_index = export
        .data_files
        .iter()
        .position(|f| f.path == files[0].path)
        .expect("listed");
    let second_index = export
        .data_files
        .iter()
        .position(|f| f.path == target_line)
        .expect("listed");
    assert!(first_index < second_index);
    let before_second: u64 = export.data_files[..second_index]
        .iter()
        .map(|f| f.item_count)
        .sum();
    assert!(before_second >= first_count);
    rewrite_lines(&export, |line| {
        let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if n == before_second + 9000 {
            twice.clone()
        } else {
            line.to_string()
        }
    })?;
    let table = export.table_name.clone();
    for attempt in 0..2 {
        let env = [
            ("FERRY_LOAD__CHUNK_LINES", "3000"),
            ("FERRY_MAPPING__SAMPLE_ITEMS", "500"),
        ];
        let output = migrate(&export, &url, &[], &env);
        let text = output_text(&output);
        assert_exit(&output, 1);
        let first = format!("line 5 of {}", files[0].path.display());
        let second = format!("line 9000 of {}", files[1].path.display());
        assert!(
            text.contains("its key cannot be built")
                && text.contains("the export holds key (PK=")
                && text.contains(") twice: ")
                && text.contains(&first)
                && text.contains(&second),
            "attempt {attempt}: {text}"
        );
        assert_eq!(primary_keys(&url, &table).await?, 0, "no key was added");
        assert_eq!(key_state(&url, &table).await?.as_deref(), Some("failed"));
        assert_eq!(
            query_i64(&url, &format!("SELECT count(*) FROM \"{table}\"")).await?,
            20_000,
            "every line loaded once, on each attempt"
        );
    }
    // With `load.reject_lines = "omitted"` the lines are still named, the key's values are not.
    let item: serde_json::Value = serde_json::from_str(&twice)?;
    let pk = item["Item"]["PK"]["S"]
        .as_str()
        .expect("a string PK")
        .to_string();
    let output = migrate(
        &export,
        &url,
        &[],
        &[
            ("FERRY_LOAD__CHUNK_LINES", "3000"),
            ("FERRY_MAPPING__SAMPLE_ITEMS", "500"),
            ("FERRY_LOAD__REJECT_LINES", "omitted"),
        ],
    );
    assert_exit(&output, 1);
    let text = output_text(&output);
    assert!(
        text.contains("line 5 of") && text.contains("line 9000 of") && !text.contains(&pk),
        "{pk}: {text}"
    );
    // The user drops the table and loads a corrected export into the same name: the failed
    // record of the dropped table does not stand for the new one, whose key is built.
    ferry_tests::harness::connect(&url)
        .await?
        .batch_execute(&format!("DROP TABLE \"{table}\""))
        .await?;
    let corrected = generate_export(
        &dir.path().join("corrected"),
        &GenOptions {
            export_id: "01700000000003-0d0d0d0d".into(),
            ..GenOptions::sized(85, 3_000, 1)
        },
    )?;
    let output = migrate(&corrected, &url, &[], &[]);
    assert_exit(&output, 0);
    assert_eq!(primary_keys(&url, &table).await?, 1);
    assert_eq!(key_state(&url, &table).await?.as_deref(), Some("built"));
    assert_table_matches(&url, &table, &corrected.export_dir).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_finalizes_at_once_build_the_key_once() -> anyhow::Result<()> {
    // Every shard in, the key built but not committed: the run waits for a finalize.
    let (url, _dir, export) = loaded_without_key("deferred_key_race", 86, 5_000, 2).await?;
    let run_id = query_text(&url, "SELECT max(run_id) FROM ferry.runs")
        .await?
        .unwrap_or_default();
    let finalize = || {
        std::process::Command::new(ferry_tests::harness::binary("ferry-coordinator"))
            .args(["finalize", "--target", &url, "--run-id", &run_id, "--json"])
            .env_remove("FERRY_FAILPOINTS")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
    };
    let (first, second) = (finalize()?, finalize()?);
    let mut states = Vec::new();
    for child in [first, second] {
        let output = child.wait_with_output()?;
        assert_exit(&output, 0);
        let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        let key = report["post_load"]
            .as_array()
            .expect("post-load lines")
            .iter()
            .find(|l| {
                l["step"]
                    .as_str()
                    .is_some_and(|s| s.contains("ADD PRIMARY KEY"))
            })
            .map(|l| l["state"].as_str().unwrap_or_default().to_string());
        states.push(key);
    }
    // One built it; the other found it built (or, finishing after the first's whole finalize,
    // found the run complete and ran no post-load step).
    assert_eq!(
        states
            .iter()
            .filter(|s| s.as_deref() == Some("ran"))
            .count(),
        1,
        "{states:?}"
    );
    assert_eq!(primary_keys(&url, &export.table_name).await?, 1);
    assert_eq!(
        key_state(&url, &export.table_name).await?.as_deref(),
        Some("built")
    );
    assert_table_matches(&url, &export.table_name, &export.export_dir).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_added_by_hand_before_finalize_is_recorded_built() -> anyhow::Result<()> {
    let (url, _dir, export) = loaded_without_key("deferred_key_by_hand", 87, 2_000, 1).await?;
    // An impatient user adds the key themselves.
    ferry_tests::harness::connect(&url)
        .await?
        .batch_execute("ALTER TABLE \"AppTable\" ADD PRIMARY KEY (\"SK\", \"PK\")")
        .await?;
    let output = migrate(&export, &url, &[], &[]);
    assert_exit(&output, 0);
    let text = output_text(&output);
    assert!(
        text.contains("the table already had a key over the key columns"),
        "{text}"
    );
    assert_eq!(key_state(&url, "AppTable").await?.as_deref(), Some("built"));
    assert_eq!(primary_keys(&url, "AppTable").await?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_written_by_hand_under_a_loaded_key_is_named_as_not_ferrys() -> anyhow::Result<()> {
    let (url, _dir, export) = loaded_without_key("deferred_key_foreign", 88, 2_000, 1).await?;
    // Someone copies a loaded row by hand while the key is pending (no provenance).
    ferry_tests::harness::connect(&url)
        .await?
        .batch_execute(
            "INSERT INTO \"AppTable\" (\"PK\", \"SK\") \
             SELECT \"PK\", \"SK\" FROM \"AppTable\" ORDER BY \"PK\", \"SK\" LIMIT 1",
        )
        .await?;
    let output = migrate(&export, &url, &[], &[]);
    assert_exit(&output, 1);
    let text = output_text(&output);
    assert!(
        text.contains("its key cannot be built")
            && text.contains("1 of the rows under such keys carry no provenance"),
        "{text}"
    );
    assert_eq!(
        key_state(&url, "AppTable").await?.as_deref(),
        Some("failed")
    );
    Ok(())
}
