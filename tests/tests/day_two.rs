//! The commands a team runs on day two, where they meet each other, on PostgreSQL and HeliosDB
//! (and the Parquet sink where it applies): each of the ledger issue's reproductions, kept.
//! - a second export appended to a Parquet dataset keeps the first run's files, and the dataset's
//!   `_manifest.json` lists both runs' files (pyarrow reads back every item of both exports);
//! - `reset` of a run that catch-up windows follow, and of a window's shard, is refused with what
//!   to do instead, and the table keeps the final state;
//! - `reset` racing a live autocommit COPY (a worker held mid-chunk by a failpoint) is refused
//!   while the chunk is in flight, the worker's load ends exact; after a kill -9 mid-chunk, only
//!   `reset --force` passes, and the reload is exact.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_tests::compare::{compare, read_source_items};
use ferry_tests::gen::{generate_export, rewrite_lines, GenOptions};
use ferry_tests::harness::{
    assert_exit, assert_run_matches_text, binary, connect, empty_target, gen_options, migrate_path,
    query_text, run_coordinator, stderr_of, TestTarget,
};
use ferry_tests::history::{table_text, History};
use ferry_tests::parquet::read_dataset;

async fn scalar(url: &str, sql: &str) -> anyhow::Result<String> {
    Ok(query_text(url, sql).await?.unwrap_or_default())
}

/// Parquet `--append`: export A, then a disjoint export B appended to the same dataset, with the
/// ledger in PostgreSQL and in HeliosDB. Before the fix B's finalize deleted A's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parquet_append_keeps_the_first_runs_files() -> anyhow::Result<()> {
    for target in [TestTarget::Postgres, TestTarget::HeliosDb] {
        let (ledger, _server) = empty_target(target, "parquet_append").await?;
        let dir = tempfile::tempdir()?;
        let a = generate_export(&dir.path().join("a"), &gen_options(71, 1_500, 2))?;
        // B: the same items under other partition keys, in an export of its own.
        let b = generate_export(
            &dir.path().join("b"),
            &GenOptions {
                export_id: "01700000000001-0b0b0b0b".into(),
                ..gen_options(71, 1_500, 2)
            },
        )?;
        rewrite_lines(&b, |line| {
            line.replacen(r#""PK":{"S":""#, r#""PK":{"S":"B-"#, 1)
        })?;
        let lake = dir.path().join("lake");
        let lake_arg = lake.display().to_string();
        let env = [("FERRY_LOAD__CHUNK_LINES", "400")];
        for (export, append) in [(&a, false), (&b, true)] {
            let export_arg = export.root.display().to_string();
            let mut args = vec![
                "migrate",
                "--export",
                export_arg.as_str(),
                "--parquet",
                lake_arg.as_str(),
                "--ledger",
                ledger.as_str(),
                "--key",
                "PK,SK",
            ];
            if append {
                args.push("--append");
            }
            let output = run_coordinator(&args, &env)?;
            assert_exit(&output, 0);
        }
        // A full run of A again into the dataset holding both is still refused without --append.
        let a_again = generate_export(
            &dir.path().join("c"),
            &GenOptions {
                export_id: "01700000000002-0c0c0c0c".into(),
                ..gen_options(72, 100, 1)
            },
        )?;
        let refused = run_coordinator(
            &[
                "migrate",
                "--export",
                &a_again.root.display().to_string(),
                "--parquet",
                &lake_arg,
                "--ledger",
                &ledger,
                "--key",
                "PK,SK",
            ],
            &env,
        )?;
        assert_exit(&refused, 2);
        assert!(
            stderr_of(&refused).contains("--append"),
            "{}",
            stderr_of(&refused)
        );

        let read = read_dataset(&lake.join("AppTable"))?;
        let mut source = read_source_items(&a.export_dir, &["PK", "SK"])?;
        let from_b = read_source_items(&b.export_dir, &["PK", "SK"])?;
        let b_items = from_b.len();
        assert!(b_items > 1_000, "{b_items}");
        for (key, item) in from_b {
            assert!(source.insert(key, item).is_none(), "B's keys are disjoint");
        }
        let diffs = compare(&source, &["PK", "SK"], &read.columns, "attrs", &read.rows);
        assert!(
            diffs.is_empty(),
            "{target:?}: {} differences: {:#?}",
            diffs.len(),
            &diffs[..diffs.len().min(10)]
        );
        assert_eq!(read.rows.len(), source.len(), "{target:?}: every item once");
        assert_eq!(read.manifest["rows"].as_u64(), Some(source.len() as u64));
        assert_eq!(read.manifest["runs"].as_array().map(Vec::len), Some(2));
        assert_eq!(read.manifest["complete"], true);
    }
    Ok(())
}

/// `reset --shard` that must be refused (exit 2); its message.
fn refused_reset(url: &str, run_id: &str, shard: &str) -> anyhow::Result<String> {
    let output = run_coordinator(
        &[
            "reset", "--target", url, "--run-id", run_id, "--shard", shard,
        ],
        &[],
    )?;
    assert_exit(&output, 2);
    Ok(stderr_of(&output))
}

/// A full load, three catch-up windows, then `reset` of a shard of the full run (which would
/// remove rows the windows rewrote and reload stale ones) and of a window's shard: both refused,
/// exit 2, saying what to do; the table still equals the final state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_never_undoes_a_catch_up_window() -> anyhow::Result<()> {
    for target in [TestTarget::Postgres, TestTarget::HeliosDb] {
        let dir = tempfile::tempdir()?;
        let history = History::generate(dir.path(), 150, 24)?;
        let (url, _server) = empty_target(target, "reset_windows").await?;
        let mut settings = ferry_shared::config::Settings::default();
        settings.load.chunk_lines = 40.try_into()?;
        let full = migrate_path(
            &url,
            &history.full(),
            settings.clone(),
            false,
            Some("items"),
        )
        .await?;
        assert!(full.verified(), "{}", full.to_text());
        let caught_up = ferry_coordinator::catch_up::catch_up(
            &ferry_coordinator::catch_up::CatchUpRequest {
                exports: vec![history.windows().display().to_string()],
                base_run_id: Some(full.run_id.clone()),
                target_url: url.clone(),
                workers: Some(1),
                settings,
                poll_interval: Duration::from_secs(1),
            },
            None,
        )
        .await?;
        assert!(caught_up.complete(), "{}", caught_up.to_text());
        let client = connect(&url).await?;
        let before = table_text(&client, "items").await?;

        let shard = scalar(
            &url,
            &format!(
                "SELECT shard_id FROM ferry.shards WHERE run_id = '{}' ORDER BY shard_id LIMIT 1",
                full.run_id
            ),
        )
        .await?;
        let message = refused_reset(&url, &full.run_id, &shard)?;
        assert!(
            message.contains("followed by 3 catch-up window(s)") && message.contains("drop it"),
            "{target:?}: {message}"
        );
        let window = scalar(
            &url,
            &format!(
                "SELECT run_id FROM ferry.windows WHERE base_run_id = '{}' AND seq = 2",
                full.run_id
            ),
        )
        .await?;
        let window_shard = scalar(
            &url,
            &format!("SELECT shard_id FROM ferry.shards WHERE run_id = '{window}' LIMIT 1"),
        )
        .await?;
        let message = refused_reset(&url, &window, &window_shard)?;
        assert!(
            message.contains("catch-up window 2") && message.contains("running `catch-up` again"),
            "{target:?}: {message}"
        );
        assert_eq!(
            table_text(&client, "items").await?,
            before,
            "{target:?}: the refusals changed nothing"
        );
        assert_eq!(
            scalar(
                &url,
                &format!(
                    "SELECT count(*) FROM ferry.shards WHERE run_id = '{}' AND state <> 'done'",
                    full.run_id
                )
            )
            .await?,
            "0"
        );
    }
    Ok(())
}

/// Starts `migrate` of one file with a worker held mid-chunk for `sleep_ms` (the fifth block of
/// the first chunk), and returns once the ledger shows the chunk in flight.
fn start_held_migrate(
    export: &Path,
    url: &str,
    copy_format: &str,
    sleep_ms: u64,
) -> anyhow::Result<std::process::Child> {
    let failpoint = format!("after_read=sleep{sleep_ms}@5");
    let child = Command::new(binary("ferry-coordinator"))
        .args(["migrate", "--export", &export.display().to_string()])
        .args(["--target", url, "--key", "PK,SK"])
        .env("FERRY_LOAD__CHUNK_LINES", "1000")
        .env("FERRY_LOAD__BLOCK_LINES", "100")
        .env("FERRY_LOAD__WORKERS", "1")
        .env("FERRY_LOAD__COPY_FORMAT", copy_format)
        .env("FERRY_FAILPOINTS", failpoint)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    Ok(child)
}

async fn wait_for_chunk_in_flight(url: &str) -> anyhow::Result<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(found)) = query_text(
            url,
            "SELECT run_id || ' ' || shard_id FROM ferry.shards WHERE copying_from IS NOT NULL",
        )
        .await
        {
            let (run, shard) = found.split_once(' ').expect("run and shard");
            return Ok((run.to_string(), shard.to_string()));
        }
        anyhow::ensure!(Instant::now() < deadline, "no chunk in flight appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The issue's reproduction 4 on both autocommit paths (HeliosDB, and PostgreSQL's CSV COPY in
/// autocommit, the same protocol): a `reset` while a worker is mid-chunk is refused (before the
/// fix it removed nothing, marked the load cleaned, and the COPY then committed rows for good);
/// the worker's load ends exact. Then a worker killed mid-chunk: `reset` is refused until
/// `--force`, which removes what it left, and the reload is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_cannot_race_a_live_autocommit_copy() -> anyhow::Result<()> {
    for (target, copy_format) in [(TestTarget::Postgres, "csv"), (TestTarget::HeliosDb, "csv")] {
        let dir = tempfile::tempdir()?;
        let export = generate_export(
            dir.path(),
            &GenOptions {
                edge_cases: false,
                ..GenOptions::sized(81, 3_000, 1)
            },
        )?;
        let (url, _server) = empty_target(target, "reset_race").await?;

        // A live worker mid-chunk: the reset is refused and changes nothing.
        // Held 10 s: the reset below must run while the chunk is still in flight (its process
        // start and connection take well under a second, even on a loaded 2-core machine).
        let child = start_held_migrate(dir.path(), &url, copy_format, 10_000)?;
        let (run_id, shard_id) = wait_for_chunk_in_flight(&url).await?;
        let refused = run_coordinator(
            &[
                "reset", "--target", &url, "--run-id", &run_id, "--shard", &shard_id,
            ],
            &[],
        )?;
        assert_exit(&refused, 2);
        let message = stderr_of(&refused);
        assert!(
            message.contains("has a chunk in flight") && message.contains("--force"),
            "{target:?}: {message}"
        );
        let output = child.wait_with_output()?;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{target:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            assert_run_matches_text(&url, &run_id, &export.export_dir, &[]).await?,
            3_000,
            "{target:?}"
        );

        // A worker killed mid-chunk: refused without --force; with it, the reload is exact.
        let (url, _server2) = empty_target(target, "reset_race_kill").await?;
        let mut child = start_held_migrate(dir.path(), &url, copy_format, 60_000)?;
        let (run_id, shard_id) = wait_for_chunk_in_flight(&url).await?;
        child.kill()?; // SIGKILL
        child.wait()?;
        let reset = [
            "reset", "--target", &url, "--run-id", &run_id, "--shard", &shard_id,
        ];
        assert_exit(&run_coordinator(&reset, &[])?, 2);
        let mut forced = reset.to_vec();
        forced.push("--force");
        assert_exit(&run_coordinator(&forced, &[])?, 0);
        let resumed = run_coordinator(
            &[
                "migrate",
                "--export",
                &dir.path().display().to_string(),
                "--target",
                &url,
                "--key",
                "PK,SK",
            ],
            &[
                ("FERRY_LOAD__CHUNK_LINES", "1000"),
                ("FERRY_LOAD__COPY_FORMAT", copy_format),
            ],
        )?;
        assert_exit(&resumed, 0);
        assert_eq!(
            assert_run_matches_text(&url, &run_id, &export.export_dir, &[]).await?,
            3_000,
            "{target:?} after kill -9 and reset --force"
        );
    }
    Ok(())
}
