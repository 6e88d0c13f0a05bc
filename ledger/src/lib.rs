//! Ferry's ledger: the `ferry` schema in the target database that records what every run loaded,
//! and the only code that reads or writes it (`docs/design.md` §3, §6).
//!
//! # Layout
//! - [`sql`]: the schema, its migrations and every statement ([`sql::window`]: catch-up windows).
//! - [`runs`]: the records (runs, shards, rejects, post-load steps, target tokens) and the
//!   functions that read and write them on a tokio-postgres client; creating and migrating the
//!   schema ([`runs::ensure_ledger`]).
//! - [`protocol`]: the [`Ledger`] the chunk driver and the sinks talk to (a shard's generations,
//!   loads, failures and in-flight marks, a chunk's checkpoint, an output set's files), implemented
//!   once on a tokio-postgres client, with its records ([`LoadClaim`], [`Restart`], [`Advance`]).
//! - [`memory`]: the same [`Ledger`] in memory, the one the load engine's unit tests use.
//! - [`window`]: a catch-up window's records: whether a window may apply now, its deferred change
//!   records, its state.
//! - [`keys`]: the record of a table created without its key, built after the load (who builds
//!   it, and whether it is built).
//! - [`lineage`]: a run's lineage (the windows that follow it, how far they caught up) and which
//!   day-two operations it allows.
//! - [`outputs`]: the output sets a run owns (a Parquet dataset's committed files) and the runs
//!   that share a location.
//! - [`digests`]: each chunk's digest of its items, recorded with its checkpoint, and each
//!   table's last deep verification.
//! - [`error`]: this crate's error type.
//!
//! Connecting to the target (hosts, TLS, passwords) is the worker's (`ferry_worker::conn`): this
//! crate takes a connected client. What differs between sinks when a load ends (removing its rows
//! or files) is the sink's (`ferry_worker::sink::Unload`), so nothing here forwards to a sink and
//! no sink wraps the ledger.
#![warn(missing_docs)]

pub mod digests;
pub mod error;
pub mod keys;
pub mod lineage;
pub mod memory;
pub mod outputs;
pub mod protocol;
pub mod runs;
pub mod sql;
pub mod window;

pub use digests::{ChunkDigest, Verification};
pub use error::{LedgerError, Result};
pub use keys::PendingKey;
pub use protocol::{Advance, FileEnd, Ledger, LoadClaim, Restart};
pub use runs::{RejectRecord, RejectRow, RunRecord, ShardRecord, StepRecord};
pub use sql::keys::key_state;
pub use sql::window::window_state;
pub use sql::{run_state, shard_state, step_state};
pub use window::WindowRecord;
