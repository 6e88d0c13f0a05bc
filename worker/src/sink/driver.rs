//! The chunk driver: loads one shard through a [`Sink`], chunk after chunk, exactly once (the
//! argument is in [`super`]; each sink's own part is in its module).
//!
//! # Pipeline
//! A blocking thread streams the data file through [`crate::source`] and hands each block of lines
//! to rayon, which decodes (or routes) and encodes it ([`super::encode`]). The block's result
//! travels back through a bounded channel of one-shot receivers, so blocks encode in parallel,
//! arrive in order, and at most `pipeline_depth` blocks are in memory per shard, whatever the
//! file's size.
//!
//! # A shard
//! 1. The shard's earlier generations are cleaned up first: rows their loads wrote (found by
//!    provenance) and their rejects are deleted, then the loads are marked cleaned.
//! 2. The file is opened pinned to the identity its generation claimed (if any), and the identity
//!    is claimed (the first claim wins). A file that is not the claimed one is refused: the shard
//!    fails with a message saying how to start it over (`ferry-coordinator reset`).
//! 3. Chunks of `chunk_lines` physical lines, numbered from the start of the file (so every retry
//!    forms the same chunks), each: `begin_chunk`; per table, its rows (the first chunk of a load
//!    is proven first, see [`super`]); at the end of the file, the MD5 and item count against the
//!    manifest; `end_table` per table; the checkpoint (`commit`). Failpoints `after_read`,
//!    `after_copy`, `after_checkpoint` and `after_commit` sit between the steps.
//! 4. A file that does not match its manifest (MD5, count, a corrupt gzip stream) has its rows
//!    removed: the generation moves on (nothing of the old one can commit any more), then step 1
//!    removes the old load's rows and rejects; the shard is marked failed with the reason.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ferry_ledger::shard_state;
use ferry_shared::config::RejectLines;
use ferry_shared::failpoint;
use ferry_shared::schema::{provenance, TableSchema};
use ferry_shared::store::ObjectStore;
use tokio::sync::{mpsc, oneshot};

use super::encode::{BlockEncoder, EncodedBlock};
use super::{
    describe_key, Checkpoint, FileEnd, Key, Ledger, Presence, Sink, TableEnd, TableRows, Unload,
};
use crate::decode::Reject;
use crate::normal::ItemDigest;
use crate::progress::Progress;
use crate::source::{read_source, SourceSpec, SourceSummary};
use crate::target::{LoadPath, Target};
use crate::{Result, WorkerError};
use ferry_ledger::{Restart, RunRecord, ShardRecord};

/// What a worker needs to load shards of one run.
#[derive(Clone, Debug)]
pub struct LoadContext {
    /// The run.
    pub run: Arc<RunRecord>,
    /// Decodes and encodes the run's blocks.
    pub encoder: Arc<BlockEncoder>,
    /// The tables the run writes (one, or a routed run's tables).
    pub tables: Arc<Vec<TableSchema>>,
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
    /// The target, with the run's load path.
    pub target: Arc<Target>,
    /// The target's URL (the autocommit path opens its own simple-protocol connection).
    pub target_url: String,
    /// `load.reject_lines`: whether shard errors may quote key values.
    pub reject_lines: RejectLines,
}

impl LoadContext {
    /// A context for `run` on `target`. The run's load path (recorded at plan) wins over the
    /// detected one, so a run resumes the way it started.
    pub fn new(
        run: RunRecord,
        store: Arc<dyn ObjectStore>,
        settings: &ferry_shared::config::LoadSettings,
        mut target: Target,
        target_url: &str,
    ) -> Result<LoadContext> {
        if !run.schema.provenance {
            return Err(WorkerError::ledger(format!(
                "run {} was planned by an older Ferry (its rows carry no provenance): finish it \
                 with that version, or plan a new run",
                run.run_id
            )));
        }
        if let Some(path) = run.load_path.as_deref().and_then(LoadPath::parse) {
            if path != target.load_path {
                tracing::info!(run = %run.run_id, load_path = %target.describe_path(path), "loading the way the run was planned");
            }
            target.load_path = path;
        }
        let mut encoder =
            BlockEncoder::new(&run.schema, run.export_time.as_deref(), target.load_path)?;
        if settings.digest {
            encoder = encoder.with_digests(&run.schema);
        }
        if target.load_path != LoadPath::Parquet {
            for table in encoder.tables().iter() {
                if let Some((column, why)) = table.unreadable_column(target.column_names()) {
                    return Err(WorkerError::ledger(format!(
                        "run {} writes column {column:?} of table {:?}, which this target cannot \
                         read back ({why}); the run was planned by a Ferry that made such names \
                         columns. Plan a new run (another --run-id, into a new table): the \
                         attribute then goes to the overflow column",
                        run.run_id, table.table
                    )));
                }
            }
        }
        Ok(LoadContext {
            tables: encoder.tables().clone(),
            encoder: Arc::new(encoder),
            target: Arc::new(target),
            target_url: target_url.to_string(),
            reject_lines: settings.reject_lines,
            run: Arc::new(run),
            store,
            block_lines: settings.block_lines.get(),
            pipeline_depth: settings.pipeline_depth.get(),
            progress: Arc::new(Progress::default()),
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// How this run loads.
    pub fn load_path(&self) -> LoadPath {
        self.target.load_path
    }
}

/// How a shard load ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardOutcome {
    /// Every line committed and reconciled.
    Done,
    /// The ledger already had it done.
    AlreadyDone,
    /// Another worker holds it (it moved the checkpoint first, or stored the chunk being
    /// written); this one backed off.
    LostRace,
    /// The data file is bad, changed, or holds a key already in the table; the shard is marked
    /// failed with this reason.
    Failed(String),
    /// Stopped on request between chunks.
    Stopped,
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
    Committed { to: u64, finished: bool },
    LostRace,
    Failed(String),
}

/// A table's rows the target refused for a unique key.
struct Conflict {
    table: usize,
    /// The server's words, or what the presence proof found.
    detail: String,
    /// The table's first row of the chunk (line, key), when known.
    first: Option<(u64, Key)>,
    /// Every row's line and key, when the sink keeps them.
    keys: Vec<(u64, Key)>,
}

/// Makes `ctx` apply change records when its run is a catch-up window (a no-op otherwise): the
/// run's schema is the full run's, so its rows are encoded exactly as the full run's were.
pub async fn prepare_context(client: &tokio_postgres::Client, ctx: &mut LoadContext) -> Result<()> {
    let Some(window) = ferry_ledger::window::get_window(client, &ctx.run.run_id).await? else {
        return Ok(());
    };
    let encoder =
        BlockEncoder::for_changes(&ctx.run.schema, Some(&window.export_to), ctx.load_path())?;
    ctx.tables = encoder.tables().clone();
    ctx.encoder = Arc::new(encoder);
    Ok(())
}

/// Loads `shard_id` of `ctx`'s run through `sink` from its checkpoint to the end of its file.
pub async fn load_shard(
    ledger: &dyn Ledger,
    unload: &dyn Unload,
    sink: &mut dyn Sink,
    ctx: &LoadContext,
    shard_id: &str,
) -> Result<ShardOutcome> {
    let run_id = ctx.run.run_id.as_str();
    let shard = ledger
        .shard(run_id, shard_id)
        .await?
        .ok_or_else(|| WorkerError::ledger(format!("shard {shard_id} is not in run {run_id}")))?;
    if shard.state == shard_state::DONE {
        return Ok(ShardOutcome::AlreadyDone);
    }
    clean_stale_loads(ledger, unload, run_id, &ctx.tables, &shard).await?;
    let location = ctx.store.location(&shard.data_key);
    let recorded = ledger
        .recorded_load(run_id, shard_id, shard.generation)
        .await?;
    let expected = recorded.as_ref().map(|c| c.file_identity.as_str());
    let opened = match ctx.store.open_pinned(&shard.data_key, expected).await {
        Ok(opened) => opened,
        Err(ferry_shared::Error::ObjectChanged {
            expected, found, ..
        }) => {
            return file_changed(ledger, ctx, &shard, &expected, &found).await;
        }
        Err(e) => return Err(e.into()),
    };
    let claim = ledger
        .claim_load(run_id, shard_id, shard.generation, &opened.identity)
        .await?;
    if claim.file_identity != opened.identity {
        return file_changed(ledger, ctx, &shard, &claim.file_identity, &opened.identity).await;
    }
    let mut from = shard.committed_lines;
    tracing::info!(target: "ferry::shard", shard = shard_id, file = %location, committed_lines = from, generation = shard.generation, "loading shard");

    let (sender, mut pieces) = mpsc::channel::<Piece>(ctx.pipeline_depth);
    let spec = SourceSpec {
        location: location.clone(),
        skip_lines: from,
        chunk_lines: ctx.run.chunk_lines,
        block_lines: ctx.block_lines,
        block_bytes: 8 * 1024 * 1024,
    };
    let encoder = ctx.encoder.clone();
    let load_id = claim.load_id;
    let chunk_lines = ctx.run.chunk_lines;
    let bytes_progress = ctx.progress.bytes.clone();
    let raw = crate::source::blocking_reader(opened.stream);
    let reader = tokio::task::spawn_blocking(move || {
        let result = read_source(raw, &spec, Some(bytes_progress), |framed| {
            let (done, result) = oneshot::channel();
            let (last_line, chunk_end) = (framed.last_line, framed.chunk_end);
            let encoder = encoder.clone();
            let chunk_index = framed.first_line / chunk_lines;
            rayon::spawn(move || {
                let encoded = match provenance(load_id, chunk_index) {
                    None => Err(WorkerError::Internal(format!(
                        "chunk {chunk_index} of a file is beyond Ferry's provenance range: raise load.chunk_lines"
                    ))),
                    Some(provenance) => {
                        // A panic while decoding fails the shard with its message instead of
                        // aborting the process.
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            encoder.encode(&framed.block, provenance)
                        }))
                        .unwrap_or_else(|panic| {
                            Err(WorkerError::Internal(format!(
                                "decoding lines {}..={} panicked: {}",
                                framed.first_line + 1,
                                framed.last_line,
                                panic_message(&panic)
                            )))
                        })
                    }
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

    // Only where rows can be ahead of the checkpoint (autocommit sinks), and only for the chunk an
    // earlier attempt marked in flight, may a chunk be stored without its checkpoint: that one is
    // proven before it is written. (Proving costs a key lookup, which HeliosDB answers with a
    // table scan for a multi-column key; an unmarked chunk skips it. A chunk stored by a loader
    // racing this one is still caught: its COPY conflicts, and the conflict is resolved by the
    // same proof.)
    let mut prove = !sink.rows_commit_with_checkpoint() && shard.copying_from == Some(from);
    let outcome = loop {
        if ctx.stop.load(Ordering::Relaxed) {
            break Ok(ShardOutcome::Stopped);
        }
        let Some(first) = pieces.recv().await else {
            break Err(WorkerError::Internal(
                "the file reader stopped unexpectedly".into(),
            ));
        };
        let chunk = ChunkLoad {
            ledger,
            unload,
            ctx,
            shard: &shard,
            load_id,
            from,
            prove,
            marks: !sink.rows_commit_with_checkpoint(),
        };
        let end = match chunk.run(sink, first, &mut pieces).await {
            Ok(end) => end,
            Err(e) => {
                // Leave nothing half-done on the connection (the pool may reuse it).
                let _ = sink.abort().await;
                break Err(e);
            }
        };
        match end {
            ChunkEnd::Committed { to, finished } => {
                from = to;
                prove = false;
                if finished {
                    break Ok(ShardOutcome::Done);
                }
            }
            ChunkEnd::LostRace => {
                tracing::info!(
                    shard = shard_id,
                    from,
                    "another worker holds this shard: backing off"
                );
                break Ok(ShardOutcome::LostRace);
            }
            ChunkEnd::Failed(reason) => break Ok(ShardOutcome::Failed(reason)),
        }
    };
    drop(pieces);
    reader
        .await
        .map_err(|e| WorkerError::Internal(format!("file reader task: {e}")))?;
    outcome
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Removes what earlier generations of the shard wrote (their rows by provenance, their rejects).
/// Every loader of the shard runs it first, so an interrupted cleanup is finished by the next.
pub async fn clean_stale_loads(
    ledger: &dyn Ledger,
    unload: &dyn Unload,
    run_id: &str,
    tables: &[TableSchema],
    shard: &ShardRecord,
) -> Result<()> {
    let stale = ledger
        .stale_loads(run_id, &shard.shard_id, shard.generation)
        .await?;
    for load_id in &stale {
        let mut removed = 0;
        for table in tables {
            removed += unload.remove_rows(table, *load_id).await?;
        }
        ledger.mark_load_cleaned(*load_id).await?;
        tracing::info!(shard = %shard.shard_id, load_id, removed_rows = removed, "removed the rows of an earlier load of the shard");
    }
    if !stale.is_empty() || shard.generation > 0 {
        ledger
            .delete_stale_rejects(run_id, &shard.shard_id, shard.generation)
            .await?;
    }
    Ok(())
}

/// The shard's data file is not the one its generation started reading: refuse it.
async fn file_changed(
    ledger: &dyn Ledger,
    ctx: &LoadContext,
    shard: &ShardRecord,
    recorded: &str,
    now: &str,
) -> Result<ShardOutcome> {
    let reason = format!(
        "data file {} changed since this shard's load began (it was {recorded}, it is now {now}); \
         {} of its lines were committed from the earlier file. Put that file back and run again, \
         or run `ferry-coordinator reset --run-id {} --shard {}` to remove the shard's rows and \
         load it again from the start",
        ctx.store.location(&shard.data_key),
        shard.committed_lines,
        ctx.run.run_id,
        shard.shard_id
    );
    ledger
        .fail_shard(&ctx.run.run_id, &shard.shard_id, &reason, None, None)
        .await?;
    Ok(ShardOutcome::Failed(reason))
}

/// Starts a shard over: the generation moves on (as `restart` says), then the old load's rows
/// and rejects are removed. Returns false, removing nothing, when a chunk of the shard is in
/// flight and `restart` may not pass over it (see [`Restart::over_chunk_in_flight`]); when
/// another process ended the generation first, finishes its cleanup and returns true.
pub async fn unload_shard(
    ledger: &dyn Ledger,
    unload: &dyn Unload,
    run_id: &str,
    tables: &[TableSchema],
    shard: &ShardRecord,
    restart: Restart,
) -> Result<bool> {
    if ledger
        .restart_shard(run_id, &shard.shard_id, shard.generation, &restart)
        .await?
    {
        tracing::warn!(shard = %shard.shard_id, state = restart.state, "removing the shard's rows: it starts over");
    }
    let now = ledger
        .shard(run_id, &shard.shard_id)
        .await?
        .ok_or_else(|| WorkerError::ledger(format!("shard {} vanished", shard.shard_id)))?;
    if now.generation == shard.generation {
        // Not restarted: a chunk is in flight and this caller may not pass over it.
        return Ok(false);
    }
    clean_stale_loads(ledger, unload, run_id, tables, &now).await?;
    Ok(true)
}

/// One chunk of a shard.
struct ChunkLoad<'a> {
    ledger: &'a dyn Ledger,
    unload: &'a dyn Unload,
    ctx: &'a LoadContext,
    shard: &'a ShardRecord,
    load_id: i64,
    from: u64,
    /// Prove each table's part before writing it (the chunk's state is not known).
    prove: bool,
    /// Mark the chunk in flight before writing it (rows commit before the checkpoint).
    marks: bool,
}

/// The chunk's rows on their way to the sink: streamed when the run writes one table, gathered
/// per table (and written table by table at the end) when it writes several.
struct ChunkRows {
    gathered: Option<Vec<Vec<TableRows>>>,
    /// The table whose rows are being sent.
    open: Option<usize>,
    /// Tables whose part of the chunk is proven stored already.
    stored: Vec<bool>,
    /// Tables already written in this chunk.
    written: Vec<bool>,
    /// Per table: its first row and every row's key (when kept), for conflict messages.
    firsts: Vec<Option<(u64, Key)>>,
    keys: Vec<Vec<(u64, Key)>>,
    conflict: Option<Conflict>,
}

impl ChunkRows {
    fn new(tables: usize) -> ChunkRows {
        ChunkRows {
            gathered: (tables > 1).then(|| (0..tables).map(|_| Vec::new()).collect()),
            open: None,
            stored: vec![false; tables],
            written: vec![false; tables],
            firsts: vec![None; tables],
            keys: vec![Vec::new(); tables],
            conflict: None,
        }
    }
}

impl ChunkLoad<'_> {
    async fn run(
        &self,
        sink: &mut dyn Sink,
        first: Piece,
        pieces: &mut mpsc::Receiver<Piece>,
    ) -> Result<ChunkEnd> {
        if self.marks
            && !self
                .ledger
                .mark_copying(
                    &self.ctx.run.run_id,
                    &self.shard.shard_id,
                    self.from,
                    self.shard.generation,
                )
                .await?
        {
            return Ok(ChunkEnd::LostRace);
        }
        sink.begin_chunk().await?;
        let provenance = provenance(self.load_id, self.from / self.ctx.run.chunk_lines)
            .ok_or_else(|| WorkerError::Internal("chunk beyond the provenance range".into()))?;
        let mut rows = ChunkRows::new(self.ctx.tables.len());
        let (mut loaded, mut spilled, mut filtered, mut to) = (0u64, 0u64, 0u64, self.from);
        let mut rejects: Vec<Reject> = Vec::new();
        let mut digests: Vec<Option<ItemDigest>> = vec![None; self.ctx.tables.len()];
        let mut summary: Option<SourceSummary> = None;
        let mut next = Some(first);
        loop {
            let piece = match next.take() {
                Some(piece) => piece,
                None => pieces
                    .recv()
                    .await
                    .ok_or_else(|| WorkerError::Internal("file reader stopped".into()))?,
            };
            match piece {
                Piece::Block {
                    result,
                    last_line,
                    chunk_end,
                } => {
                    let block = result
                        .await
                        .map_err(|_| WorkerError::Internal("decoder task died".into()))??;
                    failpoint::hit("after_read")?;
                    loaded += block.rows;
                    spilled += block.spilled;
                    filtered += block.filtered;
                    rejects.extend(block.rejects);
                    to = last_line;
                    for part in block.tables {
                        if let Some(digest) = &part.digest {
                            digests[part.table]
                                .get_or_insert_with(ItemDigest::default)
                                .merge(digest);
                        }
                        self.put(sink, &mut rows, part, provenance).await?;
                    }
                    if chunk_end {
                        break;
                    }
                }
                Piece::End(end) => {
                    summary = Some(end);
                    break;
                }
                Piece::Error(error) => {
                    sink.abort().await?;
                    return self.data_error(error).await;
                }
            }
        }
        // The whole file is checked before its last chunk's rows are committed.
        let file_end = match &summary {
            None => None,
            Some(end) => match self.reconcile(end) {
                Ok(file_end) => Some(file_end),
                Err(restart) => {
                    sink.abort().await?;
                    return self.unload(restart).await;
                }
            },
        };
        self.finish_rows(sink, &mut rows, provenance).await?;
        if let Some(conflict) = rows.conflict.take() {
            sink.abort().await?;
            return self.resolve_conflict(sink, conflict, provenance).await;
        }
        failpoint::hit("after_copy")?;
        let commit_started = Instant::now();
        let checkpoint = Checkpoint {
            run_id: &self.ctx.run.run_id,
            shard_id: &self.shard.shard_id,
            generation: self.shard.generation,
            from: self.from,
            to: file_end.as_ref().map(|e| e.physical_lines).unwrap_or(to),
            rows: loaded,
            spilled,
            filtered,
            rejects: &rejects,
            file_end: file_end.clone(),
            digests: digests
                .iter()
                .enumerate()
                .filter_map(|(table, digest)| {
                    let digest = digest.as_ref()?;
                    Some(ferry_ledger::ChunkDigest {
                        table: self.ctx.tables[table].table.clone(),
                        provenance,
                        load_id: self.load_id,
                        items: digest.items,
                        digest: digest.sum_hex(),
                    })
                })
                .collect(),
        };
        if !sink.commit(&checkpoint).await? {
            return Ok(ChunkEnd::LostRace);
        }
        failpoint::hit("after_commit")?;
        self.ctx.progress.chunk_committed(
            loaded,
            filtered,
            rejects.iter().map(|r| r.kind.label()),
            commit_started.elapsed(),
        );
        tracing::debug!(shard = %self.shard.shard_id, from = self.from, to = checkpoint.to, rows = loaded, rejects = rejects.len(), "chunk committed");
        Ok(ChunkEnd::Committed {
            to: checkpoint.to,
            finished: file_end.is_some(),
        })
    }

    /// One table's rows of one block: gathered, or sent into the table's open rows.
    async fn put(
        &self,
        sink: &mut dyn Sink,
        rows: &mut ChunkRows,
        part: TableRows,
        provenance: i64,
    ) -> Result<()> {
        if rows.conflict.is_some() {
            return Ok(());
        }
        match rows.gathered.as_mut() {
            Some(gathered) => {
                gathered[part.table].push(part);
                Ok(())
            }
            None => self.write(sink, rows, part, provenance).await,
        }
    }

    /// Sends `part` into its table, opening the table's rows (proven first when required).
    async fn write(
        &self,
        sink: &mut dyn Sink,
        rows: &mut ChunkRows,
        mut part: TableRows,
        provenance: i64,
    ) -> Result<()> {
        let table = part.table;
        if rows.stored[table] || rows.conflict.is_some() {
            return Ok(());
        }
        if rows.open != Some(table) {
            self.end_open_table(sink, rows).await?;
            if rows.conflict.is_some() {
                return Ok(());
            }
            debug_assert!(!rows.written[table], "a table's rows are sent together");
            rows.firsts[table] = part.first_key.clone();
            if self.prove {
                if let Some((line, key)) = &part.first_key {
                    match sink.probe(table, key, provenance).await? {
                        Presence::Absent => {}
                        Presence::Ours => {
                            tracing::info!(shard = %self.shard.shard_id, from = self.from, table = %self.ctx.tables[table].table, "chunk already stored by an earlier attempt: not written again");
                            rows.stored[table] = true;
                            return Ok(());
                        }
                        Presence::Other(_) => {
                            rows.conflict = Some(Conflict {
                                table,
                                detail: format!(
                                    "line {line}'s key is already in the table, not written by this chunk"
                                ),
                                first: part.first_key.clone(),
                                keys: vec![(*line, key.clone())],
                            });
                            return Ok(());
                        }
                    }
                }
            }
            sink.begin_table(table).await?;
            rows.open = Some(table);
            rows.written[table] = true;
        }
        rows.keys[table].append(&mut part.keys);
        sink.send(part).await
    }

    async fn end_open_table(&self, sink: &mut dyn Sink, rows: &mut ChunkRows) -> Result<()> {
        if let Some(table) = rows.open.take() {
            if let TableEnd::Conflict(detail) = sink.end_table().await? {
                rows.conflict = Some(Conflict {
                    table,
                    detail,
                    first: rows.firsts[table].clone(),
                    keys: std::mem::take(&mut rows.keys[table]),
                });
            }
        }
        Ok(())
    }

    /// Writes what was gathered, table by table, and ends the last open table.
    async fn finish_rows(
        &self,
        sink: &mut dyn Sink,
        rows: &mut ChunkRows,
        provenance: i64,
    ) -> Result<()> {
        if let Some(gathered) = rows.gathered.take() {
            for parts in gathered {
                for part in parts {
                    self.write(sink, rows, part, provenance).await?;
                }
            }
        }
        self.end_open_table(sink, rows).await
    }

    /// The file against its manifest entry; `Err` with the restart that removes its rows.
    fn reconcile(&self, end: &SourceSummary) -> Result<FileEnd, Restart> {
        let shard = self.shard;
        let location = self.ctx.store.location(&shard.data_key);
        let md5_ok = shard
            .md5_checksum
            .as_ref()
            .map(|expected| *expected == end.md5_base64);
        let failed = |reason: String| Restart {
            state: shard_state::FAILED,
            error: Some(format!(
                "{reason}; the rows already loaded from it were removed, so a corrected file \
                 loads from the start"
            )),
            md5_ok,
            items_seen: Some(end.items),
            // This loader holds the shard and its chunk is over.
            over_chunk_in_flight: true,
        };
        if md5_ok == Some(false) {
            return Err(failed(format!(
                "data file {location}: MD5 mismatch: the manifest says {}, the file's is {}",
                shard.md5_checksum.as_deref().unwrap_or_default(),
                end.md5_base64
            )));
        }
        if let Some(expected) = shard.item_count {
            if expected != end.items {
                return Err(failed(format!(
                    "data file {location}: item count mismatch: the manifest says {expected}, the file holds {}",
                    end.items
                )));
            }
        }
        Ok(FileEnd {
            physical_lines: end.physical_lines,
            items: end.items,
            md5_ok: shard.md5_checksum.as_ref().map(|_| true),
        })
    }

    /// A reader error: a bad file fails the shard (its rows removed); anything else (IO) is
    /// returned for a retry from the checkpoint.
    async fn data_error(&self, error: WorkerError) -> Result<ChunkEnd> {
        match error {
            WorkerError::CorruptFile { .. } => {
                let reason = format!(
                    "{error}; the rows already loaded from it were removed, so a corrected file \
                     loads from the start"
                );
                self.unload(Restart {
                    state: shard_state::FAILED,
                    error: Some(reason),
                    md5_ok: None,
                    items_seen: None,
                    over_chunk_in_flight: true,
                })
                .await
            }
            other => Err(other),
        }
    }

    /// The file is bad: its rows are removed and the shard fails with the restart's reason.
    async fn unload(&self, restart: Restart) -> Result<ChunkEnd> {
        let reason = restart.error.clone().unwrap_or_default();
        unload_shard(
            self.ledger,
            self.unload,
            &self.ctx.run.run_id,
            &self.ctx.tables,
            self.shard,
            restart,
        )
        .await?;
        Ok(ChunkEnd::Failed(reason))
    }

    /// A table's rows were refused for a unique key. Another loader on this chunk → back off;
    /// a key from elsewhere → fail the shard naming it.
    async fn resolve_conflict(
        &self,
        sink: &mut dyn Sink,
        conflict: Conflict,
        provenance: i64,
    ) -> Result<ChunkEnd> {
        let run_id = self.ctx.run.run_id.as_str();
        let now = self.ledger.shard(run_id, &self.shard.shard_id).await?;
        if now.is_some_and(|s| {
            s.committed_lines != self.from
                || s.generation != self.shard.generation
                || s.state == shard_state::DONE
        }) {
            return Ok(ChunkEnd::LostRace);
        }
        if let Some((_, key)) = &conflict.first {
            if sink.probe(conflict.table, key, provenance).await? == Presence::Ours {
                // Another attempt stored this chunk's rows and has not moved the checkpoint
                // yet; whoever looks next proves it and moves it.
                return Ok(ChunkEnd::LostRace);
            }
        }
        let table = &self.ctx.tables[conflict.table];
        let found = sink
            .find_conflict(conflict.table, &conflict.keys, provenance)
            .await?;
        let location = self.ctx.store.location(&self.shard.data_key);
        let reason = match found {
            Some((line, key, presence)) => {
                let origin = self.describe_origin(presence).await?;
                format!(
                    "data file {location}: line {line} holds key {} that is already in table {:?} ({origin}); \
                     nothing of lines {}.. was skipped: remove the overlap (or load into an empty table) and run again",
                    describe_key(table, &key, self.ctx.reject_lines),
                    table.table,
                    self.from + 1
                )
            }
            None => format!(
                "data file {location}: lines {}.. hold a key that is already in table {:?}: {}",
                self.from + 1,
                table.table,
                crate::redact::server_text(&conflict.detail, self.ctx.reject_lines)
            ),
        };
        self.ledger
            .fail_shard(run_id, &self.shard.shard_id, &reason, None, None)
            .await?;
        Ok(ChunkEnd::Failed(reason))
    }

    /// Where a row with another provenance came from, in words.
    async fn describe_origin(&self, presence: Presence) -> Result<String> {
        let Presence::Other(Some(other)) = presence else {
            return Ok("a row Ferry did not load".into());
        };
        let load_id = other >> ferry_shared::schema::CHUNK_INDEX_BITS;
        let chunk = other & ((1 << ferry_shared::schema::CHUNK_INDEX_BITS) - 1);
        let lines = |chunk: i64| {
            let size = self.ctx.run.chunk_lines as i64;
            format!("lines {}..={}", chunk * size + 1, (chunk + 1) * size)
        };
        Ok(match self.ledger.load_owner(load_id).await? {
            Some((run, _, data_key)) if run == self.ctx.run.run_id => format!(
                "loaded by this run from {} of {}: the export holds the key twice",
                lines(chunk),
                self.ctx.store.location(&data_key)
            ),
            Some((run, _, data_key)) => {
                format!("loaded by run {run} from {} of {}", lines(chunk), data_key)
            }
            None => "a row Ferry did not load".into(),
        })
    }
}
