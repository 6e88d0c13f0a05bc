//! A real S3 and SQS wire endpoint for the fleet tests: moto's server (PyPI `moto[server]`,
//! installed by `scripts/install-moto` into `~/.cache/ferry/`), started once per test process on a
//! free loopback port and killed with it. A missing server is an error, never a skip.
//!
//! Tests talk to it with AWS SDK clients built on fixed test credentials; the Ferry binaries they
//! start get the same through the standard AWS environment variables ([`MotoServer::env`]), so the
//! product's own credential chain is what the fleet tests exercise.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

use crate::pg::{free_port, spawn_dying_with_parent};

/// The pinned moto version (`scripts/install-moto`).
pub const MOTO_VERSION: &str = "5.2.1";

/// Finds `moto_server`: `$FERRY_MOTO_BIN`, the install cache, or `PATH`.
pub fn moto_binary() -> anyhow::Result<PathBuf> {
    crate::tools::find_tool(
        "FERRY_MOTO_BIN",
        &format!("moto-{MOTO_VERSION}/bin/moto_server"),
        "moto_server",
        "scripts/install-moto",
    )
}

/// A running moto server.
pub struct MotoServer {
    child: Mutex<Option<Child>>,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

static SHARED: OnceLock<MotoServer> = OnceLock::new();

/// The test process's moto server, started on first use.
pub fn shared_moto() -> &'static MotoServer {
    SHARED.get_or_init(|| {
        MotoServer::start().unwrap_or_else(|e| panic!("failed to start the moto server: {e:#}"))
    })
}

impl MotoServer {
    /// Starts a server and waits until it answers.
    pub fn start() -> anyhow::Result<MotoServer> {
        let binary = moto_binary()?;
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let log = dir.path().join("moto.log");
        let log_file = std::fs::File::create(&log)?;
        let mut command = Command::new(&binary);
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let child = spawn_dying_with_parent(command)
            .with_context(|| format!("starting {}", binary.display()))?;
        let server = MotoServer {
            child: Mutex::new(Some(child)),
            port,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(child) = server.child.lock().unwrap().as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!("moto_server exited with {status}: {}", server.log_tail());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "moto_server did not listen within 60 s: {}",
                    server.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }

    /// An empty AWS shared config file (the standard chain finds no profile in it).
    fn empty_aws_file(&self) -> String {
        let path = self._dir.path().join("aws-config");
        if !path.exists() {
            let _ = std::fs::write(&path, "");
        }
        path.display().to_string()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment a Ferry process needs to reach this server through the standard AWS chain
    /// (fixed test credentials, a region, no shared config files, no instance metadata) and the
    /// `[aws] endpoint_url` override.
    pub fn env(&self) -> Vec<(String, String)> {
        let empty = self.empty_aws_file();
        [
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_CONFIG_FILE", empty.as_str()),
            ("AWS_SHARED_CREDENTIALS_FILE", empty.as_str()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([("FERRY_AWS__ENDPOINT_URL".to_string(), self.endpoint())])
        .collect()
    }

    /// An S3 client for this server.
    pub fn s3(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .http_client(ferry_shared::aws::http_client())
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// An SQS client for this server.
    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .endpoint_url(self.endpoint())
            .http_client(ferry_shared::aws::http_client())
            .build();
        aws_sdk_sqs::Client::from_conf(config)
    }

    /// Creates `bucket` and uploads every file under `root` with its path from `root` as the key
    /// (a generated export's root is its bucket root).
    pub async fn upload_folder(&self, bucket: &str, root: &Path) -> anyhow::Result<usize> {
        let s3 = self.s3();
        s3.create_bucket()
            .bucket(bucket)
            .send()
            .await
            .context("CreateBucket")?;
        let mut stack = vec![root.to_path_buf()];
        let mut uploaded = 0;
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let key = path
                    .strip_prefix(root)?
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                let body = aws_sdk_s3::primitives::ByteStream::from(std::fs::read(&path)?);
                s3.put_object()
                    .bucket(bucket)
                    .key(&key)
                    .body(body)
                    .send()
                    .await
                    .with_context(|| format!("PutObject {key}"))?;
                uploaded += 1;
            }
        }
        Ok(uploaded)
    }

    /// The end of the server's log.
    pub fn log_tail(&self) -> String {
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(2000)..]).into_owned()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
