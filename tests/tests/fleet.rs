//! Fleet tests: the export in S3 and the shards on SQS (a real wire endpoint, moto's server), the
//! coordinator's `queue create`, `plan`, `submit`, `status` and `finalize`, and three
//! `ferry-worker` processes, one of which is killed, outrun or stopped. After each, the target's
//! rows equal the source items exactly: none lost, none twice.

use std::time::Duration;

use ferry_tests::compare::read_source_items;
use ferry_tests::fleet::{FleetRun, WorkerProcess};
use ferry_tests::gen::GenOptions;
use ferry_tests::harness::{
    assert_exit, assert_fixture_matches, assert_table_matches, query_i64, stderr_of, TestTarget,
};
use ferry_tests::moto::shared_moto;

const WAIT: Duration = Duration::from_secs(120);

/// A config for a fleet test: small chunks, a short long-poll and the given queue timings.
fn config(visibility: u32, heartbeat: u32, idle_exit: u32, max_receive_count: u32) -> String {
    format!(
        "[load]\nchunk_lines = 200\nblock_lines = 50\n\
         [queue]\nvisibility_timeout_secs = {visibility}\nheartbeat_secs = {heartbeat}\n\
         wait_secs = 1\nretry_delay_secs = 1\nidle_exit_secs = {idle_exit}\n\
         max_receive_count = {max_receive_count}\n"
    )
}

/// Waits for every worker and requires exit 0.
fn wait_all(workers: &mut [WorkerProcess]) -> anyhow::Result<()> {
    for worker in workers.iter_mut() {
        let status = worker.wait(WAIT)?;
        anyhow::ensure!(
            status.success(),
            "worker {} exited with {status}:\n{}",
            worker.index,
            worker.log()
        );
    }
    Ok(())
}

/// Finalize must verify, the status must say complete with nothing queued or dead, and the table
/// must hold exactly the source items.
async fn assert_complete(run: &FleetRun, workers: &[WorkerProcess]) -> anyhow::Result<()> {
    let output = run.finalize()?;
    let logs: Vec<String> = workers.iter().map(|w| w.log()).collect();
    assert_eq!(
        output.status.code(),
        Some(0),
        "finalize:\n{}\n{}\nworker logs:\n{}",
        String::from_utf8_lossy(&output.stdout),
        stderr_of(&output),
        logs.join("\n----\n")
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("post-load: ANALYZE"));
    let status = run.status()?;
    assert_eq!(status["shards_done"], status["shards_total"], "{status}");
    assert_eq!(status["queue"]["dead_letter"], 0, "{status}");
    assert_eq!(status["queue"]["waiting"], 0, "{status}");
    let total = run.fixture.export.total_items;
    assert_eq!(status["items_committed"], total, "{status}");
    let rows =
        assert_table_matches(&run.fixture.url, "AppTable", &run.fixture.export.export_dir).await?;
    assert_eq!(rows as u64, total);
    assert_eq!(
        query_i64(&run.fixture.url, "SELECT count(*) FROM \"AppTable\"").await? as u64,
        total
    );
    Ok(())
}

/// The shard a worker was loading, from its log (`loading shard shard=<id>`).
fn shard_of(worker: &WorkerProcess) -> Option<String> {
    let log = worker.log();
    let line = log.lines().rfind(|l| l.contains("loading shard"))?;
    let at = line.find("shard=")? + "shard=".len();
    Some(
        line[at..]
            .split_whitespace()
            .next()?
            .trim_matches('"')
            .to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_dry_run_and_status_read_s3_and_the_queue() -> anyhow::Result<()> {
    let run = FleetRun::prepare(
        "fleet_dry_run",
        &GenOptions::sized(31, 900, 3),
        &config(30, 10, 2, 3),
        |_| Ok(()),
    )
    .await?;
    let dry = run.coordinator_ok(&[
        "plan",
        "--export",
        &format!(
            "s3://{}/exports/app/AWSDynamoDB/{}/",
            run.bucket, run.fixture.export.export_id
        ),
        "--dry-run",
        "--workers",
        "2",
    ])?;
    assert!(dry.contains("3 shards"), "{dry}");
    assert!(dry.contains(" 900\n"), "{dry}");
    assert!(dry.contains("estimate: 1 s with 2 workers"), "{dry}");
    for file in &run.fixture.export.data_files {
        assert!(
            dry.contains(&file.bytes.to_string()),
            "{dry} lacks {}",
            file.bytes
        );
    }
    // Planning again gives the same run; submitting again is safe.
    let again = run.coordinator_ok(&[
        "plan",
        "--export",
        &run.export_url,
        "--target",
        &run.fixture.url,
        "--key",
        "PK,SK",
    ])?;
    assert_eq!(again.trim(), run.run_id);
    let status = run.status()?;
    assert_eq!(status["shards_total"], 3, "{status}");
    assert_eq!(status["shards_waiting"], 3, "{status}");
    assert_eq!(status["queue"]["waiting"], 3, "{status}");
    assert_eq!(status["manifest_items"], 900, "{status}");
    let text = String::from_utf8_lossy(
        &run.coordinator(&[
            "status",
            "--run-id",
            &run.run_id,
            "--target",
            &run.fixture.url,
            "--queue-url",
            &run.queue_url,
        ])?
        .stdout,
    )
    .into_owned();
    assert!(text.contains("items   0 of 900 (0.0%)"), "{text}");
    assert!(
        text.contains("queue   3 waiting, 0 in flight, 0 delayed; dead-letter: 0"),
        "{text}"
    );
    // Not loaded yet: finalize refuses, naming a shard.
    let output = run.finalize()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr_of(&output).contains("not finished"),
        "{}",
        stderr_of(&output)
    );

    let mut workers = vec![run.spawn_worker(0, &[])?, run.spawn_worker(1, &[])?];
    wait_all(&mut workers)?;
    assert_complete(&run, &workers).await?;
    // --watch follows until the run is complete (here at once) and exits 0.
    let watched = run.coordinator(&[
        "status",
        "--run-id",
        &run.run_id,
        "--target",
        &run.fixture.url,
        "--queue-url",
        &run.queue_url,
        "--watch",
        "--interval",
        "1",
    ])?;
    assert_eq!(watched.status.code(), Some(0), "{}", stderr_of(&watched));
    let text = String::from_utf8_lossy(&watched.stdout);
    assert!(
        text.contains("shards  3 total: 3 done, 0 loading, 0 waiting, 0 failed"),
        "{text}"
    );
    assert!(text.contains("items   900 of 900 (100.0%)"), "{text}");
    Ok(())
}

/// Three workers; the first is killed with `kill -9` while its shard is part-committed. The shard
/// comes back after its visibility timeout (4 s, renewed every second while the victim lived),
/// another worker resumes it from its checkpoint, and the run completes exactly.
async fn kill_mid_shard(target: TestTarget, name: &str, seed: u64) -> anyhow::Result<()> {
    let run = FleetRun::prepare_on(
        target,
        name,
        &GenOptions::sized(seed, 4_000, 3),
        &config(4, 1, 10, 5),
        |_| Ok(()),
    )
    .await?;
    let slow = [("FERRY_FAILPOINTS", "after_commit=sleep60@1+")];
    let mut victim = run.spawn_worker(0, &slow)?;
    let midway = run.wait_for_a_shard_midway(WAIT).await?;
    let mut others = vec![run.spawn_worker(1, &slow)?, run.spawn_worker(2, &[])?];
    victim.signal(libc::SIGKILL);
    victim.wait(WAIT)?;
    assert_eq!(
        shard_of(&victim).as_deref(),
        Some(midway.as_str()),
        "{}",
        victim.log()
    );
    wait_all(&mut others)?;
    let resumed = others.iter().any(|w| {
        w.log().lines().any(|l| {
            l.contains("loading shard") && l.contains(&midway) && !l.contains("committed_lines=0")
        })
    });
    assert!(resumed, "no worker resumed {midway} from its checkpoint");
    match target {
        TestTarget::Postgres => assert_complete(&run, &others).await,
        TestTarget::HeliosDb => {
            assert_exit(&run.finalize()?, 0);
            let rows = assert_fixture_matches(&run.fixture, "AppTable", &[]).await?;
            assert_eq!(rows as u64, run.fixture.export.total_items);
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_shard_is_resumed_by_the_others() -> anyhow::Result<()> {
    kill_mid_shard(TestTarget::Postgres, "fleet_kill", 32).await
}

#[tokio::test(flavor = "multi_thread")]
async fn heliosdb_fleet_survives_a_killed_worker() -> anyhow::Result<()> {
    // The autocommit load path: the resumed chunk is recognised as present or absent by its keys.
    kill_mid_shard(TestTarget::HeliosDb, "fleet_helios_kill", 36).await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_visibility_makes_one_of_two_workers_back_off() -> anyhow::Result<()> {
    // One shard; no renewal, visibility 2 s; the first worker sleeps 4 s inside its first chunk's
    // transaction, so the second is handed the same shard while the first still loads it.
    let run = FleetRun::prepare(
        "fleet_race",
        &GenOptions::sized(33, 2_000, 1),
        &config(2, 0, 6, 10),
        |_| Ok(()),
    )
    .await?;
    let mut first = run.spawn_worker(0, &[("FERRY_FAILPOINTS", "after_copy=sleep4000@1")])?;
    let deadline = std::time::Instant::now() + WAIT;
    while shard_of(&first).is_none() {
        assert!(std::time::Instant::now() < deadline, "{}", first.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut workers = vec![run.spawn_worker(1, &[])?, run.spawn_worker(2, &[])?];
    first.wait(WAIT)?;
    wait_all(&mut workers)?;
    workers.insert(0, first);
    let logs: Vec<String> = workers.iter().map(|w| w.log()).collect();
    let loaders = logs.iter().filter(|l| l.contains("loading shard")).count();
    assert!(
        loaders >= 2,
        "the shard was handed to one worker only:\n{}",
        logs.join("\n----\n")
    );
    assert!(
        logs.iter().any(|l| l.contains("backing off")),
        "no worker backed off:\n{}",
        logs.join("\n----\n")
    );
    assert_complete(&run, &workers).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_shard_ends_in_the_dead_letter_queue_and_the_rest_completes() -> anyhow::Result<()>
{
    let mut poison_items = None;
    let mut poison_key = String::new();
    let run = FleetRun::prepare(
        "fleet_poison",
        &GenOptions::sized(34, 4_000, 4),
        &config(10, 3, 6, 2),
        |export| {
            // Keep the file's items aside, then break its gzip header.
            let file = &export.data_files[1];
            let aside = tempfile::tempdir()?;
            std::fs::copy(&file.path, aside.path().join("poison.json.gz"))?;
            poison_items = Some(read_source_items(aside.path(), &["PK", "SK"])?);
            poison_key = file.key.clone();
            let mut bytes = std::fs::read(&file.path)?;
            bytes[0] = b'X';
            bytes[1] = b'Y';
            std::fs::write(&file.path, bytes)?;
            Ok(())
        },
    )
    .await?;
    let poison_items = poison_items.expect("tampered");
    assert!(!poison_items.is_empty());
    let mut workers = (0..3)
        .map(|i| run.spawn_worker(i, &[]))
        .collect::<anyhow::Result<Vec<_>>>()?;
    wait_all(&mut workers)?;

    let status = run.status()?;
    assert_eq!(status["queue"]["dead_letter"], 1, "{status}");
    assert_eq!(status["queue"]["waiting"], 0, "{status}");
    assert_eq!(status["shards_done"], 3, "{status}");
    let failed = status["shards_failed"].as_array().expect("failed shards");
    assert_eq!(failed.len(), 1, "{status}");
    assert_eq!(failed[0]["data_key"], poison_key.as_str());
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap_or("")
            .contains(&poison_key),
        "{status}"
    );
    let states: Vec<(&str, &str)> = status["shards"]
        .as_array()
        .expect("per-shard states")
        .iter()
        .map(|s| {
            (
                s["shard_id"].as_str().unwrap(),
                s["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(states.len(), 4);
    assert!(
        states.contains(&(failed[0]["shard_id"].as_str().unwrap(), "failed")),
        "{status}"
    );
    assert_eq!(
        states.iter().filter(|(_, state)| *state == "done").count(),
        3
    );
    // The dead letter is the poison shard's task.
    let dead = shared_moto()
        .sqs()
        .receive_message()
        .queue_url(&run.dead_letter_url)
        .send()
        .await?;
    let body = dead.messages()[0].body().unwrap_or_default().to_string();
    assert!(
        body.contains(failed[0]["shard_id"].as_str().unwrap()),
        "{body}"
    );

    let output = run.finalize()?;
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    assert!(
        stderr_of(&output).contains(&poison_key),
        "{}",
        stderr_of(&output)
    );
    // Every other item is there exactly once; none of the poison file's.
    let total = run.fixture.export.total_items - poison_items.len() as u64;
    assert_eq!(
        query_i64(&run.fixture.url, "SELECT count(*) FROM \"AppTable\"").await? as u64,
        total
    );
    let client = ferry_tests::harness::connect(&run.fixture.url).await?;
    let (columns, rows) = ferry_tests::compare::read_table(&client, "AppTable").await?;
    let mut source = std::collections::BTreeMap::new();
    for file in run
        .fixture
        .export
        .data_files
        .iter()
        .filter(|f| f.key != poison_key)
    {
        let dir = tempfile::tempdir()?;
        std::fs::copy(&file.path, dir.path().join("f.json.gz"))?;
        source.extend(read_source_items(dir.path(), &["PK", "SK"])?);
    }
    let diffs = ferry_tests::compare::compare(&source, &["PK", "SK"], &columns, "attrs", &rows);
    assert!(diffs.is_empty(), "{:#?}", &diffs[..diffs.len().min(10)]);
    assert_eq!(rows.len() as u64, total);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_returns_the_shard_to_the_queue_at_once() -> anyhow::Result<()> {
    // Visibility 120 s: if the stopped worker did not give its shard back, the others would go
    // idle and exit (5 s) long before it came back, and the run would not complete.
    let run = FleetRun::prepare(
        "fleet_sigterm",
        &GenOptions::sized(35, 6_000, 3),
        &config(120, 30, 5, 5),
        |_| Ok(()),
    )
    .await?;
    let slow = [("FERRY_FAILPOINTS", "after_commit=sleep60@1+")];
    let mut stopped = run.spawn_worker(0, &slow)?;
    let midway = run.wait_for_a_shard_midway(WAIT).await?;
    let mut others = vec![run.spawn_worker(1, &slow)?, run.spawn_worker(2, &slow)?];
    stopped.signal(libc::SIGTERM);
    let status = stopped.wait(Duration::from_secs(30))?;
    assert_eq!(status.code(), Some(0), "{}", stopped.log());
    assert!(stopped.log().contains("stopping"), "{}", stopped.log());
    assert_eq!(shard_of(&stopped).as_deref(), Some(midway.as_str()));
    wait_all(&mut others)?;
    assert_complete(&run, &others).await
}

/// `migrate` (in-process workers) reads the same export straight from S3.
async fn migrate_from_s3(target: TestTarget, name: &str) -> anyhow::Result<()> {
    let run = FleetRun::prepare_on(
        target,
        name,
        &GenOptions::sized(37, 1_500, 3),
        &config(30, 10, 2, 3),
        |_| Ok(()),
    )
    .await?;
    // A fresh table for migrate: the planned run above stays in the ledger untouched.
    let output = run.coordinator(&[
        "migrate",
        "--export",
        &run.export_url,
        "--target",
        &run.fixture.url,
        "--key",
        "PK,SK",
        "--table",
        "FromS3",
    ])?;
    assert_exit(&output, 0);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("s3://"), "{text}");
    assert!(text.contains("post-load: ANALYZE"), "{text}");
    let rows = assert_fixture_matches(&run.fixture, "FromS3", &[]).await?;
    assert_eq!(rows, 1_500);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_reads_s3_into_postgres() -> anyhow::Result<()> {
    migrate_from_s3(TestTarget::Postgres, "s3_migrate_pg").await
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_reads_s3_into_heliosdb() -> anyhow::Result<()> {
    migrate_from_s3(TestTarget::HeliosDb, "s3_migrate_helios").await
}

/// One queue, two targets (the reproduction 5): `queue create --target A` binds the queue
/// to A's ledger. B's worker exits 2 before receiving a message (SQS counts every receive towards
/// the dead-letter queue, so a worker that took A's messages only to hand them back would burn
/// A's receive counts), B's `submit` and `queue create --target B` are refused, and A's worker
/// then loads every shard with nothing in the dead-letter queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_bound_to_one_target_is_refused_by_another() -> anyhow::Result<()> {
    let name = "bound_queue";
    let run = FleetRun::prepare(
        name,
        &GenOptions::sized(91, 600, 3),
        &config(30, 5, 2, 2),
        |_| Ok(()),
    )
    .await?;
    let a = run.fixture.url.clone();
    run.coordinator_ok(&["queue", "create", "--name", name, "--target", &a])?;
    let other = ferry_tests::pg::shared_cluster()
        .create_database("bound_queue_other")
        .await?;
    let planned = run.coordinator_ok(&[
        "plan",
        "--export",
        &run.export_url,
        "--target",
        &other,
        "--key",
        "PK,SK",
    ])?;
    let refused = run.coordinator(&[
        "submit",
        "--run-id",
        planned.trim(),
        "--target",
        &other,
        "--queue-url",
        &run.queue_url,
    ])?;
    assert_exit(&refused, 2);
    assert!(
        stderr_of(&refused).contains("bound to another target"),
        "{}",
        stderr_of(&refused)
    );
    let rebind = run.coordinator(&["queue", "create", "--name", name, "--target", &other])?;
    assert_exit(&rebind, 2);

    let before = run.status()?;
    let mut command = std::process::Command::new(ferry_tests::harness::binary("ferry-worker"));
    let worker_b = command
        .args(["--target", &other, "--queue-url", &run.queue_url])
        .arg("--config")
        .arg(&run.config)
        .envs(shared_moto().env())
        .env_remove("FERRY_FAILPOINTS")
        .output()?;
    assert_exit(&worker_b, 2);
    assert!(
        stderr_of(&worker_b).contains("bound to another target"),
        "{}",
        stderr_of(&worker_b)
    );
    let after = run.status()?;
    assert_eq!(
        (
            after["queue"]["waiting"].clone(),
            after["queue"]["in_flight"].clone()
        ),
        (
            before["queue"]["waiting"].clone(),
            before["queue"]["in_flight"].clone()
        ),
        "B received nothing"
    );
    assert_eq!(
        query_i64(&other, "SELECT count(*) FROM \"AppTable\"").await?,
        0,
        "B loaded nothing"
    );

    let mut workers = vec![run.spawn_worker(0, &[])?];
    wait_all(&mut workers)?;
    assert_complete(&run, &workers).await?;
    Ok(())
}
