//! The autocommit sink (HeliosDB): each table's rows of a chunk are one CSV `COPY` over the simple
//! query protocol, committed on its own (HeliosDB runs COPY fast only outside a transaction, and an
//! open transaction anywhere pushes every session's COPY onto its slow path); then the chunk's
//! rejects (idempotently) and the conditional checkpoint, each a statement in autocommit:
//!
//! ```text
//! COPY <table> (<columns>, _ferry_chunk) FROM STDIN (FORMAT csv)   -- per table; atomic
//! INSERT INTO ferry.rejects … ON CONFLICT … DO UPDATE               -- idempotent
//! UPDATE ferry.shards SET committed_lines = <to>, …
//!  WHERE … AND committed_lines = <from> AND generation = <g>       -- the commit point
//! ```
//!
//! # Why this is exactly once
//! - A COPY stores all of its rows or none (one atomic batch on HeliosDB), every row carrying the
//!   chunk's provenance, and the table's unique key over the DynamoDB key columns (checked at
//!   plan) refuses a second COPY of the same rows.
//! - A crash between a table's COPY and the checkpoint leaves that table's rows of the chunk ahead
//!   of the checkpoint. The next loader of the shard proves its first chunk before writing it
//!   ([`super::driver`]): the key of each table's first row is looked up, and a row with *this
//!   chunk's* provenance proves the whole COPY committed (the table is skipped); an absent key
//!   proves it did not (the rows are written); a row with another provenance is a key from
//!   elsewhere, and the shard fails naming it. Nothing is inferred from keys alone.
//! - Two loaders on one chunk: one COPY is refused on the key; the driver finds the checkpoint
//!   moved, or the chunk's first row with this chunk's provenance, and backs off.
//! - The rejects are written with `ON CONFLICT … DO UPDATE`, so a retried chunk writes the same
//!   rows again instead of failing on their primary key.
//! - The last chunk checks the file's MD5 and item count before `CopyDone`, so a file that does
//!   not match its manifest never stores its last chunk (and its earlier chunks are removed by
//!   provenance, [`super::driver`]).

use std::sync::Arc;

use async_trait::async_trait;
use ferry_shared::ident::quote_ident;
use ferry_shared::schema::TableSchema;
use tokio_postgres::Client;

use super::sql::{probe, probe_sql, write_checkpoint};
use super::{Checkpoint, KeyValue, Payload, Presence, Sink, TableEnd, TableRows};
use crate::simple::{CopyResult, SimpleCopyClient};
use crate::target::{LoadPath, Target};
use crate::{Result, WorkerError};

/// CSV COPY in autocommit, with the checkpoint after it.
pub struct AutocommitCopySink<'c> {
    client: &'c Client,
    copier: SimpleCopyClient,
    tables: Arc<Vec<TableSchema>>,
    probes: Vec<String>,
    copies: Vec<String>,
    describe: String,
    /// The table whose COPY is open, and the rows sent into it.
    open: Option<(usize, u64)>,
}

impl<'c> AutocommitCopySink<'c> {
    /// Opens the COPY connection (the simple protocol) to `url`; `client` carries the probes and
    /// the checkpoint.
    pub async fn connect(
        client: &'c Client,
        url: &str,
        tables: Arc<Vec<TableSchema>>,
        target: &Target,
    ) -> Result<AutocommitCopySink<'c>> {
        Ok(AutocommitCopySink {
            client,
            copier: SimpleCopyClient::connect(url).await?,
            probes: tables.iter().map(probe_sql).collect(),
            copies: tables
                .iter()
                .map(|t| {
                    format!(
                        "COPY {} ({}) FROM STDIN (FORMAT csv)",
                        quote_ident(&t.table),
                        t.copy_column_list()
                    )
                })
                .collect(),
            tables,
            describe: target.describe_path(LoadPath::CsvCopyAutocommit),
            open: None,
        })
    }
}

#[async_trait]
impl Sink for AutocommitCopySink<'_> {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn rows_commit_with_checkpoint(&self) -> bool {
        false
    }

    async fn begin_chunk(&mut self) -> Result<()> {
        self.abort().await
    }

    async fn probe(&self, table: usize, key: &[KeyValue], provenance: i64) -> Result<Presence> {
        probe(self.client, &self.probes[table], key, provenance).await
    }

    async fn begin_table(&mut self, table: usize) -> Result<()> {
        if let Some(error) = self.copier.start_copy(&self.copies[table]).await? {
            return Err(WorkerError::Internal(format!(
                "the target refused COPY into table {:?}: {error}",
                self.tables[table].table
            )));
        }
        self.open = Some((table, 0));
        Ok(())
    }

    async fn send(&mut self, rows: TableRows) -> Result<()> {
        let Payload::Copy(data) = rows.payload else {
            return Err(WorkerError::Internal(
                "rows encoded for another load path".into(),
            ));
        };
        let (_, sent) = self.open.as_mut().expect("a table is open");
        *sent += rows.rows;
        self.copier.send(&data).await
    }

    async fn end_table(&mut self) -> Result<TableEnd> {
        let (table, sent) = self.open.take().expect("a table is open");
        match self.copier.finish().await? {
            CopyResult::Copied(copied) if copied == sent => Ok(TableEnd::Written(copied)),
            CopyResult::Copied(copied) => Err(WorkerError::Internal(format!(
                "COPY into table {:?} stored {copied} rows, {sent} were sent",
                self.tables[table].table
            ))),
            CopyResult::Refused(error) if error.is_unique_violation() => {
                Ok(TableEnd::Conflict(error.to_string()))
            }
            CopyResult::Refused(error) => Err(WorkerError::Internal(format!(
                "COPY into table {:?} failed: {error}",
                self.tables[table].table
            ))),
        }
    }

    async fn abort(&mut self) -> Result<()> {
        if self.open.take().is_some() {
            self.copier.abort("ferry: chunk abandoned").await?;
        }
        Ok(())
    }

    async fn commit(&mut self, checkpoint: &Checkpoint<'_>) -> Result<bool> {
        write_checkpoint(self.client, checkpoint).await
    }
}
