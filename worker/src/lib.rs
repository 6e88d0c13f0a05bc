//! Ferry's worker: everything that turns one shard (one export data file) into committed rows.
//!
//! # Layout
//! - [`source`]: streams a data file, checks its MD5 and line count, gunzips it and frames lines
//!   into blocks that never cross a chunk boundary.
//! - [`item`]: parses one line of typed DynamoDB JSON into borrowed values.
//! - [`number`]: exact DynamoDB numbers (validation, canonical text, PostgreSQL NUMERIC encoding).
//! - [`json`]: canonical JSON for nested values and the overflow column.
//! - [`convert`]: the one DynamoDB value → Arrow column conversion (exact casts, builders).
//! - [`decode`]: blocks of lines → Arrow `RecordBatch`es plus rejects (runs on rayon).
//! - [`route`]: single-table design: items → per-table Arrow batches by routing rules, casts,
//!   filters and column transforms (runs on rayon).
//! - [`copy`]: Arrow batches → PostgreSQL binary COPY tuples.
//! - [`csv`]: Arrow batches → CSV rows for COPY where binary is refused (HeliosDB).
//! - [`ledger`]: reading and writing the `ferry` ledger through tokio-postgres.
//! - [`load`]: the shard loader and its exactly-once commit protocol.
//! - [`simple`]: COPY over the simple query protocol (the HeliosDB path).
//! - [`pool`]: N concurrent loaders fed by a work queue, with retries.
//! - [`progress`]: live counters of a process's loading (progress displays, metrics).
//! - [`metrics`]: Prometheus metrics from those counters: `/metrics` and a Pushgateway push.
//! - [`target`]: detecting the server and choosing the load path.
//! - [`error`]: this crate's error type.
//!
//! # Exactly once on PostgreSQL
//! A shard is loaded in chunks of `chunk_lines` input lines (fixed per run). Each chunk is one
//! transaction: `COPY` of the chunk's rows, its rejects, and the conditional checkpoint update
//! `committed_lines: from → to WHERE committed_lines = from`. The rows become visible if and only if
//! the checkpoint moves past them, and the checkpoint only moves forward from where this worker read
//! it; a worker that finds 0 rows updated, or whose COPY hits a unique violation after another
//! worker moved the checkpoint, rolls back and backs off. A resumed shard streams the file again and
//! skips `committed_lines` lines. See [`load`] for the details.

pub mod convert;
pub mod copy;
pub mod csv;
pub mod decode;
pub mod error;
pub mod item;
pub mod json;
pub mod ledger;
pub mod load;
pub mod metrics;
pub mod number;
pub mod pool;
pub mod progress;
pub mod route;
pub mod simple;
pub mod source;
pub mod target;

pub use error::{server_message, Result, WorkerError};
