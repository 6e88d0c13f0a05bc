//! The one error type of `ferry-shared`.

use std::path::PathBuf;

/// Errors from configuration, manifests and object stores.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file or environment could not be read or is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// No export, or more than one, was found where the user pointed.
    #[error("export not found: {0}")]
    ExportNotFound(String),
    /// A manifest could not be parsed.
    #[error("invalid manifest {location}: {reason}")]
    Manifest {
        /// The manifest file.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A checksum or count in the manifests does not match the bytes.
    #[error("checksum mismatch for {location}: {reason}")]
    Checksum {
        /// The file whose checksum failed.
        location: String,
        /// Expected vs actual.
        reason: String,
    },
    /// An object could not be read.
    #[error("cannot read {location}: {source}")]
    Io {
        /// The object or file.
        location: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A key names something outside the store.
    #[error("object key {0:?} escapes the store root")]
    BadKey(String),
    /// An AWS request failed after the SDK's retries.
    #[error("{operation} {location} failed: {message}")]
    Aws {
        /// The API operation (`GetObject`, `SendMessageBatch`, …).
        operation: String,
        /// The object or queue.
        location: String,
        /// The SDK's message with its causes.
        message: String,
    },
    /// A queue message or queue setting is unusable.
    #[error("queue {location}: {reason}")]
    Queue {
        /// The queue URL.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// A queue message is not a shard task this worker can act on (left for the dead-letter
    /// queue).
    #[error("not a ferry shard task this worker reads: {0}")]
    Message(String),
    /// An object is not the version a run already read from (it was replaced or rewritten).
    #[error("{location} changed: it was {expected}, it is now {found}")]
    ObjectChanged {
        /// The object.
        location: String,
        /// The identity recorded earlier.
        expected: String,
        /// The identity now (or what the store said).
        found: String,
    },
    /// A local path is not usable as an export location.
    #[error("not a folder: {0}")]
    NotAFolder(PathBuf),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
