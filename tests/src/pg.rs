//! Ephemeral real PostgreSQL clusters for tests.
//!
//! Owns finding the server binaries, `initdb` into a temporary folder, starting `postgres` on a
//! free loopback port with durability switched off, waiting until it accepts connections,
//! handing out one fresh database per test, and tearing the server down again. When the tests
//! run as root the server runs as the `postgres` OS user (PostgreSQL refuses root). The
//! postmaster gets `PR_SET_PDEATHSIG` so it dies with the test process even when no destructor
//! runs; it is spawned from a thread that lives as long as the process, because the death
//! signal fires when the *spawning thread* exits.

use std::ffi::{CString, OsStr};
use std::fs::{self, File, Permissions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio_postgres::NoTls;

/// How long to wait for a fresh server to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for the server to exit after SIGQUIT before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Name of the server log inside the data directory.
const LOG_FILE: &str = "ferry-postgres.log";

/// How [`PgCluster::start_with`] sets a cluster up beyond [`PgCluster::start`]'s defaults.
#[derive(Clone, Debug, Default)]
pub struct PgOptions {
    /// Serve TLS (`ssl=on`) with this certificate chain and key, both PEM.
    pub tls: Option<(String, String)>,
    /// Listen on the Unix socket only (no TCP).
    pub unix_only: bool,
    /// `pg_hba.conf` as written here instead of initdb's (trust for everything).
    pub hba: Option<String>,
}

/// A running throw-away PostgreSQL server (trust auth, superuser `postgres`).
#[derive(Debug)]
pub struct PgCluster {
    /// Holds `data/` and `sock/`; removed on drop (after the server stopped).
    root: tempfile::TempDir,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    bin_dir: PathBuf,
    pid: u32,
    child: Option<Child>,
    unix_only: bool,
    ready_over_socket: bool,
}

impl PgCluster {
    /// `initdb` in a temporary folder and start postgres on a free loopback port. Fails with a
    /// clear message when the server binaries are missing (never skips).
    pub fn start() -> anyhow::Result<PgCluster> {
        PgCluster::start_with(&PgOptions::default())
    }

    /// Like [`PgCluster::start`], with TLS, a Unix socket only, or its own `pg_hba.conf`.
    pub fn start_with(options: &PgOptions) -> anyhow::Result<PgCluster> {
        let bin_dir = find_bin_dir()?;
        let run_as = if unsafe { libc::geteuid() } == 0 {
            Some(
                postgres_user()
                    .context("postgresql refuses to run as root and the fallback user failed")?,
            )
        } else {
            None
        };

        // Under /tmp (short socket paths), 0755 so the `postgres` user can traverse it.
        let root = tempfile::Builder::new()
            .prefix("ferry-pg-")
            .permissions(Permissions::from_mode(0o755))
            .tempdir_in("/tmp")
            .context("failed to create the cluster's temporary folder")?;
        let data_dir = root.path().join("data");
        let socket_dir = root.path().join("sock");
        for dir in [&data_dir, &socket_dir] {
            fs::create_dir(dir).with_context(|| format!("failed to create {}", dir.display()))?;
            fs::set_permissions(dir, Permissions::from_mode(0o700))?;
        }
        if let Some((uid, gid)) = run_as {
            for dir in [root.path(), &data_dir, &socket_dir] {
                chown(dir, uid, gid)?;
            }
        }

        // initdb.
        let mut initdb = Command::new(bin_dir.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data_dir)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .current_dir(root.path())
            .env("LC_ALL", "C")
            .env("LANG", "C")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = run_as {
            initdb.uid(uid).gid(gid);
        }
        let out = initdb
            .output()
            .with_context(|| format!("failed to run {}", bin_dir.join("initdb").display()))?;
        if !out.status.success() {
            bail!(
                "initdb failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        let mut settings: Vec<String> = Vec::new();
        if let Some((cert, key)) = &options.tls {
            let (cert_path, key_path) = (data_dir.join("server.crt"), data_dir.join("server.key"));
            fs::write(&cert_path, cert)?;
            fs::write(&key_path, key)?;
            fs::set_permissions(&key_path, Permissions::from_mode(0o600))?;
            if let Some((uid, gid)) = run_as {
                chown(&cert_path, uid, gid)?;
                chown(&key_path, uid, gid)?;
            }
            settings.extend([
                "ssl=on".to_string(),
                format!("ssl_cert_file={}", cert_path.display()),
                format!("ssl_key_file={}", key_path.display()),
            ]);
        }
        if let Some(hba) = &options.hba {
            fs::write(data_dir.join("pg_hba.conf"), hba)?;
        }
        if options.unix_only {
            settings.push("listen_addresses=".to_string());
        }

        // postgres, spawned from the long-lived spawner thread.
        let port = free_port()?;
        let log_path = data_dir.join(LOG_FILE);
        let log = File::create(&log_path)
            .with_context(|| format!("failed to create {}", log_path.display()))?;
        let mut cmd = Command::new(bin_dir.join("postgres"));
        cmd.arg("-D")
            .arg(&data_dir)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(&socket_dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=128MB",
            ])
            .args(settings.iter().flat_map(|s| ["-c", s.as_str()]))
            .current_dir(root.path())
            .env("LC_ALL", "C")
            .env("LANG", "C")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some((uid, gid)) = run_as {
            cmd.uid(uid).gid(gid);
        }
        // SAFETY: only calls async-signal-safe libc functions. std runs pre_exec closures after
        // the uid/gid change, which would otherwise clear the death signal.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGQUIT as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = spawn_from_long_lived_thread(cmd)
            .with_context(|| format!("failed to start {}", bin_dir.join("postgres").display()))?;

        // From here on Drop stops the server if anything fails.
        let mut cluster = PgCluster {
            root,
            data_dir,
            socket_dir,
            port,
            bin_dir,
            pid: child.id(),
            child: Some(child),
            unix_only: options.unix_only,
            ready_over_socket: options.unix_only || options.hba.is_some(),
        };
        cluster.wait_ready()?;
        Ok(cluster)
    }

    /// TCP port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:<port>/<db>` (trust auth).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, db)
    }

    /// The libpq `key=value` target of database `db` over the Unix socket.
    pub fn socket_url(&self, db: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={db}",
            self.socket_dir.display(),
            self.port
        )
    }

    /// Where `initdb`/`postgres`/`psql` were found.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Directory holding the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// Process id of the postmaster.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Last few KB of the server log (for error messages).
    pub fn log_tail(&self) -> String {
        log_tail(&self.data_dir.join(LOG_FILE))
    }

    /// `CREATE DATABASE` with a unique name (`<prefix>_<pid>_<counter>`), returns its URL.
    /// Tests use one database each so they can share a cluster.
    pub async fn create_database(&self, prefix: &str) -> anyhow::Result<String> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let clean: String = prefix
            .chars()
            .take(40)
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        let name = format!("{clean}_{}_{n}", std::process::id());
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), NoTls)
            .await
            .with_context(|| format!("failed to connect to postgresql on port {}", self.port))?;
        let conn_task = tokio::spawn(async move {
            let _ = conn.await;
        });
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .with_context(|| format!("failed to create database {name}"))?;
        drop(client);
        let _ = conn_task.await;
        Ok(self.url(&name))
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let url = if self.ready_over_socket {
            self.socket_url("postgres")
        } else {
            self.url("postgres")
        };
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "postgres exited during startup ({status}); log tail:\n{}",
                        self.log_tail()
                    );
                }
            }
            if (self.unix_only || TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())
                && can_connect(&url)
            {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "postgres did not accept connections on port {} within {}s; log tail:\n{}",
                    self.port,
                    READY_TIMEOUT.as_secs(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
        // `root` (TempDir) is dropped after this, removing the data and socket folders.
    }
}

/// Sends SIGQUIT (immediate shutdown) and waits; SIGKILL after [`STOP_TIMEOUT`].
fn stop_child(child: &mut Child) {
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGQUIT);
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
        }
    }
}

static SHARED: OnceLock<PgCluster> = OnceLock::new();

/// One cluster per test process, started on first use. Panics with the start error (in tests
/// that is the wanted failure). The server is stopped and its folder removed at process exit.
pub fn shared_cluster() -> &'static PgCluster {
    SHARED.get_or_init(|| {
        let cluster = PgCluster::start()
            .unwrap_or_else(|e| panic!("failed to start the shared postgresql cluster: {e:#}"));
        // Statics are never dropped; clean up at exit instead. PDEATHSIG covers abnormal exits.
        unsafe {
            libc::atexit(cleanup_shared_at_exit);
        }
        cluster
    })
}

extern "C" fn cleanup_shared_at_exit() {
    let Some(cluster) = SHARED.get() else { return };
    let pid = cluster.pid as libc::pid_t;
    unsafe {
        libc::kill(pid, libc::SIGQUIT);
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        let mut status = 0;
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r != 0 {
            break; // Exited (r == pid) or not our child any more (r < 0).
        }
        if Instant::now() >= deadline {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = fs::remove_dir_all(cluster.root.path());
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `command` so that it is killed (SIGKILL) when the test process dies, from the
/// long-lived thread (see [`spawn_from_long_lived_thread`]).
pub fn spawn_dying_with_parent(mut command: Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    spawn_from_long_lived_thread(command)
}

/// Spawns `cmd` from a thread that never exits, so `PR_SET_PDEATHSIG` only fires when the
/// whole process dies (test threads are short-lived).
pub fn spawn_from_long_lived_thread(cmd: Command) -> io::Result<Child> {
    static SPAWNER: Mutex<Option<mpsc::Sender<SpawnRequest>>> = Mutex::new(None);
    let tx = {
        let mut guard = SPAWNER.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(tx) => tx.clone(),
            None => {
                let (tx, rx) = mpsc::channel::<SpawnRequest>();
                std::thread::Builder::new()
                    .name("ferry-pg-spawner".to_string())
                    .spawn(move || {
                        for (mut cmd, reply) in rx {
                            let _ = reply.send(cmd.spawn());
                        }
                        // Unreachable while the static sender lives; never let this thread end.
                        loop {
                            std::thread::park();
                        }
                    })?;
                *guard = Some(tx.clone());
                tx
            }
        }
    };
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.send((cmd, reply_tx))
        .map_err(|_| io::Error::other("postgres spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("postgres spawner thread dropped the request"))?
}

/// Tries a real protocol connection (the server refuses them while starting up). Runs on its
/// own thread with its own runtime so it works from inside async tests too.
pub(crate) fn can_connect(url: &str) -> bool {
    let url = url.to_string();
    let attempt = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return false;
        };
        rt.block_on(async {
            match tokio::time::timeout(Duration::from_secs(5), tokio_postgres::connect(&url, NoTls))
                .await
            {
                Ok(Ok((client, conn))) => {
                    let task = tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    let ok = client.simple_query("SELECT 1").await.is_ok();
                    drop(client);
                    let _ = task.await;
                    ok
                }
                _ => false,
            }
        })
    });
    attempt.join().unwrap_or(false)
}

/// Binds 127.0.0.1:0 and returns the port the kernel picked.
pub fn free_port() -> anyhow::Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("failed to find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// `$FERRY_PG_BIN`, else the highest `/usr/lib/postgresql/*/bin`, else `PATH`.
fn find_bin_dir() -> anyhow::Result<PathBuf> {
    let has_server = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("FERRY_PG_BIN") {
        let dir = PathBuf::from(dir);
        if has_server(&dir) {
            return Ok(dir);
        }
        bail!(
            "FERRY_PG_BIN={} does not contain both initdb and postgres",
            dir.display()
        );
    }
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        let mut found: Vec<(Vec<u64>, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let version: Vec<u64> = e
                    .file_name()
                    .to_str()?
                    .split('.')
                    .map(|p| p.parse().ok())
                    .collect::<Option<_>>()?;
                let bin = e.path().join("bin");
                has_server(&bin).then_some((version, bin))
            })
            .collect();
        found.sort();
        if let Some((_, bin)) = found.pop() {
            return Ok(bin);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(dir) = std::env::split_paths(&path).find(|d| has_server(d)) {
            return Ok(dir);
        }
    }
    bail!(
        "postgresql server binaries (initdb, postgres) not found: set FERRY_PG_BIN, install them \
         under /usr/lib/postgresql/<version>/bin, or put them on PATH"
    )
}

/// uid/gid of the `postgres` OS user.
fn postgres_user() -> anyhow::Result<(u32, u32)> {
    let name = CString::new("postgres")?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc)).context("getpwnam(\"postgres\") failed");
    }
    if result.is_null() {
        bail!("running as root but there is no `postgres` os user to run the server as (create one, or run as non-root)");
    }
    Ok((pwd.pw_uid, pwd.pw_gid))
}

fn chown(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    let c = CString::new(OsStr::as_bytes(path.as_os_str()))?;
    if unsafe { libc::chown(c.as_ptr(), uid, gid) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("failed to chown {}", path.display()));
    }
    Ok(())
}

fn log_tail(path: &Path) -> String {
    const TAIL: u64 = 4096;
    let read = || -> io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(TAIL)))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_else(|e| format!("(could not read {}: {e})", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shared_cluster_runs_queries() {
        let cluster = shared_cluster();
        let url = cluster
            .create_database("pg selftest")
            .await
            .expect("create database");
        assert!(url.starts_with(&format!(
            "postgres://postgres@127.0.0.1:{}/pg_selftest_",
            cluster.port()
        )));
        let (client, conn) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
        tokio::spawn(conn);
        let row = client.query_one("SELECT 1+1", &[]).await.expect("query");
        let v: i32 = row.get(0);
        assert_eq!(v, 2);
        let db: String = client
            .query_one("SELECT current_database()", &[])
            .await
            .expect("query")
            .get(0);
        assert!(url.ends_with(&format!("/{db}")));
        // A second database is distinct.
        let url2 = cluster
            .create_database("pg selftest")
            .await
            .expect("create database");
        assert_ne!(url, url2);
        assert!(cluster.bin_dir().join("psql").is_file());
    }

    #[test]
    fn own_cluster_stops_and_cleans_up_on_drop() {
        let cluster = PgCluster::start().expect("start cluster");
        let pid = cluster.pid() as libc::pid_t;
        let root = cluster.root.path().to_path_buf();
        assert!(cluster.data_dir().join("PG_VERSION").is_file());
        assert!(unsafe { libc::kill(pid, 0) } == 0);
        drop(cluster);
        assert!(
            unsafe { libc::kill(pid, 0) } != 0,
            "postmaster still running"
        );
        assert!(!root.exists(), "cluster folder not removed");
    }
}
