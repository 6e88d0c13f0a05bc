//! The one error type of `ferry-worker`.

use crate::copy::EncodeError;

/// Errors while loading shards.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// From the shared crate (store, manifest, config).
    #[error(transparent)]
    Shared(#[from] ferry_shared::Error),
    /// A database call failed.
    #[error("{context}: {source}")]
    Db {
        /// What Ferry was doing.
        context: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The data file itself is bad (corrupt gzip, fewer lines than committed, an absurd line):
    /// retrying cannot help.
    #[error("data file {location} is unusable: {reason}")]
    CorruptFile {
        /// The file.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading the data file failed (possibly transient).
    #[error("cannot read {location}: {source}")]
    Read {
        /// The file.
        location: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A decoded value could not be encoded (a bug: decoding validates values).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A failpoint fired.
    #[error(transparent)]
    Failpoint(#[from] ferry_shared::failpoint::FailpointError),
    /// From the ledger crate (its database calls, a record it does not hold).
    #[error(transparent)]
    Ledger(#[from] ferry_ledger::LedgerError),
    /// A background task died.
    #[error("internal error: {0}")]
    Internal(String),
    /// The target could not be reached or refused the connection (the endpoint, never the URL:
    /// it may hold a password).
    #[error("cannot connect to the target at {endpoint}: {reason}")]
    Connect {
        /// The host and port, or the Unix socket.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The target's connection settings are unusable (URL, TLS, password file).
    #[error("target settings: {0}")]
    TargetConfig(String),
}

impl WorkerError {
    /// Wraps a database error with what Ferry was doing.
    pub fn db(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> WorkerError {
        let context = context.into();
        move |source| WorkerError::Db { context, source }
    }

    /// The ledger does not hold what the caller expects.
    pub fn ledger(message: impl Into<String>) -> WorkerError {
        WorkerError::Ledger(ferry_ledger::LedgerError::Unexpected(message.into()))
    }
}

/// The server's own words for a database error: its message and, when given, its detail (which
/// names the key or the row); the driver's text for anything else (a dropped connection).
pub fn server_message(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_string(),
        },
        None => error.to_string(),
    }
}

/// An error and its causes in one line, each cause once: a cause whose text the message already
/// holds (tokio-postgres and many wrappers print their cause themselves) is not repeated.
pub fn chain_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !cause_text.is_empty() && !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Result alias for this crate.
pub type Result<T, E = WorkerError> = std::result::Result<T, E>;
