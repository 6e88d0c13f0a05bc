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
    /// The ledger does not hold what the caller expects.
    #[error("ledger: {0}")]
    Ledger(String),
    /// A background task died.
    #[error("internal error: {0}")]
    Internal(String),
}

impl WorkerError {
    /// Wraps a database error with what Ferry was doing.
    pub fn db(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> WorkerError {
        let context = context.into();
        move |source| WorkerError::Db { context, source }
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

/// Result alias for this crate.
pub type Result<T, E = WorkerError> = std::result::Result<T, E>;
