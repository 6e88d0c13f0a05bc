//! The embedded default: with no `--target`, `migrate` starts its own HeliosDB server (the
//! `heliosdb-nano` binary) on loopback with a local data folder, loads into it, and stops it
//! cleanly at the end. The data stays in the folder; the report says how to connect to it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ferry_shared::config::EmbeddedSettings;
use tokio::process::{Child, Command};

use crate::{CoordinatorError, Result};

/// The HeliosDB version Ferry is tested with.
pub const HELIOSDB_VERSION: &str = "4.41.1";

/// Finds `heliosdb-nano`: configured, `$FERRY_HELIOSDB_BIN`, the install cache, then `PATH`.
pub fn find_binary(configured: Option<&Path>) -> Result<PathBuf> {
    let candidates = configured
        .map(Path::to_path_buf)
        .into_iter()
        .chain(std::env::var_os("FERRY_HELIOSDB_BIN").map(PathBuf::from))
        .chain(std::env::var_os("HOME").map(|home| {
            PathBuf::from(home).join(format!(
                ".cache/ferry/heliosdb-{HELIOSDB_VERSION}/bin/heliosdb-nano"
            ))
        }))
        .chain(std::env::var_os("PATH").into_iter().flat_map(|p| {
            std::env::split_paths(&p)
                .map(|dir| dir.join("heliosdb-nano"))
                .collect::<Vec<_>>()
        }));
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(CoordinatorError::Invalid(
        "no --target given and no heliosdb-nano binary for the embedded default: run scripts/install-heliosdb \
         (it builds HeliosDB once, 25-55 minutes), set target.heliosdb_bin, or pass --target postgres://…"
            .into(),
    ))
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| CoordinatorError::Invalid(format!("no free loopback port: {e}")))?;
    Ok(listener
        .local_addr()
        .map_err(|e| CoordinatorError::Invalid(e.to_string()))?
        .port())
}

/// A HeliosDB server started by Ferry.
pub struct EmbeddedHelios {
    child: Child,
    port: u16,
    data_dir: PathBuf,
    binary: PathBuf,
}

impl EmbeddedHelios {
    /// Starts the server and waits until it answers.
    pub async fn start(settings: &EmbeddedSettings) -> Result<EmbeddedHelios> {
        let binary = find_binary(settings.heliosdb_bin.as_deref())?;
        std::fs::create_dir_all(&settings.data_dir).map_err(|source| ferry_shared::Error::Io {
            location: settings.data_dir.display().to_string(),
            source,
        })?;
        let data_dir = std::fs::canonicalize(&settings.data_dir).map_err(|source| {
            ferry_shared::Error::Io {
                location: settings.data_dir.display().to_string(),
                source,
            }
        })?;
        let port = match settings.port {
            Some(port) => port,
            None => free_port()?,
        };
        let log = std::fs::File::create(data_dir.join("ferry-heliosdb.log")).map_err(|source| {
            ferry_shared::Error::Io {
                location: data_dir.display().to_string(),
                source,
            }
        })?;
        let stderr = log
            .try_clone()
            .map_err(|e| CoordinatorError::Invalid(e.to_string()))?;
        let child = Command::new(&binary)
            .args([
                "start",
                "--listen",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--auth",
                "trust",
                "--http-port",
                "0",
            ])
            .arg("--data-dir")
            .arg(&data_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                CoordinatorError::Invalid(format!("cannot start {}: {e}", binary.display()))
            })?;
        let mut server = EmbeddedHelios {
            child,
            port,
            data_dir,
            binary,
        };
        tracing::info!(binary = %server.binary.display(), data_dir = %server.data_dir.display(), port, "starting embedded heliosdb");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(client) = ferry_worker::ledger::connect(&server.url()).await {
                if client.simple_query("SELECT 1").await.is_ok() {
                    return Ok(server);
                }
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(CoordinatorError::Invalid(format!(
                    "heliosdb-nano exited with {status}; see {}",
                    server.data_dir.join("ferry-heliosdb.log").display()
                )));
            }
            if Instant::now() > deadline {
                return Err(CoordinatorError::Invalid(
                    "heliosdb-nano did not answer within 60 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server cleanly (SIGTERM, then wait) and says how to use the data afterwards.
    pub async fn stop(mut self) -> String {
        if let Some(pid) = self.child.id() {
            // SAFETY: sending a signal to our own child.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!("heliosdb did not stop within 30 s: killing it");
            let _ = self.child.kill().await;
        }
        format!(
            "The data is in {dir}. To query it, start HeliosDB and connect:\n  {bin} start --data-dir {dir} --port 5433 --auth trust --http-port 0 &\n  psql postgres://postgres@127.0.0.1:5433/postgres",
            dir = self.data_dir.display(),
            bin = self.binary.display()
        )
    }
}
