//! Prometheus metrics of real runs: `/metrics` scraped while `ferry-worker` processes load a
//! 120,000-item export from moto's S3 and SQS into PostgreSQL (and while `migrate` loads one),
//! checked by `promtool check metrics`, and the values the processes pushed to a real Pushgateway
//! at exit compared with the ledger after `finalize`.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_tests::deploy::{
    http_get, ledger_counts, parse_samples, promtool_check, run_ok, sum_of, Pushgateway, Stack,
};
use ferry_tests::gen::{add_data_file, GenOptions};
use ferry_tests::harness::{binary, stderr_of};
use ferry_tests::pg::free_port;

/// Lines the loaders reject: one malformed, one invalid value, one without its key.
fn bad_lines() -> Vec<String> {
    vec![
        r#"{"Item":{"PK":{"S":"BAD#1"},"SK":{"S":"X"}"#.to_string(),
        r#"{"Item":{"PK":{"S":"BAD#2"},"SK":{"S":"X"},"n":{"N":"12.3.4"}}}"#.to_string(),
        r#"{"Item":{"SK":{"S":"X"}}}"#.to_string(),
    ]
}

const CONFIG: &str = "[load]\nchunk_lines = 4000\nblock_lines = 1000\nmax_rejects = 10\n\
     [queue]\nvisibility_timeout_secs = 60\nheartbeat_secs = 5\nwait_secs = 1\n\
     retry_delay_secs = 1\nidle_exit_secs = 3\n";

/// Scrapes `addr` until `ferry_items_loaded_total` is above zero and below `total`, then until a
/// later scrape shows it higher; returns both scrapes. Fails if the process ends first.
fn scrape_growth(
    addr: SocketAddr,
    total: u64,
    alive: &mut dyn FnMut() -> bool,
) -> anyhow::Result<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let loaded = |text: &str| sum_of(&parse_samples(text), "ferry_items_loaded_total", &[]);
    let mut first: Option<(String, f64)> = None;
    loop {
        anyhow::ensure!(Instant::now() < deadline, "no growth seen within 180 s");
        anyhow::ensure!(
            alive(),
            "the process ended before its metrics were seen growing"
        );
        if let Ok((200, text)) = http_get(addr, "/metrics") {
            let value = loaded(&text);
            match &first {
                None if value > 0.0 && value < total as f64 => first = Some((text, value)),
                Some((earlier, before)) if value > *before => {
                    assert!(value <= total as f64, "{value} loaded of {total}");
                    return Ok((earlier.clone(), text));
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_workers_serve_growing_metrics_and_push_the_ledgers_counts() -> anyhow::Result<()> {
    let options = GenOptions {
        seed: 71,
        items: 120_000,
        files: 4,
        ..GenOptions::default()
    };
    let stack = Stack::prepare("metrics_fleet", &options, CONFIG, |export| {
        add_data_file(export, &bad_lines())?;
        Ok(())
    })
    .await?;
    let total = stack.fixture.export.total_items;
    let gateway = Pushgateway::start()?;
    let config = stack.config.display().to_string();
    let planned = run_ok(
        Command::new(binary("ferry-coordinator"))
            .args([
                "plan",
                "--export",
                &stack.export_url,
                "--config",
                &config,
                "--submit",
            ])
            .envs(stack.env()),
    )?;
    let run_id = planned.trim().to_string();
    // A finalize Job started beside the workers waits for them (`finalize --wait`).
    let finalize_log = stack.dir().join("finalize.log");
    let mut finalizer = ferry_tests::pg::spawn_dying_with_parent({
        let log = std::fs::File::create(&finalize_log)?;
        let mut command = Command::new(binary("ferry-coordinator"));
        command
            .args(["finalize", "--wait", "--interval", "1", "--run-id", &run_id])
            .args(["--config", &config])
            .envs(stack.env())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        command
    })?;

    // Two workers, each serving /metrics and pushing under its own instance at exit.
    let mut workers = Vec::new();
    let mut addrs = Vec::new();
    for index in 0..2 {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let log = std::fs::File::create(stack.dir().join(format!("worker-{index}.log")))?;
        let mut command = Command::new(binary("ferry-worker"));
        command
            .args(["--config", &config, "--workers", "1"])
            .arg("--metrics-addr")
            .arg(addr.to_string())
            .arg("--pushgateway-url")
            .arg(gateway.url())
            .env("FERRY_METRICS__INSTANCE", format!("worker-{index}"))
            .envs(stack.env())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        workers.push(ferry_tests::pg::spawn_dying_with_parent(command)?);
        addrs.push(addr);
    }
    let (first, later) = {
        let worker = &mut workers[0];
        scrape_growth(addrs[0], total, &mut || {
            matches!(worker.try_wait(), Ok(None))
        })?
    };
    assert!(
        finalizer.try_wait()?.is_none(),
        "finalize --wait ended mid-run: {}",
        std::fs::read_to_string(&finalize_log)?
    );
    promtool_check(&first)?;
    promtool_check(&later)?;
    let early = parse_samples(&first);
    let late = parse_samples(&later);
    // The scrapes were taken either side of a commit, so what counts commits grew.
    for counter in [
        "ferry_items_loaded_total",
        "ferry_chunks_committed_total",
        "ferry_chunk_commit_duration_seconds_count",
    ] {
        let (before, after) = (sum_of(&early, counter, &[]), sum_of(&late, counter, &[]));
        assert!(
            before > 0.0 && after > before,
            "{counter}: {before} then {after}"
        );
    }
    // Reading runs ahead of committing (a shard's last bytes can be read before its chunks
    // commit), so bytes read need not grow between two commits; they never go back, and their
    // total is checked against the files' sizes below.
    let counter = "ferry_bytes_read_total";
    let (before, after) = (sum_of(&early, counter, &[]), sum_of(&late, counter, &[]));
    assert!(
        before > 0.0 && after >= before,
        "{counter}: {before} then {after}"
    );
    println!("scrape of worker 0 during the run:\n{later}");

    for (index, worker) in workers.iter_mut().enumerate() {
        let status = ferry_tests::deploy::wait_with_timeout(worker, Duration::from_secs(300))?;
        let log = std::fs::read_to_string(stack.dir().join(format!("worker-{index}.log")))?;
        assert_eq!(status.status.code(), Some(0), "worker {index}:\n{log}");
        assert!(log.contains("pushed metrics"), "worker {index}:\n{log}");
    }
    let finalized =
        ferry_tests::deploy::wait_with_timeout(&mut finalizer, Duration::from_secs(120))?;
    let report = std::fs::read_to_string(&finalize_log)?;
    assert_eq!(finalized.status.code(), Some(0), "{report}");
    assert!(report.contains("waiting for shards"), "{report}");
    assert!(report.contains("complete (verified)"), "{report}");

    let [loaded, rejected, filtered, shards, done] = stack.ledger_counts(&run_id).await?;
    assert_eq!(loaded + rejected + filtered, total as i64);
    assert_eq!((rejected, shards, done), (3, 5, 5));
    let pushed = gateway.scrape()?;
    promtool_check(&pushed)?;
    println!(
        "ledger: loaded {loaded}, rejected {rejected}, filtered {filtered}; pushed:\n{pushed}"
    );
    let pushed = parse_samples(&pushed);
    let job = "job=\"ferry-worker\"";
    for instance in ["instance=\"worker-0\"", "instance=\"worker-1\""] {
        assert!(
            sum_of(&pushed, "ferry_items_loaded_total", &[job, instance]) > 0.0,
            "{instance} pushed nothing: {pushed:?}"
        );
    }
    assert_eq!(
        sum_of(&pushed, "ferry_items_loaded_total", &[job]),
        loaded as f64
    );
    assert_eq!(
        sum_of(&pushed, "ferry_items_rejected_total", &[job]),
        rejected as f64
    );
    assert_eq!(
        sum_of(
            &pushed,
            "ferry_items_rejected_total",
            &[job, "reason=\"malformed\""]
        ),
        1.0
    );
    assert_eq!(
        sum_of(&pushed, "ferry_items_filtered_total", &[job]),
        filtered as f64
    );
    assert_eq!(
        sum_of(&pushed, "ferry_shards_total", &[job, "outcome=\"done\""]),
        done as f64
    );
    let bytes: u64 = stack
        .fixture
        .export
        .data_files
        .iter()
        .map(|f| f.bytes)
        .sum();
    assert_eq!(
        sum_of(&pushed, "ferry_bytes_read_total", &[job]),
        bytes as f64
    );
    // Each chunk was committed once: the histogram's count is the chunk counter.
    assert_eq!(
        sum_of(&pushed, "ferry_chunk_commit_duration_seconds_count", &[job]),
        sum_of(&pushed, "ferry_chunks_committed_total", &[job])
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_serves_metrics_while_loading_and_pushes_at_exit() -> anyhow::Result<()> {
    let options = GenOptions {
        seed: 72,
        items: 30_000,
        files: 3,
        ..GenOptions::default()
    };
    let mut fixture = ferry_tests::harness::fixture("metrics_migrate", &options).await?;
    add_data_file(&mut fixture.export, &bad_lines())?;
    let total = fixture.export.total_items;
    let gateway = Pushgateway::start()?;
    let config = fixture.dir.path().join("ferry.toml");
    std::fs::write(&config, CONFIG)?;
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let log_path = fixture.dir.path().join("migrate.log");
    let log = std::fs::File::create(&log_path)?;
    let mut child = ferry_tests::pg::spawn_dying_with_parent({
        let mut command = Command::new(binary("ferry-coordinator"));
        command
            .arg("migrate")
            .arg("--export")
            .arg(fixture.dir.path())
            .args(["--target", &fixture.url, "--key", "PK,SK", "--workers", "2"])
            .arg("--config")
            .arg(&config)
            .args(["--metrics-addr", &addr.to_string()])
            .args(["--pushgateway-url", &gateway.url()])
            .env("FERRY_METRICS__INSTANCE", "laptop")
            .env_remove("FERRY_FAILPOINTS")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        command
    })?;
    let (first, later) = scrape_growth(addr, total, &mut || matches!(child.try_wait(), Ok(None)))?;
    promtool_check(&later)?;
    assert!(
        first.contains("ferry_build_info{binary=\"ferry-migrate\""),
        "{first}"
    );
    // Mid-run, the run's gauges are the ledger's sample: within the manifest's total.
    let mid = parse_samples(&later);
    let committed = sum_of(&mid, "ferry_run_items_committed", &[]);
    assert!(
        committed <= total as f64 && sum_of(&mid, "ferry_run_items_expected", &[]) == total as f64,
        "{later}"
    );
    let status = ferry_tests::deploy::wait_with_timeout(&mut child, Duration::from_secs(300))?;
    let log = std::fs::read_to_string(&log_path)?;
    assert_eq!(status.status.code(), Some(0), "{log}");
    let run_id = ferry_tests::deploy::only_run(&fixture.url).await?;
    let [loaded, rejected, _, shards, _] = ledger_counts(&fixture.url, &run_id).await?;
    assert_eq!((loaded, rejected), (total as i64 - 3, 3));
    let pushed = parse_samples(&gateway.scrape()?);
    let group = ["job=\"ferry-migrate\"", "instance=\"laptop\""];
    assert_eq!(
        sum_of(&pushed, "ferry_items_loaded_total", &group),
        loaded as f64,
        "{log}"
    );
    assert_eq!(
        sum_of(&pushed, "ferry_items_rejected_total", &group),
        rejected as f64
    );
    // The run's gauges at exit: the ledger's final counts, every shard done.
    assert_eq!(
        sum_of(&pushed, "ferry_run_rows_loaded", &group),
        loaded as f64
    );
    assert_eq!(
        sum_of(&pushed, "ferry_run_rows_rejected", &group),
        rejected as f64
    );
    assert_eq!(
        sum_of(&pushed, "ferry_run_items_committed", &group),
        total as f64
    );
    for (state, count) in [
        ("done", shards),
        ("loading", 0),
        ("waiting", 0),
        ("failed", 0),
    ] {
        assert_eq!(
            sum_of(
                &pushed,
                "ferry_run_shards",
                &[group[0], group[1], &format!("state=\"{state}\"")]
            ),
            count as f64,
            "{state}"
        );
    }
    // A bad address is a start failure (exit 2) before anything is touched.
    let refused = Command::new(binary("ferry-coordinator"))
        .args([
            "migrate",
            "--export",
            "/nonexistent",
            "--target",
            &fixture.url,
        ])
        .args(["--pushgateway-url", "gateway:9091"])
        .output()?;
    assert_eq!(refused.status.code(), Some(2), "{}", stderr_of(&refused));
    assert!(
        stderr_of(&refused).contains("pushgateway url"),
        "{}",
        stderr_of(&refused)
    );
    Ok(())
}
