//! Logging setup shared by the binaries: `tracing` to stderr, human by default, JSON on request;
//! and [`capture`], which tests use to read what a step logged.

use tracing_subscriber::EnvFilter;

/// Output format of the logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected text or json)"
            )),
        }
    }
}

/// Log targets whose debug and trace events carry data: the database driver logs every
/// statement's bound parameters (key values, rejected lines) and the wire protocol. They are
/// capped at `info` whatever `FERRY_LOG` says, so no level of logging shows a value loaded.
const DATA_BEARING_TARGETS: &[&str] = &["tokio_postgres", "postgres_protocol"];

/// Whether an event may be logged at all (see [`DATA_BEARING_TARGETS`]).
pub fn may_log(target: &str, level: &tracing::Level) -> bool {
    *level <= tracing::Level::INFO
        || !DATA_BEARING_TARGETS
            .iter()
            .any(|t| target == *t || target.strip_prefix(t).is_some_and(|r| r.starts_with("::")))
}

/// The log target of the per-shard lines ("loading shard"): one per shard, so a terminal that
/// shows a progress bar leaves them out unless asked (`-v`).
pub const SHARD_TARGET: &str = "ferry::shard";

/// How much a command logs when `FERRY_LOG` does not say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Verbosity {
    /// Warnings and errors only (`-q`): the result is all that is printed.
    Quiet,
    /// Information, without the per-shard lines when a progress bar shows the run.
    #[default]
    Normal,
    /// Information, the per-shard lines included (`-v`).
    Verbose,
}

/// The default filter for `verbosity`; `bar` says a progress bar shows the run (a terminal).
pub fn default_directives(verbosity: Verbosity, bar: bool) -> String {
    match verbosity {
        Verbosity::Quiet => "warn".into(),
        Verbosity::Normal if bar => format!("info,{SHARD_TARGET}=warn"),
        Verbosity::Normal | Verbosity::Verbose => "info".into(),
    }
}

/// Runs a write of log text around the progress bar on screen: set while a bar is drawn (its
/// `suspend`: the bar is cleared, the line printed, the bar drawn again below it), so a log line
/// is printed above the bar and never through it.
pub type AroundBar = std::sync::Arc<dyn Fn(&mut dyn FnMut()) + Send + Sync>;

static AROUND_BAR: std::sync::RwLock<Option<AroundBar>> = std::sync::RwLock::new(None);

/// Sets (or, with `None`, clears) what log lines are written around: the progress bar's owner
/// calls it when the bar appears and when it goes.
pub fn set_around_bar(around: Option<AroundBar>) {
    *AROUND_BAR.write().unwrap_or_else(|p| p.into_inner()) = around;
}

/// Standard error, each log line written around the progress bar when one is drawn.
struct AboveBar;

impl std::io::Write for AboveBar {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let around = AROUND_BAR.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut result = Ok(());
        let mut write = || result = std::io::stderr().write_all(buf);
        match around {
            Some(around) => around(&mut write),
            None => write(),
        }
        result.map(|()| buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Installs the global subscriber at the default verbosity, per-shard lines included (a worker:
/// no progress bar). See [`init_with`].
pub fn init(format: LogFormat) {
    init_with(format, Verbosity::Normal, false);
}

/// Installs the global subscriber. The level comes from `FERRY_LOG`, else from `verbosity`
/// ([`default_directives`]; `bar` says a progress bar shows the run); the database driver never
/// logs below `info` ([`DATA_BEARING_TARGETS`]). Colours only on a terminal: a log file or a
/// cluster's log collector gets plain text. Lines go to standard error, above the progress bar
/// when one is drawn ([`set_around_bar`]).
pub fn init_with(format: LogFormat, verbosity: Verbosity, bar: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| EnvFilter::new(default_directives(verbosity, bar)));
    let no_data =
        tracing_subscriber::filter::filter_fn(|meta| may_log(meta.target(), meta.level()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(|| AboveBar);
    let result = match format {
        LogFormat::Text => builder.with_target(false).finish().with(no_data).try_init(),
        LogFormat::Json => builder.json().finish().with(no_data).try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

/// The log lines of this thread while it lives, as plain text, every level: for tests that check
/// what a step logs (and that no credential is in it). See [`capture`].
pub struct LogCapture {
    buffer: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl LogCapture {
    /// What was logged so far.
    pub fn text(&self) -> String {
        let bytes = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

struct CaptureWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures this thread's events (a current-thread runtime's tasks included) until the returned
/// capture is dropped, whatever the global subscriber.
pub fn capture() -> LogCapture {
    let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || CaptureWriter(sink.clone()))
        .finish();
    LogCapture {
        buffer,
        _guard: tracing::subscriber::set_default(subscriber),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn the_driver_is_capped_at_info() {
        assert!(!may_log("tokio_postgres::query", &Level::DEBUG));
        assert!(!may_log("tokio_postgres", &Level::TRACE));
        assert!(!may_log("postgres_protocol::message", &Level::DEBUG));
        assert!(may_log("tokio_postgres::connection", &Level::INFO));
        assert!(may_log("tokio_postgres_rustls", &Level::DEBUG));
        assert!(may_log("ferry_worker::pool", &Level::DEBUG));
    }

    #[test]
    fn per_shard_lines_are_left_out_only_under_a_progress_bar() {
        // Whether an event of `level` (INFO or WARN) on `target` passes the default filter.
        let shown = |verbosity, bar, target: &str, level| {
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::new(default_directives(verbosity, bar)))
                .finish();
            tracing::subscriber::with_default(subscriber, || match (target, level) {
                (SHARD_TARGET, Level::INFO) => {
                    tracing::enabled!(target: "ferry::shard", Level::INFO)
                }
                (SHARD_TARGET, _) => tracing::enabled!(target: "ferry::shard", Level::WARN),
                (_, Level::INFO) => tracing::enabled!(Level::INFO),
                _ => tracing::enabled!(Level::WARN),
            })
        };
        // A terminal with a bar: no per-shard lines, other information stays.
        assert!(!shown(Verbosity::Normal, true, SHARD_TARGET, Level::INFO));
        assert!(shown(Verbosity::Normal, true, SHARD_TARGET, Level::WARN));
        assert!(shown(Verbosity::Normal, true, "other", Level::INFO));
        // No bar (a log collector, a worker): everything at info, as before.
        assert!(shown(Verbosity::Normal, false, SHARD_TARGET, Level::INFO));
        // -v brings them back; -q keeps warnings only.
        assert!(shown(Verbosity::Verbose, true, SHARD_TARGET, Level::INFO));
        assert!(!shown(Verbosity::Quiet, false, "other", Level::INFO));
        assert!(shown(Verbosity::Quiet, false, "other", Level::WARN));
    }

    #[test]
    fn a_log_line_is_written_around_the_bar_when_one_is_drawn() {
        use std::io::Write as _;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        set_around_bar(Some(Arc::new(move |write: &mut dyn FnMut()| {
            seen.fetch_add(1, Ordering::SeqCst);
            write();
        })));
        assert_eq!(AboveBar.write(b"").unwrap(), 0);
        set_around_bar(None);
        assert_eq!(AboveBar.write(b"").unwrap(), 0);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_capture_sees_this_threads_events_only_while_it_lives() {
        let capture = capture();
        tracing::warn!(host = "db.internal", "seen");
        std::thread::spawn(|| tracing::warn!("another thread"))
            .join()
            .unwrap();
        let text = capture.text();
        assert!(
            text.contains("WARN") && text.contains("seen host=\"db.internal\""),
            "{text}"
        );
        assert!(!text.contains("another thread"), "{text}");
        drop(capture);
    }
}
