//! One chunk of a data file read again after its load: its lines decoded (or routed) and encoded
//! exactly as the load did, keeping every row's line and key. Used where a check must name lines
//! the ledger does not keep: a key the export holds twice, found only when a key built after the
//! load is refused (`ferry_coordinator::keys`); the items of a chunk whose digest differs
//! (`ferry_coordinator::deep`).
//!
//! A chunk is found by a row's provenance (`load_id << 24 | chunk index`): the load names the
//! shard and its data file, the index the chunk's lines (`chunk_lines` per chunk, from the start
//! of the file, as every load forms them).

use std::sync::Arc;

use ferry_shared::store::ObjectStore;

use crate::sink::{BlockEncoder, Key, Payload, TableRows};
use crate::source::{blocking_reader, read_source, SourceSpec};
use crate::target::LoadPath;
use crate::{Result, WorkerError};

/// The encoder a chunk of `run` is read again with: the run's own conversion, text rows
/// ([`LoadPath::InsertInTransaction`]) and every row's line and key kept.
pub fn encoder(run: &ferry_ledger::RunRecord) -> Result<Arc<BlockEncoder>> {
    Ok(Arc::new(
        BlockEncoder::new(
            &run.schema,
            run.export_time.as_deref(),
            LoadPath::InsertInTransaction,
        )?
        .keeping_keys(),
    ))
}

/// Every row the chunk `chunk_index` of `data_key` writes into table number `table` of
/// `encoder`, as `(line, key)` in file order (`encoder` must keep keys:
/// [`BlockEncoder::keeping_keys`]). The file is read from its start to the chunk's end.
pub async fn chunk_keys(
    store: &Arc<dyn ObjectStore>,
    data_key: &str,
    encoder: Arc<BlockEncoder>,
    chunk_lines: u64,
    chunk_index: u64,
    table: usize,
) -> Result<Vec<(u64, Key)>> {
    let parts = chunk_parts(store, data_key, encoder, chunk_lines, chunk_index, table).await?;
    Ok(parts.into_iter().flat_map(|p| p.keys).collect())
}

/// Every row the chunk writes into table number `table`, as `(line, values)`: the values in
/// PostgreSQL's text form in the table's COPY column order. `encoder` must encode for
/// [`crate::target::LoadPath::InsertInTransaction`] (text rows) and keep keys.
pub async fn chunk_rows(
    store: &Arc<dyn ObjectStore>,
    data_key: &str,
    encoder: Arc<BlockEncoder>,
    chunk_lines: u64,
    chunk_index: u64,
    table: usize,
) -> Result<Vec<(u64, Vec<Option<String>>)>> {
    let parts = chunk_parts(store, data_key, encoder, chunk_lines, chunk_index, table).await?;
    let mut rows = Vec::new();
    for part in parts {
        let Payload::Rows(values) = part.payload else {
            return Err(WorkerError::Internal(
                "a chunk's rows are read again as text rows".into(),
            ));
        };
        if part.keys.len() != values.len() {
            return Err(WorkerError::Internal(
                "a chunk's rows are read again with their keys".into(),
            ));
        }
        rows.extend(part.keys.into_iter().map(|(line, _)| line).zip(values));
    }
    Ok(rows)
}

async fn chunk_parts(
    store: &Arc<dyn ObjectStore>,
    data_key: &str,
    encoder: Arc<BlockEncoder>,
    chunk_lines: u64,
    chunk_index: u64,
    table: usize,
) -> Result<Vec<TableRows>> {
    let stream = store.open(data_key).await?;
    let raw = blocking_reader(stream);
    let spec = SourceSpec {
        location: store.location(data_key),
        skip_lines: chunk_index.saturating_mul(chunk_lines),
        chunk_lines,
        block_lines: 4096,
        block_bytes: 8 * 1024 * 1024,
    };
    let end = spec.skip_lines.saturating_add(chunk_lines);
    tokio::task::spawn_blocking(move || {
        let mut parts = Vec::new();
        let result = read_source(raw, &spec, None, |framed| {
            if framed.first_line >= end {
                return Err(WorkerError::Internal(PAST_THE_CHUNK.into()));
            }
            let encoded = encoder.encode(&framed.block, 0)?;
            parts.extend(encoded.tables.into_iter().filter(|p| p.table == table));
            Ok(())
        });
        match result {
            Ok(_) => Ok(parts),
            Err(WorkerError::Internal(text)) if text == PAST_THE_CHUNK => Ok(parts),
            Err(e) => Err(e),
        }
    })
    .await
    .map_err(|e| WorkerError::Internal(format!("re-reading a chunk stopped: {e}")))?
}

/// How the reader is stopped once the chunk is read (the rest of the file is not needed).
const PAST_THE_CHUNK: &str = "past the chunk";
