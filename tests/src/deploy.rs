//! What the deployment tests share: the repository's `deploy/` folder, the tools
//! `scripts/install-*` put in the cache (promtool, the Pushgateway, the manifest validators,
//! Airflow, podman), a real Pushgateway server, scraping and parsing Prometheus text, and a
//! [`Stack`]: an export in moto's S3, a queue made by `queue create` and an empty PostgreSQL
//! database, with nothing planned yet, for the tests that drive the run from outside (a container,
//! an Airflow DAG, the local stack script). A missing tool is an error, never a skip.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::gen::GenOptions;
use crate::harness::{fixture, stderr_of, Fixture};
use crate::moto::shared_moto;
use crate::pg::{free_port, spawn_dying_with_parent};
use crate::tools::find_tool;

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `promtool` (`scripts/install-prometheus-tools`).
pub fn promtool() -> anyhow::Result<PathBuf> {
    find_tool(
        "FERRY_PROMTOOL_BIN",
        "prometheus-tools-2.42.0/bin/promtool",
        "promtool",
        "scripts/install-prometheus-tools",
    )
}

/// The Pushgateway binary (`scripts/install-prometheus-tools`).
pub fn pushgateway_binary() -> anyhow::Result<PathBuf> {
    find_tool(
        "FERRY_PUSHGATEWAY_BIN",
        "prometheus-tools-2.42.0/bin/pushgateway",
        "prometheus-pushgateway",
        "scripts/install-prometheus-tools",
    )
}

/// The validators' folder (`scripts/install-deploy-validators`): `venv/bin/kubernetes-validate`,
/// `venv/bin/python` (botocore) and `node/node_modules` (the KEDA and Argo models).
pub fn validators_dir() -> anyhow::Result<PathBuf> {
    let validate = find_tool(
        "FERRY_KUBERNETES_VALIDATE_BIN",
        "deploy-validators-1/venv/bin/kubernetes-validate",
        "kubernetes-validate",
        "scripts/install-deploy-validators",
    )?;
    let root = validate
        .ancestors()
        .nth(3)
        .context("kubernetes-validate is not in <root>/venv/bin")?
        .to_path_buf();
    anyhow::ensure!(
        root.join("node/node_modules/@kubernetes-models/keda")
            .is_dir(),
        "{} has no KEDA models: run scripts/install-deploy-validators",
        root.display()
    );
    Ok(root)
}

/// `airflow` (`scripts/install-airflow`).
pub fn airflow() -> anyhow::Result<PathBuf> {
    find_tool(
        "FERRY_AIRFLOW_BIN",
        "airflow-3.3.2/bin/airflow",
        "airflow",
        "scripts/install-airflow",
    )
}

/// `podman` (`scripts/install-podman`).
pub fn podman() -> anyhow::Result<PathBuf> {
    find_tool(
        "FERRY_PODMAN_BIN",
        "podman/bin/podman",
        "podman",
        "scripts/install-podman",
    )
}

/// Runs `command`, requiring exit 0; returns stdout.
pub fn run_ok(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} exited with {}:\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            stderr_of(&output)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `GET http://<addr><path>` over HTTP/1.1; returns the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of the response head")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    // Chunked bodies (the Pushgateway's) are decoded; the metrics endpoint sends a length.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).context("chunk size")?;
            if size == 0 {
                break;
            }
            out.push_str(&tail[..size]);
            rest = &tail[size + 2..];
        }
        out
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// The samples of a Prometheus text exposition: `name{labels}` → value (comments skipped).
pub fn parse_samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of every sample of `name` whose series holds each of `labels` (`key="value"`).
pub fn sum_of(samples: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            let metric = series.split('{').next().unwrap_or_default();
            metric == name && labels.iter().all(|l| series.contains(l))
        })
        .map(|(_, value)| value)
        .sum()
}

/// Runs `promtool check metrics` on `text`; fails with its complaints.
pub fn promtool_check(text: &str) -> anyhow::Result<()> {
    let mut child = Command::new(promtool()?)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(text.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "promtool check metrics failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            stderr_of(&output)
        );
    }
    Ok(())
}

/// A real Pushgateway (Debian's `prometheus-pushgateway`) on a free loopback port, killed on drop.
pub struct Pushgateway {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Pushgateway {
    /// Starts one and waits until it answers.
    pub fn start() -> anyhow::Result<Pushgateway> {
        let binary = pushgateway_binary()?;
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = std::fs::File::create(dir.path().join("pushgateway.log"))?;
        let mut command = Command::new(&binary);
        command
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = spawn_dying_with_parent(command)
            .with_context(|| format!("starting {}", binary.display()))?;
        let gateway = Pushgateway {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(http_get(addr, "/-/ready"), Ok((200, _))) {
            if Instant::now() > deadline {
                bail!(
                    "the pushgateway did not answer within 30 s: {}",
                    std::fs::read_to_string(gateway._dir.path().join("pushgateway.log"))
                        .unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(gateway)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything it holds, as the Prometheus server would scrape it.
    pub fn scrape(&self) -> anyhow::Result<String> {
        let (status, body) = http_get(self.addr, "/metrics")?;
        anyhow::ensure!(status == 200, "pushgateway /metrics answered {status}");
        Ok(body)
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An export in moto's S3, a queue and its dead-letter queue, an empty PostgreSQL database and a
/// config file naming the queue: what a cluster has before its first Job runs.
pub struct Stack {
    /// The export on disk (as uploaded) and the database.
    pub fixture: Fixture,
    /// `s3://<bucket>/exports/app/`.
    pub export_url: String,
    /// The shard queue.
    pub queue_url: String,
    /// The config file (`[mapping] key`, the queue, `config_toml`).
    pub config: PathBuf,
    dir: tempfile::TempDir,
}

impl Stack {
    /// Generates an export with `options`, lets `extend` add to it, uploads it to a new bucket,
    /// creates a queue named `name`, and writes a config of `config_toml` plus the queue's URL and
    /// the key `PK,SK`.
    pub async fn prepare(
        name: &str,
        options: &GenOptions,
        config_toml: &str,
        extend: impl FnOnce(&mut crate::gen::GeneratedExport) -> anyhow::Result<()>,
    ) -> anyhow::Result<Stack> {
        let mut fixture = fixture(name, options).await?;
        extend(&mut fixture.export)?;
        let moto = shared_moto();
        let bucket = name.replace('_', "-");
        moto.upload_folder(&bucket, fixture.dir.path()).await?;
        let dir = tempfile::tempdir()?;
        let created = run_ok(
            Command::new(crate::harness::binary("ferry-coordinator"))
                .args(["queue", "create", "--name", name, "--json"])
                .env_remove("FERRY_FAILPOINTS")
                .envs(moto.env()),
        )?;
        let created: serde_json::Value = serde_json::from_str(&created)?;
        let queue_url = created["url"].as_str().context("queue url")?.to_string();
        let config = dir.path().join("ferry.toml");
        std::fs::write(
            &config,
            format!("{config_toml}\n[mapping]\nkey = [\"PK\", \"SK\"]\n"),
        )?;
        Ok(Stack {
            fixture,
            export_url: format!("s3://{bucket}/exports/app/"),
            queue_url,
            config,
            dir,
        })
    }

    /// A scratch folder living as long as the stack.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The environment a Ferry process (or a container) needs: moto's endpoint and test
    /// credentials, the queue and the target.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = shared_moto()
            .env()
            .into_iter()
            // Paths on this host mean nothing in a container; the SDK needs no file.
            .filter(|(k, _)| !k.ends_with("_FILE"))
            .collect();
        env.push(("FERRY_QUEUE__URL".into(), self.queue_url.clone()));
        env.push(("FERRY_TARGET__URL".into(), self.fixture.url.clone()));
        env
    }

    /// Sums of the run's ledger counts: (loaded, rejected, filtered, shards, shards done).
    pub async fn ledger_counts(&self, run_id: &str) -> anyhow::Result<[i64; 5]> {
        ledger_counts(&self.fixture.url, run_id).await
    }
}

/// Sums of a run's ledger counts in the database at `url`: (loaded, rejected, filtered, shards,
/// shards done).
pub async fn ledger_counts(url: &str, run_id: &str) -> anyhow::Result<[i64; 5]> {
    let client = crate::harness::connect(url).await?;
    let row = client
        .query_one(
            "SELECT coalesce(sum(loaded_rows), 0)::int8, coalesce(sum(rejected_rows), 0)::int8, \
             coalesce(sum(filtered_rows), 0)::int8, count(*), \
             count(*) FILTER (WHERE state = 'done') FROM ferry.shards WHERE run_id = $1",
            &[&run_id],
        )
        .await?;
    Ok([row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)])
}

/// The one run in the database at `url`.
pub async fn only_run(url: &str) -> anyhow::Result<String> {
    let client = crate::harness::connect(url).await?;
    let rows = client.query("SELECT run_id FROM ferry.runs", &[]).await?;
    anyhow::ensure!(rows.len() == 1, "{} runs in the ledger", rows.len());
    Ok(rows[0].get(0))
}

/// Waits for `child` to exit within `timeout`; kills it and fails after.
pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> anyhow::Result<Output> {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_end(&mut stdout)?;
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_end(&mut stderr)?;
    }
    Ok(Output {
        status: child.wait()?,
        stdout,
        stderr,
    })
}
