//! The fleet from tests: a generated export uploaded to the moto server, a queue with its
//! dead-letter queue made by `ferry-coordinator queue create`, the run planned from `s3://` and
//! submitted, and `ferry-worker` processes started, signalled and killed like a cluster's pods.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::gen::{GenOptions, GeneratedExport};
use crate::harness::{binary, fixture_on, stderr_of, Fixture, TestTarget};
use crate::moto::shared_moto;

/// A planned and submitted fleet run.
pub struct FleetRun {
    /// The export (on disk, as uploaded) and the target database.
    pub fixture: Fixture,
    /// The bucket holding the export.
    pub bucket: String,
    /// The `s3://` location the run was planned from.
    pub export_url: String,
    /// The config file every process reads.
    pub config: PathBuf,
    /// The shard queue.
    pub queue_url: String,
    /// The dead-letter queue.
    pub dead_letter_url: String,
    /// The run.
    pub run_id: String,
    logs: tempfile::TempDir,
}

/// A running `ferry-worker`.
pub struct WorkerProcess {
    child: Child,
    log: PathBuf,
    /// Its index, for messages.
    pub index: usize,
}

impl FleetRun {
    /// Generates an export, lets `tamper` change it on disk, uploads it to a new bucket, creates a
    /// queue, plans the run from S3 with `config_toml` and submits its shards.
    pub async fn prepare(
        name: &str,
        options: &GenOptions,
        config_toml: &str,
        tamper: impl FnOnce(&GeneratedExport) -> anyhow::Result<()>,
    ) -> anyhow::Result<FleetRun> {
        FleetRun::prepare_on(TestTarget::Postgres, name, options, config_toml, tamper).await
    }

    /// [`FleetRun::prepare`] on the given target.
    pub async fn prepare_on(
        target: TestTarget,
        name: &str,
        options: &GenOptions,
        config_toml: &str,
        tamper: impl FnOnce(&GeneratedExport) -> anyhow::Result<()>,
    ) -> anyhow::Result<FleetRun> {
        let fixture = fixture_on(target, name, options).await?;
        tamper(&fixture.export)?;
        let moto = shared_moto();
        let bucket = name.replace('_', "-");
        moto.upload_folder(&bucket, fixture.dir.path()).await?;
        let logs = tempfile::tempdir()?;
        let config = logs.path().join("ferry.toml");
        std::fs::write(&config, config_toml)?;
        let mut run = FleetRun {
            fixture,
            export_url: format!("s3://{bucket}/exports/app/"),
            bucket,
            config,
            queue_url: String::new(),
            dead_letter_url: String::new(),
            run_id: String::new(),
            logs,
        };
        let created = run.coordinator_ok(&["queue", "create", "--name", name, "--json"])?;
        let created: serde_json::Value = serde_json::from_str(&created)?;
        run.queue_url = created["url"].as_str().context("queue url")?.to_string();
        run.dead_letter_url = created["dead_letter_url"]
            .as_str()
            .context("dead-letter url")?
            .to_string();
        let url = run.fixture.url.clone();
        let export = run.export_url.clone();
        let planned = run.coordinator_ok(&[
            "plan", "--export", &export, "--target", &url, "--key", "PK,SK",
        ])?;
        run.run_id = planned.trim().to_string();
        let queue = run.queue_url.clone();
        let submitted = run.coordinator_ok(&[
            "submit",
            "--run-id",
            &run.run_id.clone(),
            "--target",
            &url,
            "--queue-url",
            &queue,
        ])?;
        anyhow::ensure!(submitted.contains("submitted"), "submit said: {submitted}");
        Ok(run)
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(binary(program));
        command
            .env_remove("FERRY_FAILPOINTS")
            .env("FERRY_LOG", "info")
            .envs(shared_moto().env());
        command
    }

    /// Runs `ferry-coordinator` with `args` (and `--config`); waits for it.
    pub fn coordinator(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut command = self.command("ferry-coordinator");
        command.args(args).arg("--config").arg(&self.config);
        command.output().context("running ferry-coordinator")
    }

    /// Runs `ferry-coordinator`, requires exit 0, returns its stdout.
    pub fn coordinator_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.coordinator(args)?;
        if !output.status.success() {
            bail!(
                "ferry-coordinator {args:?} exited with {}:\n{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                stderr_of(&output)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `status --json` of the run, with the queue.
    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        let output = self.coordinator(&[
            "status",
            "--run-id",
            &self.run_id,
            "--target",
            &self.fixture.url,
            "--queue-url",
            &self.queue_url,
            "--json",
        ])?;
        serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "status printed no JSON: {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    /// `finalize` of the run.
    pub fn finalize(&self) -> anyhow::Result<Output> {
        self.coordinator(&[
            "finalize",
            "--run-id",
            &self.run_id,
            "--target",
            &self.fixture.url,
        ])
    }

    /// Starts `ferry-worker` number `index` on the queue, with extra environment.
    pub fn spawn_worker(
        &self,
        index: usize,
        env: &[(&str, &str)],
    ) -> anyhow::Result<WorkerProcess> {
        let log = self.logs.path().join(format!("worker-{index}.log"));
        let file = std::fs::File::create(&log)?;
        let mut command = self.command("ferry-worker");
        command
            .args([
                "--target",
                &self.fixture.url,
                "--queue-url",
                &self.queue_url,
            ])
            .arg("--config")
            .arg(&self.config)
            .args(["--workers", "1"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = crate::pg::spawn_dying_with_parent(command)?;
        Ok(WorkerProcess { child, log, index })
    }

    /// Waits until the ledger shows a shard with some, but not all, of its lines committed.
    pub async fn wait_for_a_shard_midway(&self, timeout: Duration) -> anyhow::Result<String> {
        let client = crate::harness::connect(&self.fixture.url).await?;
        let deadline = Instant::now() + timeout;
        loop {
            let row = client
                .query_opt(
                    "SELECT shard_id FROM ferry.shards WHERE run_id = $1 AND committed_lines > 0 \
                     AND committed_lines < item_count AND state = 'pending' LIMIT 1",
                    &[&self.run_id],
                )
                .await?;
            if let Some(row) = row {
                return Ok(row.get(0));
            }
            if Instant::now() > deadline {
                bail!("no shard got midway within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl WorkerProcess {
    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    /// Waits for the process to exit; kills it and fails after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "worker {} did not exit within {timeout:?}; its log:\n{}",
                    self.index,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything it logged.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
