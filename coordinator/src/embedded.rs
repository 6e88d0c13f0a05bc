//! The embedded default: with no `--target`, `migrate` starts its own HeliosDB server (the
//! `heliosdb-nano` binary) on loopback with a local data folder, loads into it, and stops it
//! cleanly at the end. The data stays in the folder; the report says how to connect to it.
//!
//! - **Authentication:** SCRAM-SHA-256 with a password generated once per data folder and kept
//!   in `<data_dir>/ferry-password` (readable by its owner only, written atomically; an empty or
//!   unreadable one is replaced), never `trust`: any local user could otherwise read and change
//!   the data while it loads.
//! - **One owner:** the process that starts the server holds a lock on `<data_dir>/ferry.lock`;
//!   a second start on the same folder is refused naming the process that holds it (or the
//!   `heliosdb-nano` still serving the folder).
//! - **Stopping:** at the end, on SIGTERM or SIGINT (the caller's [`EmbeddedHelios::stop`]), and,
//!   should this process die without cleaning up, by the kernel: the server gets SIGTERM when its
//!   parent dies.

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
    password_file: PathBuf,
    /// Held (an exclusive `flock`) while this process owns the folder.
    _lock: std::fs::File,
}

/// The name of the data folder's lock file.
pub const LOCK_FILE: &str = "ferry.lock";

/// The name of the data folder's password file.
pub const PASSWORD_FILE: &str = "ferry-password";

fn io_error(location: &Path) -> impl FnOnce(std::io::Error) -> CoordinatorError + '_ {
    move |source| {
        CoordinatorError::Shared(ferry_shared::Error::Io {
            location: location.display().to_string(),
            source,
        })
    }
}

/// A process's command line, for messages.
fn command_line(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let words: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// A `heliosdb-nano` process serving `data_dir`, if one runs (a leftover of a Ferry that was
/// killed before it could stop it).
fn server_on(data_dir: &Path) -> Option<(u32, String)> {
    let wanted = data_dir.display().to_string();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(command) = command_line(pid) else {
            continue;
        };
        if command.contains("heliosdb-nano") && command.split(' ').any(|w| w == wanted) {
            return Some((pid, command));
        }
    }
    None
}

/// Takes the folder's lock, or says which process holds it.
fn lock_folder(data_dir: &Path) -> Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::io::AsRawFd;
    let path = data_dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error(&path))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let pid = holder.lines().next().unwrap_or("").trim().to_string();
        let command = pid
            .parse()
            .ok()
            .and_then(command_line)
            .unwrap_or_else(|| "a Ferry process".into());
        return Err(CoordinatorError::Invalid(format!(
            "the embedded HeliosDB's data folder {} is in use by process {pid} ({command}): \
             wait for it to finish or stop it, or use another target.data_dir",
            data_dir.display()
        )));
    }
    if let Some((pid, command)) = server_on(data_dir) {
        return Err(CoordinatorError::Invalid(format!(
            "the embedded HeliosDB's data folder {} is still served by process {pid} ({command}), \
             left running by an earlier Ferry: stop it (kill {pid}), then run again",
            data_dir.display()
        )));
    }
    let me = std::process::id();
    let note = format!(
        "{me}\n{}\n",
        command_line(me).unwrap_or_else(|| "ferry-coordinator".into())
    );
    file.set_len(0).map_err(io_error(&path))?;
    file.rewind().map_err(io_error(&path))?;
    file.write_all(note.as_bytes()).map_err(io_error(&path))?;
    Ok(file)
}

/// The folder's password file: made once with a random password, readable by its owner only.
/// It is written whole or not at all (a temporary file in the same folder, mode 0600, synced,
/// then renamed over the name), so a crash never leaves it empty; a file that is there but
/// empty, or cannot be read, is replaced by a new password instead of being handed to the
/// server.
fn password_file(data_dir: &Path) -> Result<PathBuf> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let path = data_dir.join(PASSWORD_FILE);
    // The name, whatever it is (a dangling link `exists()` denies is still there).
    if std::fs::symlink_metadata(&path).is_ok() {
        match std::fs::read(&path) {
            Ok(text) if !text.trim_ascii().is_empty() => {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io_error(&path))?;
                return Ok(path);
            }
            Ok(_) => {
                tracing::warn!(file = %path.display(), "the embedded server's password file is empty: writing a new password");
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "the embedded server's password file cannot be read: writing a new password");
            }
        }
    }
    let mut random = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .map_err(io_error(Path::new("/dev/urandom")))?;
    let password: String = random.iter().map(|b| format!("{b:02x}")).collect();
    write_atomically(&path, password.as_bytes())?;
    Ok(path)
}

/// Writes `path` whole or not at all: `contents` into a new file beside it (mode 0600), synced,
/// renamed over `path`, and the folder synced so the rename survives a crash.
fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    // A leftover of a crashed write by a process with the same id.
    let _ = std::fs::remove_file(&temporary);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.map_err(io_error(path))
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
        let lock = lock_folder(&data_dir)?;
        let password_file = password_file(&data_dir)?;
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
        let mut command = Command::new(&binary);
        command
            .args([
                "start",
                "--listen",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--auth",
                "scram-sha-256",
                "--http-port",
                "0",
            ])
            .arg("--password-file")
            .arg(&password_file)
            .arg("--data-dir")
            .arg(&data_dir)
            .env_remove("HELIOSDB_PASSWORD")
            .env_remove("HELIOSDB_PASSWORD_FILE")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe. The server gets SIGTERM when this process dies
        // without stopping it (SIGKILL, a crash).
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGTERM as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|e| {
            CoordinatorError::Invalid(format!("cannot start {}: {e}", binary.display()))
        })?;
        let mut server = EmbeddedHelios {
            child,
            port,
            data_dir,
            binary,
            password_file,
            _lock: lock,
        };
        // Every connection of this process to its server authenticates with the folder's
        // password.
        let options = ferry_worker::conn::ConnectOptions {
            password_file: Some(server.password_file.clone()),
            ..ferry_worker::conn::options()
        };
        ferry_worker::conn::configure(options.clone());
        tracing::info!(binary = %server.binary.display(), data_dir = %server.data_dir.display(), port, "starting embedded heliosdb");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((client, _)) = ferry_worker::conn::connect_with(
                &server.url(),
                ferry_worker::conn::Purpose::Control,
                &options,
            )
            .await
            {
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

    /// The data folder the server keeps its files (and Ferry its report) in.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's URL (without the password, which is in [`Self::password_file`]).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The file holding the server's password.
    pub fn password_file(&self) -> &Path {
        &self.password_file
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
            "The data is in {dir}. To query it, start HeliosDB and connect (the password is in {pw}):\n  {bin} start --data-dir {dir} --port 5433 --auth scram-sha-256 --password-file {pw} --http-port 0 &\n  PGPASSWORD=\"$(cat {pw})\" psql postgres://postgres@127.0.0.1:5433/postgres",
            dir = self.data_dir.display(),
            bin = self.binary.display(),
            pw = self.password_file.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != PASSWORD_FILE)
            .collect()
    }

    #[test]
    fn the_password_file_is_made_once_and_an_empty_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        // Made: 48 hex digits, owner-only, nothing else left in the folder.
        let path = password_file(dir.path()).unwrap();
        assert_eq!(path, dir.path().join(PASSWORD_FILE));
        let first = std::fs::read_to_string(&path).unwrap();
        assert_eq!(first.len(), 48);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()), "{first}");
        assert_eq!(mode_of(&path), 0o600);
        assert!(
            leftovers(dir.path()).is_empty(),
            "{:?}",
            leftovers(dir.path())
        );
        // Kept: the same password, its mode restored.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        password_file(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
        assert_eq!(mode_of(&path), 0o600);
        // Empty (a crash of an older Ferry between create and write), or only a newline:
        // replaced by a new password, never handed to the server.
        for empty in ["", "\n"] {
            std::fs::write(&path, empty).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            password_file(dir.path()).unwrap();
            let now = std::fs::read_to_string(&path).unwrap();
            assert_eq!(now.len(), 48, "{now:?}");
            assert_ne!(now, first);
            assert_eq!(mode_of(&path), 0o600);
            assert!(
                leftovers(dir.path()).is_empty(),
                "{:?}",
                leftovers(dir.path())
            );
        }
    }

    #[test]
    fn an_unreadable_password_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PASSWORD_FILE);
        // A name that cannot be read (tests may run as root, who reads any mode): a dangling
        // symbolic link.
        std::os::unix::fs::symlink(dir.path().join("gone"), &path).unwrap();
        assert!(std::fs::read(&path).is_err());
        password_file(dir.path()).unwrap();
        let now = std::fs::read_to_string(&path).unwrap();
        assert_eq!(now.len(), 48);
        assert!(!std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(mode_of(&path), 0o600);
    }
}
