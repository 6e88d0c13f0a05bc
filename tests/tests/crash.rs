//! Crash tests: the real `ferry-coordinator` and `ferry-worker` binaries, stopped by failpoints
//! (`FERRY_FAILPOINTS`, compiled into the same build users run) and by `kill -9` at several
//! points, then resumed. After each, the table equals the source exactly: no duplicate, no loss.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_tests::gen::GenOptions;
use ferry_tests::harness::{
    assert_table_matches, binary, connect, fixture, migrate_args, query_i64, run_coordinator,
    stderr_of, Fixture,
};

const EXIT_FAILPOINT: i32 = 86;

fn small_chunk_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("FERRY_LOAD__CHUNK_LINES", "250"),
        ("FERRY_LOAD__BLOCK_LINES", "60"),
        ("FERRY_LOAD__WORKERS", "2"),
    ]
}

async fn crash_fixture(name: &str, seed: u64) -> anyhow::Result<Fixture> {
    fixture(
        name,
        &GenOptions {
            seed,
            items: 3_000,
            files: 3,
            zero_byte_files: 1,
            ..GenOptions::default()
        },
    )
    .await
}

/// Resumes with a clean run and checks the table, then checks that another run changes nothing.
async fn resume_and_check(fixture: &Fixture, copy_format: &str) -> anyhow::Result<()> {
    let args = migrate_args(fixture);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut env = small_chunk_env();
    env.push(("FERRY_LOAD__COPY_FORMAT", copy_format));
    let output = run_coordinator(&args, &env)?;
    assert_eq!(
        output.status.code(),
        Some(0),
        "resume failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        stderr_of(&output)
    );
    assert_eq!(
        assert_table_matches(&fixture.url, "AppTable", &fixture.export.export_dir).await?,
        3_000
    );
    let output = run_coordinator(&args, &small_chunk_env())?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("already complete"));
    assert_eq!(
        query_i64(&fixture.url, "SELECT count(*) FROM \"AppTable\"").await?,
        3_000
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_any_two_steps_resumes_exactly_once() -> anyhow::Result<()> {
    crash_between_steps("binary").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_any_two_steps_of_the_autocommit_path_resumes_exactly_once(
) -> anyhow::Result<()> {
    crash_between_steps("csv").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_any_two_steps_of_the_insert_path_resumes_exactly_once(
) -> anyhow::Result<()> {
    crash_between_steps("insert").await
}

async fn crash_between_steps(copy_format: &str) -> anyhow::Result<()> {
    for (i, point) in [
        "after_read",
        "after_copy",
        "after_checkpoint",
        "after_commit",
    ]
    .iter()
    .enumerate()
    {
        let fixture = crash_fixture(&format!("crash_{copy_format}_{point}"), 20 + i as u64).await?;
        let args = migrate_args(&fixture);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let failpoint = format!("{point}=exit@4");
        let mut env = small_chunk_env();
        env.push(("FERRY_FAILPOINTS", &failpoint));
        env.push(("FERRY_LOAD__COPY_FORMAT", copy_format));
        let output = run_coordinator(&args, &env)?;
        assert_eq!(
            output.status.code(),
            Some(EXIT_FAILPOINT),
            "{point}: {}",
            stderr_of(&output)
        );
        // Both in one statement (one snapshot): a second worker's COMMIT, sent before the
        // process exited, can still land on the server between two separate reads.
        let both = connect(&fixture.url)
            .await?
            .query_one(
                "SELECT (SELECT COALESCE(sum(loaded_rows), 0)::int8 FROM ferry.shards), \
                 (SELECT count(*) FROM \"AppTable\")",
                &[],
            )
            .await?;
        let (committed, rows): (i64, i64) = (both.get(0), both.get(1));
        if copy_format != "csv" {
            assert_eq!(
                committed, rows,
                "{point}: rows and checkpoint commit together on the {copy_format} path"
            );
        } else {
            // On the autocommit path a crash between COPY and checkpoint leaves at most one
            // stored-but-unrecorded chunk per worker (2 × 250 lines); the resume must recognise it.
            assert!(
                rows >= committed && rows - committed <= 500,
                "{point}: {rows} rows, {committed} recorded"
            );
            if *point == "after_copy" {
                assert!(
                    rows > committed,
                    "after_copy must leave a chunk ahead of its checkpoint"
                );
            }
        }
        assert!(rows < 3_000, "{point}: the crash came before the end");
        resume_and_check(&fixture, copy_format).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_between_copy_and_commit_is_retried_in_the_same_run() -> anyhow::Result<()> {
    let fixture = crash_fixture("crash_retry", 30).await?;
    let args = migrate_args(&fixture);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut env = small_chunk_env();
    env.push((
        "FERRY_FAILPOINTS",
        "after_copy=error@2,after_checkpoint=error@5",
    ));
    let output = run_coordinator(&args, &env)?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert!(
        stderr_of(&output).contains("retrying from its checkpoint"),
        "{}",
        stderr_of(&output)
    );
    assert_eq!(
        assert_table_matches(&fixture.url, "AppTable", &fixture.export.export_dir).await?,
        3_000
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_several_points_then_resume() -> anyhow::Result<()> {
    let fixture = fixture(
        "crash_kill9",
        &GenOptions {
            seed: 40,
            items: 20_000,
            files: 4,
            ..GenOptions::default()
        },
    )
    .await?;
    let args = migrate_args(&fixture);
    let mut kills = 0;
    for threshold in [1i64, 6_000, 12_000] {
        let mut command = Command::new(binary("ferry-coordinator"));
        command
            .args(&args)
            .env("FERRY_LOAD__CHUNK_LINES", "200")
            .env("FERRY_LOAD__BLOCK_LINES", "50")
            .env_remove("FERRY_FAILPOINTS")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = command.spawn()?;
        let started = Instant::now();
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            let loaded = query_i64(
                &fixture.url,
                "SELECT COALESCE(sum(loaded_rows), 0)::int8 FROM ferry.shards",
            )
            .await
            .unwrap_or(0);
            if loaded >= threshold {
                child.kill()?; // SIGKILL
                kills += 1;
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "no progress");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        child.wait()?;
        let loaded = query_i64(
            &fixture.url,
            "SELECT COALESCE(sum(loaded_rows), 0)::int8 FROM ferry.shards",
        )
        .await?;
        let rows = query_i64(&fixture.url, "SELECT count(*) FROM \"AppTable\"").await?;
        assert_eq!(
            loaded, rows,
            "ledger and table disagree after kill -9 at {threshold}"
        );
    }
    assert!(
        kills >= 2,
        "the loads finished before they could be killed ({kills} kills)"
    );
    let output = run_coordinator(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[])?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert_eq!(
        assert_table_matches(&fixture.url, "AppTable", &fixture.export.export_dir).await?,
        20_000
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workers_on_the_same_shards_load_each_item_once() -> anyhow::Result<()> {
    concurrent_workers("binary").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workers_on_the_autocommit_path_load_each_item_once() -> anyhow::Result<()> {
    concurrent_workers("csv").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workers_on_the_insert_path_load_each_item_once() -> anyhow::Result<()> {
    concurrent_workers("insert").await
}

async fn concurrent_workers(copy_format: &str) -> anyhow::Result<()> {
    let fixture = fixture(
        &format!("crash_race_{copy_format}"),
        &GenOptions {
            seed: 50,
            items: 6_000,
            files: 2,
            ..GenOptions::default()
        },
    )
    .await?;
    let export = fixture.dir.path().display().to_string();
    let env = [
        ("FERRY_LOAD__CHUNK_LINES", "150"),
        ("FERRY_LOAD__BLOCK_LINES", "40"),
        ("FERRY_LOAD__COPY_FORMAT", copy_format),
    ];
    let plan = run_coordinator(
        &[
            "plan",
            "--export",
            &export,
            "--target",
            &fixture.url,
            "--key",
            "PK,SK",
        ],
        &env,
    )?;
    assert_eq!(plan.status.code(), Some(0), "{}", stderr_of(&plan));
    let run_id = String::from_utf8_lossy(&plan.stdout).trim().to_string();
    // Three worker processes, each taking every pending shard: they race on every chunk.
    let children: Vec<_> = (0..3)
        .map(|_| {
            Command::new(binary("ferry-worker"))
                .args([
                    "--target",
                    &fixture.url,
                    "--run-id",
                    &run_id,
                    "--workers",
                    "2",
                ])
                .envs(env)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    for child in children {
        let output = child.wait_with_output()?;
        assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    }
    let output = run_coordinator(
        &[
            "status",
            "--target",
            &fixture.url,
            "--run-id",
            &run_id,
            "--json",
        ],
        &[],
    )?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(status["rows_loaded"], 6_000);
    assert_eq!(status["shards_done"], status["shards_total"]);
    assert_eq!(status["items_committed"], 6_000);
    assert_eq!(
        assert_table_matches(&fixture.url, "AppTable", &fixture.export.export_dir).await?,
        6_000
    );
    Ok(())
}
