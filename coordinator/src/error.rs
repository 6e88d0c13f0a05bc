//! The one error type of `ferry-coordinator`.

/// Errors while planning, running or reporting a migration.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// From the shared crate (config, manifests, store).
    #[error(transparent)]
    Shared(#[from] ferry_shared::Error),
    /// From the worker crate (database, data files).
    #[error(transparent)]
    Worker(#[from] ferry_worker::WorkerError),
    /// From the ledger crate (its database calls, a record it does not hold).
    #[error(transparent)]
    Ledger(#[from] ferry_ledger::LedgerError),
    /// The user's request cannot be carried out as given.
    #[error("{0}")]
    Invalid(String),
    /// The target table does not fit the run.
    #[error("target table {table:?} does not fit this run: {reason}")]
    TableMismatch {
        /// The table.
        table: String,
        /// What differs.
        reason: String,
    },
}

impl CoordinatorError {
    /// A database error with context.
    pub fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> CoordinatorError {
        move |source| {
            CoordinatorError::Worker(ferry_worker::WorkerError::Db {
                context: context.into(),
                source,
            })
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;
