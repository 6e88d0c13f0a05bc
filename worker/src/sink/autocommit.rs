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
use ferry_shared::ident::{quote_ident, same_column_name};
use ferry_shared::schema::{PgType, TableSchema, PROVENANCE_COLUMN};
use tokio_postgres::Client;

use super::sql::{probe, probe_sql, write_checkpoint};
use super::{Checkpoint, Key, KeyValue, Payload, Presence, Sink, TableEnd, TableRows};
use crate::simple::{CopyResult, SimpleCopyClient};
use crate::target::{LoadPath, Target, TargetKind};
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
        let mut copies = Vec::with_capacity(tables.len());
        for table in tables.iter() {
            copies.push(copy_sql(client, table, target).await);
        }
        Ok(AutocommitCopySink {
            client,
            copier: SimpleCopyClient::connect(url).await?,
            probes: tables.iter().map(probe_sql).collect(),
            copies,
            tables,
            describe: target.describe_path(LoadPath::CsvCopyAutocommit),
            open: None,
        })
    }
}

/// The COPY statement of `table`: its columns listed, except on HeliosDB when a column name is
/// not ASCII and the table's columns are exactly the list, in order. HeliosDB 4.41 copies about
/// five times slower when a COPY's column list names a non-ASCII column (measured: 9,839 rows of
/// a boto3-typed export in 2.13 s with the list, 0.28 s with the same column renamed to ASCII and
/// 0.43 s without a list), and it reports such names in its catalog as their UTF-8 bytes read as
/// Latin-1 (`ü` as `Ã¼`), which [`same_column_name`] accepts. When the columns do not match (a
/// table the user altered), the list stays: slower, never wrong.
async fn copy_sql(client: &Client, table: &TableSchema, target: &Target) -> String {
    let listed = format!(
        "COPY {} ({}) FROM STDIN (FORMAT csv)",
        quote_ident(&table.table),
        table.copy_column_list()
    );
    let names = table.copy_column_names();
    if target.kind != TargetKind::HeliosDb || names.iter().all(|n| n.is_ascii()) {
        return listed;
    }
    let probe = format!("SELECT * FROM {} LIMIT 0", quote_ident(&table.table));
    let in_order = match client.prepare(&probe).await {
        Ok(statement) => {
            statement.columns().len() == names.len()
                && statement
                    .columns()
                    .iter()
                    .zip(&names)
                    .all(|(column, name)| same_column_name(name, column.name()))
        }
        Err(_) => false,
    };
    if in_order {
        format!("COPY {} FROM STDIN (FORMAT csv)", quote_ident(&table.table))
    } else {
        tracing::warn!(
            table = %table.table,
            "the table's columns are not the run's columns in order: copying with a column list, which heliosdb runs slowly for non-ascii column names"
        );
        listed
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

    /// One join instead of one lookup per key: HeliosDB looks a multi-column key up with a table
    /// scan, so the chunk's keys go into `ferry.key_probes` and one query joins them with the
    /// table (one scan), then they are removed.
    async fn find_conflict(
        &self,
        table: usize,
        keys: &[(u64, Key)],
        provenance: i64,
    ) -> Result<Option<(u64, Key, Presence)>> {
        let schema = &self.tables[table];
        let columns: Vec<_> = schema.key_columns().collect();
        let textual = columns.iter().all(|c| {
            matches!(
                c.pg_type,
                PgType::Text | PgType::Numeric | PgType::NumericScaled { .. }
            )
        });
        if keys.is_empty() || columns.len() > 2 || !textual {
            return super::probe_each(self, table, keys, provenance).await;
        }
        let probe_id = format!(
            "{}:{}:{}",
            std::process::id(),
            schema.table,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let db = |context: &'static str| WorkerError::db(context);
        for batch in keys.chunks(500) {
            let mut statement =
                String::from("INSERT INTO ferry.key_probes (probe_id, line_no, k1, k2) VALUES ");
            let lines: Vec<i64> = batch.iter().map(|(line, _)| *line as i64).collect();
            let texts: Vec<[Option<&str>; 2]> = batch
                .iter()
                .map(|(_, key)| {
                    let text = |i: usize| match key.get(i) {
                        Some(KeyValue::Text(t)) => Some(t.as_str()),
                        _ => None,
                    };
                    [text(0), text(1)]
                })
                .collect();
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
            for (i, (line, [k1, k2])) in lines.iter().zip(&texts).enumerate() {
                if i > 0 {
                    statement.push_str(", ");
                }
                let n = params.len();
                statement.push_str(&format!(
                    "(${}::text, ${}::int8, ${}::text, ${}::text)",
                    n + 1,
                    n + 2,
                    n + 3,
                    n + 4
                ));
                params.push(&probe_id);
                params.push(line);
                params.push(k1);
                params.push(k2);
            }
            self.client
                .execute(statement.as_str(), &params)
                .await
                .map_err(db("cannot stage keys to look up"))?;
        }
        let on: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let staged = format!("p.k{}", i + 1);
                let staged = match c.pg_type {
                    PgType::Text => staged,
                    _ => format!("CAST({staged} AS NUMERIC)"),
                };
                format!("t.{} = {staged}", quote_ident(&c.name))
            })
            .collect();
        let found = self
            .client
            .query(
                format!(
                    "SELECT p.line_no::int8, t.{prov}::int8 FROM ferry.key_probes p JOIN {} t ON {} \
                     WHERE p.probe_id = $1::text AND (t.{prov} IS NULL OR t.{prov} <> $2::int8) \
                     ORDER BY p.line_no LIMIT 1",
                    quote_ident(&schema.table),
                    on.join(" AND "),
                    prov = quote_ident(PROVENANCE_COLUMN)
                )
                .as_str(),
                &[&probe_id, &provenance],
            )
            .await
            .map_err(db("cannot look up the chunk's keys"))?;
        self.client
            .execute(
                "DELETE FROM ferry.key_probes WHERE probe_id = $1::text",
                &[&probe_id],
            )
            .await
            .map_err(db("cannot remove staged keys"))?;
        Ok(found.first().and_then(|row| {
            let line = row.get::<_, i64>(0) as u64;
            let other = row.get::<_, Option<i64>>(1);
            keys.iter()
                .find(|(l, _)| *l == line)
                .map(|(l, key)| (*l, key.clone(), Presence::Other(other)))
        }))
    }

    async fn commit(&mut self, checkpoint: &Checkpoint<'_>) -> Result<bool> {
        write_checkpoint(self.client, checkpoint).await
    }
}
