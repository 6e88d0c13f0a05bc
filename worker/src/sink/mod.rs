//! The load engine: one chunk driver ([`driver`]) and the sinks it writes through, one per load
//! path, chosen once per run by [`open_sink`].
//!
//! # Layout
//! - [`encode`]: the rayon stage: a block of lines → Arrow batches (table mode or routed) →
//!   per-table rows in the sink's wire format, each row carrying its provenance.
//! - [`driver`]: loads a shard: the file's identity, the piece loop, the end-of-file checks, the
//!   presence proofs, lost races and key conflicts, the checkpoint and its failpoints, and the
//!   removal of a shard's rows when its file turns out bad.
//! - [`transaction`]: binary COPY (or multi-row INSERT) inside the chunk's transaction (PostgreSQL).
//! - [`autocommit`]: CSV COPY in autocommit over the simple protocol, each table's rows one atomic
//!   COPY (HeliosDB, whose COPY is fast only outside a transaction).
//! - [`parquet`]: Parquet files (a local folder or S3), one per table and chunk, published whole
//!   under names derived from the load and chunk; the ledger stays in a database.
//! - [`apply`]: incremental exports: each chunk's upserts and deletes, its rejects and its
//!   checkpoint in one transaction (both targets), constraint violations deferred to the end of
//!   the window; [`deferred`]: the window's end, its deferred records retried in rounds, the rest
//!   rejected; [`prepare_context`] makes a window's loading context encode change records
//!   (the change-record encoder is [`encode`]'s).
//! - [`literal`]: the one encoder of SQL literals (the applier's statements on HeliosDB, whose
//!   upserts with parameters are not transactional).
//! - [`sql`]: what both SQL sinks share: the [`Ledger`] on a tokio-postgres client, presence
//!   probes and the conditional checkpoint.
//!
//! The driver talks to one [`Ledger`] (the run's database; in unit tests the in-memory one of
//! `fake`) and to the sink's [`Unload`], the one ledger step that differs between sinks (removing
//! an ended load's rows or files); no sink wraps the ledger.
//!
//! A routed run (single-table design) writes several tables per chunk. One connection runs one
//! COPY at a time and a table's rows of a chunk must be one COPY (one atomic unit), so the driver
//! wraps the sink in a gathering writer that buffers each table's rows of the chunk and writes
//! them table by table (`load.chunk_lines` bounds that memory); a one-table run streams.
//!
//! # Exactly once
//! Every row carries its source identity twice: its DynamoDB key under a unique constraint
//! (checked at plan: a table without one is refused; on PostgreSQL a table the run creates gets
//! it after the load instead, which the transaction sink does not need, see
//! `ferry_coordinator::keys`), and its *provenance*
//! ([`ferry_shared::schema::PROVENANCE_COLUMN`]): the `load_id` of the shard generation that wrote
//! it and the chunk's index in the file. A `load_id` belongs to one shard, one generation and one
//! data file identity (ETag, or size and modification time), claimed in `ferry.loads` before the
//! first row is written, so rows with one provenance value are exactly the rows of one chunk of one
//! version of one file. The checkpoint (`committed_lines`, conditional on its old value and on the
//! shard's generation) moves once per chunk.
//!
//! - **In a transaction** ([`transaction`]): a chunk's rows, its rejects and the checkpoint commit
//!   together, so rows are visible if and only if the checkpoint moved past them.
//! - **In autocommit** ([`autocommit`]): each table's rows of a chunk are one COPY, which stores
//!   all of them or none. Then the rejects (idempotent) and the conditional checkpoint. Between the
//!   COPY and the checkpoint a crash leaves rows ahead of the checkpoint; so the first chunk a
//!   loader handles after taking a shard (the only one whose state it does not know) is *proven*
//!   before it is written: the key of each table's first row of the chunk is looked up.
//!   - absent: no COPY of this chunk into this table committed (it would have stored that row),
//!     so the rows are written now;
//!   - present with this chunk's provenance: a COPY of exactly this chunk's rows committed, and
//!     COPY is atomic, so the table's whole part of the chunk is stored: it is not written again;
//!   - present with any other provenance (or none): the key is in the table from elsewhere, an
//!     `--append` overlap or an export holding a key twice: the shard fails naming the key and
//!     line, and nothing is skipped.
//!
//!   A chunk is therefore counted as stored only when a row of it is found *with its own
//!   provenance*, which proves the whole COPY; never from keys alone.
//! - **Races** (a redelivered message, two workers on one shard): two COPYs of one chunk cannot
//!   both commit (the unique key), and the checkpoint moves once. A COPY refused for a unique key
//!   is resolved by the driver: the checkpoint moved, or the chunk's first row carries this chunk's
//!   provenance → another worker has it (back off, look again later); otherwise the key is from
//!   elsewhere → the shard fails naming it.
//! - **A file that changed**: the claimed identity pins every later read of the shard (S3
//!   `If-Match`; local size and modification time); a different file is refused with a message.
//!   A file that fails its manifest checks (MD5, item count, a corrupt gzip stream) has every row
//!   it wrote removed, by provenance, before the shard is marked failed: the generation moves on
//!   first (so no checkpoint of the old one can move), then the old load's rows and rejects are
//!   deleted, a step any later loader of the shard repeats until it is done.
//!
//! The driver's protocol is unit-tested against an in-memory target with both commit semantics
//! (`fake`), with crashes between every step, racing loaders, rows from elsewhere and a file that
//! changes; the real sinks run the same scenarios against PostgreSQL and HeliosDB in `tests/`.

pub mod apply;
#[cfg(test)]
mod apply_fake;
pub mod autocommit;
pub mod deferred;
pub mod driver;
pub mod encode;
#[cfg(test)]
mod fake;
pub mod literal;
pub mod parquet;
pub mod sql;
pub mod transaction;

use async_trait::async_trait;
use tokio_postgres::Client;

pub use driver::{
    clean_stale_loads, load_shard, prepare_context, unload_shard, LoadContext, ShardOutcome,
};
pub use encode::{BlockEncoder, EncodedBlock};

use crate::decode::Reject;
use crate::target::LoadPath;
use crate::Result;
pub use ferry_ledger::{FileEnd, Ledger};
use ferry_shared::config::RejectLines;
use ferry_shared::schema::TableSchema;

pub use crate::convert::{Key, KeyValue};

/// Describes a key for messages under `mode` (`load.reject_lines`): `(PK="USER#1", SK="ORDER#2")`
/// when `raw`; with `redacted` or `omitted`, the key columns and each value's length only,
/// `(PK=<6 bytes, redacted>, SK=<7 bytes, redacted>)` ([`crate::redact::key_value`]).
pub fn describe_key(table: &TableSchema, key: &[KeyValue], mode: RejectLines) -> String {
    let parts: Vec<String> = table
        .key_columns()
        .zip(key)
        .map(|(column, value)| match value {
            KeyValue::Text(text) => {
                format!("{}={}", column.name, crate::redact::key_value(text, mode))
            }
            KeyValue::Bytes(bytes) => format!("{}=<{} bytes>", column.name, bytes.len()),
        })
        .collect();
    format!("({})", parts.join(", "))
}

/// Rows encoded for one target's wire format.
#[derive(Debug)]
pub enum Payload {
    /// COPY data (binary tuples without header and trailer, or CSV lines).
    Copy(Vec<u8>),
    /// Text values per row (`None` is NULL), for INSERT with text parameters.
    Rows(Vec<Vec<Option<String>>>),
    /// An Arrow batch in the shape of the table's Parquet files (the provenance last).
    Batch(arrow_array::RecordBatch),
    /// Upserts and deletes of an incremental export ([`apply`]).
    Changes(apply::Changes),
}

/// One table's rows of a block.
#[derive(Debug)]
pub struct TableRows {
    /// The table (an index into the run's tables).
    pub table: usize,
    /// How many rows.
    pub rows: u64,
    /// The rows.
    pub payload: Payload,
    /// The key of the first row, for presence proofs.
    pub first_key: Option<(u64, Key)>,
    /// Every row's line number and key, when the sink needs them to name a conflicting key.
    pub keys: Vec<(u64, Key)>,
    /// The digest of the rows' items ([`crate::normal`]), when the encoder records digests.
    pub digest: Option<crate::normal::ItemDigest>,
}

/// What a probe found under a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// No row has the key.
    Absent,
    /// A row has the key and the provenance asked about.
    Ours,
    /// A row has the key with another provenance (`None`: a row without one).
    Other(Option<i64>),
}

/// How a table's rows of a chunk ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableEnd {
    /// Stored (autocommit) or staged in the chunk's transaction: this many rows.
    Written(u64),
    /// Refused because a row's unique key is already in the table; nothing of the table's rows
    /// was stored (and, in a transaction, nothing of the chunk). The server's words.
    Conflict(String),
}

/// A chunk's checkpoint: its rejects and the conditional move of `committed_lines`.
#[derive(Debug)]
pub struct Checkpoint<'a> {
    /// The run.
    pub run_id: &'a str,
    /// The shard.
    pub shard_id: &'a str,
    /// The shard's generation (the move is conditional on it).
    pub generation: i64,
    /// `committed_lines` before the chunk (the move is conditional on it).
    pub from: u64,
    /// `committed_lines` after it.
    pub to: u64,
    /// Rows loaded.
    pub rows: u64,
    /// Values spilled to the overflow column.
    pub spilled: u64,
    /// Items a routing filter skipped.
    pub filtered: u64,
    /// Lines rejected.
    pub rejects: &'a [Reject],
    /// Set on the last chunk: the shard is then done.
    pub file_end: Option<FileEnd>,
    /// The chunk's digests, per table it wrote ([`crate::normal`]).
    pub digests: Vec<ferry_ledger::ChunkDigest>,
}

impl Checkpoint<'_> {
    /// The chunk's rejects as the ledger keeps them (`load.reject_lines`): line, reason, line.
    pub fn kept_rejects(&self) -> Vec<(u64, String, Vec<u8>)> {
        let mode = crate::redact::mode();
        self.rejects
            .iter()
            .map(|r| {
                let reason = crate::redact::reason(&r.reason, r.kind.label(), mode);
                (
                    r.line_no,
                    reason.into_owned(),
                    crate::redact::line(&r.raw, mode).into_owned(),
                )
            })
            .collect()
    }

    /// The checkpoint in the ledger's form, with `kept` ([`Checkpoint::kept_rejects`]) as its
    /// rejects.
    pub fn advance<'k>(&'k self, kept: &'k [(u64, String, Vec<u8>)]) -> AdvanceWith<'k> {
        let rows = kept
            .iter()
            .map(|(line_no, reason, raw)| ferry_ledger::RejectRow {
                line_no: *line_no,
                reason,
                raw,
            })
            .collect();
        AdvanceWith {
            checkpoint: self,
            rows,
        }
    }
}

/// A [`Checkpoint`] and its kept rejects, lent out as the ledger's [`ferry_ledger::Advance`].
pub struct AdvanceWith<'k> {
    checkpoint: &'k Checkpoint<'k>,
    rows: Vec<ferry_ledger::RejectRow<'k>>,
}

impl AdvanceWith<'_> {
    /// The ledger's form.
    pub fn get(&self) -> ferry_ledger::Advance<'_> {
        let c = self.checkpoint;
        ferry_ledger::Advance {
            run_id: c.run_id,
            shard_id: c.shard_id,
            generation: c.generation,
            from: c.from,
            to: c.to,
            rows: c.rows,
            spilled: c.spilled,
            filtered: c.filtered,
            rejects: &self.rows,
            file_end: c.file_end.as_ref(),
            digests: &c.digests,
        }
    }
}

/// One load path: how a chunk's rows reach the target and how its checkpoint commits. The
/// [`driver`] calls, per chunk: [`Sink::begin_chunk`]; per table with rows, [`Sink::begin_table`],
/// [`Sink::send`]… and [`Sink::end_table`] (with [`Sink::probe`] first when the chunk's state is
/// not known); then [`Sink::commit`], or [`Sink::abort`] on any other ending.
#[async_trait]
pub trait Sink: Send + Sync {
    /// The load path in words, for logs and the report.
    fn describe(&self) -> String;
    /// Whether a chunk's rows commit together with its checkpoint (`true`), or each table's rows
    /// commit on their own before it (`false`, so rows can be ahead of the checkpoint).
    fn rows_commit_with_checkpoint(&self) -> bool;
    /// Starts a chunk.
    async fn begin_chunk(&mut self) -> Result<()>;
    /// Looks up `key` in `table`: absent, or present with the provenance `provenance`, or with
    /// another.
    async fn probe(&self, table: usize, key: &[KeyValue], provenance: i64) -> Result<Presence>;
    /// Starts a table's rows of the current chunk.
    async fn begin_table(&mut self, table: usize) -> Result<()>;
    /// Sends rows of the current table.
    async fn send(&mut self, rows: TableRows) -> Result<()>;
    /// Ends the current table's rows.
    async fn end_table(&mut self) -> Result<TableEnd>;
    /// Abandons the current chunk: nothing of it that is not committed stays.
    async fn abort(&mut self) -> Result<()>;
    /// The first of `keys` (in line order) that `table` holds with a provenance other than
    /// `provenance`: a key from elsewhere, to name in a conflict. The default looks the keys up
    /// one by one; a sink whose server answers one lookup slowly does better with one query.
    async fn find_conflict(
        &self,
        table: usize,
        keys: &[(u64, Key)],
        provenance: i64,
    ) -> Result<Option<(u64, Key, Presence)>> {
        probe_each(self, table, keys, provenance).await
    }
    /// Records the chunk's rejects and moves the checkpoint, committing the chunk; `false` (and
    /// nothing committed by this call) when the checkpoint had moved or the generation changed.
    async fn commit(&mut self, checkpoint: &Checkpoint<'_>) -> Result<bool>;
}

/// The one step of the ledger's protocol that differs between sinks: removing what an ended load
/// wrote, when its shard starts over (a `reset`, a file that failed its checks). Everything else
/// is the one [`Ledger`] (the run's database, or the in-memory ledger of the unit tests), so no
/// sink wraps the ledger to change one method.
/// - a database table ([`sql`]): `DELETE` by provenance;
/// - a Parquet dataset ([`parquet::ParquetFiles`]): the load's files, and their ledger records;
/// - a catch-up window ([`apply::KeepWindowRows`]): nothing (a window's changes are not undone;
///   its file is applied again from its start).
#[async_trait]
pub trait Unload: Send + Sync {
    /// Removes every row (or file) `load_id` wrote into `table`; returns how many.
    async fn remove_rows(&self, table: &TableSchema, load_id: i64) -> Result<u64>;
}

/// [`Sink::find_conflict`] by one probe per key, 32 in flight, checked in line order.
pub async fn probe_each<S: Sink + ?Sized>(
    sink: &S,
    table: usize,
    keys: &[(u64, Key)],
    provenance: i64,
) -> Result<Option<(u64, Key, Presence)>> {
    for batch in keys.chunks(32) {
        let lookups: Vec<_> = batch
            .iter()
            .map(|(_, key)| sink.probe(table, key, provenance))
            .collect();
        let found = futures_util::future::try_join_all(lookups).await?;
        for ((line, key), presence) in batch.iter().zip(found) {
            if let Presence::Other(_) = presence {
                return Ok(Some((*line, key.clone(), presence)));
            }
        }
    }
    Ok(None)
}

/// The tables a run with `schema` writes: its one table, or the routed tables.
pub fn run_tables(schema: &TableSchema) -> Vec<TableSchema> {
    match &schema.routing {
        None => vec![schema.clone()],
        Some(routing) => {
            let keys: Vec<String> = schema.key_columns().map(|c| c.name.clone()).collect();
            routing
                .tables(&keys)
                .into_iter()
                .map(|mut table| {
                    table.provenance = schema.provenance;
                    table
                })
                .collect()
        }
    }
}

/// Loads `shard_id` of `ctx`'s run through the sink of its load path, with `client` as the ledger
/// (and, for a SQL target, the rows' database).
pub async fn load_shard_on(
    client: &Client,
    ctx: &LoadContext,
    shard_id: &str,
) -> Result<ShardOutcome> {
    if ctx.encoder.applies_changes() {
        // A window applies only after the window before it (or the full run) is complete.
        ferry_ledger::window::check_next(client, &ctx.run.run_id).await?;
        let mut sink = apply::ApplySink::new(client, &ctx.tables, ctx.target.kind);
        return load_shard(client, &apply::KeepWindowRows, &mut sink, ctx, shard_id).await;
    }
    if ctx.load_path() == LoadPath::Parquet {
        let output = parquet::output_of(client, &ctx.run.run_id).await?;
        let files = parquet::ParquetFiles::new(client, output.clone());
        let mut sink = parquet::ParquetSink::new(
            client,
            output,
            shard_id,
            ctx.tables.clone(),
            ctx.run.schema.routing.is_none(),
        )?;
        return load_shard(client, &files, &mut sink, ctx, shard_id).await;
    }
    let mut sink = open_sink(client, ctx).await?;
    load_shard(client, client, sink.as_mut(), ctx, shard_id).await
}

/// Opens the sink of `ctx`'s run on `client` (the run's load path, recorded at plan). A Parquet
/// run's sink needs its shard: [`load_shard_on`] opens it.
pub async fn open_sink<'c>(client: &'c Client, ctx: &LoadContext) -> Result<Box<dyn Sink + 'c>> {
    Ok(match ctx.load_path() {
        LoadPath::Parquet => {
            return Err(crate::WorkerError::Internal(
                "a Parquet run's sink is opened per shard (load_shard_on)".into(),
            ))
        }
        LoadPath::BinaryCopyInTransaction | LoadPath::InsertInTransaction => {
            Box::new(transaction::TransactionSink::new(
                client,
                ctx.tables.clone(),
                ctx.load_path(),
                &ctx.target,
            ))
        }
        LoadPath::CsvCopyAutocommit => Box::new(
            autocommit::AutocommitCopySink::connect(
                client,
                &ctx.target_url,
                ctx.tables.clone(),
                &ctx.target,
            )
            .await?,
        ),
    })
}
