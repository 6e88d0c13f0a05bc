//! Catch-up through the queue and the fleet (moto's S3 and SQS, real `ferry-worker` processes,
//! PostgreSQL and HeliosDB): the history's full export loaded from `s3://`, then `catch-up --queue-url` over
//! the three windows with two workers already polling. The coordinator must submit each window's
//! shards only once the window before it is complete (checked in the ledger: no shard of a window
//! was claimed before its predecessor finished), and the table must end equal to the final state.

use std::process::{Command, Stdio};

use ferry_tests::harness::{
    assert_run_matches_text, assert_table_matches, binary, connect, empty_target, stderr_of,
    TestTarget,
};
use ferry_tests::history::History;
use ferry_tests::moto::shared_moto;

fn coordinator(args: &[&str], config: &std::path::Path) -> anyhow::Result<std::process::Output> {
    Ok(Command::new(binary("ferry-coordinator"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("FERRY_FAILPOINTS")
        .envs(shared_moto().env())
        .output()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_applies_windows_one_after_the_other_on_postgres() -> anyhow::Result<()> {
    the_fleet_applies_windows_one_after_the_other(TestTarget::Postgres, "catch-up-fleet").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_applies_windows_one_after_the_other_on_heliosdb() -> anyhow::Result<()> {
    the_fleet_applies_windows_one_after_the_other(TestTarget::HeliosDb, "catch-up-fleet-helios")
        .await
}

async fn the_fleet_applies_windows_one_after_the_other(
    target: TestTarget,
    bucket: &str,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let history = History::generate(&dir.path().join("exports"), 120, 21)?;
    let moto = shared_moto();
    moto.upload_folder(bucket, &dir.path().join("exports"))
        .await?;
    let (url, _server) = empty_target(target, "catchup_fleet").await?;
    let config = dir.path().join("ferry.toml");
    std::fs::write(
        &config,
        "version = 1\n[load]\nchunk_lines = 25\n[queue]\nwait_secs = 1\nidle_exit_secs = 60\nretry_delay_secs = 1\nheartbeat_secs = 0\n",
    )?;
    let full = format!("s3://{bucket}/full/");
    let full_output = coordinator(
        &[
            "migrate",
            "--export",
            &full,
            "--target",
            &url,
            "--key",
            "PK,SK",
            "--table",
            "shop_items",
            "--json",
        ],
        &config,
    )?;
    assert_eq!(
        full_output.status.code(),
        Some(0),
        "{}",
        stderr_of(&full_output)
    );
    let output = coordinator(&["queue", "create", "--name", bucket], &config)?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let queue = String::from_utf8(output.stdout)?.trim().to_string();

    // Two workers polling before anything is submitted, as a Deployment's pods would.
    let mut workers = Vec::new();
    for _ in 0..2 {
        let mut command = Command::new(binary("ferry-worker"));
        command
            .args(["--target", &url, "--queue-url", &queue, "--workers", "1"])
            .arg("--config")
            .arg(&config)
            .env_remove("FERRY_FAILPOINTS")
            .envs(moto.env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        workers.push(ferry_tests::pg::spawn_dying_with_parent(command)?);
    }
    let output = coordinator(
        &[
            "catch-up",
            "--export",
            &format!("s3://{bucket}/cdc/"),
            "--target",
            &url,
            "--queue-url",
            &queue,
            "--interval",
            "1",
            "--json",
        ],
        &config,
    )?;
    for mut worker in workers {
        let _ = worker.kill();
        let _ = worker.wait();
    }
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let windows = report["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 3, "{report:#}");
    assert!(
        windows.iter().all(|w| w["outcome"] == "applied"),
        "{report:#}"
    );

    // No shard of a window was claimed before the window before it finished.
    let client = connect(&url).await?;
    let early = client
        .query_one(
            "SELECT count(*)::int8 FROM ferry.windows w
             JOIN ferry.windows p ON p.base_run_id = w.base_run_id AND p.seq = w.seq - 1
             JOIN ferry.loads l ON l.run_id = w.run_id
             WHERE l.created_at < p.finished_at",
            &[],
        )
        .await?
        .get::<_, i64>(0);
    assert_eq!(
        early, 0,
        "a window's shard was loaded before its predecessor finished"
    );
    let loads = client
        .query_one(
            "SELECT count(DISTINCT l.run_id)::int8 FROM ferry.loads l JOIN ferry.windows w ON w.run_id = l.run_id",
            &[],
        )
        .await?
        .get::<_, i64>(0);
    assert_eq!(loads, 3, "every window's shards went through the workers");
    match target {
        TestTarget::Postgres => {
            assert_table_matches(&url, "shop_items", &history.final_export_dir()).await?;
        }
        TestTarget::HeliosDb => {
            let report: serde_json::Value = serde_json::from_slice(&full_output.stdout)?;
            let run_id = report["run_id"].as_str().expect("the full run's id");
            assert_run_matches_text(&url, run_id, &history.final_export_dir(), &[]).await?;
        }
    }
    Ok(())
}
