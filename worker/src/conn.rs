//! Connecting to the target: every connection Ferry opens to it (tokio-postgres clients and the
//! simple-protocol COPY client) goes through here, so they share one policy.
//!
//! - **Where:** the target is a `postgres://` URL or a libpq `key=value` string. Its hosts are
//!   tried in order (TCP with `hostaddr` honoured, or a Unix socket folder); the COPY client of a
//!   loader reaches the server its ledger connection reached ([`LoaderScope`]).
//! - **TLS:** `sslmode`, `sslrootcert`, `sslcert` and `sslkey` from the URL, else from `[target]`
//!   ([`crate::tls`]). Unix sockets never use TLS, as with libpq. When neither sets `sslmode`, a
//!   host on this machine (loopback, `localhost`) gets `prefer` and any other host `require`
//!   ([`default_sslmode`]): plaintext to another machine is refused unless `prefer` or `disable`
//!   is chosen explicitly, which logs one warning per host.
//! - **Password:** the URL's, else `target.password_file`, else `PGPASSWORD`, else the password
//!   file (`PGPASSFILE`, default `~/.pgpass`, ignored unless only its owner can read it). A
//!   password is never logged, never put in an error, and never sent in cleartext over an
//!   unencrypted connection to a host that is not on this machine unless
//!   `target.allow_cleartext_password` is set: the guard reads the server's authentication
//!   request before the driver does and refuses a cleartext one.
//! - **Hung connections:** a connect timeout over the whole startup (default 10 s, or
//!   `connect_timeout` in the URL), TCP keepalive and `TCP_USER_TIMEOUT` on every TCP
//!   connection, a *progress timeout* on loading connections (an answer awaited with no byte
//!   moving either way for that long fails the connection), and `target.statement_timeout_secs`
//!   on the others (plan, finalize, status: their statements may legitimately run long).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::{Host, TargetSessionAttrs};
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage};

use crate::tls::{SslMode, TlsClient, TlsSettings};
use crate::{Result, WorkerError};

/// How connections are made, from `[target]` (the URL's own parameters win).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectOptions {
    /// `sslmode` when the URL has none.
    pub sslmode: Option<SslMode>,
    /// `sslrootcert` when the URL has none (a PEM file, or `system`).
    pub sslrootcert: Option<String>,
    /// `sslcert` when the URL has none.
    pub sslcert: Option<PathBuf>,
    /// `sslkey` when the URL has none.
    pub sslkey: Option<PathBuf>,
    /// A file holding the password (a mounted Secret), used when the URL has none.
    pub password_file: Option<PathBuf>,
    /// Send a password in cleartext over an unencrypted connection to another machine when the
    /// server asks for it.
    pub allow_cleartext_password: bool,
    /// Time to connect and authenticate, per host.
    pub connect_timeout: Duration,
    /// TCP keepalive idle time (then 3 probes 10 s apart); zero turns keepalive off.
    pub keepalive: Duration,
    /// `statement_timeout` of the connections that are not loading; `None`: the server's.
    pub statement_timeout: Option<Duration>,
    /// The loaders' progress timeout (`load.progress_timeout_secs`), for pools that do not set
    /// their own.
    pub progress_timeout: Option<Duration>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            sslmode: None,
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
            password_file: None,
            allow_cleartext_password: false,
            connect_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(30),
            statement_timeout: None,
            progress_timeout: Some(Duration::from_secs(300)),
        }
    }
}

impl ConnectOptions {
    /// The options the configuration asks for (`[target]`, and `load.progress_timeout_secs`).
    pub fn from_settings(settings: &ferry_shared::config::Settings) -> Result<ConnectOptions> {
        let target = &settings.target;
        Ok(ConnectOptions {
            progress_timeout: settings.load.progress_timeout,
            sslmode: target.sslmode.as_deref().map(SslMode::parse).transpose()?,
            sslrootcert: target.sslrootcert.clone(),
            sslcert: target.sslcert.clone(),
            sslkey: target.sslkey.clone(),
            password_file: target.password_file.clone(),
            allow_cleartext_password: target.allow_cleartext_password,
            connect_timeout: target.connect_timeout,
            keepalive: target.keepalive,
            statement_timeout: target.statement_timeout,
        })
    }
}

fn defaults() -> &'static RwLock<ConnectOptions> {
    static DEFAULTS: OnceLock<RwLock<ConnectOptions>> = OnceLock::new();
    DEFAULTS.get_or_init(|| RwLock::new(ConnectOptions::default()))
}

/// Sets the options every later connection of this process uses (the binaries call it once,
/// after reading their configuration).
pub fn configure(options: ConnectOptions) {
    *defaults().write().unwrap_or_else(|p| p.into_inner()) = options;
}

/// The options in force.
pub fn options() -> ConnectOptions {
    defaults().read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// One server address of a target.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// TCP: the host name (checked by `verify-full`), the address to use instead of looking the
    /// name up (`hostaddr`), and the port.
    Tcp {
        /// Host name or address.
        host: String,
        /// `hostaddr`, when given.
        addr: Option<IpAddr>,
        /// Port.
        port: u16,
    },
    /// A Unix socket: its folder and port (`<dir>/.s.PGSQL.<port>`).
    Unix {
        /// The socket's folder.
        dir: PathBuf,
        /// Port.
        port: u16,
    },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp {
                host,
                addr: Some(addr),
                port,
            } => write!(f, "{host} ({addr}):{port}"),
            Endpoint::Tcp { host, port, .. } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Endpoint::Tcp { host, port, .. } => write!(f, "{host}:{port}"),
            Endpoint::Unix { dir, port } => {
                write!(
                    f,
                    "unix socket {}",
                    dir.join(format!(".s.PGSQL.{port}")).display()
                )
            }
        }
    }
}

/// A parsed target: what tokio-postgres understands, and what Ferry handles itself.
#[derive(Clone)]
pub struct TargetSpec {
    /// The driver's settings (without the TLS parameters and the password).
    pub config: Config,
    /// The TLS settings. Without an explicit `sslmode`, `mode` is the strictest default of the
    /// hosts (`require` when one of them is on another machine); [`TargetSpec::mode_for`] gives
    /// each host its own.
    pub tls: TlsSettings,
    /// The hosts, in the order they are tried.
    pub endpoints: Vec<Endpoint>,
    /// Whether the URL or the config chose `sslmode`.
    sslmode_set: bool,
    /// The password the URL holds, if any.
    url_password: Option<Vec<u8>>,
}

impl std::fmt::Debug for TargetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The driver's `Config` prints its password redacted; the URL's is never printed.
        f.debug_struct("TargetSpec")
            .field("config", &self.config)
            .field("tls", &self.tls)
            .field("endpoints", &self.endpoints)
            .field("sslmode_set", &self.sslmode_set)
            .field(
                "url_password",
                &self
                    .url_password
                    .as_ref()
                    .map(|_| ferry_shared::redact::MASK),
            )
            .finish()
    }
}

/// Whether `host` (a libpq host: a name, an address, or a Unix socket folder) is on this
/// machine: a loopback address (127.0.0.0/8, `::1`), `localhost`, or a Unix socket (a folder
/// starting with `/`, or an `@` abstract socket).
pub fn is_local_host(host: &str) -> bool {
    if host.starts_with('/') || host.starts_with('@') {
        return true;
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.eq_ignore_ascii_case("localhost") || bare.eq_ignore_ascii_case("localhost.") {
        return true;
    }
    bare.parse::<IpAddr>()
        .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// The `sslmode` of a connection to `host` when neither the URL nor `[target]` sets one: `prefer`
/// on this machine ([`is_local_host`]), where no one can listen between Ferry and the server,
/// and `require` (encrypted, plaintext refused) anywhere else.
pub fn default_sslmode(host: &str) -> SslMode {
    if is_local_host(host) {
        SslMode::Prefer
    } else {
        SslMode::Require
    }
}

/// Whether `endpoint` is on this machine: a Unix socket, or TCP to a loopback `hostaddr` (or,
/// without one, a local host name or address).
fn endpoint_is_local(endpoint: &Endpoint) -> bool {
    match endpoint {
        Endpoint::Unix { .. } => true,
        Endpoint::Tcp {
            addr: Some(addr), ..
        } => addr.to_canonical().is_loopback(),
        Endpoint::Tcp { host, .. } => is_local_host(host),
    }
}

/// Logs, once per host and mode in this process, that `mode` was chosen for a host on another
/// machine although it lets the connection run unencrypted.
fn warn_unencrypted(host: &str, mode: SslMode) {
    static WARNED: OnceLock<Mutex<std::collections::HashSet<(String, &'static str)>>> =
        OnceLock::new();
    let first = WARNED
        .get_or_init(|| Mutex::new(std::collections::HashSet::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((host.to_string(), mode.as_str()));
    if first {
        tracing::warn!(
            host = %host,
            sslmode = mode.as_str(),
            "the target connection to another machine may run unencrypted: anyone on the path can \
             read every row and turn encryption off; use sslmode=verify-full with sslrootcert"
        );
    }
}

/// The parameters Ferry takes out of a target before the driver parses it.
const OWN_PARAMETERS: &[&str] = &["sslmode", "sslrootcert", "sslcert", "sslkey"];

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a libpq `key=value` string into pairs (values may be single-quoted, with `\` escapes).
fn key_values(text: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(WorkerError::TargetConfig(format!(
                "the target's parameter {key:?} has no value (expected key=value)"
            )));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => {
                        return Err(WorkerError::TargetConfig(format!(
                            "the target's parameter {key:?} has an unterminated quoted value"
                        )))
                    }
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

fn quote_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl TargetSpec {
    /// Parses `url` (a `postgres://` URL or a libpq `key=value` string) with `options` filling in
    /// what it does not say. Errors never quote the URL (it may hold a password).
    pub fn parse(url: &str, options: &ConnectOptions) -> Result<TargetSpec> {
        let mut own: HashMap<String, String> = HashMap::new();
        let driver_text = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            match url.split_once('?') {
                None => url.to_string(),
                Some((base, query)) => {
                    let mut kept = Vec::new();
                    for segment in query.split('&').filter(|s| !s.is_empty()) {
                        let (key, value) = segment.split_once('=').unwrap_or((segment, ""));
                        let key = percent_decode(key);
                        if OWN_PARAMETERS.contains(&key.as_str()) {
                            own.insert(key, percent_decode(value));
                        } else {
                            kept.push(segment);
                        }
                    }
                    if kept.is_empty() {
                        base.to_string()
                    } else {
                        format!("{base}?{}", kept.join("&"))
                    }
                }
            }
        } else {
            let mut kept = Vec::new();
            for (key, value) in key_values(url)? {
                if OWN_PARAMETERS.contains(&key.as_str()) {
                    own.insert(key, value);
                } else {
                    kept.push(format!("{key}={}", quote_value(&value)));
                }
            }
            kept.join(" ")
        };
        let mut config: Config = driver_text.parse().map_err(|e: tokio_postgres::Error| {
            // The driver's parse errors name the option, never its value.
            WorkerError::TargetConfig(format!("the target URL is not usable: {e}"))
        })?;
        let url_password = config.get_password().map(<[u8]>::to_vec);
        config.password(Vec::<u8>::new());
        if config.get_application_name().is_none() {
            config.application_name("ferry");
        }
        let endpoints = endpoints_of(&config)?;
        let chosen = match own.get("sslmode") {
            Some(value) => Some(SslMode::parse(value)?),
            None => options.sslmode,
        };
        let mode = match chosen {
            Some(mode) => {
                if !mode.requires_tls() {
                    for endpoint in endpoints.iter().filter(|e| !endpoint_is_local(e)) {
                        if let Endpoint::Tcp { host, .. } = endpoint {
                            warn_unencrypted(host, mode);
                        }
                    }
                }
                mode
            }
            None if endpoints.iter().all(endpoint_is_local) => SslMode::Prefer,
            None => SslMode::Require,
        };
        let tls = TlsSettings {
            mode,
            root_cert: own
                .remove("sslrootcert")
                .or_else(|| options.sslrootcert.clone()),
            client_cert: own
                .remove("sslcert")
                .map(PathBuf::from)
                .or_else(|| options.sslcert.clone()),
            client_key: own
                .remove("sslkey")
                .map(PathBuf::from)
                .or_else(|| options.sslkey.clone()),
        };
        Ok(TargetSpec {
            config,
            tls,
            endpoints,
            sslmode_set: chosen.is_some(),
            url_password,
        })
    }

    /// The `sslmode` of a connection to `endpoint`: the one chosen, else [`default_sslmode`]'s
    /// for that host.
    pub fn mode_for(&self, endpoint: &Endpoint) -> SslMode {
        if self.sslmode_set || !endpoint_is_local(endpoint) {
            self.tls.mode
        } else {
            SslMode::Prefer
        }
    }

    /// The user connecting.
    pub fn user(&self) -> Result<&str> {
        self.config.get_user().ok_or_else(|| {
            WorkerError::TargetConfig(
                "the target URL names no user (postgres://USER@host/db)".into(),
            )
        })
    }

    /// The database (the user's name when not given, as PostgreSQL does).
    pub fn database(&self) -> Result<&str> {
        match self.config.get_dbname() {
            Some(db) => Ok(db),
            None => self.user(),
        }
    }
}

fn endpoints_of(config: &Config) -> Result<Vec<Endpoint>> {
    let hosts = config.get_hosts();
    let addrs = config.get_hostaddrs();
    let ports = config.get_ports();
    let count = hosts.len().max(addrs.len());
    if count == 0 {
        return Err(WorkerError::TargetConfig(
            "the target URL names no host (postgres://user@HOST:port/db)".into(),
        ));
    }
    if ports.len() > 1 && ports.len() != count {
        return Err(WorkerError::TargetConfig(format!(
            "the target URL has {count} hosts and {} ports",
            ports.len()
        )));
    }
    let port_of = |i: usize| match ports.len() {
        0 => 5432,
        1 => ports[0],
        _ => ports[i],
    };
    (0..count)
        .map(|i| {
            let port = port_of(i);
            let addr = addrs.get(i).copied();
            Ok(match hosts.get(i) {
                Some(Host::Tcp(host)) => Endpoint::Tcp {
                    host: host.clone(),
                    addr,
                    port,
                },
                Some(Host::Unix(dir)) => Endpoint::Unix {
                    dir: dir.clone(),
                    port,
                },
                None => Endpoint::Tcp {
                    host: addr.map(|a| a.to_string()).unwrap_or_default(),
                    addr,
                    port,
                },
            })
        })
        .collect()
}

/// Looks the password up in a libpq password file (`host:port:db:user:password`, `*` matches
/// anything, `\` escapes `:` and `\`). A Unix socket matches `localhost` or its folder.
pub fn pgpass_lookup(
    text: &str,
    endpoint: &Endpoint,
    database: &str,
    user: &str,
) -> Option<String> {
    let (hosts, port): (Vec<String>, u16) = match endpoint {
        Endpoint::Tcp { host, port, .. } => (vec![host.clone()], *port),
        Endpoint::Unix { dir, port } => (
            vec!["localhost".to_string(), dir.display().to_string()],
            *port,
        ),
    };
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::with_capacity(5);
        let mut field = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => field.extend(chars.next()),
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
                c => field.push(c),
            }
        }
        fields.push(field);
        if fields.len() != 5 {
            continue;
        }
        let matches = |pattern: &str, value: &str| pattern == "*" || pattern == value;
        if hosts.iter().any(|h| matches(&fields[0], h))
            && matches(&fields[1], &port.to_string())
            && matches(&fields[2], database)
            && matches(&fields[3], user)
        {
            return Some(fields.swap_remove(4));
        }
    }
    None
}

fn read_password_file(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = std::fs::read(path).map_err(|e| {
        WorkerError::TargetConfig(format!(
            "cannot read target.password_file {}: {e}",
            path.display()
        ))
    })?;
    while matches!(bytes.last(), Some(b'\n' | b'\r')) {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(WorkerError::TargetConfig(format!(
            "target.password_file {} is empty",
            path.display()
        )));
    }
    Ok(bytes)
}

/// The password for `endpoint`: the URL's, `password_file`, `PGPASSWORD`, then the password file.
fn password_for(
    spec: &TargetSpec,
    options: &ConnectOptions,
    endpoint: &Endpoint,
) -> Result<Option<Vec<u8>>> {
    if let Some(password) = &spec.url_password {
        return Ok(Some(password.clone()));
    }
    if let Some(path) = &options.password_file {
        return read_password_file(path).map(Some);
    }
    if let Some(password) = std::env::var_os("PGPASSWORD").filter(|p| !p.is_empty()) {
        use std::os::unix::ffi::OsStrExt;
        return Ok(Some(password.as_bytes().to_vec()));
    }
    let passfile = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pgpass")));
    let Some(passfile) = passfile else {
        return Ok(None);
    };
    let Ok(metadata) = std::fs::metadata(&passfile) else {
        return Ok(None);
    };
    use std::os::unix::fs::PermissionsExt;
    if metadata.permissions().mode() & 0o077 != 0 {
        tracing::warn!(file = %passfile.display(), "password file ignored: it is readable by others (chmod 0600 it)");
        return Ok(None);
    }
    let text = std::fs::read_to_string(&passfile).unwrap_or_default();
    Ok(pgpass_lookup(&text, endpoint, spec.database()?, spec.user()?).map(String::into_bytes))
}

/// What a connection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Plan, finalize, status: statements under `target.statement_timeout_secs`.
    Control,
    /// Loading shards: under the loader's progress timeout.
    Loading,
}

/// Byte movement on a loader's connections, watched by its heartbeat.
#[derive(Debug, Default)]
pub struct Activity {
    /// Milliseconds since [`clock_base`] of the last byte read or written.
    last_progress_ms: AtomicU64,
    /// Connections that sent something and await an answer.
    waiting: AtomicI64,
    /// Connections given up for lack of progress.
    timeouts: AtomicU64,
}

fn clock_base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    clock_base().elapsed().as_millis() as u64
}

impl Activity {
    /// A clock that starts now.
    pub fn new() -> Activity {
        let activity = Activity::default();
        activity.touch();
        activity
    }

    fn touch(&self) {
        self.last_progress_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Marks a connection as awaiting an answer from now on (for tests of what watches it).
    #[cfg(test)]
    pub(crate) fn start_waiting_for_test(&self) {
        self.touch();
        self.waiting.fetch_add(1, Ordering::Relaxed);
    }

    /// How many of the loader's connections were given up for lack of progress so far.
    pub fn timeouts(&self) -> u64 {
        self.timeouts.load(Ordering::Relaxed)
    }

    /// How long a connection has awaited an answer with nothing moving; `None` when none waits.
    pub fn stalled_for(&self) -> Option<Duration> {
        (self.waiting.load(Ordering::Relaxed) > 0).then(|| {
            Duration::from_millis(
                now_ms().saturating_sub(self.last_progress_ms.load(Ordering::Relaxed)),
            )
        })
    }
}

/// What a loader's connections share: its activity clock, its progress timeout, and the server
/// its first connection reached (so its COPY connection reaches the same one).
#[derive(Debug)]
pub struct LoaderScope {
    /// The activity clock.
    pub activity: Arc<Activity>,
    /// Fail a connection that awaits an answer with no byte moving for this long.
    pub progress_timeout: Option<Duration>,
    endpoint: Mutex<Option<(String, Endpoint)>>,
}

impl LoaderScope {
    /// A scope with `progress_timeout`.
    pub fn new(progress_timeout: Option<Duration>) -> Arc<LoaderScope> {
        Arc::new(LoaderScope {
            activity: Arc::new(Activity::new()),
            progress_timeout,
            endpoint: Mutex::new(None),
        })
    }

    /// Runs `future` with this scope: the connections it opens report to it.
    pub async fn run<F: std::future::Future>(self: &Arc<Self>, future: F) -> F::Output {
        LOADER.scope(self.clone(), future).await
    }
}

tokio::task_local! {
    static LOADER: Arc<LoaderScope>;
}

fn current_scope() -> Option<Arc<LoaderScope>> {
    LOADER.try_with(Arc::clone).ok()
}

/// The server each target URL's last connection reached in this process (outside a loader
/// scope), so a COPY connection opened later reaches it too.
fn reached() -> &'static Mutex<HashMap<String, Endpoint>> {
    static REACHED: OnceLock<Mutex<HashMap<String, Endpoint>>> = OnceLock::new();
    REACHED.get_or_init(|| Mutex::new(HashMap::new()))
}

fn remember(url: &str, endpoint: &Endpoint) {
    if let Some(scope) = current_scope() {
        *scope.endpoint.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((url.to_string(), endpoint.clone()));
    }
    reached()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(url.to_string(), endpoint.clone());
}

/// The server an earlier connection to `url` reached: this loader's, else this process's.
fn reached_before(url: &str) -> Option<Endpoint> {
    if let Some(scope) = current_scope() {
        if let Some((scoped_url, endpoint)) = scope
            .endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            if scoped_url == url {
                return Some(endpoint.clone());
            }
        }
    }
    reached()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(url)
        .cloned()
}

/// A socket to one endpoint.
pub enum Socket {
    /// TCP.
    Tcp(tokio::net::TcpStream),
    /// Unix.
    Unix(tokio::net::UnixStream),
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_flush(cx),
            Socket::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

fn tune_tcp(stream: &tokio::net::TcpStream, keepalive: Duration) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    if keepalive.is_zero() {
        return Ok(());
    }
    let socket = socket2::SockRef::from(stream);
    let interval = Duration::from_secs(10);
    let retries = 3;
    socket.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(keepalive)
            .with_interval(interval)
            .with_retries(retries),
    )?;
    // Data sent and not acknowledged for as long as keepalive would take to give up: the peer
    // is gone.
    socket.set_tcp_user_timeout(Some(keepalive + interval * retries))
}

/// Opens a socket to `endpoint`; `true` when the peer is on this machine (loopback or a Unix
/// socket).
async fn open_socket(endpoint: &Endpoint, options: &ConnectOptions) -> Result<(Socket, bool)> {
    let failed = |e: std::io::Error| WorkerError::Connect {
        endpoint: endpoint.to_string(),
        reason: e.to_string(),
    };
    match endpoint {
        Endpoint::Unix { dir, port } => {
            let path = dir.join(format!(".s.PGSQL.{port}"));
            let stream = tokio::net::UnixStream::connect(&path)
                .await
                .map_err(failed)?;
            Ok((Socket::Unix(stream), true))
        }
        Endpoint::Tcp { host, addr, port } => {
            let addrs: Vec<std::net::SocketAddr> = match addr {
                Some(addr) => vec![(*addr, *port).into()],
                None => tokio::net::lookup_host((host.as_str(), *port))
                    .await
                    .map_err(failed)?
                    .collect(),
            };
            let mut last = None;
            for addr in addrs {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(stream) => {
                        tune_tcp(&stream, options.keepalive).map_err(failed)?;
                        return Ok((Socket::Tcp(stream), addr.ip().is_loopback()));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(failed(last.unwrap_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "the host name has no address")
            })))
        }
    }
}

/// The SSLRequest message.
pub const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 4, 210, 22, 47];

/// Reads the server's messages up to authentication and refuses a cleartext password request
/// on an unencrypted connection to another machine.
#[derive(Debug)]
struct AuthGuard {
    state: GuardState,
    header: Vec<u8>,
    body_left: usize,
    endpoint: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GuardState {
    /// Nothing sent yet.
    Start,
    /// SSLRequest sent: the next byte read is the answer.
    SslAnswer,
    /// Plain messages: watch for an authentication request.
    Messages,
    /// Encrypted, authenticated, or exempt: nothing to watch.
    Off,
}

impl AuthGuard {
    fn new(armed: bool, endpoint: &Endpoint) -> AuthGuard {
        AuthGuard {
            state: if armed {
                GuardState::Start
            } else {
                GuardState::Off
            },
            header: Vec::with_capacity(9),
            body_left: 0,
            endpoint: endpoint.to_string(),
        }
    }

    fn wrote(&mut self, data: &[u8]) {
        if self.state == GuardState::Start && !data.is_empty() {
            self.state = if data.starts_with(&SSL_REQUEST) {
                GuardState::SslAnswer
            } else {
                GuardState::Messages
            };
        }
    }

    fn read(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        if self.state == GuardState::SslAnswer {
            let Some((&answer, rest)) = data.split_first() else {
                return Ok(());
            };
            if answer == b'S' {
                self.state = GuardState::Off;
                return Ok(());
            }
            self.state = GuardState::Messages;
            data = rest;
        }
        while self.state == GuardState::Messages && !data.is_empty() {
            if self.body_left > 0 {
                let skip = self.body_left.min(data.len());
                self.body_left -= skip;
                data = &data[skip..];
                continue;
            }
            // The type byte and the length; for 'R' also the authentication code.
            let need = if self.header.first() == Some(&b'R') {
                9
            } else {
                5
            };
            let take = (need - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.header.len() < need || (self.header[0] == b'R' && self.header.len() < 9) {
                continue;
            }
            let length = u32::from_be_bytes([
                self.header[1],
                self.header[2],
                self.header[3],
                self.header[4],
            ]) as usize;
            if self.header[0] == b'R' {
                let code = u32::from_be_bytes([
                    self.header[5],
                    self.header[6],
                    self.header[7],
                    self.header[8],
                ]);
                match code {
                    3 => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::PermissionDenied,
                            format!(
                                "the server at {} asks for the password in cleartext over an \
                                 unencrypted connection: Ferry does not send it. Connect with TLS \
                                 (sslmode=require, or verify-full), have the server use \
                                 scram-sha-256, or set target.allow_cleartext_password = true",
                                self.endpoint
                            ),
                        ))
                    }
                    0 => {
                        self.state = GuardState::Off;
                        return Ok(());
                    }
                    _ => self.body_left = length.saturating_sub(8),
                }
            } else {
                self.body_left = length.saturating_sub(4);
            }
            self.header.clear();
        }
        Ok(())
    }
}

/// The progress watch of a loading connection.
struct Progress {
    timeout: Duration,
    activity: Arc<Activity>,
    last_read: Instant,
    last_write: Instant,
    waiting: bool,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Progress {
    fn new(timeout: Duration, activity: Arc<Activity>) -> Progress {
        let now = Instant::now();
        Progress {
            timeout,
            activity,
            last_read: now,
            last_write: now,
            waiting: false,
            timer: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn set_waiting(&mut self, waiting: bool) {
        if waiting != self.waiting {
            self.waiting = waiting;
            self.activity
                .waiting
                .fetch_add(if waiting { 1 } else { -1 }, Ordering::Relaxed);
        }
    }

    fn read(&mut self) {
        self.last_read = Instant::now();
        self.activity.touch();
        self.set_waiting(false);
    }

    fn wrote(&mut self) {
        self.last_write = Instant::now();
        self.activity.touch();
        self.set_waiting(true);
    }

    /// Called when the socket is not ready: an error once the connection awaited an answer
    /// with nothing moving for the timeout.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        if !self.waiting {
            return Poll::Pending;
        }
        let deadline = self.last_read.max(self.last_write) + self.timeout;
        self.timer
            .as_mut()
            .reset(tokio::time::Instant::from_std(deadline));
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready({
                self.activity.timeouts.fetch_add(1, Ordering::Relaxed);
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                    "no progress on the target connection for {} s (load.progress_timeout_secs): \
                     the server or the network stopped answering",
                    self.timeout.as_secs()
                ),
                )
            }),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.set_waiting(false);
    }
}

/// A socket under Ferry's guard: the cleartext-password check and, on loading connections, the
/// progress timeout.
pub struct Guarded<S> {
    inner: S,
    guard: AuthGuard,
    progress: Option<Progress>,
}

impl<S> Guarded<S> {
    fn new(inner: S, guard: AuthGuard, progress: Option<Progress>) -> Guarded<S> {
        Guarded {
            inner,
            guard,
            progress,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let fresh = &buf.filled()[before..];
                if !fresh.is_empty() {
                    this.guard.read(fresh)?;
                    if let Some(progress) = this.progress.as_mut() {
                        progress.read();
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.progress.as_mut().map(|p| p.check(cx)) {
                Some(Poll::Ready(e)) => Poll::Ready(Err(e)),
                _ => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                this.guard.wrote(&data[..n]);
                if n > 0 {
                    if let Some(progress) = this.progress.as_mut() {
                        progress.wrote();
                    }
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.progress.as_mut().map(|p| {
                // Writing blocks: the connection waits on the other side.
                p.set_waiting(true);
                p.check(cx)
            }) {
                Some(Poll::Ready(e)) => Poll::Ready(Err(e)),
                _ => Poll::Pending,
            },
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => match this.progress.as_mut().map(|p| p.check(cx)) {
                Some(Poll::Ready(e)) => Poll::Ready(Err(e)),
                _ => Poll::Pending,
            },
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A guarded socket, before or after TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// A raw session to the target for the simple-protocol client: the stream (TLS already
/// negotiated), and who to authenticate as.
pub struct RawSession {
    /// The stream.
    pub stream: Box<dyn Io>,
    /// The server reached.
    pub endpoint: Endpoint,
    /// The user.
    pub user: String,
    /// The database.
    pub database: String,
    /// The password, if one is known.
    pub password: Option<Vec<u8>>,
}

fn guarded(
    socket: Socket,
    local: bool,
    endpoint: &Endpoint,
    options: &ConnectOptions,
    purpose: Purpose,
) -> Guarded<Socket> {
    let guard = AuthGuard::new(!local && !options.allow_cleartext_password, endpoint);
    let progress = match (purpose, current_scope()) {
        (Purpose::Loading, Some(scope)) => scope
            .progress_timeout
            .map(|timeout| Progress::new(timeout, scope.activity.clone())),
        _ => None,
    };
    Guarded::new(socket, guard, progress)
}

fn tls_client(spec: &TargetSpec) -> Result<Option<TlsClient>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<TlsClient>>>> = OnceLock::new();
    let key = format!("{:?}", spec.tls);
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(client) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(client.clone());
    }
    let client = TlsClient::new(&spec.tls)?;
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, client.clone());
    Ok(client)
}

fn connect_timeout(spec: &TargetSpec, options: &ConnectOptions) -> Duration {
    spec.config
        .get_connect_timeout()
        .copied()
        .unwrap_or(options.connect_timeout)
}

/// Orders the endpoints so the one reached before comes first.
fn ordered(spec: &TargetSpec, preferred: Option<Endpoint>) -> Vec<Endpoint> {
    let mut endpoints = spec.endpoints.clone();
    if let Some(preferred) = preferred {
        if let Some(at) = endpoints.iter().position(|e| *e == preferred) {
            let first = endpoints.remove(at);
            endpoints.insert(0, first);
        }
    }
    endpoints
}

fn no_endpoint_error(errors: Vec<WorkerError>) -> WorkerError {
    match errors.len() {
        1 => errors.into_iter().next().expect("one error"),
        _ => WorkerError::Connect {
            endpoint: "every host of the target".into(),
            reason: errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        },
    }
}

/// Connects a tokio-postgres client for `purpose`, trying the target's hosts in order; returns
/// it with the server it reached.
pub async fn connect(url: &str, purpose: Purpose) -> Result<(Client, Endpoint)> {
    connect_with(url, purpose, &options()).await
}

/// Connects to the target for plan, finalize, status and the like (statements under the statement
/// timeout), the connection driven on a background task.
pub async fn control(url: &str) -> Result<Client> {
    Ok(connect(url, Purpose::Control).await?.0)
}

/// Connects a loader to the target: as [`control`], under the loader's progress timeout instead
/// of the statement timeout.
pub async fn loading(url: &str) -> Result<Client> {
    Ok(connect(url, Purpose::Loading).await?.0)
}

/// [`connect`] with explicit options.
pub async fn connect_with(
    url: &str,
    purpose: Purpose,
    options: &ConnectOptions,
) -> Result<(Client, Endpoint)> {
    let spec = TargetSpec::parse(url, options)?;
    let tls = tls_client(&spec)?;
    let timeout = connect_timeout(&spec, options);
    let mut errors = Vec::new();
    for endpoint in ordered(&spec, None) {
        let attempt = connect_endpoint(&spec, &endpoint, tls.as_ref(), options, purpose);
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(WorkerError::Connect {
                endpoint: endpoint.to_string(),
                reason: format!(
                    "no answer within {} s (connect_timeout)",
                    timeout.as_secs_f64()
                ),
            }),
        };
        match result {
            Ok(client) => {
                remember(url, &endpoint);
                if purpose == Purpose::Control {
                    if let Some(limit) = options.statement_timeout {
                        // A number Ferry formats from its own validated setting: SET takes no
                        // parameters.
                        let statement = format!("SET statement_timeout = {}", limit.as_millis());
                        client
                            .batch_execute(&statement)
                            .await
                            .map_err(WorkerError::db("cannot set statement_timeout"))?;
                    }
                }
                return Ok((client, endpoint));
            }
            Err(e) => {
                tracing::debug!(endpoint = %endpoint, error = %e, "target host not usable");
                errors.push(e);
            }
        }
    }
    Err(no_endpoint_error(errors))
}

fn driver_error(endpoint: &Endpoint) -> impl Fn(tokio_postgres::Error) -> WorkerError + '_ {
    move |e| WorkerError::Connect {
        endpoint: endpoint.to_string(),
        reason: crate::error::chain_text(&e),
    }
}

async fn connect_endpoint(
    spec: &TargetSpec,
    endpoint: &Endpoint,
    tls: Option<&TlsClient>,
    options: &ConnectOptions,
    purpose: Purpose,
) -> Result<Client> {
    let (socket, local) = open_socket(endpoint, options).await?;
    let stream = guarded(socket, local, endpoint, options, purpose);
    let mut config = spec.config.clone();
    if let Some(password) = password_for(spec, options, endpoint)? {
        config.password(password);
    }
    let tls = match endpoint {
        Endpoint::Unix { .. } => None,
        Endpoint::Tcp { .. } => tls,
    };
    let spawn = |name: String,
                 connection: Pin<
        Box<
            dyn std::future::Future<Output = std::result::Result<(), tokio_postgres::Error>> + Send,
        >,
    >| {
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(endpoint = %name, error = %crate::error::chain_text(&e), "target connection closed");
            }
        });
    };
    let client = match (tls, endpoint) {
        (Some(tls), Endpoint::Tcp { host, .. }) => {
            config.ssl_mode(if spec.mode_for(endpoint) == SslMode::Prefer {
                tokio_postgres::config::SslMode::Prefer
            } else {
                tokio_postgres::config::SslMode::Require
            });
            let (client, connection) = config
                .connect_raw(stream, tls.connector(host))
                .await
                .map_err(driver_error(endpoint))?;
            spawn(endpoint.to_string(), Box::pin(connection));
            client
        }
        _ => {
            let mode = spec.mode_for(endpoint);
            if mode.requires_tls() && matches!(endpoint, Endpoint::Tcp { .. }) {
                return Err(WorkerError::TargetConfig(format!(
                    "sslmode={} needs TLS",
                    mode.as_str()
                )));
            }
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, connection) = config
                .connect_raw(stream, NoTls)
                .await
                .map_err(driver_error(endpoint))?;
            spawn(endpoint.to_string(), Box::pin(connection));
            client
        }
    };
    if spec.config.get_target_session_attrs() == TargetSessionAttrs::ReadWrite {
        let rows = client
            .simple_query("SHOW transaction_read_only")
            .await
            .map_err(driver_error(endpoint))?;
        let read_only = rows
            .iter()
            .any(|m| matches!(m, SimpleQueryMessage::Row(row) if row.get(0) == Some("on")));
        if read_only {
            return Err(WorkerError::Connect {
                endpoint: endpoint.to_string(),
                reason: "the server is read-only (target_session_attrs=read-write)".into(),
            });
        }
    }
    Ok(client)
}

/// Opens a raw session for the simple-protocol COPY client: the same hosts, TLS, password and
/// guard as [`connect`], the server an earlier connection to `url` reached tried first, and the
/// TLS negotiated; authentication is the caller's.
pub async fn open_session(url: &str) -> Result<RawSession> {
    let options = options();
    let spec = TargetSpec::parse(url, &options)?;
    let tls = tls_client(&spec)?;
    let timeout = connect_timeout(&spec, &options);
    let user = spec.user()?.to_string();
    let database = spec.database()?.to_string();
    let mut errors = Vec::new();
    for endpoint in ordered(&spec, reached_before(url)) {
        let attempt = async {
            let (socket, local) = open_socket(&endpoint, &options).await?;
            let mut stream = guarded(socket, local, &endpoint, &options, Purpose::Loading);
            let password = password_for(&spec, &options, &endpoint)?;
            let stream: Box<dyn Io> = match (tls.as_ref(), &endpoint) {
                (Some(tls), Endpoint::Tcp { host, .. }) => {
                    if negotiate_tls(&mut stream, &endpoint).await? {
                        Box::new(tls.handshake(host, stream).await.map_err(|e| {
                            WorkerError::Connect {
                                endpoint: endpoint.to_string(),
                                reason: e.to_string(),
                            }
                        })?)
                    } else if spec.mode_for(&endpoint).requires_tls() {
                        return Err(WorkerError::Connect {
                            endpoint: endpoint.to_string(),
                            reason: format!(
                                "the server does not offer TLS and sslmode={}",
                                spec.mode_for(&endpoint).as_str()
                            ),
                        });
                    } else {
                        Box::new(stream)
                    }
                }
                _ => Box::new(stream),
            };
            Ok::<_, WorkerError>((stream, password))
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok((stream, password))) => {
                return Ok(RawSession {
                    stream,
                    endpoint,
                    user,
                    database,
                    password,
                })
            }
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push(WorkerError::Connect {
                endpoint: endpoint.to_string(),
                reason: format!(
                    "no answer within {} s (connect_timeout)",
                    timeout.as_secs_f64()
                ),
            }),
        }
    }
    Err(no_endpoint_error(errors))
}

/// Sends SSLRequest; `true` when the server agreed to TLS.
async fn negotiate_tls<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    endpoint: &Endpoint,
) -> Result<bool> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let failed = |e: std::io::Error| WorkerError::Connect {
        endpoint: endpoint.to_string(),
        reason: e.to_string(),
    };
    stream.write_all(&SSL_REQUEST).await.map_err(failed)?;
    stream.flush().await.map_err(failed)?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await.map_err(failed)?;
    match answer[0] {
        b'S' => Ok(true),
        b'N' => Ok(false),
        other => Err(WorkerError::Connect {
            endpoint: endpoint.to_string(),
            reason: format!("unexpected answer {other:#04x} to the TLS request"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_parameters_leave_the_url_and_passwords_stay_out_of_errors() {
        let options = ConnectOptions::default();
        let spec = TargetSpec::parse(
            "postgres://u:s3cret@db.example:6432/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
            &options,
        )
        .unwrap();
        assert_eq!(spec.tls.mode, SslMode::VerifyFull);
        assert_eq!(spec.tls.root_cert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(spec.url_password.as_deref(), Some(&b"s3cret"[..]));
        assert_eq!(spec.config.get_password(), Some(&b""[..]));
        assert_eq!(spec.config.get_application_name(), Some("x"));
        assert_eq!(
            spec.endpoints,
            vec![Endpoint::Tcp {
                host: "db.example".into(),
                addr: None,
                port: 6432
            }]
        );
        let err = TargetSpec::parse("postgres://u:s3cret@h/db?sslmode=bogus", &options)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sslmode \"bogus\""), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        let err = TargetSpec::parse("postgres://u:s3cret@h:notaport/db", &options)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn the_default_sslmode_is_require_off_this_machine_and_prefer_on_it() {
        for host in [
            "10.0.0.5",
            "db.internal",
            "192.168.1.1",
            "2001:db8::1",
            "localhost.example",
        ] {
            assert_eq!(default_sslmode(host), SslMode::Require, "{host}");
        }
        for host in [
            "127.0.0.1",
            "127.10.20.30",
            "::1",
            "[::1]",
            "::ffff:127.0.0.1",
            "localhost",
            "LOCALHOST",
            "/var/run/postgresql",
            "@ferry-abstract",
        ] {
            assert_eq!(default_sslmode(host), SslMode::Prefer, "{host}");
        }
        let options = ConnectOptions::default();
        let mode_of = |url: &str| {
            let spec = TargetSpec::parse(url, &options).unwrap();
            let modes: Vec<SslMode> = spec.endpoints.iter().map(|e| spec.mode_for(e)).collect();
            (spec.tls.mode, modes)
        };
        use SslMode::{Disable, Prefer, Require};
        assert_eq!(
            mode_of("postgres://u@10.0.0.5/app"),
            (Require, vec![Require])
        );
        assert_eq!(
            mode_of("postgres://u@db.internal:6432/app"),
            (Require, vec![Require])
        );
        assert_eq!(
            mode_of("postgres://u@127.0.0.1/app"),
            (Prefer, vec![Prefer])
        );
        assert_eq!(
            mode_of("postgres://u@[::1]:5433/app"),
            (Prefer, vec![Prefer])
        );
        assert_eq!(
            mode_of("postgres://u@localhost/app"),
            (Prefer, vec![Prefer])
        );
        assert_eq!(
            mode_of("host=/var/run/postgresql user=u dbname=app"),
            (Prefer, vec![Prefer])
        );
        // A name that resolves through `hostaddr` to loopback is on this machine.
        assert_eq!(
            mode_of("host=db.internal hostaddr=127.0.0.1 user=u"),
            (Prefer, vec![Prefer])
        );
        // Each host its own default; the client is built for the strictest.
        assert_eq!(
            mode_of("host=127.0.0.1,db.internal user=u"),
            (Require, vec![Prefer, Require])
        );
        // Chosen explicitly (URL, or `[target] sslmode`): as chosen, everywhere.
        assert_eq!(
            mode_of("postgres://u@db.internal/app?sslmode=prefer").1,
            vec![Prefer]
        );
        assert_eq!(
            mode_of("postgres://u@127.0.0.1/app?sslmode=require").1,
            vec![Require]
        );
        let configured = ConnectOptions {
            sslmode: Some(Disable),
            ..ConnectOptions::default()
        };
        let spec = TargetSpec::parse("postgres://u@10.0.0.5/app", &configured).unwrap();
        assert_eq!(spec.mode_for(&spec.endpoints[0]), Disable);
        // The password is never in the spec's Debug.
        let spec = TargetSpec::parse("postgres://u:s3cret@10.0.0.5/app", &options).unwrap();
        let debug = format!("{spec:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("115, 51"),
            "{debug}"
        );
    }

    #[test]
    fn an_explicit_unencrypted_mode_to_another_machine_warns_once_naming_the_host() {
        let capture = ferry_shared::telemetry::capture();
        let options = ConnectOptions::default();
        for _ in 0..3 {
            let spec = TargetSpec::parse(
                "postgres://u:s3cret@10.0.0.51:5432/app?sslmode=prefer",
                &options,
            )
            .unwrap();
            assert_eq!(spec.mode_for(&spec.endpoints[0]), SslMode::Prefer);
        }
        // On this machine, or encrypted: no warning.
        TargetSpec::parse("postgres://u@127.0.0.1/app?sslmode=disable", &options).unwrap();
        TargetSpec::parse("host=/tmp user=u sslmode=disable", &options).unwrap();
        TargetSpec::parse("postgres://u@10.0.0.52/app", &options).unwrap();
        TargetSpec::parse("postgres://u@10.0.0.52/app?sslmode=require", &options).unwrap();
        // `disable` from the config, to a name: warned too.
        let configured = ConnectOptions {
            sslmode: Some(SslMode::Disable),
            ..ConnectOptions::default()
        };
        for _ in 0..2 {
            TargetSpec::parse("host=db-warn.internal user=u password=s3cret", &configured).unwrap();
        }
        let text = capture.text();
        let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
        assert_eq!(warnings.len(), 2, "{text}");
        assert!(
            warnings[0].contains("the target connection to another machine may run unencrypted")
                && warnings[0].contains("host=10.0.0.51")
                && warnings[0].contains("sslmode=\"prefer\""),
            "{text}"
        );
        assert!(
            warnings[1].contains("host=db-warn.internal")
                && warnings[1].contains("sslmode=\"disable\""),
            "{text}"
        );
        for absent in ["s3cret", "127.0.0.1", "10.0.0.52", "/tmp"] {
            assert!(!text.contains(absent), "{absent}: {text}");
        }
    }

    #[test]
    fn key_value_targets_multi_host_and_unix_sockets() {
        let options = ConnectOptions {
            sslmode: Some(SslMode::Require),
            ..ConnectOptions::default()
        };
        let spec = TargetSpec::parse(
            "host=/tmp/pg,db2 hostaddr=,10.0.0.2 port=5433,5434 user=u dbname='my db' sslrootcert='/a b/ca.pem'",
            &options,
        );
        // An empty hostaddr is not an address: the driver refuses it, naming the option.
        assert!(spec.is_err());
        let spec = TargetSpec::parse(
            "host=/tmp/pg,db2 port=5433,5434 user=u dbname='my db' sslrootcert='/a b/ca.pem'",
            &options,
        )
        .unwrap();
        assert_eq!(
            spec.tls.mode,
            SslMode::Require,
            "the config's mode when the URL has none"
        );
        assert_eq!(spec.tls.root_cert.as_deref(), Some("/a b/ca.pem"));
        assert_eq!(spec.config.get_dbname(), Some("my db"));
        assert_eq!(
            spec.endpoints,
            vec![
                Endpoint::Unix {
                    dir: "/tmp/pg".into(),
                    port: 5433
                },
                Endpoint::Tcp {
                    host: "db2".into(),
                    addr: None,
                    port: 5434
                }
            ]
        );
        assert!(TargetSpec::parse("postgres://u@/db", &options).is_err());
    }

    #[test]
    fn pgpass_matching() {
        let text =
            "# comment\nother:5432:*:u:no\ndb.example:5432:app:u:pa\\:ss\\\\x\n*:*:*:*:fallback\n";
        let tcp = |host: &str| Endpoint::Tcp {
            host: host.into(),
            addr: None,
            port: 5432,
        };
        assert_eq!(
            pgpass_lookup(text, &tcp("db.example"), "app", "u").as_deref(),
            Some("pa:ss\\x")
        );
        assert_eq!(
            pgpass_lookup(text, &tcp("db.example"), "other", "u").as_deref(),
            Some("fallback")
        );
        let unix = Endpoint::Unix {
            dir: "/run/pg".into(),
            port: 5432,
        };
        assert_eq!(
            pgpass_lookup("localhost:5432:app:u:sock\n", &unix, "app", "u").as_deref(),
            Some("sock")
        );
        assert_eq!(pgpass_lookup("h:1:a:u:p\n", &tcp("h"), "a", "u"), None);
    }

    /// Feeds the guard server bytes in every split and returns what it said.
    fn guard_verdict(server: &[u8], ssl_requested: bool, split: usize) -> std::io::Result<()> {
        let endpoint = Endpoint::Tcp {
            host: "db.example".into(),
            addr: None,
            port: 5432,
        };
        let mut guard = AuthGuard::new(true, &endpoint);
        guard.wrote(if ssl_requested {
            &SSL_REQUEST
        } else {
            b"\0\0\0\x10startup"
        });
        for chunk in server.chunks(split) {
            guard.read(chunk)?;
        }
        Ok(())
    }

    fn auth(code: u32, extra: &[u8]) -> Vec<u8> {
        let mut out = vec![b'R'];
        out.extend_from_slice(&((8 + extra.len()) as u32).to_be_bytes());
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(extra);
        out
    }

    #[test]
    fn the_guard_refuses_a_cleartext_request_in_the_clear_only() {
        // A notice first, then the cleartext request: refused, however the bytes arrive.
        let mut notice = vec![b'N'];
        notice.extend_from_slice(&9u32.to_be_bytes());
        notice.extend_from_slice(b"hello");
        let mut cleartext = notice.clone();
        cleartext.extend(auth(3, b""));
        for split in [1, 2, 3, 7, 100] {
            let err = guard_verdict(&cleartext, false, split).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
            assert!(err.to_string().contains("db.example:5432"), "{err}");
            // Refused TLS ('N'), then the same: refused.
            let mut refused = vec![b'N'];
            refused.extend(cleartext.clone());
            assert!(guard_verdict(&refused, true, split).is_err());
            // TLS accepted: what follows is encrypted, the guard is off.
            let mut accepted = vec![b'S'];
            accepted.extend(cleartext.clone());
            assert!(guard_verdict(&accepted, true, split).is_ok());
            // SCRAM (10) then OK (0), then a stray cleartext code: fine (authenticated).
            let mut scram = auth(10, b"SCRAM-SHA-256\0\0");
            scram.extend(auth(0, b""));
            scram.extend(auth(3, b""));
            assert!(guard_verdict(&scram, false, split).is_ok());
            // MD5 (5) with its salt: allowed.
            assert!(guard_verdict(&auth(5, b"salt"), false, split).is_ok());
        }
        // A local server is exempt.
        let endpoint = Endpoint::Unix {
            dir: "/tmp".into(),
            port: 1,
        };
        let mut guard = AuthGuard::new(false, &endpoint);
        guard.wrote(b"\0\0\0\x10startup");
        assert!(guard.read(&auth(3, b"")).is_ok());
    }

    #[tokio::test]
    async fn a_stalled_loading_connection_times_out_and_the_heartbeat_sees_it() {
        let (client, server) = tokio::io::duplex(64);
        let scope = LoaderScope::new(Some(Duration::from_millis(300)));
        let endpoint = Endpoint::Unix {
            dir: "/tmp".into(),
            port: 1,
        };
        let activity = scope.activity.clone();
        let mut stream = Guarded::new(
            client,
            AuthGuard::new(false, &endpoint),
            Some(Progress::new(Duration::from_millis(300), activity.clone())),
        );
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Idle: reading waits without a deadline.
        let idle = tokio::time::timeout(Duration::from_millis(500), stream.read_u8()).await;
        assert!(idle.is_err(), "an idle connection must not time out");
        assert_eq!(activity.stalled_for(), None);
        // A request with no answer: fails after the progress timeout.
        stream.write_all(b"query").await.unwrap();
        let started = Instant::now();
        let err = stream.read_u8().await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("no progress"), "{err}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
        assert!(activity.stalled_for().unwrap() >= Duration::from_millis(250));
        // An answer clears it.
        drop(server);
        drop(stream);
        assert_eq!(activity.stalled_for(), None);
    }
}
