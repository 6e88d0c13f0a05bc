//! Ferry's worker: everything that turns one shard (one export data file) into committed rows.
//!
//! # Layout
//! - [`source`]: streams a data file, checks its MD5 and line count, gunzips it and frames lines
//!   into blocks that never cross a chunk boundary.
//! - [`item`]: parses one line of typed DynamoDB JSON into borrowed values.
//! - [`dump`]: scan dumps (`aws dynamodb scan` output, JSON arrays of items) read as lines of
//!   items.
//! - [`ion`]: parses one line of an Amazon Ion export into the same values.
//! - [`change`]: incremental exports' change records (`Keys`, `NewImage`, `OldImage`, `Metadata`).
//! - [`number`]: exact DynamoDB numbers (validation, canonical text, PostgreSQL NUMERIC encoding).
//! - [`json`]: canonical JSON for nested values and the overflow column.
//! - [`convert`]: the one DynamoDB value → Arrow column conversion (exact casts, builders).
//! - [`scan`]: the fast path of decoding: DynamoDB JSON lines scanned straight into Arrow
//!   builders, the reference parser ([`item`]) taking every line it gives up.
//! - [`decode`]: blocks of lines → Arrow `RecordBatch`es plus rejects (runs on rayon).
//! - [`route`]: single-table design: items → per-table Arrow batches by routing rules, casts,
//!   filters and column transforms (runs on rayon).
//! - [`copy`]: Arrow batches → PostgreSQL binary COPY tuples.
//! - [`csv`]: Arrow batches → CSV rows for COPY where binary is refused (HeliosDB).
//! - [`conn`]: connecting to the target: hosts in order, TLS, passwords, timeouts, keepalive,
//!   the cleartext-password guard and the loading connections' progress timeout.
//! - [`tls`]: TLS to the target with rustls (`sslmode`, `sslrootcert`).
//! - [`redact`]: what the ledger keeps of rejected lines (`load.reject_lines`).
//! - [`sink`]: the load engine: one chunk driver and one sink per load path (binary COPY in a
//!   transaction, CSV COPY in autocommit, INSERT), with the exactly-once argument.
//! - [`reread`]: one chunk of a data file read again after its load, its rows' lines and keys (a
//!   key the export holds twice, found when a key built after the load is refused).
//! - [`simple`]: COPY over the simple query protocol (the HeliosDB path).
//! - [`pool`]: N concurrent loaders fed by a work queue, with retries.
//! - [`progress`]: live counters of a process's loading (progress displays, metrics).
//! - [`metrics`]: Prometheus metrics from those counters: `/metrics` and a Pushgateway push.
//! - [`target`]: detecting the server and choosing the load path.
//! - [`error`]: this crate's error type.
//!
//! The ledger (its schema and SQL, a run's records, windows and lineage, and the [`Ledger`] the
//! driver talks to) is the `ferry-ledger` crate's; this crate connects to the target
//! ([`conn::control`], [`conn::loading`]) and hands the client to it.
//!
//! # Exactly once
//! A shard is loaded in chunks of `chunk_lines` input lines (fixed per run). Every row carries its
//! DynamoDB key under a unique constraint and its provenance (the shard load and chunk that wrote
//! it); the checkpoint `committed_lines: from → to WHERE committed_lines = from` moves once per
//! chunk. On PostgreSQL a chunk's rows and its checkpoint are one transaction; on HeliosDB each
//! table's rows are one atomic COPY in autocommit, and a chunk whose state a loader does not know
//! is proven stored or not by its first row's provenance before it is written. A resumed shard
//! streams the file again and skips `committed_lines` lines. See [`sink`] for the argument.

pub mod change;
pub mod conn;
pub mod convert;
pub mod copy;
pub mod csv;
pub mod decode;
pub mod dump;
pub mod error;
pub mod ion;
pub mod ion_scan;
pub mod item;
pub mod json;
pub mod metrics;
pub mod normal;
pub mod number;
pub mod pool;
pub mod progress;
pub mod redact;
pub mod reread;
pub mod route;
pub mod scan;
pub mod simple;
pub mod sink;
pub mod source;
pub mod target;
pub mod tls;

pub use error::{chain_text, server_message, Result, WorkerError};
