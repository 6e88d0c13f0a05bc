//! Logging setup shared by the binaries: `tracing` to stderr, human by default, JSON on request.

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
}
