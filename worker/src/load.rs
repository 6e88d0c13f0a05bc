//! Loading one shard into PostgreSQL, exactly once.
//!
//! # Pipeline
//! A blocking thread streams the data file through [`crate::source`] and hands each block of lines
//! to rayon, which decodes it into an Arrow batch ([`crate::decode`]) and encodes COPY tuples
//! ([`crate::copy`]). The block's result travels back through a bounded channel of one-shot
//! receivers, so blocks decode in parallel, arrive in order, and at most `pipeline_depth` blocks are
//! in memory per shard, whatever the file's size.
//!
//! # Commit protocol (PostgreSQL)
//! Chunks are `chunk_lines` physical lines, numbered from the start of the file, so every retry
//! forms the same chunks. For each chunk:
//!
//! ```text
//! BEGIN
//!   COPY <table> (<columns>) FROM STDIN (FORMAT binary)      -- rows of lines (from, to]
//!   INSERT INTO ferry.rejects …                               -- bad lines of (from, to]
//!   UPDATE ferry.shards SET committed_lines = to, …
//!    WHERE run_id = $1 AND shard_id = $2 AND committed_lines = from   -- must touch 1 row
//! COMMIT
//! ```
//!
//! The rows and rejects of a chunk are visible if and only if the checkpoint moved past them, and
//! the checkpoint only moves forward from the value this worker read. So:
//! - a crash anywhere before COMMIT leaves nothing of the chunk; the resumed shard re-reads the file,
//!   skips `committed_lines` lines and forms the same chunk again;
//! - a crash after COMMIT leaves the chunk and its checkpoint; the resume skips it;
//! - two workers on one shard (a redelivered message): the second one's UPDATE finds the checkpoint
//!   moved and touches 0 rows, or its COPY hits the first one's rows (unique violation on the key
//!   columns, the source identity every row carries). Either way it rolls back and backs off
//!   ([`ShardOutcome::LostRace`]); that is not a reject.
//!
//! The last chunk also checks the whole file: its MD5 against the manifest and its item count
//! against `itemCount`. On a mismatch the last chunk rolls back and the shard is marked failed,
//! naming the file; earlier chunks stay committed (their lines parsed and loaded correctly), and
//! the run does not verify.
//!
//! A unique violation with the checkpoint unmoved means the export itself holds a key twice (or an
//! `--append` target already has it): the shard fails with the database's message naming the key.
//!
//! # Routed runs (single-table design)
//! A chunk whose items go to several tables is still one transaction: every table's rows (binary
//! COPY per table, or INSERT where the server's fast COPY is autocommit only), the rejects and the
//! checkpoint commit together or not at all (`load_chunk_routed`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use ferry_shared::failpoint;
use ferry_shared::ident::quote_ident;
use ferry_shared::ledger as sql;
use ferry_shared::store::ObjectStore;
use futures_util::SinkExt;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::copy::{encode_batch, COPY_HEADER, COPY_TRAILER};
use crate::csv::{batch_texts, encode_batch_csv};
use crate::decode::{Decoder, Reject};
use crate::ledger::{self, RunRecord};
use crate::route::Router;
use crate::simple::{CopyResult, SimpleCopyClient};
use crate::source::{read_source, FramedBlock, SourceSpec, SourceSummary};
use crate::target::{LoadPath, Target};
use crate::{Result, WorkerError};
use ferry_shared::schema::PgType;

pub use crate::progress::Progress;

/// What a worker needs to load shards of one run.
#[derive(Clone, Debug)]
pub struct LoadContext {
    /// The run.
    pub run: Arc<RunRecord>,
    /// The decoder for the run's schema.
    pub decoder: Arc<Decoder>,
    /// Where the data files are.
    pub store: Arc<dyn ObjectStore>,
    /// Lines per decode block.
    pub block_lines: usize,
    /// Blocks in flight per shard.
    pub pipeline_depth: usize,
    /// Progress counters.
    pub progress: Arc<Progress>,
    /// Set to stop after the current chunk.
    pub stop: Arc<AtomicBool>,
    /// The target and its load path.
    pub target: Arc<Target>,
    /// The target's URL (the CSV path opens its own simple-protocol connection).
    pub target_url: String,
    /// The routing of a single-table-design run (items go to several tables).
    pub router: Option<Arc<Router>>,
}

impl LoadContext {
    /// A context for `run` on `target`.
    pub fn new(
        run: RunRecord,
        store: Arc<dyn ObjectStore>,
        settings: &ferry_shared::config::LoadSettings,
        target: Target,
        target_url: &str,
    ) -> Result<LoadContext> {
        let decoder = Arc::new(Decoder::new(Arc::new(run.schema.clone())));
        let router = match &run.schema.routing {
            Some(routing) => {
                let keys: Vec<String> = run.schema.key_columns().map(|c| c.name.clone()).collect();
                let router = Router::new(
                    routing,
                    &keys,
                    run.export_time.as_deref(),
                    run.schema.numeric_limit,
                )
                    .map_err(WorkerError::Ledger)?;
                Some(Arc::new(router))
            }
            None => None,
        };
        let detected = target.load_path;
        let target = target.for_schema(&run.schema);
        if target.load_path != detected {
            tracing::info!(load_path = %target.describe(), "routed run: each chunk's tables in one transaction");
        }
        Ok(LoadContext {
            router,
            target: Arc::new(target),
            target_url: target_url.to_string(),
            run: Arc::new(run),
            decoder,
            store,
            block_lines: settings.block_lines.get(),
            pipeline_depth: settings.pipeline_depth.get(),
            progress: Arc::new(Progress::default()),
            stop: Arc::new(AtomicBool::new(false)),
        })
    }
}

/// How a shard load ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardOutcome {
    /// Every line committed and reconciled.
    Done,
    /// The ledger already had it done.
    AlreadyDone,
    /// Another worker moved the checkpoint first; this one backed off.
    LostRace,
    /// The data file is bad; the shard is marked failed with this reason.
    Failed(String),
    /// Stopped on request between chunks.
    Stopped,
}

/// One encoded block.
struct EncodedBlock {
    copy_data: Vec<u8>,
    rows: u64,
    rejects: Vec<Reject>,
    spilled: u64,
    /// Keys of the block's first and last rows (CSV path only).
    first_key: Option<Vec<KeyValue>>,
    last_key: Option<Vec<KeyValue>>,
    /// Rows as text values (INSERT path only).
    text_rows: Vec<Vec<Option<String>>>,
    /// A routed block: per target table, its COPY data or text rows.
    parts: Vec<TablePart>,
    /// Items skipped by a routing filter.
    filtered: u64,
}

/// One table's share of a routed block.
#[derive(Default)]
struct TablePart {
    copy_data: Vec<u8>,
    text_rows: Vec<Vec<Option<String>>>,
}

enum Piece {
    Block {
        result: oneshot::Receiver<Result<EncodedBlock>>,
        last_line: u64,
        chunk_end: bool,
    },
    End(SourceSummary),
    Error(WorkerError),
}

enum ChunkEnd {
    Committed {
        to: u64,
        finished: bool,
    },
    LostRace,
    Failed(String),
    /// The file does not match its manifest entry (found at the last chunk).
    Mismatch {
        reason: String,
        md5_ok: Option<bool>,
        items: u64,
    },
}

fn encode_routed(router: &Router, framed: FramedBlock, path: LoadPath) -> Result<EncodedBlock> {
    let routed = router.route(&framed.block);
    let mut parts = Vec::with_capacity(routed.batches.len());
    for (table, batch) in router.tables().iter().zip(&routed.batches) {
        let mut part = TablePart::default();
        match path {
            LoadPath::InsertInTransaction => part.text_rows = batch_texts(table, batch),
            _ => encode_batch(table, batch, &mut part.copy_data)?,
        }
        parts.push(part);
    }
    Ok(EncodedBlock {
        copy_data: Vec::new(),
        rows: routed.rows,
        rejects: routed.rejects,
        spilled: 0,
        first_key: None,
        last_key: None,
        text_rows: Vec::new(),
        parts,
        filtered: routed.filtered,
    })
}

fn encode_block(decoder: &Decoder, framed: FramedBlock, path: LoadPath) -> Result<EncodedBlock> {
    let decoded = decoder.decode(&framed.block);
    let mut copy_data = Vec::with_capacity(framed.block.data.len() + framed.block.lines.len() * 64);
    let batch = &decoded.batch;
    let (mut first_key, mut last_key) = (None, None);
    let mut text_rows = Vec::new();
    match path {
        LoadPath::BinaryCopyInTransaction => encode_batch(decoder.schema(), batch, &mut copy_data)?,
        LoadPath::InsertInTransaction => text_rows = batch_texts(decoder.schema(), batch),
        LoadPath::CsvCopyAutocommit => {
            encode_batch_csv(decoder.schema(), batch, &mut copy_data);
            if batch.num_rows() > 0 {
                first_key = Some(key_of_row(decoder.schema(), batch, 0));
                last_key = Some(key_of_row(decoder.schema(), batch, batch.num_rows() - 1));
            }
        }
    }
    Ok(EncodedBlock {
        copy_data,
        rows: batch.num_rows() as u64,
        rejects: decoded.rejects,
        spilled: decoded.spilled,
        first_key,
        last_key,
        text_rows,
        parts: Vec::new(),
        filtered: 0,
    })
}

/// The last resort for a server without a usable COPY: multi-row INSERTs in the chunk's
/// transaction, every value bound as text and cast in SQL (servers that do not decode binary
/// NUMERIC, JSONB or array parameters still cast text).
async fn insert_rows(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &ferry_shared::schema::TableSchema,
    rows: Vec<Vec<Option<String>>>,
) -> Result<(), tokio_postgres::Error> {
    let types = crate::csv::batch_types(schema);
    let per_statement = (60_000 / types.len()).clamp(1, 500);
    for batch in rows.chunks(per_statement) {
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES ",
            quote_ident(&schema.table),
            schema.copy_column_list()
        );
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            Vec::with_capacity(batch.len() * types.len());
        for (r, row) in batch.iter().enumerate() {
            sql.push_str(if r == 0 { "(" } else { ", (" });
            for (c, (value, pg_type)) in row.iter().zip(&types).enumerate() {
                if c > 0 {
                    sql.push_str(", ");
                }
                params.push(value);
                sql.push_str(&format!(
                    "CAST(${}::text AS {})",
                    params.len(),
                    pg_type.sql()
                ));
            }
            sql.push(')');
        }
        tx.execute(sql.as_str(), &params).await?;
    }
    Ok(())
}

/// A key column's value, as bound in the presence query.
#[derive(Clone, Debug, PartialEq, Eq)]
enum KeyValue {
    Text(String),
    Bytes(Vec<u8>),
}

fn key_of_row(
    schema: &ferry_shared::schema::TableSchema,
    batch: &arrow_array::RecordBatch,
    row: usize,
) -> Vec<KeyValue> {
    use arrow_array::cast::AsArray;
    schema
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_key)
        .map(|(i, c)| match c.pg_type {
            PgType::Bytea => {
                KeyValue::Bytes(batch.column(i).as_binary::<i32>().value(row).to_vec())
            }
            _ => KeyValue::Text(batch.column(i).as_string::<i32>().value(row).to_string()),
        })
        .collect()
}

/// `SELECT 1 FROM t WHERE k1 = $1 AND …`: binds text (cast in SQL, as HeliosDB decodes binary
/// NUMERIC parameters badly) or bytea.
fn presence_sql(schema: &ferry_shared::schema::TableSchema) -> String {
    let conditions: Vec<String> = schema
        .key_columns()
        .enumerate()
        .map(|(i, c)| {
            let parameter = match c.pg_type {
                PgType::Numeric => format!("CAST(${}::text AS NUMERIC)", i + 1),
                PgType::Bytea => format!("${}::bytea", i + 1),
                _ => format!("${}::text", i + 1),
            };
            format!("{} = {parameter}", quote_ident(&c.name))
        })
        .collect();
    format!(
        "SELECT 1::int8 FROM {} WHERE {} LIMIT 1",
        quote_ident(&schema.table),
        conditions.join(" AND ")
    )
}

async fn key_present(client: &Client, sql: &str, key: &[KeyValue]) -> Result<bool> {
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = key
        .iter()
        .map(|k| match k {
            KeyValue::Text(t) => t as &(dyn tokio_postgres::types::ToSql + Sync),
            KeyValue::Bytes(b) => b as &(dyn tokio_postgres::types::ToSql + Sync),
        })
        .collect();
    let rows = client
        .query(sql, &params)
        .await
        .map_err(WorkerError::db("cannot check whether a chunk is loaded"))?;
    Ok(!rows.is_empty())
}

/// Loads `shard_id` of the context's run from its checkpoint to the end of its file.
pub async fn load_shard(
    client: &mut Client,
    ctx: &LoadContext,
    shard_id: &str,
) -> Result<ShardOutcome> {
    let run_id = ctx.run.run_id.as_str();
    let shard = ledger::get_shard(client, run_id, shard_id)
        .await?
        .ok_or_else(|| WorkerError::Ledger(format!("shard {shard_id} is not in run {run_id}")))?;
    if shard.state == sql::shard_state::DONE {
        return Ok(ShardOutcome::AlreadyDone);
    }
    let location = ctx.store.location(&shard.data_key);
    let mut from = shard.committed_lines;
    tracing::info!(shard = shard_id, file = %location, committed_lines = from, "loading shard");

    let stream = ctx.store.open(&shard.data_key).await?;
    let (sender, mut pieces) = mpsc::channel::<Piece>(ctx.pipeline_depth);
    let spec = SourceSpec {
        location: location.clone(),
        skip_lines: from,
        chunk_lines: ctx.run.chunk_lines,
        block_lines: ctx.block_lines,
        block_bytes: 8 * 1024 * 1024,
    };
    let decoder = ctx.decoder.clone();
    let router = ctx.router.clone();
    let path = ctx.target.load_path;
    let bytes_progress = ctx.progress.bytes.clone();
    let raw = crate::source::blocking_reader(stream);
    let reader = tokio::task::spawn_blocking(move || {
        let result = read_source(raw, &spec, Some(bytes_progress), |framed| {
            let (done, result) = oneshot::channel();
            let (last_line, chunk_end) = (framed.last_line, framed.chunk_end);
            let decoder = decoder.clone();
            let router = router.clone();
            rayon::spawn(move || {
                let encoded = match &router {
                    Some(router) => encode_routed(router, framed, path),
                    None => encode_block(&decoder, framed, path),
                };
                let _ = done.send(encoded);
            });
            sender
                .blocking_send(Piece::Block {
                    result,
                    last_line,
                    chunk_end,
                })
                .map_err(|_| WorkerError::Internal("shard loader stopped".into()))
        });
        let _ = sender.blocking_send(match result {
            Ok(summary) => Piece::End(summary),
            Err(e) => Piece::Error(e),
        });
    });

    let format = match ctx.target.load_path {
        LoadPath::BinaryCopyInTransaction | LoadPath::InsertInTransaction => "binary",
        LoadPath::CsvCopyAutocommit => "csv",
    };
    let copy_sql = format!(
        "COPY {} ({}) FROM STDIN (FORMAT {format})",
        quote_ident(&ctx.run.target_table),
        ctx.run.schema.copy_column_list()
    );
    let mut csv_path = match ctx.target.load_path {
        LoadPath::BinaryCopyInTransaction | LoadPath::InsertInTransaction => None,
        LoadPath::CsvCopyAutocommit => Some((
            SimpleCopyClient::connect(&ctx.target_url).await?,
            presence_sql(&ctx.run.schema),
        )),
    };
    let outcome = loop {
        if ctx.stop.load(Ordering::Relaxed) {
            break ShardOutcome::Stopped;
        }
        let Some(first) = pieces.recv().await else {
            break ShardOutcome::Failed("the file reader stopped unexpectedly".into());
        };
        let first = match first {
            Piece::Error(e) => break fail_on_data_error(client, ctx, shard_id, e).await?,
            piece => piece,
        };
        let end = match csv_path.as_mut() {
            None if ctx.router.is_some() => {
                load_chunk_routed(client, ctx, &shard, from, first, &mut pieces).await?
            }
            None => load_chunk(client, ctx, &shard, &copy_sql, from, first, &mut pieces).await?,
            Some((copier, presence)) => {
                load_chunk_autocommit(
                    client,
                    copier,
                    presence,
                    ctx,
                    &shard,
                    &copy_sql,
                    from,
                    first,
                    &mut pieces,
                )
                .await?
            }
        };
        match end {
            ChunkEnd::Committed { to, finished } => {
                from = to;
                if finished {
                    break ShardOutcome::Done;
                }
            }
            ChunkEnd::LostRace => {
                tracing::info!(
                    shard = shard_id,
                    from,
                    "another worker moved the checkpoint: backing off"
                );
                break ShardOutcome::LostRace;
            }
            ChunkEnd::Failed(reason) | ChunkEnd::Mismatch { reason, .. } => {
                break ShardOutcome::Failed(reason)
            }
        }
    };
    drop(pieces);
    reader
        .await
        .map_err(|e| WorkerError::Internal(format!("file reader task: {e}")))?;
    if let ShardOutcome::Failed(reason) = &outcome {
        tracing::error!(shard = shard_id, file = %location, reason = %reason, "shard failed");
    }
    Ok(outcome)
}

/// A data error from the reader fails the shard; anything else (IO) is returned for a retry.
async fn fail_on_data_error(
    client: &Client,
    ctx: &LoadContext,
    shard_id: &str,
    error: WorkerError,
) -> Result<ShardOutcome> {
    match error {
        WorkerError::CorruptFile { .. } => {
            let reason = error.to_string();
            ledger::fail_shard(client, &ctx.run.run_id, shard_id, &reason, None, None).await?;
            Ok(ShardOutcome::Failed(reason))
        }
        other => Err(other),
    }
}

/// A reader error inside a chunk: the shard fails for a data error, anything else is returned.
async fn data_error_ends_chunk(
    client: &Client,
    ctx: &LoadContext,
    shard_id: &str,
    error: WorkerError,
) -> Result<ChunkEnd> {
    match fail_on_data_error(client, ctx, shard_id, error).await? {
        ShardOutcome::Failed(reason) => Ok(ChunkEnd::Failed(reason)),
        _ => unreachable!("fail_on_data_error returns Failed or an error"),
    }
}

/// One chunk, one transaction. `first` is the chunk's first piece (a block, or the end of the file).
async fn load_chunk(
    client: &mut Client,
    ctx: &LoadContext,
    shard: &ledger::ShardRecord,
    copy_sql: &str,
    from: u64,
    first: Piece,
    pieces: &mut mpsc::Receiver<Piece>,
) -> Result<ChunkEnd> {
    let shard_id = shard.shard_id.as_str();
    let tx = client
        .transaction()
        .await
        .map_err(WorkerError::db("cannot begin a chunk"))?;
    let mut rows = 0u64;
    let mut spilled = 0u64;
    let mut rejects: Vec<Reject> = Vec::new();
    let mut to = from;
    let mut summary: Option<SourceSummary> = None;
    let mut data_error: Option<WorkerError> = None;
    let mut next = Some(first);
    if matches!(next, Some(Piece::Block { .. })) {
        // Boxed so that it can be dropped (aborting the COPY) before the transaction rolls back.
        // The INSERT path (the last resort) has no COPY.
        let mut sink = match ctx.target.load_path {
            LoadPath::InsertInTransaction => None,
            _ => {
                let sink = tx
                    .copy_in::<_, Bytes>(copy_sql)
                    .await
                    .map_err(WorkerError::db("cannot start COPY"))?;
                let mut sink = Box::pin(sink);
                sink.send(Bytes::from_static(COPY_HEADER))
                    .await
                    .map_err(WorkerError::db("COPY failed"))?;
                Some(sink)
            }
        };
        let mut insert_error = None;
        loop {
            let piece = next_piece(&mut next, pieces).await?;
            match piece {
                Piece::Block {
                    result,
                    last_line,
                    chunk_end,
                } => {
                    let block = decoded(result).await?;
                    rows += block.rows;
                    spilled += block.spilled;
                    rejects.extend(block.rejects);
                    to = last_line;
                    match sink.as_mut() {
                        Some(sink) if !block.copy_data.is_empty() => {
                            sink.send(Bytes::from(block.copy_data))
                                .await
                                .map_err(WorkerError::db("COPY failed"))?;
                        }
                        Some(_) => {}
                        None => {
                            if let Err(e) = insert_rows(&tx, &ctx.run.schema, block.text_rows).await
                            {
                                insert_error = Some(e);
                                break;
                            }
                        }
                    }
                    if chunk_end {
                        break;
                    }
                }
                Piece::End(end) => {
                    summary = Some(end);
                    break;
                }
                Piece::Error(e) => {
                    data_error = Some(e);
                    break;
                }
            }
        }
        if let Some(error) = data_error {
            // Abort the COPY (CopyFail), then roll the transaction back.
            drop(sink);
            drop(tx);
            return data_error_ends_chunk(client, ctx, shard_id, error).await;
        }
        let finished = match sink.as_mut() {
            Some(sink) => {
                sink.send(Bytes::from_static(COPY_TRAILER))
                    .await
                    .map_err(WorkerError::db("COPY failed"))?;
                sink.as_mut().finish().await.map(|_| ())
            }
            None => insert_error.map_or(Ok(()), Err),
        };
        if let Err(e) = finished {
            if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                drop(tx);
                return unique_violation(client, ctx, shard, from, to, e).await;
            }
            return Err(WorkerError::Db {
                context: format!("COPY of lines {}..={to} of shard {shard_id}", from + 1),
                source: e,
            });
        }
    } else if let Some(Piece::End(end)) = next.take() {
        summary = Some(end);
    }
    failpoint::hit("after_copy")?;

    let tally = ChunkTally {
        from,
        to,
        rows,
        spilled,
        filtered: 0,
        rejects,
        summary,
    };
    let end = commit_chunk(Checkpoint::InTransaction(tx), ctx, shard, tally).await?;
    settle(client, ctx, &shard.shard_id, end).await
}

/// One chunk of a routed run (single-table design), one transaction for every table it touches:
///
/// ```text
/// BEGIN
///   COPY users  (…) FROM STDIN (FORMAT binary)     -- or INSERT, on HeliosDB
///   COPY orders (…) FROM STDIN (FORMAT binary)     -- each table the chunk's items routed to
///   INSERT INTO ferry.rejects …
///   UPDATE ferry.shards SET committed_lines = to, … WHERE … AND committed_lines = from
/// COMMIT
/// ```
///
/// So the chunk commits exactly once across all its tables (design.md §3): its rows in every
/// table become visible together, and only if the checkpoint moved. One connection runs one COPY
/// at a time, so each table's rows of the chunk are gathered first (a chunk's encoded rows are in
/// memory once; `load.chunk_lines` bounds them).
async fn load_chunk_routed(
    client: &mut Client,
    ctx: &LoadContext,
    shard: &ledger::ShardRecord,
    from: u64,
    first: Piece,
    pieces: &mut mpsc::Receiver<Piece>,
) -> Result<ChunkEnd> {
    let router = ctx.router.as_ref().expect("a routed run");
    let tables = router.tables();
    let mut gathered: Vec<TablePart> = tables.iter().map(|_| TablePart::default()).collect();
    let (mut rows, mut filtered, mut to) = (0u64, 0u64, from);
    let mut rejects: Vec<Reject> = Vec::new();
    let mut summary = None;
    let mut next = Some(first);
    loop {
        match next_piece(&mut next, pieces).await? {
            Piece::Block {
                result,
                last_line,
                chunk_end,
            } => {
                let block = decoded(result).await?;
                rows += block.rows;
                filtered += block.filtered;
                rejects.extend(block.rejects);
                for (into, part) in gathered.iter_mut().zip(block.parts) {
                    into.copy_data.extend_from_slice(&part.copy_data);
                    into.text_rows.extend(part.text_rows);
                }
                to = last_line;
                if chunk_end {
                    break;
                }
            }
            Piece::End(end) => {
                summary = Some(end);
                break;
            }
            Piece::Error(error) => {
                return data_error_ends_chunk(client, ctx, &shard.shard_id, error).await;
            }
        }
    }
    let tx = client
        .transaction()
        .await
        .map_err(WorkerError::db("cannot begin a chunk"))?;
    for (table, part) in tables.iter().zip(gathered) {
        let result = if ctx.target.load_path == LoadPath::InsertInTransaction {
            if part.text_rows.is_empty() {
                continue;
            }
            insert_rows(&tx, table, part.text_rows).await
        } else {
            if part.copy_data.is_empty() {
                continue;
            }
            let copy_sql = format!(
                "COPY {} ({}) FROM STDIN (FORMAT binary)",
                quote_ident(&table.table),
                table.copy_column_list()
            );
            copy_all(&tx, &copy_sql, part.copy_data).await
        };
        if let Err(e) = result {
            if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                drop(tx);
                return unique_violation(client, ctx, shard, from, to, e).await;
            }
            return Err(WorkerError::Db {
                context: format!(
                    "loading lines {}..={to} of shard {} into table {:?}",
                    from + 1,
                    shard.shard_id,
                    table.table
                ),
                source: e,
            });
        }
    }
    failpoint::hit("after_copy")?;
    let tally = ChunkTally {
        from,
        to,
        rows,
        spilled: 0,
        filtered,
        rejects,
        summary,
    };
    let end = commit_chunk(Checkpoint::InTransaction(tx), ctx, shard, tally).await?;
    settle(client, ctx, &shard.shard_id, end).await
}

/// One whole binary COPY: header, `data`, trailer.
async fn copy_all(
    tx: &tokio_postgres::Transaction<'_>,
    copy_sql: &str,
    data: Vec<u8>,
) -> Result<(), tokio_postgres::Error> {
    let sink = tx.copy_in::<_, Bytes>(copy_sql).await?;
    let mut sink = Box::pin(sink);
    sink.send(Bytes::from_static(COPY_HEADER)).await?;
    sink.send(Bytes::from(data)).await?;
    sink.send(Bytes::from_static(COPY_TRAILER)).await?;
    sink.as_mut().finish().await.map(|_| ())
}

/// One chunk on the autocommit path (HeliosDB): COPY commits on its own, then the chunk's rejects
/// are recorded (idempotently) and the conditional checkpoint update moves the checkpoint, each
/// statement in autocommit: an open transaction anywhere would push HeliosDB's COPYs onto its slow
/// path.
///
/// # Why this is exactly once
/// A COPY in autocommit is atomic: all of a chunk's rows are stored, or none. Before copying, the
/// chunk's first row is looked up by its key (the source identity under the primary key):
/// - absent: the chunk was never stored, so it is copied now. If another worker stores it at the
///   same moment, one COPY fails on the primary key and that worker backs off;
/// - present: an earlier attempt stored the chunk and died before its checkpoint, so the COPY is
///   skipped (the lines are still decoded, for the rejects and counts) and, after checking that
///   the chunk's last row is present too, only the checkpoint moves.
///
/// The checkpoint update is conditional (`committed_lines = from`) as on PostgreSQL, so it moves
/// once. A crash between COPY and checkpoint therefore costs one key lookup on resume, never a
/// duplicate; a crash before COPY costs nothing. The last chunk checks the file's MD5 and item
/// count before `CopyDone`, so a mismatching file never stores its last chunk. The argument needs
/// the keys of an export to be unique, which DynamoDB guarantees; with `--append`, rows already in
/// the table under an export's keys make the COPY fail (reported), except in the degenerate case
/// where both the first and last keys of a chunk were there before the run.
#[allow(clippy::too_many_arguments)]
async fn load_chunk_autocommit(
    client: &mut Client,
    copier: &mut SimpleCopyClient,
    presence: &str,
    ctx: &LoadContext,
    shard: &ledger::ShardRecord,
    copy_sql: &str,
    from: u64,
    first: Piece,
    pieces: &mut mpsc::Receiver<Piece>,
) -> Result<ChunkEnd> {
    #[derive(PartialEq)]
    enum Mode {
        Undecided,
        Copying,
        AlreadyStored,
    }
    let shard_id = shard.shard_id.as_str();
    let mut mode = Mode::Undecided;
    let (mut rows, mut spilled, mut to) = (0u64, 0u64, from);
    let mut rejects: Vec<Reject> = Vec::new();
    let mut summary = None;
    let mut last_key = None;
    let mut next = Some(first);
    loop {
        let piece = next_piece(&mut next, pieces).await?;
        match piece {
            Piece::Block {
                result,
                last_line,
                chunk_end,
            } => {
                let block = decoded(result).await?;
                if mode == Mode::Undecided {
                    if let Some(key) = &block.first_key {
                        if key_present(client, presence, key).await? {
                            mode = Mode::AlreadyStored;
                        } else {
                            if let Some(error) = copier.start_copy(copy_sql).await? {
                                return Err(WorkerError::Internal(format!(
                                    "the target refused COPY: {error}"
                                )));
                            }
                            mode = Mode::Copying;
                        }
                    }
                }
                if mode == Mode::Copying && !block.copy_data.is_empty() {
                    copier.send(&block.copy_data).await?;
                }
                if block.last_key.is_some() {
                    last_key = block.last_key;
                }
                rows += block.rows;
                spilled += block.spilled;
                rejects.extend(block.rejects);
                to = last_line;
                if chunk_end {
                    break;
                }
            }
            Piece::End(end) => {
                summary = Some(end);
                break;
            }
            Piece::Error(error) => {
                if mode == Mode::Copying {
                    copier.abort("ferry: the data file is unusable").await?;
                }
                return data_error_ends_chunk(client, ctx, shard_id, error).await;
            }
        }
    }
    if let Some(end) = &summary {
        if let Err((reason, md5_ok)) = reconcile(shard, end, &ctx.store.location(&shard.data_key)) {
            if mode == Mode::Copying {
                copier
                    .abort("ferry: the data file does not match its manifest")
                    .await?;
            }
            return settle(
                client,
                ctx,
                shard_id,
                ChunkEnd::Mismatch {
                    reason,
                    md5_ok,
                    items: end.items,
                },
            )
            .await;
        }
    }
    match mode {
        Mode::Copying => match copier.finish().await? {
            CopyResult::Copied(copied) if copied == rows => {}
            CopyResult::Copied(copied) => {
                return Err(WorkerError::Internal(format!(
                    "COPY stored {copied} rows, {rows} were sent"
                )));
            }
            CopyResult::Refused(error) if error.is_unique_violation() => {
                let now = ledger::get_shard(client, &ctx.run.run_id, shard_id).await?;
                if now
                    .is_some_and(|s| s.committed_lines != from || s.state == sql::shard_state::DONE)
                {
                    return Ok(ChunkEnd::LostRace);
                }
                // Another worker may have stored the chunk and not yet moved the checkpoint.
                if let Some(key) = &last_key {
                    if key_present(client, presence, key).await? {
                        tracing::info!(
                            shard = shard_id,
                            from,
                            "chunk stored by another worker: moving its checkpoint"
                        );
                    } else {
                        let reason = format!(
                            "data file {}: lines {}..={to} hold a key that is already in table {:?}: {error}",
                            ctx.store.location(&shard.data_key),
                            from + 1,
                            ctx.run.target_table
                        );
                        ledger::fail_shard(client, &ctx.run.run_id, shard_id, &reason, None, None)
                            .await?;
                        return Ok(ChunkEnd::Failed(reason));
                    }
                }
            }
            CopyResult::Refused(error) => {
                return Err(WorkerError::Internal(format!(
                    "COPY of lines {}..={to} of shard {shard_id} failed: {error}",
                    from + 1
                )))
            }
        },
        Mode::AlreadyStored => {
            let complete = match &last_key {
                Some(key) => key_present(client, presence, key).await?,
                None => true,
            };
            if !complete {
                let reason = format!(
                    "data file {}: the first row of lines {}..={to} is in table {:?} but its last row is not: \
                     the table holds rows under this export's keys that this run did not load",
                    ctx.store.location(&shard.data_key),
                    from + 1,
                    ctx.run.target_table
                );
                ledger::fail_shard(client, &ctx.run.run_id, shard_id, &reason, None, None).await?;
                return Ok(ChunkEnd::Failed(reason));
            }
            tracing::info!(
                shard = shard_id,
                from,
                to,
                "chunk already stored by an earlier attempt: moving its checkpoint"
            );
        }
        Mode::Undecided => {}
    }
    failpoint::hit("after_copy")?;
    let tally = ChunkTally {
        from,
        to,
        rows,
        spilled,
        filtered: 0,
        rejects,
        summary,
    };
    let end = commit_chunk(Checkpoint::Autocommit(client), ctx, shard, tally).await?;
    settle(client, ctx, shard_id, end).await
}

/// The chunk's next piece: the one already in hand, else the next from the file reader.
async fn next_piece(next: &mut Option<Piece>, pieces: &mut mpsc::Receiver<Piece>) -> Result<Piece> {
    match next.take() {
        Some(piece) => Ok(piece),
        None => pieces
            .recv()
            .await
            .ok_or_else(|| WorkerError::Internal("file reader stopped".into())),
    }
}

/// Waits for a block's decoding, then passes the `after_read` failpoint.
async fn decoded(result: oneshot::Receiver<Result<EncodedBlock>>) -> Result<EncodedBlock> {
    let block = result
        .await
        .map_err(|_| WorkerError::Internal("decoder task died".into()))??;
    failpoint::hit("after_read")?;
    Ok(block)
}

/// Where a chunk's rejects and checkpoint are written.
enum Checkpoint<'a> {
    /// In the transaction that also holds the chunk's rows (binary COPY, INSERT).
    InTransaction(tokio_postgres::Transaction<'a>),
    /// Statement by statement (the autocommit path): rejects first, idempotently, then the
    /// conditional checkpoint update, which is the commit point. No transaction stays open, so
    /// other workers' COPYs keep HeliosDB's fast path.
    Autocommit(&'a Client),
}

impl Checkpoint<'_> {
    async fn execute(
        &self,
        statement: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        match self {
            Checkpoint::InTransaction(tx) => tx.execute(statement, params).await,
            Checkpoint::Autocommit(client) => client.execute(statement, params).await,
        }
    }
}

/// What one chunk produced.
struct ChunkTally {
    from: u64,
    to: u64,
    rows: u64,
    spilled: u64,
    /// Items skipped by a routing filter.
    filtered: u64,
    rejects: Vec<Reject>,
    /// The whole file's summary, when this chunk is the last.
    summary: Option<SourceSummary>,
}

/// Records a data-file mismatch found at commit time (after the transaction is gone).
async fn settle(
    client: &Client,
    ctx: &LoadContext,
    shard_id: &str,
    end: ChunkEnd,
) -> Result<ChunkEnd> {
    match end {
        ChunkEnd::Mismatch {
            reason,
            md5_ok,
            items,
        } => {
            ledger::fail_shard(
                client,
                &ctx.run.run_id,
                shard_id,
                &reason,
                md5_ok,
                Some(items),
            )
            .await?;
            Ok(ChunkEnd::Failed(reason))
        }
        other => Ok(other),
    }
}

/// In `tx`: records the chunk's rejects and moves the checkpoint from `from` to `to` (or finishes
/// the shard, after reconciling the whole file), then commits. 0 rows updated: another worker
/// moved the checkpoint first, and the transaction rolls back.
async fn commit_chunk(
    db: Checkpoint<'_>,
    ctx: &LoadContext,
    shard: &ledger::ShardRecord,
    tally: ChunkTally,
) -> Result<ChunkEnd> {
    let run_id = ctx.run.run_id.as_str();
    let shard_id = shard.shard_id.as_str();
    let ChunkTally {
        from,
        to,
        rows,
        spilled,
        filtered,
        rejects,
        summary,
    } = tally;
    let filtered_i = filtered as i64;
    let commit_started = std::time::Instant::now();
    if !rejects.is_empty() {
        for reject in &rejects {
            db.execute(
                sql::INSERT_REJECT,
                &[
                    &run_id,
                    &shard_id,
                    &(reject.line_no as i64),
                    &reject.reason,
                    &reject.raw,
                ],
            )
            .await
            .map_err(WorkerError::db("cannot record a reject"))?;
        }
    }
    let (from_i, to_i, rows_i, rejects_i, spilled_i) = (
        from as i64,
        to as i64,
        rows as i64,
        rejects.len() as i64,
        spilled as i64,
    );
    let updated = match &summary {
        None => db
            .execute(
                sql::ADVANCE_CHECKPOINT,
                &[
                    &run_id,
                    &shard_id,
                    &from_i,
                    &to_i,
                    &rows_i,
                    &rejects_i,
                    &spilled_i,
                    &filtered_i,
                ],
            )
            .await
            .map_err(WorkerError::db("cannot advance the checkpoint"))?,
        Some(end) => {
            if let Err((reason, md5_ok)) =
                reconcile(shard, end, &ctx.store.location(&shard.data_key))
            {
                return Ok(ChunkEnd::Mismatch {
                    reason,
                    md5_ok,
                    items: end.items,
                });
            }
            let md5_ok = shard.md5_checksum.as_ref().map(|_| true);
            let items = end.items as i64;
            db.execute(
                sql::FINISH_SHARD,
                &[
                    &run_id,
                    &shard_id,
                    &from_i,
                    &(end.physical_lines as i64),
                    &rows_i,
                    &rejects_i,
                    &spilled_i,
                    &items,
                    &md5_ok,
                    &filtered_i,
                ],
            )
            .await
            .map_err(WorkerError::db("cannot finish the shard"))?
        }
    };
    if updated != 1 {
        // A transaction rolls back on drop; on the autocommit path nothing moved.
        return Ok(ChunkEnd::LostRace);
    }
    failpoint::hit("after_checkpoint")?;
    if let Checkpoint::InTransaction(tx) = db {
        tx.commit()
            .await
            .map_err(WorkerError::db("cannot commit a chunk"))?;
    }
    failpoint::hit("after_commit")?;
    ctx.progress.chunk_committed(
        rows,
        filtered,
        rejects.iter().map(|r| r.kind.label()),
        commit_started.elapsed(),
    );
    let finished = summary.is_some();
    let to = summary.as_ref().map(|s| s.physical_lines).unwrap_or(to);
    tracing::debug!(
        shard = shard_id,
        from,
        to,
        rows,
        rejects = rejects.len(),
        finished,
        "chunk committed"
    );
    Ok(ChunkEnd::Committed { to, finished })
}

/// Checks a whole file against its manifest entry: `Err((reason, md5_ok))` on a mismatch.
fn reconcile(
    shard: &ledger::ShardRecord,
    end: &SourceSummary,
    location: &str,
) -> Result<(), (String, Option<bool>)> {
    let md5_ok = shard
        .md5_checksum
        .as_ref()
        .map(|expected| *expected == end.md5_base64);
    if md5_ok == Some(false) {
        return Err((
            format!(
                "data file {location}: MD5 mismatch: the manifest says {}, the file's is {}",
                shard.md5_checksum.as_deref().unwrap_or_default(),
                end.md5_base64
            ),
            md5_ok,
        ));
    }
    if let Some(expected) = shard.item_count {
        if expected != end.items {
            return Err((
                format!("data file {location}: item count mismatch: the manifest says {expected}, the file holds {}", end.items),
                md5_ok,
            ));
        }
    }
    Ok(())
}

async fn unique_violation(
    client: &Client,
    ctx: &LoadContext,
    shard: &ledger::ShardRecord,
    from: u64,
    to: u64,
    error: tokio_postgres::Error,
) -> Result<ChunkEnd> {
    let now = ledger::get_shard(client, &ctx.run.run_id, &shard.shard_id).await?;
    if now.is_some_and(|s| s.committed_lines != from || s.state == sql::shard_state::DONE) {
        return Ok(ChunkEnd::LostRace);
    }
    let detail = crate::server_message(&error);
    // The table the server names (a routed run loads several), else the run's.
    let table = error
        .as_db_error()
        .and_then(|db| db.table())
        .unwrap_or(&ctx.run.target_table)
        .to_string();
    let reason = format!(
        "data file {}: lines {}..={to} hold a row whose unique key is already in table {table:?}: {detail}",
        ctx.store.location(&shard.data_key),
        from + 1,
    );
    ledger::fail_shard(
        client,
        &ctx.run.run_id,
        &shard.shard_id,
        &reason,
        None,
        None,
    )
    .await?;
    Ok(ChunkEnd::Failed(reason))
}
