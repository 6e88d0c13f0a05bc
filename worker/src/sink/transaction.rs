//! The transaction sink (PostgreSQL): a chunk is one transaction holding every table's rows (binary
//! COPY, or multi-row INSERT with text parameters as the last resort), the chunk's rejects and its
//! conditional checkpoint:
//!
//! ```text
//! BEGIN
//!   COPY <table> (<columns>, _ferry_chunk) FROM STDIN (FORMAT binary)   -- per table of the chunk
//!   INSERT INTO ferry.rejects … ON CONFLICT … DO UPDATE                 -- the chunk's bad lines
//!   UPDATE ferry.shards SET committed_lines = <to>, …
//!    WHERE … AND committed_lines = <from> AND generation = <g>         -- must touch 1 row
//! COMMIT                                                                -- else ROLLBACK
//! ```
//!
//! # Why this is exactly once
//! The rows of a chunk are visible if and only if its checkpoint moved past them, and the
//! checkpoint moves only forward from the value the loader read, within the shard generation it
//! read. A crash anywhere before COMMIT leaves nothing of the chunk; after COMMIT, the rows and the
//! checkpoint together. A second loader on the same chunk either finds the checkpoint moved
//! (0 rows updated: it rolls back) or has its COPY refused on a key the first one committed (the
//! driver finds the checkpoint moved and backs off). A refused key with the checkpoint unmoved is
//! in the table from elsewhere: the shard fails naming it (the server's message names the key).

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use ferry_shared::ident::quote_ident;
use ferry_shared::schema::TableSchema;
use futures_util::SinkExt;
use tokio_postgres::{Client, CopyInSink};

use super::sql::{is_unique_violation, probe, probe_sql, write_checkpoint};
use super::{Checkpoint, KeyValue, Payload, Presence, Sink, TableEnd, TableRows};
use crate::copy::{COPY_HEADER, COPY_TRAILER};
use crate::target::{LoadPath, Target};
use crate::{Result, WorkerError};

/// Binary COPY (or INSERT) in the chunk's transaction.
pub struct TransactionSink<'c> {
    client: &'c Client,
    tables: Arc<Vec<TableSchema>>,
    probes: Vec<String>,
    copies: Vec<String>,
    insert: bool,
    describe: String,
    in_transaction: bool,
    current: Option<usize>,
    copy: Option<Pin<Box<CopyInSink<Bytes>>>>,
    /// The first error while sending the current table's rows (reported by `end_table`).
    error: Option<tokio_postgres::Error>,
}

impl<'c> TransactionSink<'c> {
    /// A sink on `client` for `tables`; `path` is binary COPY or INSERT.
    pub fn new(
        client: &'c Client,
        tables: Arc<Vec<TableSchema>>,
        path: LoadPath,
        target: &Target,
    ) -> TransactionSink<'c> {
        TransactionSink {
            client,
            probes: tables.iter().map(probe_sql).collect(),
            copies: tables
                .iter()
                .map(|t| {
                    format!(
                        "COPY {} ({}) FROM STDIN (FORMAT binary)",
                        quote_ident(&t.table),
                        t.copy_column_list()
                    )
                })
                .collect(),
            tables,
            insert: path == LoadPath::InsertInTransaction,
            describe: target.describe_path(path),
            in_transaction: false,
            current: None,
            copy: None,
            error: None,
        }
    }

    async fn rollback(&mut self) -> Result<()> {
        self.copy = None;
        self.current = None;
        self.error = None;
        if std::mem::take(&mut self.in_transaction) {
            self.client
                .batch_execute("ROLLBACK")
                .await
                .map_err(WorkerError::db("cannot roll a chunk back"))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for TransactionSink<'_> {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn rows_commit_with_checkpoint(&self) -> bool {
        true
    }

    async fn begin_chunk(&mut self) -> Result<()> {
        self.rollback().await?;
        self.client
            .batch_execute("BEGIN")
            .await
            .map_err(WorkerError::db("cannot begin a chunk"))?;
        self.in_transaction = true;
        Ok(())
    }

    async fn probe(&self, table: usize, key: &[KeyValue], provenance: i64) -> Result<Presence> {
        probe(self.client, &self.probes[table], key, provenance).await
    }

    async fn begin_table(&mut self, table: usize) -> Result<()> {
        self.current = Some(table);
        self.error = None;
        if !self.insert {
            match self.client.copy_in::<_, Bytes>(&self.copies[table]).await {
                Ok(sink) => {
                    let mut sink = Box::pin(sink);
                    if let Err(e) = sink.send(Bytes::from_static(COPY_HEADER)).await {
                        self.error = Some(e);
                    }
                    self.copy = Some(sink);
                }
                Err(e) => self.error = Some(e),
            }
        }
        Ok(())
    }

    async fn send(&mut self, rows: TableRows) -> Result<()> {
        if self.error.is_some() {
            return Ok(());
        }
        let result = match (rows.payload, self.copy.as_mut()) {
            (Payload::Copy(data), Some(copy)) => copy.send(Bytes::from(data)).await,
            (Payload::Rows(values), None) => {
                let table = &self.tables[self.current.expect("a table is open")];
                insert_rows(self.client, table, values).await
            }
            _ => {
                return Err(WorkerError::Internal(
                    "rows encoded for another load path".into(),
                ))
            }
        };
        if let Err(e) = result {
            self.error = Some(e);
        }
        Ok(())
    }

    async fn end_table(&mut self) -> Result<TableEnd> {
        let table = self.current.take().expect("a table is open");
        let mut written = 0;
        if self.error.is_none() {
            if let Some(mut copy) = self.copy.take() {
                let finished = match copy.send(Bytes::from_static(COPY_TRAILER)).await {
                    Ok(()) => copy.as_mut().finish().await,
                    Err(e) => Err(e),
                };
                match finished {
                    Ok(rows) => written = rows,
                    Err(e) => self.error = Some(e),
                }
            }
        }
        self.copy = None;
        match self.error.take() {
            None => Ok(TableEnd::Written(written)),
            Some(e) if is_unique_violation(&e) => Ok(TableEnd::Conflict(crate::server_message(&e))),
            Some(e) => Err(WorkerError::Db {
                context: format!("loading rows into table {:?}", self.tables[table].table),
                source: e,
            }),
        }
    }

    async fn abort(&mut self) -> Result<()> {
        self.rollback().await
    }

    async fn commit(&mut self, checkpoint: &Checkpoint<'_>) -> Result<bool> {
        if !write_checkpoint(self.client, checkpoint).await? {
            self.rollback().await?;
            return Ok(false);
        }
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(WorkerError::db("cannot commit a chunk"))?;
        self.in_transaction = false;
        Ok(true)
    }
}

/// The last resort for a server without a usable COPY: multi-row INSERTs in the chunk's
/// transaction, every value bound as text and cast in SQL (servers that do not decode binary
/// NUMERIC, JSONB or array parameters still cast text).
async fn insert_rows(
    client: &Client,
    schema: &TableSchema,
    rows: Vec<Vec<Option<String>>>,
) -> Result<(), tokio_postgres::Error> {
    let types = crate::csv::row_types(schema);
    let per_statement = (60_000 / types.len()).clamp(1, 500);
    for batch in rows.chunks(per_statement) {
        let mut statement = format!(
            "INSERT INTO {} ({}) VALUES ",
            quote_ident(&schema.table),
            schema.copy_column_list()
        );
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            Vec::with_capacity(batch.len() * types.len());
        for (r, row) in batch.iter().enumerate() {
            statement.push_str(if r == 0 { "(" } else { ", (" });
            for (c, (value, pg_type)) in row.iter().zip(&types).enumerate() {
                if c > 0 {
                    statement.push_str(", ");
                }
                params.push(value);
                statement.push_str(&format!(
                    "CAST(${}::text AS {})",
                    params.len(),
                    pg_type.sql()
                ));
            }
            statement.push(')');
        }
        client.execute(statement.as_str(), &params).await?;
    }
    Ok(())
}
