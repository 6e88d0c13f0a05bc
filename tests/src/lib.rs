//! Ferry's test crate: end-to-end tests, the test environment harness, the synthetic
//! DynamoDB export generator and benchmarks.
//!
//! - [`bench_catch_up`]: `ferry-bench --catch-up` and `--ion` (catch-up at 100k+ items on both
//!   targets and the applier's cost per row; Ion decode speed against DynamoDB JSON).
//! - [`gen`]: deterministic synthetic DynamoDB "export to S3" folders (manifests, checksums,
//!   gzip JSON Lines data files, realistic and edge-case items).
//! - [`pg`]: throw-away real PostgreSQL clusters, one database per test.
//! - [`compare`]: value-by-value comparison of a loaded table with its source export.
//! - [`helios`]: throw-away real HeliosDB servers.
//! - [`moto`]: a real S3 and SQS wire endpoint (moto's server) and uploads to it.
//! - [`fleet`]: a fleet run on moto: queue, plan from `s3://`, submit, worker processes.
//! - [`parquet`]: Ferry's Parquet datasets read back with pyarrow, value by value.
//! - [`history`]: a table's history as DynamoDB exports it (full export, incremental windows, the
//!   final state), written by a Python script with boto3's TypeSerializer, for the catch-up tests.
//! - [`shop`]: the migration guide's single-table shop as an export, with its entities kept.
//! - [`tools`]: finding the installed test servers (HeliosDB, moto).
//! - [`harness`]: running the real Ferry binaries and migrations from tests.
//! - [`deploy`]: the deployment tests' tools (promtool, a Pushgateway, validators, Airflow,
//!   podman) and a queued stack with nothing planned.

pub mod bench_catch_up;
pub mod compare;
pub mod deploy;
pub mod fleet;
pub mod gen;
pub mod harness;
pub mod helios;
pub mod history;
pub mod moto;
pub mod parquet;
pub mod pg;
pub mod shop;
pub mod tools;
