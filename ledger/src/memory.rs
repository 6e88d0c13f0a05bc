//! The [`Ledger`] in memory: the one the load engine's unit tests use (the driver against
//! in-memory targets with either commit semantics, the applier, the Parquet sink). It keeps what
//! `ferry.shards`, `ferry.loads`, `ferry.rejects` and `ferry.deferred` keep and follows the same
//! conditional updates as the statements of [`crate::sql`], so a test of the driver's protocol
//! against it tests the protocol the database enforces. A test target holds its rows beside it and
//! moves a chunk's checkpoint with [`MemoryState::advance`] inside its own commit; a Parquet sink
//! records its files in it (`ferry.output_files`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::outputs::FileRecord;
use crate::protocol::{Advance, Ledger, LoadClaim, Restart};
use crate::runs::ShardRecord;
use crate::sql::shard_state;
use crate::{LedgerError, Result};

/// One row of `ferry.loads`.
#[derive(Clone, Debug, Default)]
pub struct MemoryLoad {
    /// The run.
    pub run_id: String,
    /// The shard.
    pub shard_id: String,
    /// The generation that claimed it.
    pub generation: i64,
    /// The data file identity claimed.
    pub identity: String,
    /// Whether its rows were removed.
    pub cleaned: bool,
}

/// What the in-memory ledger holds (public, so a test can look at it or damage it).
#[derive(Debug, Default)]
pub struct MemoryState {
    /// Shards by id (one run per ledger).
    pub shards: HashMap<String, ShardRecord>,
    /// Loads by id.
    pub loads: BTreeMap<i64, MemoryLoad>,
    /// (shard, line) → (reason, generation).
    pub rejects: BTreeMap<(String, u64), (String, i64)>,
    /// (shard, line) → the change record a window set aside.
    pub deferred: BTreeMap<(String, u64), Vec<u8>>,
    /// (table, load, chunk) → a committed output file.
    pub files: BTreeMap<(String, i64, u64), FileRecord>,
}

impl MemoryState {
    fn shard_mut(&mut self, shard_id: &str) -> Result<&mut ShardRecord> {
        self.shards
            .get_mut(shard_id)
            .ok_or_else(|| LedgerError::Unexpected(format!("no shard {shard_id}")))
    }

    /// Whether a checkpoint from `from` of `generation` would move (the statements' `WHERE`).
    pub fn can_advance(&self, shard_id: &str, generation: i64, from: u64) -> bool {
        self.shards.get(shard_id).is_some_and(|shard| {
            shard.committed_lines == from
                && shard.generation == generation
                && shard.state != shard_state::DONE
        })
    }

    /// Moves a chunk's checkpoint and records its rejects, when [`MemoryState::can_advance`]
    /// (what [`crate::protocol::advance_checkpoint`] does in the database); returns whether it
    /// moved.
    pub fn advance(&mut self, advance: &Advance<'_>) -> bool {
        if !self.can_advance(advance.shard_id, advance.generation, advance.from) {
            return false;
        }
        let shard = self.shards.get_mut(advance.shard_id).expect("checked");
        shard.committed_lines = advance.to;
        shard.copying_from = None;
        shard.loaded_rows += advance.rows;
        shard.rejected_rows += advance.rejects.len() as u64;
        shard.spilled_values += advance.spilled;
        shard.filtered_rows += advance.filtered;
        shard.state = shard_state::PENDING.into();
        shard.error = None;
        if let Some(end) = advance.file_end {
            shard.state = shard_state::DONE.into();
            shard.items_seen = Some(end.items);
            shard.md5_ok = end.md5_ok;
        }
        let generation = shard.generation;
        for reject in advance.rejects {
            self.rejects.insert(
                (advance.shard_id.to_string(), reject.line_no),
                (reject.reason.to_string(), generation),
            );
        }
        true
    }

    fn recorded_load(&self, run_id: &str, shard_id: &str, generation: i64) -> Option<LoadClaim> {
        self.loads
            .iter()
            .find(|(_, l)| {
                l.run_id == run_id && l.shard_id == shard_id && l.generation == generation
            })
            .map(|(id, l)| LoadClaim {
                load_id: *id,
                file_identity: l.identity.clone(),
            })
    }
}

/// The in-memory ledger; clones share one state.
#[derive(Clone, Debug, Default)]
pub struct MemoryLedger {
    /// What it holds.
    pub state: Arc<Mutex<MemoryState>>,
}

impl MemoryLedger {
    /// A ledger holding `shards`.
    pub fn with_shards(shards: impl IntoIterator<Item = ShardRecord>) -> MemoryLedger {
        let ledger = MemoryLedger::default();
        ledger.lock().shards = shards
            .into_iter()
            .map(|s| (s.shard_id.clone(), s))
            .collect();
        ledger
    }

    /// The state, locked.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A shard as recorded (panics when missing: a test's mistake).
    pub fn shard_record(&self, shard_id: &str) -> ShardRecord {
        self.lock().shards[shard_id].clone()
    }
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn shard(&self, _run_id: &str, shard_id: &str) -> Result<Option<ShardRecord>> {
        Ok(self.lock().shards.get(shard_id).cloned())
    }

    async fn fail_shard(
        &self,
        _run_id: &str,
        shard_id: &str,
        reason: &str,
        md5_ok: Option<bool>,
        items_seen: Option<u64>,
    ) -> Result<()> {
        let mut state = self.lock();
        let shard = state.shard_mut(shard_id)?;
        if shard.state != shard_state::DONE {
            shard.state = shard_state::FAILED.into();
            shard.error = Some(reason.into());
            shard.md5_ok = md5_ok;
            shard.items_seen = items_seen;
        }
        Ok(())
    }

    async fn restart_shard(
        &self,
        _run_id: &str,
        shard_id: &str,
        generation: i64,
        restart: &Restart,
    ) -> Result<bool> {
        let mut state = self.lock();
        let shard = state.shard_mut(shard_id)?;
        if shard.generation != generation
            || (shard.copying_from.is_some() && !restart.over_chunk_in_flight)
        {
            return Ok(false);
        }
        shard.generation += 1;
        shard.committed_lines = 0;
        shard.copying_from = None;
        shard.loaded_rows = 0;
        shard.rejected_rows = 0;
        shard.filtered_rows = 0;
        shard.spilled_values = 0;
        shard.state = restart.state.into();
        shard.error = restart.error.clone();
        shard.md5_ok = restart.md5_ok;
        shard.items_seen = restart.items_seen;
        Ok(true)
    }

    async fn recorded_load(
        &self,
        run_id: &str,
        shard_id: &str,
        generation: i64,
    ) -> Result<Option<LoadClaim>> {
        Ok(self.lock().recorded_load(run_id, shard_id, generation))
    }

    async fn claim_load(
        &self,
        run_id: &str,
        shard_id: &str,
        generation: i64,
        file_identity: &str,
    ) -> Result<LoadClaim> {
        let mut state = self.lock();
        if let Some(claim) = state.recorded_load(run_id, shard_id, generation) {
            return Ok(claim);
        }
        let load_id = state.loads.keys().last().copied().unwrap_or(0) + 1;
        state.loads.insert(
            load_id,
            MemoryLoad {
                run_id: run_id.into(),
                shard_id: shard_id.into(),
                generation,
                identity: file_identity.into(),
                cleaned: false,
            },
        );
        Ok(LoadClaim {
            load_id,
            file_identity: file_identity.into(),
        })
    }

    async fn stale_loads(&self, run_id: &str, shard_id: &str, generation: i64) -> Result<Vec<i64>> {
        Ok(self
            .lock()
            .loads
            .iter()
            .filter(|(_, l)| {
                l.run_id == run_id
                    && l.shard_id == shard_id
                    && l.generation < generation
                    && !l.cleaned
            })
            .map(|(id, _)| *id)
            .collect())
    }

    async fn mark_load_cleaned(&self, load_id: i64) -> Result<()> {
        if let Some(load) = self.lock().loads.get_mut(&load_id) {
            load.cleaned = true;
        }
        Ok(())
    }

    async fn mark_copying(
        &self,
        _run_id: &str,
        shard_id: &str,
        from: u64,
        generation: i64,
    ) -> Result<bool> {
        let mut state = self.lock();
        if !state.can_advance(shard_id, generation, from) {
            return Ok(false);
        }
        state.shard_mut(shard_id)?.copying_from = Some(from);
        Ok(true)
    }

    async fn delete_stale_rejects(
        &self,
        _run_id: &str,
        shard_id: &str,
        generation: i64,
    ) -> Result<u64> {
        let mut state = self.lock();
        let before = state.rejects.len();
        state
            .rejects
            .retain(|(shard, _), (_, g)| shard != shard_id || *g >= generation);
        Ok((before - state.rejects.len()) as u64)
    }

    async fn load_owner(&self, load_id: i64) -> Result<Option<(String, String, String)>> {
        let state = self.lock();
        Ok(state.loads.get(&load_id).map(|l| {
            let data_key = state
                .shards
                .get(&l.shard_id)
                .map(|s| s.data_key.clone())
                .unwrap_or_default();
            (l.run_id.clone(), l.shard_id.clone(), data_key)
        }))
    }

    async fn advance(&self, advance: &Advance<'_>) -> Result<bool> {
        Ok(self.lock().advance(advance))
    }

    async fn record_file(&self, _run_id: &str, table: &str, file: &FileRecord) -> Result<()> {
        self.lock()
            .files
            .insert((table.to_string(), file.load_id, file.chunk), file.clone());
        Ok(())
    }

    async fn forget_files(&self, load_id: i64) -> Result<()> {
        self.lock().files.retain(|(_, load, _), _| *load != load_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::RejectRow;

    fn ledger() -> MemoryLedger {
        MemoryLedger::with_shards([ShardRecord::for_test("s", "s.json.gz", 10, None)])
    }

    const REJECTS: &[RejectRow<'static>] = &[RejectRow {
        line_no: 1,
        reason: "bad",
        raw: b"{",
    }];

    fn advance(from: u64, to: u64, generation: i64) -> Advance<'static> {
        Advance {
            run_id: "r",
            shard_id: "s",
            generation,
            from,
            to,
            rows: to - from,
            spilled: 0,
            filtered: 0,
            rejects: REJECTS,
            file_end: None,
            digests: &[],
        }
    }

    #[tokio::test]
    async fn a_checkpoint_moves_once_and_only_in_its_generation() {
        let ledger = ledger();
        assert!(ledger.lock().advance(&advance(0, 5, 0)));
        assert!(!ledger.lock().advance(&advance(0, 5, 0)), "moved twice");
        assert!(
            !ledger.lock().advance(&advance(5, 10, 1)),
            "another generation moved it"
        );
        let shard = ledger.shard_record("s");
        assert_eq!(
            (
                shard.committed_lines,
                shard.loaded_rows,
                shard.rejected_rows
            ),
            (5, 5, 1)
        );
        let restart = Restart {
            state: shard_state::PENDING,
            ..Restart::default()
        };
        assert!(ledger.restart_shard("r", "s", 0, &restart).await.unwrap());
        assert!(
            !ledger.restart_shard("r", "s", 0, &restart).await.unwrap(),
            "ended twice"
        );
        assert!(
            !ledger.lock().advance(&advance(0, 5, 0)),
            "an ended generation moved it"
        );
        assert_eq!(ledger.delete_stale_rejects("r", "s", 1).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_restart_waits_for_a_chunk_in_flight_unless_told_otherwise() {
        let ledger = ledger();
        assert!(ledger.mark_copying("r", "s", 0, 0).await.unwrap());
        assert!(
            !ledger.mark_copying("r", "s", 3, 0).await.unwrap(),
            "not at the checkpoint"
        );
        let mut restart = Restart {
            state: shard_state::PENDING,
            ..Restart::default()
        };
        assert!(!ledger.restart_shard("r", "s", 0, &restart).await.unwrap());
        restart.over_chunk_in_flight = true;
        assert!(ledger.restart_shard("r", "s", 0, &restart).await.unwrap());
        assert_eq!(ledger.shard_record("s").copying_from, None);
    }

    #[tokio::test]
    async fn the_first_claim_of_a_generation_wins_and_stale_loads_are_listed_until_cleaned() {
        let ledger = ledger();
        let first = ledger.claim_load("r", "s", 0, "etag-a").await.unwrap();
        let again = ledger.claim_load("r", "s", 0, "etag-b").await.unwrap();
        assert_eq!(again, first, "the claim as recorded");
        let next = ledger.claim_load("r", "s", 1, "etag-b").await.unwrap();
        assert_ne!(next.load_id, first.load_id);
        assert_eq!(
            ledger.stale_loads("r", "s", 1).await.unwrap(),
            vec![first.load_id]
        );
        ledger.mark_load_cleaned(first.load_id).await.unwrap();
        assert!(ledger.stale_loads("r", "s", 1).await.unwrap().is_empty());
        assert_eq!(
            ledger.load_owner(next.load_id).await.unwrap(),
            Some(("r".into(), "s".into(), "s.json.gz".into()))
        );
    }
}
