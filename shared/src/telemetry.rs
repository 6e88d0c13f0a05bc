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

/// Installs the global subscriber. The level comes from `FERRY_LOG` (default `info`); the
/// database driver never logs below `info` ([`DATA_BEARING_TARGETS`]). Colours only on a
/// terminal: a log file or a cluster's log collector gets plain text.
pub fn init(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let no_data =
        tracing_subscriber::filter::filter_fn(|meta| may_log(meta.target(), meta.level()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
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
