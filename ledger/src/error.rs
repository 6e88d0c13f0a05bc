//! The one error type of `ferry-ledger`.

/// Errors while reading or writing the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A database call failed.
    #[error("{context}: {source}")]
    Db {
        /// What Ferry was doing.
        context: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The ledger does not hold what the caller expects (a record vanished, a value it cannot
    /// read), or a record cannot be written as given.
    #[error("ledger: {0}")]
    Unexpected(String),
}

impl LedgerError {
    /// Wraps a database error with what Ferry was doing.
    pub fn db(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> LedgerError {
        let context = context.into();
        move |source| LedgerError::Db { context, source }
    }

    /// The database error underneath, if this is one.
    pub fn db_source(&self) -> Option<&tokio_postgres::Error> {
        match self {
            LedgerError::Db { source, .. } => Some(source),
            LedgerError::Unexpected(_) => None,
        }
    }
}

/// Whether a database error is a unique-key violation (PostgreSQL's 23505, or a server that
/// reports it only in words).
pub fn is_unique_violation(error: &tokio_postgres::Error) -> bool {
    if error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
        return true;
    }
    error.as_db_error().is_some_and(|db| {
        let text = db.message().to_ascii_lowercase();
        text.contains("duplicate key") || text.contains("unique constraint")
    })
}

/// Result alias for this crate.
pub type Result<T, E = LedgerError> = std::result::Result<T, E>;
