//! Ferry's shared domain: everything the coordinator and the workers must agree on.
//!
//! # Layout
//! - [`config`]: the TOML + `FERRY_*` environment configuration, parsed raw and validated into settings.
//! - [`manifest`]: finding a DynamoDB export, parsing and verifying its manifests, turning files into shards.
//! - [`store`]: the [`store::ObjectStore`] trait (where export objects come from) and its local-folder implementation.
//! - [`s3`]: [`s3::S3Store`], an export in S3 or an S3-compatible store.
//! - [`output`]: where Ferry writes files (Parquet datasets, DynamoDB import files): a local folder
//!   or S3, each object created whole and never replaced.
//! - [`queue`]: the [`queue::WorkQueue`] trait (how shards reach workers) and its in-memory implementation.
//! - [`sqs`]: [`sqs::SqsQueue`], the fleet's SQS queue with its dead-letter queue.
//! - [`aws`]: the AWS SDK configuration (standard credential chain, endpoint override, retries).
//! - [`schema`]: the resolved target table schema a run stores in its ledger, so every worker uses
//!   the same one; [`schema::routing`]: single-table design (routing rules, routed tables'
//!   columns, casts and transforms), part of a run's schema.
//! - [`ident`]: SQL identifier quoting (every identifier Ferry writes goes through it).
//! - [`redact`]: credentials masked in every URL Ferry prints (target, ledger, Pushgateway, S3 endpoint).
//! - [`failpoint`]: failure points compiled into every binary and switched on by `FERRY_FAILPOINTS`.
//! - [`telemetry`]: logging setup.
//! - [`error`]: this crate's error type.
#![warn(missing_docs)]

pub mod aws;
pub mod config;
pub mod error;
pub mod failpoint;
pub mod ident;
pub mod manifest;
pub mod output;
pub mod queue;
pub mod redact;
pub mod s3;
pub mod schema;
pub mod sqs;
pub mod store;
pub mod telemetry;

pub use error::{Error, Result};
