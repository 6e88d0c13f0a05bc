//! Ferry's coordinator: turns a DynamoDB export into a planned run, drives it, and reports.
//!
//! # Layout
//! - [`plan`]: find the export, decide the table and schema, prepare the table, record the run and
//!   its shards in the ledger (deterministic; planning a known run resumes it).
//! - [`catch_up`]: incremental exports (windows) applied in order after a full run, with the
//!   ledger enforcing their continuity; how far behind a run's tables are.
//! - [`catalog`]: a table's unique indexes and column types, read the same way on both targets.
//! - [`infer`]: schema inference from a sample of items.
//! - [`assess`]: `assess`: an export's profile before a run (attributes, key, entities,
//!   references, and what a run would reject, spill or do slowly).
//! - [`keys`]: keys built after the load on PostgreSQL (tables the run creates): the pending
//!   record, the build in `finalize`, and a key the export holds twice named with both lines.
//! - [`migrate`]: the single-machine path: plan, in-process workers, finalize.
//! - [`deep`]: `verify --deep`: every row turned into its item and compared, per chunk, with the
//!   digest its load recorded; the items that differ named from the export's lines.
//! - [`finalize`]: reconcile, post-load steps, verify and record a run (both paths end here).
//! - [`fleet`]: the cluster path's coordinator side: `queue create`, `submit`, `status` with the queue.
//! - [`reset`]: start shards over (their rows removed by provenance).
//! - [`export_back`]: a run's tables back as a DynamoDB import (the rollback).
//! - [`scan_dump`]: scan dumps at plan time: their kind, and the warning a plain-JSON dump gets.
//! - [`probe`]: `probe`: measures the decode rate per core, the target's ingest ceiling and the
//!   source read rate, and records them in the ledger (`ferry.probes`).
//! - [`estimate`]: the cost model of `plan --dry-run`, from measured constants (the latest run,
//!   the latest probe) or the configuration's, read from the ledger without writing anything.
//! - [`report`]: the run report (rows, rejects, per-shard reconciliation, rate, verdict).
//! - [`embedded`]: the embedded default: a HeliosDB server started and stopped by `migrate`.
//! - [`cli`]: the `ferry-coordinator` command line.
//! - [`error`]: this crate's error type.

pub mod assess;
pub mod catalog;
pub mod catch_up;
pub mod cli;
pub mod deep;
pub mod embedded;
pub mod error;
pub mod estimate;
pub mod export_back;
pub mod finalize;
pub mod fleet;
pub mod infer;
pub mod keys;
pub mod migrate;
pub mod plan;
pub mod probe;
pub mod report;
pub mod reset;
pub mod scan_dump;

pub use error::{CoordinatorError, Result};
