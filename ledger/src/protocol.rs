//! The ledger the chunk driver talks to ([`Ledger`]): a shard as recorded, its generations, the
//! load each generation claims, its failure, and the mark of a chunk written ahead of its
//! checkpoint. Implemented here once on a tokio-postgres client (the run's database) and once in
//! memory ([`crate::memory`]); the chunk's checkpoint itself is written by the sink, inside the
//! chunk's transaction or after its autocommit COPY (`docs/design.md` §3).

use async_trait::async_trait;
use tokio_postgres::Client;

use crate::outputs::FileRecord;
use crate::runs::{insert_rejects, shard_of, RejectRow, ShardRecord};
use crate::sql;
use crate::{LedgerError, Result};

/// A shard generation's load, as claimed in `ferry.loads`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadClaim {
    /// The id every row of this load carries (shifted) in its provenance column.
    pub load_id: i64,
    /// The data file identity the load claimed first.
    pub file_identity: String,
}

/// How a shard restarts from nothing.
#[derive(Clone, Debug, Default)]
pub struct Restart {
    /// `failed` (with `error`) or `pending`.
    pub state: &'static str,
    /// Why.
    pub error: Option<String>,
    /// Whether the MD5 matched, when known.
    pub md5_ok: Option<bool>,
    /// Items the file held, when known.
    pub items_seen: Option<u64>,
    /// Restart even while a chunk is marked as being written ahead of its checkpoint: the caller
    /// holds the shard (its own chunk is over), or the user stated that no worker is alive
    /// (`reset --force`). False: such a shard is left as it is and the restart returns false.
    pub over_chunk_in_flight: bool,
}

/// The end of a whole file, recorded with its last chunk's checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEnd {
    /// Physical lines the file held (the final `committed_lines`).
    pub physical_lines: u64,
    /// Items (non-blank lines) it held.
    pub items: u64,
    /// Whether its MD5 matched the manifest's (`None`: no manifest).
    pub md5_ok: Option<bool>,
}

/// A chunk's checkpoint as the ledger records it: its rejects (as `load.reject_lines` keeps
/// them) and the move of `committed_lines` from `from` to `to`, conditional on both `from` and
/// the generation (so it happens once, and never for an ended generation).
#[derive(Clone, Copy, Debug)]
pub struct Advance<'a> {
    /// The run.
    pub run_id: &'a str,
    /// The shard.
    pub shard_id: &'a str,
    /// The shard's generation.
    pub generation: i64,
    /// `committed_lines` before the chunk.
    pub from: u64,
    /// `committed_lines` after it (on the last chunk, the file's physical lines).
    pub to: u64,
    /// Rows loaded.
    pub rows: u64,
    /// Values spilled to the overflow column.
    pub spilled: u64,
    /// Items a routing filter skipped.
    pub filtered: u64,
    /// The chunk's rejects.
    pub rejects: &'a [RejectRow<'a>],
    /// Set on the last chunk: the shard is then done.
    pub file_end: Option<&'a FileEnd>,
    /// The chunk's digests, per table it wrote (none when the load records none).
    pub digests: &'a [crate::ChunkDigest],
}

/// The ledger operations the chunk driver needs besides a chunk's checkpoint (which the sink
/// writes).
#[async_trait]
pub trait Ledger: Send + Sync {
    /// A shard as recorded.
    async fn shard(&self, run_id: &str, shard_id: &str) -> Result<Option<ShardRecord>>;
    /// Marks a shard failed, keeping what it committed (a shard already done stays done).
    async fn fail_shard(
        &self,
        run_id: &str,
        shard_id: &str,
        reason: &str,
        md5_ok: Option<bool>,
        items_seen: Option<u64>,
    ) -> Result<()>;
    /// Ends a shard's generation: nothing committed, a new generation, the old rows stale.
    /// Returns false when the generation already moved on (another process restarted it first),
    /// or when a chunk is being written ahead of its checkpoint and
    /// [`Restart::over_chunk_in_flight`] is false.
    async fn restart_shard(
        &self,
        run_id: &str,
        shard_id: &str,
        generation: i64,
        restart: &Restart,
    ) -> Result<bool>;
    /// The load a shard's generation claimed, if any.
    async fn recorded_load(
        &self,
        run_id: &str,
        shard_id: &str,
        generation: i64,
    ) -> Result<Option<LoadClaim>>;
    /// Claims `file_identity` for a shard's generation (the first claim wins) and returns the
    /// claim as recorded, which may hold another identity (the file changed since).
    async fn claim_load(
        &self,
        run_id: &str,
        shard_id: &str,
        generation: i64,
        file_identity: &str,
    ) -> Result<LoadClaim>;
    /// The loads of a shard's earlier generations whose rows are not removed yet.
    async fn stale_loads(&self, run_id: &str, shard_id: &str, generation: i64) -> Result<Vec<i64>>;
    /// Marks a stale load's rows removed.
    async fn mark_load_cleaned(&self, load_id: i64) -> Result<()>;
    /// Marks the chunk starting at `from` as written ahead of its checkpoint (sinks whose rows
    /// commit on their own); false when the checkpoint or generation moved (another loader has
    /// the shard) or the shard is done.
    async fn mark_copying(
        &self,
        run_id: &str,
        shard_id: &str,
        from: u64,
        generation: i64,
    ) -> Result<bool>;
    /// Removes the rejects of a shard's earlier generations.
    async fn delete_stale_rejects(
        &self,
        run_id: &str,
        shard_id: &str,
        generation: i64,
    ) -> Result<u64>;
    /// The run, shard and data file a load belongs to, for naming where a duplicate came from.
    async fn load_owner(&self, load_id: i64) -> Result<Option<(String, String, String)>>;
    /// Records a chunk's rejects and moves its checkpoint: `false` when the checkpoint had moved,
    /// the generation changed or the shard is done. On a client, in whatever transaction state it
    /// is (the chunk's transaction, or autocommit after the chunk's COPY).
    async fn advance(&self, advance: &Advance<'_>) -> Result<bool>;
    /// Records a file an output set committed (idempotent: a retried chunk records the same file).
    async fn record_file(&self, run_id: &str, table: &str, file: &FileRecord) -> Result<()>;
    /// Forgets the files of a load whose files were deleted.
    async fn forget_files(&self, load_id: i64) -> Result<()>;
}

/// The run's database: every statement of [`sql`], parameters bound.
#[async_trait]
impl Ledger for Client {
    async fn shard(&self, run_id: &str, shard_id: &str) -> Result<Option<ShardRecord>> {
        let row = self
            .query_opt(sql::SELECT_SHARD, &[&run_id, &shard_id])
            .await
            .map_err(LedgerError::db("cannot read a shard"))?;
        Ok(row.as_ref().map(shard_of))
    }

    async fn fail_shard(
        &self,
        run_id: &str,
        shard_id: &str,
        reason: &str,
        md5_ok: Option<bool>,
        items_seen: Option<u64>,
    ) -> Result<()> {
        let items_seen = items_seen.map(|n| n as i64);
        self.execute(
            sql::FAIL_SHARD,
            &[&run_id, &shard_id, &reason, &md5_ok, &items_seen],
        )
        .await
        .map_err(LedgerError::db("cannot record a shard failure"))?;
        Ok(())
    }

    async fn restart_shard(
        &self,
        run_id: &str,
        shard_id: &str,
        generation: i64,
        restart: &Restart,
    ) -> Result<bool> {
        let updated = self
            .execute(
                sql::RESTART_SHARD,
                &[
                    &run_id,
                    &shard_id,
                    &generation,
                    &restart.state,
                    &restart.error,
                    &restart.md5_ok,
                    &restart.items_seen.map(|n| n as i64),
                    &restart.over_chunk_in_flight,
                ],
            )
            .await
            .map_err(LedgerError::db("cannot restart a shard"))?;
        Ok(updated == 1)
    }

    async fn recorded_load(
        &self,
        run_id: &str,
        shard_id: &str,
        generation: i64,
    ) -> Result<Option<LoadClaim>> {
        let row = self
            .query_opt(sql::SELECT_LOAD, &[&run_id, &shard_id, &generation])
            .await
            .map_err(LedgerError::db("cannot read a shard's load"))?;
        Ok(row.map(|row| LoadClaim {
            load_id: row.get(0),
            file_identity: row.get(1),
        }))
    }

    async fn claim_load(
        &self,
        run_id: &str,
        shard_id: &str,
        generation: i64,
        file_identity: &str,
    ) -> Result<LoadClaim> {
        self.execute(
            sql::CLAIM_LOAD,
            &[&run_id, &shard_id, &generation, &file_identity],
        )
        .await
        .map_err(LedgerError::db("cannot record the data file's identity"))?;
        self.recorded_load(run_id, shard_id, generation)
            .await?
            .ok_or_else(|| {
                LedgerError::Unexpected(format!(
                    "the load of shard {shard_id} (generation {generation}) vanished from the ledger"
                ))
            })
    }

    async fn stale_loads(&self, run_id: &str, shard_id: &str, generation: i64) -> Result<Vec<i64>> {
        let rows = self
            .query(sql::SELECT_STALE_LOADS, &[&run_id, &shard_id, &generation])
            .await
            .map_err(LedgerError::db("cannot read a shard's earlier loads"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn mark_load_cleaned(&self, load_id: i64) -> Result<()> {
        self.execute(sql::MARK_LOAD_CLEANED, &[&load_id])
            .await
            .map_err(LedgerError::db("cannot record a removed load"))?;
        Ok(())
    }

    async fn mark_copying(
        &self,
        run_id: &str,
        shard_id: &str,
        from: u64,
        generation: i64,
    ) -> Result<bool> {
        let updated = self
            .execute(
                sql::MARK_COPYING,
                &[&run_id, &shard_id, &(from as i64), &generation],
            )
            .await
            .map_err(LedgerError::db("cannot mark a chunk in flight"))?;
        Ok(updated == 1)
    }

    async fn delete_stale_rejects(
        &self,
        run_id: &str,
        shard_id: &str,
        generation: i64,
    ) -> Result<u64> {
        self.execute(
            sql::DELETE_STALE_REJECTS,
            &[&run_id, &shard_id, &generation],
        )
        .await
        .map_err(LedgerError::db("cannot remove a shard's earlier rejects"))
    }

    async fn load_owner(&self, load_id: i64) -> Result<Option<(String, String, String)>> {
        let row = self
            .query_opt(sql::SELECT_LOAD_OWNER, &[&load_id])
            .await
            .map_err(LedgerError::db("cannot read a load"))?;
        Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
    }

    async fn advance(&self, advance: &Advance<'_>) -> Result<bool> {
        let client = self;
        let Advance {
            run_id,
            shard_id,
            generation,
            ..
        } = *advance;
        if !advance.rejects.is_empty() {
            insert_rejects(client, run_id, shard_id, generation, advance.rejects)
                .await
                .map_err(LedgerError::db("cannot record rejects"))?;
        }
        if !advance.digests.is_empty() {
            crate::digests::record(client, run_id, advance.digests)
                .await
                .map_err(LedgerError::db("cannot record the chunk's digests"))?;
        }
        let (from, rows, rejected, spilled, filtered) = (
            advance.from as i64,
            advance.rows as i64,
            advance.rejects.len() as i64,
            advance.spilled as i64,
            advance.filtered as i64,
        );
        let updated = match advance.file_end {
            None => client
                .execute(
                    sql::ADVANCE_CHECKPOINT,
                    &[
                        &run_id,
                        &shard_id,
                        &from,
                        &(advance.to as i64),
                        &rows,
                        &rejected,
                        &spilled,
                        &filtered,
                        &generation,
                    ],
                )
                .await
                .map_err(LedgerError::db("cannot advance the checkpoint"))?,
            Some(end) => client
                .execute(
                    sql::FINISH_SHARD,
                    &[
                        &run_id,
                        &shard_id,
                        &from,
                        &(end.physical_lines as i64),
                        &rows,
                        &rejected,
                        &spilled,
                        &(end.items as i64),
                        &end.md5_ok,
                        &filtered,
                        &generation,
                    ],
                )
                .await
                .map_err(LedgerError::db("cannot finish the shard"))?,
        };
        Ok(updated == 1)
    }

    async fn record_file(&self, run_id: &str, table: &str, file: &FileRecord) -> Result<()> {
        let (load, chunk, rows, bytes) = (
            file.load_id,
            file.chunk as i64,
            file.rows as i64,
            file.bytes as i64,
        );
        self.execute(
            sql::UPSERT_OUTPUT_FILE,
            &[&run_id, &table, &load, &chunk, &file.key, &rows, &bytes],
        )
        .await
        .map_err(LedgerError::db("cannot record a Parquet file"))?;
        Ok(())
    }

    async fn forget_files(&self, load_id: i64) -> Result<()> {
        self.execute(sql::DELETE_OUTPUT_FILES_OF_LOAD, &[&load_id])
            .await
            .map_err(LedgerError::db("cannot forget a load's Parquet files"))?;
        Ok(())
    }
}
