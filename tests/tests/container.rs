//! Ferry's image (deploy/Dockerfile), built with podman from the binaries this test profile built
//! (deploy/image/rootfs lays out its root filesystem) and run for real: its `ferry-coordinator`
//! plans and queues a run in one command (`plan --submit`), its `ferry-worker` loads the queued
//! shards from moto's S3 and SQS into PostgreSQL on the host network, its `finalize` verifies, and
//! the table holds exactly the export's items. Also: the image runs as a non-root user, has no
//! shell, a worker container stopped mid-shard (SIGTERM to its PID 1) drains and exits 0, and
//! deploy/Dockerfile.build's runtime stage is the tested one.
//!
//! Podman runs rootful with runc, the vfs storage driver in a folder of the test's own, and
//! cgroupfs (crun fails on this kind of machine's hybrid cgroups), from a containers.conf of its own.

use std::path::Path;
use std::process::Command;

use ferry_tests::deploy::{podman, repo_root, run_ok, Stack};
use ferry_tests::gen::GenOptions;
use ferry_tests::harness::{assert_table_matches, binary, stderr_of};

/// `podman` with the test's own storage and configuration.
fn podman_in(dir: &Path) -> anyhow::Result<Command> {
    let conf = dir.join("containers.conf");
    if !conf.exists() {
        std::fs::write(
            &conf,
            "[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\nruntime = \"runc\"\n",
        )?;
    }
    let mut command = Command::new(podman()?);
    command
        .env("CONTAINERS_CONF", &conf)
        .arg("--root")
        .arg(dir.join("storage"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args(["--storage-driver", "vfs", "--runtime", "runc"]);
    Ok(command)
}

/// The lines of a Dockerfile's last stage (from its last `FROM`), comments and blanks dropped.
fn runtime_stage(dockerfile: &str) -> Vec<String> {
    let lines: Vec<&str> = dockerfile.lines().collect();
    let from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM line");
    lines[from..]
        .iter()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| l.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_plans_loads_and_finalizes_a_queued_run_exactly() -> anyhow::Result<()> {
    let root = repo_root();
    // The multi-stage variant's runtime stage is this one, but for where the files come from.
    let tested = runtime_stage(&std::fs::read_to_string(root.join("deploy/Dockerfile"))?);
    let multi = runtime_stage(&std::fs::read_to_string(
        root.join("deploy/Dockerfile.build"),
    )?);
    assert_eq!(tested[0], "FROM scratch");
    assert_eq!(tested[1], "COPY . /");
    assert_eq!(multi[1], "COPY --from=build /rootfs/ /");
    assert_eq!(tested[2..], multi[2..], "the runtime stages differ");

    let options = GenOptions {
        seed: 81,
        items: 5_000,
        files: 3,
        ..GenOptions::default()
    };
    let stack = Stack::prepare(
        "container_run",
        &options,
        "[load]\nchunk_lines = 700\n[queue]\nwait_secs = 1\nidle_exit_secs = 3\n",
        |_| Ok(()),
    )
    .await?;
    let work = tempfile::tempdir()?;
    let bins = binary("ferry-worker");
    let bins = bins.parent().expect("a folder");
    run_ok(
        Command::new(root.join("deploy/image/rootfs"))
            .arg(bins)
            .arg(work.path().join("rootfs")),
    )?;
    let image = "localhost/ferry:test";
    run_ok(
        podman_in(work.path())?
            .args(["build", "--quiet", "--file"])
            .arg(root.join("deploy/Dockerfile"))
            .args(["--tag", image])
            .arg(work.path().join("rootfs")),
    )?;
    let inspect = run_ok(podman_in(work.path())?.args([
        "image",
        "inspect",
        "--format",
        "{{.Size}} {{.Config.User}}",
        image,
    ]))?;
    let (size, user) = inspect.trim().split_once(' ').expect("size and user");
    let size: u64 = size.parse()?;
    println!(
        "image {image}: {size} bytes ({} MB), user {user}",
        size / 1_000_000
    );
    assert_eq!(user, "65532:65532");
    assert!(size < 200_000_000, "the image is {size} bytes");
    // No shell to run.
    let shell = podman_in(work.path())?
        .args([
            "run",
            "--rm",
            "--network",
            "host",
            image,
            "/bin/sh",
            "-c",
            "true",
        ])
        .output()?;
    assert!(!shell.status.success(), "a shell ran in the image");

    let run = |args: &[&str]| -> anyhow::Result<std::process::Output> {
        let mut command = podman_in(work.path())?;
        command.args(["run", "--rm", "--network", "host"]);
        for (key, value) in stack.env() {
            command.arg("--env").arg(format!("{key}={value}"));
        }
        for (key, value) in [
            ("FERRY_LOAD__CHUNK_LINES", "700"),
            ("FERRY_QUEUE__WAIT_SECS", "1"),
            ("FERRY_QUEUE__IDLE_EXIT_SECS", "3"),
        ] {
            command.arg("--env").arg(format!("{key}={value}"));
        }
        Ok(command.arg(image).args(args).output()?)
    };
    let planned = run(&[
        "/usr/local/bin/ferry-coordinator",
        "plan",
        "--export",
        &stack.export_url,
        "--key",
        "PK,SK",
        "--run-id",
        "container-run",
        "--submit",
    ])?;
    assert_eq!(planned.status.code(), Some(0), "{}", stderr_of(&planned));
    assert_eq!(
        String::from_utf8_lossy(&planned.stdout).trim(),
        "container-run"
    );
    assert!(
        stderr_of(&planned).contains("submitted 3 shards"),
        "{}",
        stderr_of(&planned)
    );
    // A worker stopped mid-shard (SIGTERM to the container's PID 1, as on a pod eviction) lets
    // its chunk finish, returns its shard to the queue at once and exits 0.
    let mut detached = podman_in(work.path())?;
    detached.args([
        "run",
        "--detach",
        "--name",
        "ferry-drain",
        "--network",
        "host",
    ]);
    for (key, value) in stack.env() {
        detached.arg("--env").arg(format!("{key}={value}"));
    }
    detached
        .args(["--env", "FERRY_FAILPOINTS=after_commit=sleep300@1+"])
        .args(["--env", "FERRY_QUEUE__WAIT_SECS=1"])
        .args([image, "/usr/local/bin/ferry-worker", "--workers", "1"]);
    run_ok(&mut detached)?;
    let client = ferry_tests::harness::connect(&stack.fixture.url).await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let midway: i64 = client
            .query_one(
                "SELECT count(*) FROM ferry.shards WHERE run_id = 'container-run' \
                 AND committed_lines > 0 AND committed_lines < item_count",
                &[],
            )
            .await?
            .get(0);
        if midway > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no shard got midway");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    run_ok(podman_in(work.path())?.args(["stop", "--time", "60", "ferry-drain"]))?;
    let code = run_ok(podman_in(work.path())?.args([
        "inspect",
        "--format",
        "{{.State.ExitCode}}",
        "ferry-drain",
    ]))?;
    let logs = podman_in(work.path())?
        .args(["logs", "ferry-drain"])
        .output()?;
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&logs.stdout),
        stderr_of(&logs)
    );
    assert_eq!(code.trim(), "0", "{logs}");
    assert!(logs.contains("stopping"), "{logs}");
    run_ok(podman_in(work.path())?.args(["rm", "ferry-drain"]))?;

    let worker = run(&["/usr/local/bin/ferry-worker", "--workers", "2"])?;
    assert_eq!(worker.status.code(), Some(0), "{}", stderr_of(&worker));
    let finalized = run(&[
        "/usr/local/bin/ferry-coordinator",
        "finalize",
        "--wait",
        "--run-id",
        "container-run",
    ])?;
    assert_eq!(
        finalized.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&finalized.stdout),
        stderr_of(&finalized)
    );
    let rows = assert_table_matches(
        &stack.fixture.url,
        "AppTable",
        &stack.fixture.export.export_dir,
    )
    .await?;
    assert_eq!(rows as u64, stack.fixture.export.total_items);
    // A worker that cannot start (no target) exits 2 at once: what podFailurePolicy fails on.
    let broken = podman_in(work.path())?
        .args(["run", "--rm", "--network", "host", image])
        .output()?;
    assert_eq!(broken.status.code(), Some(2), "{}", stderr_of(&broken));
    Ok(())
}
