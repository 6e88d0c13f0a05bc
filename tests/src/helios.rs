//! Throw-away real HeliosDB servers (`heliosdb-nano`, built from crates.io by
//! `scripts/install-heliosdb` into `~/.cache/ferry/`), one per test, on a free loopback port with a
//! temporary data folder. A missing binary is an error, never a skip.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::pg::{can_connect, free_port, spawn_dying_with_parent};

/// The pinned HeliosDB version.
pub const HELIOSDB_VERSION: &str = "4.41.1";

/// Finds the `heliosdb-nano` binary: `$FERRY_HELIOSDB_BIN`, the install cache, or `PATH`.
pub fn heliosdb_binary() -> anyhow::Result<PathBuf> {
    crate::tools::find_tool(
        "FERRY_HELIOSDB_BIN",
        &format!("heliosdb-{HELIOSDB_VERSION}/bin/heliosdb-nano"),
        "heliosdb-nano",
        "scripts/install-heliosdb",
    )
}

/// A running HeliosDB server.
pub struct HeliosServer {
    child: Option<Child>,
    port: u16,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl HeliosServer {
    /// Starts a server with a fresh data folder and waits until it answers queries.
    pub fn start() -> anyhow::Result<HeliosServer> {
        let binary = heliosdb_binary()?;
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let log = dir.path().join("server.log");
        let log_file = std::fs::File::create(&log)?;
        let mut command = Command::new(&binary);
        command
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
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let child = spawn_dying_with_parent(command)
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut server = HeliosServer {
            child: Some(child),
            port,
            _dir: dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !can_connect(&server.url()) {
            if let Some(child) = server.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!("heliosdb-nano exited with {status}: {}", server.log_tail());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "heliosdb-nano did not answer within 60 s: {}",
                    server.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres` (trust auth; HeliosDB needs a known dbname).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The end of the server's log.
    pub fn log_tail(&self) -> String {
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(2000)..]).into_owned()
    }
}

impl Drop for HeliosServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
