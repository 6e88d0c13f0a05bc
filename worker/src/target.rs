//! What the target server is and how to load it: detected once per connection.
//!
//! - PostgreSQL: binary COPY inside the transaction that advances the checkpoint.
//! - HeliosDB (`server_version` names it): it refuses binary COPY and handles COPY only over the
//!   simple protocol, fast only in autocommit; so CSV COPY in autocommit with the provenance-proven
//!   checkpoint of [`crate::sink::autocommit`], a NUMERIC limited to a 96-bit decimal, and no
//!   column named with a dot (see [`ColumnNames::NoDot`]).

use ferry_shared::config::CopyFormat;
use ferry_shared::ident::ColumnNames;
use ferry_shared::schema::NumericLimit;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::{Result, WorkerError};

/// The kind of server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// PostgreSQL.
    Postgres,
    /// HeliosDB (heliosdb-nano).
    HeliosDb,
}

/// How chunks are loaded (the sinks of [`crate::sink`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadPath {
    /// Binary COPY and the checkpoint in one transaction.
    BinaryCopyInTransaction,
    /// CSV COPY in autocommit over the simple protocol, then the checkpoint; a retried chunk is
    /// proven stored by its rows' provenance.
    CsvCopyAutocommit,
    /// Multi-row INSERTs with text parameters, in the checkpoint's transaction: the last resort.
    InsertInTransaction,
    /// Parquet files (a local folder or S3), one per table and chunk, each published whole under
    /// a name derived from its load and chunk; the ledger stays in the database
    /// ([`crate::sink::parquet`]).
    Parquet,
}

impl LoadPath {
    /// The name recorded in the run (`binary`, `csv`, `insert`).
    pub fn as_str(self) -> &'static str {
        match self {
            LoadPath::BinaryCopyInTransaction => "binary",
            LoadPath::CsvCopyAutocommit => "csv",
            LoadPath::InsertInTransaction => "insert",
            LoadPath::Parquet => "parquet",
        }
    }

    /// The path a recorded name stands for.
    pub fn parse(name: &str) -> Option<LoadPath> {
        Some(match name {
            "binary" => LoadPath::BinaryCopyInTransaction,
            "csv" => LoadPath::CsvCopyAutocommit,
            "insert" => LoadPath::InsertInTransaction,
            "parquet" => LoadPath::Parquet,
            _ => return None,
        })
    }
}

/// A detected target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The server kind.
    pub kind: TargetKind,
    /// `server_version` as reported.
    pub server_version: String,
    /// The load path chosen.
    pub load_path: LoadPath,
}

impl Target {
    /// Asks the server who it is and picks the fastest correct load path (or the configured one).
    pub async fn detect(client: &Client, copy_format: CopyFormat) -> Result<Target> {
        let messages = client
            .simple_query("SHOW server_version")
            .await
            .map_err(WorkerError::db("cannot read the server version"))?;
        let server_version = messages
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
                _ => None,
            })
            .unwrap_or_default();
        let kind = if server_version.to_ascii_lowercase().contains("heliosdb") {
            TargetKind::HeliosDb
        } else {
            TargetKind::Postgres
        };
        let load_path = match (copy_format, kind) {
            (CopyFormat::Binary, TargetKind::HeliosDb) => return Err(WorkerError::Internal(
                "load.copy_format = \"binary\" but HeliosDB refuses binary COPY: use auto or csv"
                    .into(),
            )),
            (CopyFormat::Binary, _) | (CopyFormat::Auto, TargetKind::Postgres) => {
                LoadPath::BinaryCopyInTransaction
            }
            (CopyFormat::Csv, _) | (CopyFormat::Auto, TargetKind::HeliosDb) => {
                LoadPath::CsvCopyAutocommit
            }
            (CopyFormat::Insert, _) => LoadPath::InsertInTransaction,
        };
        let target = Target {
            kind,
            server_version,
            load_path,
        };
        tracing::info!(server = %target.server_version, load_path = %target.describe(), "target detected");
        Ok(target)
    }

    /// What NUMERIC holds on this target.
    pub fn numeric_limit(&self) -> NumericLimit {
        match self.kind {
            TargetKind::Postgres => NumericLimit::Unlimited,
            TargetKind::HeliosDb => NumericLimit::Decimal96,
        }
    }

    /// Which column names this target reads back as written.
    pub fn column_names(&self) -> ColumnNames {
        match self.kind {
            TargetKind::Postgres => ColumnNames::Any,
            TargetKind::HeliosDb => ColumnNames::NoDot,
        }
    }

    /// How rows are loaded, in words (for logs and the report).
    pub fn describe(&self) -> String {
        self.describe_path(self.load_path)
    }

    /// How rows are loaded on this server with `path`, in words.
    pub fn describe_path(&self, path: LoadPath) -> String {
        let server = match self.kind {
            TargetKind::Postgres => "PostgreSQL",
            TargetKind::HeliosDb => "HeliosDB",
        };
        match path {
            LoadPath::BinaryCopyInTransaction => {
                format!("binary COPY in a transaction with the checkpoint ({server})")
            }
            LoadPath::CsvCopyAutocommit => {
                format!("CSV COPY in autocommit over the simple protocol, provenance-proven checkpoint ({server})")
            }
            LoadPath::InsertInTransaction => {
                format!("multi-row INSERT with text parameters in a transaction with the checkpoint ({server})")
            }
            LoadPath::Parquet => {
                format!(
                    "Parquet files published whole, one per table and chunk, ledger on {server}"
                )
            }
        }
    }
}
