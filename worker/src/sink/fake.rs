//! An in-memory target for the driver's unit tests: tables under a unique key whose rows carry
//! their provenance, beside the one in-memory ledger ([`ferry_ledger::memory`]), and a sink with
//! either commit semantics (a chunk's rows and checkpoint in one transaction, or each table's rows committed on
//! their own before the checkpoint). A sink can be told to crash at a step; everything it had not
//! committed is then lost, as a killed process's would be.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine;
use ferry_ledger::shard_state;
use ferry_shared::schema::{provenance_range, TableSchema};
use ferry_shared::store::{LocalStore, ObjectStore};
use md5::{Digest, Md5};

use super::driver::{load_shard, LoadContext, ShardOutcome};
use super::{Checkpoint, Key, KeyValue, Payload, Presence, Sink, TableEnd, TableRows, Unload};
use crate::target::{LoadPath, Target, TargetKind};
use crate::{Result, WorkerError};
use ferry_ledger::memory::MemoryLedger;
use ferry_ledger::{Ledger, Restart, RunRecord, ShardRecord};

const RUN: &str = "run";

/// The target's state.
#[derive(Debug, Default)]
pub(super) struct State {
    /// Per table: key → provenance (`None`: a row from elsewhere).
    pub(super) tables: Vec<BTreeMap<Key, Option<i64>>>,
}

/// The in-memory target.
#[derive(Clone, Debug, Default)]
pub(super) struct FakeTarget {
    pub(super) state: Arc<Mutex<State>>,
    /// The run's ledger.
    pub(super) ledger: MemoryLedger,
}

/// Where a [`FakeSink`] crashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Crash {
    /// When the n-th table part of the process ends (after an autocommit COPY stored it).
    AfterTableEnd(usize),
    /// In the n-th commit, after the checkpoint moved, before the transaction commits.
    AfterCheckpoint(usize),
}

impl FakeTarget {
    pub(super) fn with_tables(tables: usize) -> FakeTarget {
        let target = FakeTarget::default();
        target.state.lock().unwrap().tables = vec![BTreeMap::new(); tables];
        target
    }

    fn sink(&self, transactional: bool, crash: Option<Crash>) -> FakeSink {
        FakeSink {
            target: self.clone(),
            transactional,
            crash,
            table_ends: 0,
            commits: 0,
            open: None,
            staged: Vec::new(),
        }
    }

    fn rows(&self, table: usize) -> BTreeMap<Key, Option<i64>> {
        self.state.lock().unwrap().tables[table].clone()
    }

    pub(super) fn shard_record(&self, shard: &str) -> ShardRecord {
        self.ledger.shard_record(shard)
    }
}

struct FakeSink {
    target: FakeTarget,
    transactional: bool,
    crash: Option<Crash>,
    table_ends: usize,
    commits: usize,
    /// The open table and the rows sent into it.
    open: Option<(usize, Vec<(Key, i64)>)>,
    /// Rows of the chunk's transaction.
    staged: Vec<(usize, Key, i64)>,
}

fn crashed() -> WorkerError {
    WorkerError::Internal("crashed (test)".into())
}

/// The key (the first two fields: `"pk"`, `sk`) and the provenance (the last field) of each CSV
/// line the encoder wrote (the test data holds no commas or newlines inside values).
fn rows_of(payload: &Payload) -> Vec<(Key, i64)> {
    let Payload::Copy(data) = payload else {
        panic!("the fake reads CSV rows")
    };
    String::from_utf8_lossy(data)
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let key = vec![
                KeyValue::Text(fields[0].trim_matches('"').to_string()),
                KeyValue::Text(fields[1].to_string()),
            ];
            (key, fields[fields.len() - 1].parse().unwrap())
        })
        .collect()
}

#[async_trait]
impl Sink for FakeSink {
    fn describe(&self) -> String {
        "fake".into()
    }

    fn rows_commit_with_checkpoint(&self) -> bool {
        self.transactional
    }

    async fn begin_chunk(&mut self) -> Result<()> {
        self.open = None;
        self.staged.clear();
        Ok(())
    }

    async fn probe(&self, table: usize, key: &[KeyValue], provenance: i64) -> Result<Presence> {
        let state = self.target.state.lock().unwrap();
        Ok(match state.tables[table].get(key) {
            None => Presence::Absent,
            Some(Some(p)) if *p == provenance => Presence::Ours,
            Some(other) => Presence::Other(*other),
        })
    }

    async fn begin_table(&mut self, table: usize) -> Result<()> {
        self.open = Some((table, Vec::new()));
        Ok(())
    }

    async fn send(&mut self, rows: TableRows) -> Result<()> {
        let parsed = rows_of(&rows.payload);
        assert_eq!(parsed.len() as u64, rows.rows);
        self.open
            .as_mut()
            .expect("a table is open")
            .1
            .extend(parsed);
        Ok(())
    }

    async fn end_table(&mut self) -> Result<TableEnd> {
        let (table, rows) = self.open.take().expect("a table is open");
        let mut state = self.target.state.lock().unwrap();
        let taken = |key: &Key| {
            state.tables[table].contains_key(key)
                || self.staged.iter().any(|(t, k, _)| *t == table && k == key)
        };
        if let Some((key, _)) = rows.iter().find(|(key, _)| taken(key)) {
            return Ok(TableEnd::Conflict(format!("duplicate key {key:?}")));
        }
        let written = rows.len() as u64;
        if self.transactional {
            self.staged
                .extend(rows.into_iter().map(|(k, p)| (table, k, p)));
        } else {
            for (key, provenance) in rows {
                state.tables[table].insert(key, Some(provenance));
            }
        }
        drop(state);
        self.table_ends += 1;
        if self.crash == Some(Crash::AfterTableEnd(self.table_ends)) {
            self.staged.clear();
            return Err(crashed());
        }
        Ok(TableEnd::Written(written))
    }

    async fn abort(&mut self) -> Result<()> {
        self.open = None;
        self.staged.clear();
        Ok(())
    }

    async fn commit(&mut self, checkpoint: &Checkpoint<'_>) -> Result<bool> {
        self.commits += 1;
        let mut ledger = self.target.ledger.lock();
        if !ledger.can_advance(checkpoint.shard_id, checkpoint.generation, checkpoint.from) {
            self.staged.clear();
            return Ok(false);
        }
        let crash = self.crash == Some(Crash::AfterCheckpoint(self.commits));
        if crash && self.transactional {
            // Killed before COMMIT: the transaction never happened.
            self.staged.clear();
            return Err(crashed());
        }
        let kept = checkpoint.kept_rejects();
        assert!(ledger.advance(&checkpoint.advance(&kept).get()));
        let mut state = self.target.state.lock().unwrap();
        for (table, key, provenance) in self.staged.drain(..) {
            state.tables[table].insert(key, Some(provenance));
        }
        if crash {
            // Autocommit: the checkpoint was the commit point.
            return Err(crashed());
        }
        Ok(true)
    }
}

#[async_trait]
impl Unload for FakeTarget {
    async fn remove_rows(&self, _table: &TableSchema, load_id: i64) -> Result<u64> {
        let (lo, hi) = provenance_range(load_id);
        let mut state = self.state.lock().unwrap();
        let mut removed = 0;
        for table in &mut state.tables {
            let before = table.len();
            table.retain(|_, p| !p.is_some_and(|p| p >= lo && p < hi));
            removed += (before - table.len()) as u64;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::test_schema;
    use ferry_shared::schema::OnTypeMismatch;

    /// A data file of `items` lines (keys `k<i>`/`i`), one of them malformed when `bad_line` is
    /// set; returns its MD5 (base64).
    fn write_file(
        path: &std::path::Path,
        items: u64,
        bad_line: Option<u64>,
        extra: &str,
    ) -> String {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for i in 1..=items {
            if Some(i) == bad_line {
                writeln!(gz, "{{\"Item\":").unwrap();
            } else {
                writeln!(
                    gz,
                    r#"{{"Item":{{"pk":{{"S":"k{i}"}},"sk":{{"N":"{i}"}},"n":{{"N":"{i}.5"}}{extra}}}}}"#
                )
                .unwrap();
            }
        }
        let bytes = gz.finish().unwrap();
        std::fs::write(path, &bytes).unwrap();
        base64::engine::general_purpose::STANDARD.encode(Md5::digest(&bytes))
    }

    struct Setup {
        _dir: tempfile::TempDir,
        dir_path: std::path::PathBuf,
        target: FakeTarget,
        ctx: LoadContext,
    }

    /// One shard "s" of `items` lines, `chunk` lines per chunk, in a fake target.
    fn setup(items: u64, chunk: u64, bad_line: Option<u64>) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let md5 = write_file(&dir.path().join("s.json.gz"), items, bad_line, "");
        let mut schema = (*test_schema(OnTypeMismatch::Overflow)).clone();
        schema.provenance = true;
        let target = FakeTarget::with_tables(1);
        target.ledger.lock().shards.insert(
            "s".into(),
            ShardRecord::for_test("s", "s.json.gz", items, Some(md5)),
        );
        let run = RunRecord::for_test(RUN, dir.path(), schema, chunk, items, Some("csv"));
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()));
        let mut settings = ferry_shared::config::load_settings(None).unwrap().load;
        settings.block_lines = std::num::NonZeroUsize::new(7).unwrap();
        let target_kind = Target {
            kind: TargetKind::HeliosDb,
            server_version: "fake".into(),
            load_path: LoadPath::CsvCopyAutocommit,
        };
        let ctx = LoadContext::new(run, store, &settings, target_kind, "fake://").unwrap();
        Setup {
            dir_path: dir.path().to_path_buf(),
            _dir: dir,
            target,
            ctx,
        }
    }

    /// A run planned before HeliosDB's columns were kept free of dots (25a481b) may hold a
    /// dotted column; HeliosDB would store its values and read them back as NULL, so loading it
    /// there is refused, naming the column and the way out. PostgreSQL reads such a name back.
    #[test]
    fn a_run_with_a_dotted_column_does_not_load_on_heliosdb() {
        let dir = tempfile::tempdir().unwrap();
        let mut schema = (*test_schema(OnTypeMismatch::Overflow)).clone();
        schema.provenance = true;
        schema.columns[2].name = "tax.rate".into();
        let run = RunRecord::for_test(RUN, dir.path(), schema, 10, 1, None);
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()));
        let settings = ferry_shared::config::load_settings(None).unwrap().load;
        let target = |kind, load_path| Target {
            kind,
            server_version: "fake".into(),
            load_path,
        };
        let helios = target(TargetKind::HeliosDb, LoadPath::CsvCopyAutocommit);
        let err = match LoadContext::new(run.clone(), store.clone(), &settings, helios, "fake://") {
            Ok(_) => panic!("a dotted column must be refused on HeliosDB"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("\"tax.rate\"") && err.contains("\"t\"") && err.contains("--run-id"),
            "{err}"
        );
        let postgres = target(TargetKind::Postgres, LoadPath::BinaryCopyInTransaction);
        assert!(
            LoadContext::new(run.clone(), store.clone(), &settings, postgres, "fake://").is_ok()
        );
        // A Parquet run writes files, which keep any name.
        let parquet = target(TargetKind::HeliosDb, LoadPath::Parquet);
        assert!(LoadContext::new(run, store, &settings, parquet, "fake://").is_ok());
    }

    fn key(i: u64) -> Key {
        vec![
            KeyValue::Text(format!("k{i}")),
            KeyValue::Text(i.to_string()),
        ]
    }

    async fn load(
        setup: &Setup,
        transactional: bool,
        crash: Option<Crash>,
    ) -> Result<ShardOutcome> {
        let mut sink = setup.target.sink(transactional, crash);
        load_shard(
            &setup.target.ledger,
            &setup.target,
            &mut sink,
            &setup.ctx,
            "s",
        )
        .await
    }

    /// Every key 1..=items once, the shard done and reconciled.
    fn assert_loaded_once(setup: &Setup, items: u64) {
        let rows = setup.target.rows(0);
        assert_eq!(rows.len() as u64, items);
        for i in 1..=items {
            assert!(
                rows.get(&key(i)).is_some_and(Option::is_some),
                "k{i} missing"
            );
        }
        let shard = setup.target.shard_record("s");
        assert_eq!(shard.state, shard_state::DONE);
        assert_eq!(shard.loaded_rows, items);
        assert_eq!(shard.committed_lines, items);
    }

    #[tokio::test]
    async fn both_commit_semantics_load_every_row_once() {
        for transactional in [true, false] {
            let setup = setup(50, 10, None);
            assert_eq!(
                load(&setup, transactional, None).await.unwrap(),
                ShardOutcome::Done
            );
            assert_loaded_once(&setup, 50);
            assert_eq!(
                load(&setup, transactional, None).await.unwrap(),
                ShardOutcome::AlreadyDone
            );
        }
    }

    #[tokio::test]
    async fn a_crash_at_any_step_resumes_exactly_once() {
        for transactional in [true, false] {
            for n in 1..=5 {
                for crash in [Crash::AfterTableEnd(n), Crash::AfterCheckpoint(n)] {
                    let setup = setup(50, 10, Some(23));
                    let first = load(&setup, transactional, Some(crash)).await;
                    assert!(first.is_err(), "{crash:?} did not fire");
                    let again = load(&setup, transactional, None).await.unwrap();
                    assert_eq!(
                        again,
                        ShardOutcome::Done,
                        "{crash:?} transactional={transactional}"
                    );
                    let rows = setup.target.rows(0);
                    assert_eq!(rows.len(), 49, "{crash:?}: line 23 is a reject");
                    let shard = setup.target.shard_record("s");
                    assert_eq!(
                        (shard.loaded_rows, shard.rejected_rows),
                        (49, 1),
                        "{crash:?} transactional={transactional}"
                    );
                    assert_eq!(setup.target.ledger.lock().rejects.len(), 1);
                }
            }
        }
    }

    #[tokio::test]
    async fn a_key_from_elsewhere_fails_the_shard_naming_it_and_nothing_is_skipped() {
        // The issue's case: the table holds one row from elsewhere, the key of the last line of
        // a one-chunk file; and its variants (first line of a later chunk, a middle line).
        for (foreign, transactional) in [(30, false), (30, true), (21, false), (25, false)] {
            let setup = setup(30, if foreign == 30 { 100 } else { 10 }, None);
            setup.target.state.lock().unwrap().tables[0].insert(key(foreign), None);
            let outcome = load(&setup, transactional, None).await.unwrap();
            let ShardOutcome::Failed(reason) = outcome else {
                panic!("{outcome:?}")
            };
            if !transactional {
                // The autocommit path names the line and key itself (HeliosDB's message does not).
                assert!(
                    reason.contains(&format!("line {foreign} holds key (pk=\"k{foreign}\"")),
                    "{reason}"
                );
                assert!(reason.contains("a row Ferry did not load"), "{reason}");
            }
            let shard = setup.target.shard_record("s");
            assert_eq!(shard.state, shard_state::FAILED);
            // Every chunk before the conflicting one is loaded, none after, and the checkpoint
            // never passes the conflicting line.
            let rows = setup.target.rows(0);
            let chunk_start = if foreign == 30 {
                0
            } else {
                (foreign - 1) / 10 * 10
            };
            assert_eq!(shard.committed_lines, chunk_start);
            assert_eq!(rows.len() as u64, chunk_start + 1, "{foreign}");
            assert_eq!(rows[&key(foreign)], None, "the foreign row is untouched");
        }
    }

    #[tokio::test]
    async fn with_redacted_reject_lines_a_key_conflict_names_columns_not_values() {
        // Both commit semantics; the refused COPY's own words (the fake's say
        // `duplicate key [Text("k30"), …]`, as PostgreSQL's `Key (pk, sk)=(k30, 30) already
        // exists` would) must not reach the message either.
        for (foreign, transactional) in [(30, false), (30, true), (21, false)] {
            for mode in [
                ferry_shared::config::RejectLines::Redacted,
                ferry_shared::config::RejectLines::Omitted,
            ] {
                let mut setup = setup(30, if foreign == 30 { 100 } else { 10 }, None);
                setup.ctx.reject_lines = mode;
                setup.target.state.lock().unwrap().tables[0].insert(key(foreign), None);
                let outcome = load(&setup, transactional, None).await.unwrap();
                let ShardOutcome::Failed(reason) = outcome else {
                    panic!("{outcome:?}")
                };
                let recorded = setup.target.shard_record("s").error.unwrap_or_default();
                for text in [&reason, &recorded] {
                    assert!(!text.contains(&format!("k{foreign}\"")), "{text}");
                    assert!(!text.contains(&format!("\"k{foreign}")), "{text}");
                    assert!(text.contains("already in table \"t\""), "{text}");
                }
                // The key columns, and each value's length ("k21": 3 bytes); the fake finds
                // the conflicting row on both paths (a target's own words, when it does not, are
                // withheld: `redact::server_text`).
                assert!(
                    reason.contains(&format!(
                        "line {foreign} holds key (pk=<3 bytes, redacted>, sk=<2 bytes, redacted>)"
                    )),
                    "transactional={transactional}: {reason}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_key_the_export_holds_twice_is_named_with_where_it_was_loaded() {
        let setup = setup(20, 10, None);
        // Line 15 repeats line 3's key.
        let lines: Vec<String> = (1..=20u64)
            .map(|i| {
                let k = if i == 15 { 3 } else { i };
                format!(r#"{{"Item":{{"pk":{{"S":"k{k}"}},"sk":{{"N":"{k}"}}}}}}"#)
            })
            .collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all((lines.join("\n") + "\n").as_bytes()).unwrap();
        std::fs::write(setup.dir_path.join("s.json.gz"), gz.finish().unwrap()).unwrap();
        let outcome = load(&setup, false, None).await.unwrap();
        let ShardOutcome::Failed(reason) = outcome else {
            panic!("{outcome:?}")
        };
        assert!(reason.contains("line 15 holds key"), "{reason}");
        assert!(
            reason.contains("the export holds the key twice"),
            "{reason}"
        );
        assert!(reason.contains("lines 1..=10"), "{reason}");
    }

    #[tokio::test]
    async fn racing_loaders_store_each_chunk_once() {
        for transactional in [true, false] {
            let setup = Arc::new(setup(200, 10, Some(77)));
            let mut tasks = Vec::new();
            for _ in 0..3 {
                let setup = setup.clone();
                tasks.push(tokio::spawn(async move {
                    // A loader that loses a race looks again, as the pool does.
                    loop {
                        match load(&setup, transactional, None).await.unwrap() {
                            ShardOutcome::LostRace => tokio::task::yield_now().await,
                            other => return other,
                        }
                    }
                }));
            }
            for task in tasks {
                let outcome = task.await.unwrap();
                assert!(
                    matches!(outcome, ShardOutcome::Done | ShardOutcome::AlreadyDone),
                    "{outcome:?}"
                );
            }
            assert_eq!(setup.target.rows(0).len(), 199);
            let shard = setup.target.shard_record("s");
            assert_eq!((shard.loaded_rows, shard.rejected_rows), (199, 1));
        }
    }

    #[tokio::test]
    async fn a_file_that_changed_is_refused_and_a_bad_one_leaves_no_rows() {
        let setup = setup(40, 10, None);
        // Two chunks committed, then a crash.
        let crashed = load(&setup, false, Some(Crash::AfterCheckpoint(2))).await;
        assert!(crashed.is_err());
        assert_eq!(setup.target.shard_record("s").committed_lines, 20);
        // Another file under the same name: each line gains an attribute.
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_file(
            &setup.dir_path.join("s.json.gz"),
            40,
            None,
            r#","x":{"S":"changed"}"#,
        );
        let ShardOutcome::Failed(reason) = load(&setup, false, None).await.unwrap() else {
            panic!("a changed file must be refused")
        };
        assert!(
            reason.contains("changed since this shard's load began"),
            "{reason}"
        );
        assert!(
            reason.contains("ferry-coordinator reset --run-id run --shard s"),
            "{reason}"
        );
        assert_eq!(setup.target.rows(0).len(), 20, "nothing more was loaded");

        // A file that fails its MD5 at the end: the rows of its earlier chunks are removed.
        let bad = self::setup(40, 10, None);
        write_file(
            &bad.dir_path.join("s.json.gz"),
            40,
            None,
            r#","x":{"S":"wrong"}"#,
        );
        let ShardOutcome::Failed(reason) = load(&bad, false, None).await.unwrap() else {
            panic!("an MD5 mismatch must fail")
        };
        assert!(reason.contains("MD5 mismatch"), "{reason}");
        assert!(bad.target.rows(0).is_empty(), "no row of a bad file stays");
        let shard = bad.target.shard_record("s");
        assert_eq!(
            (shard.generation, shard.committed_lines, shard.loaded_rows),
            (1, 0, 0)
        );
        // The right file back: a clean load from the start.
        let md5 = write_file(&bad.dir_path.join("s.json.gz"), 40, None, "");
        assert_eq!(shard.md5_checksum.as_deref(), Some(md5.as_str()));
        assert_eq!(load(&bad, false, None).await.unwrap(), ShardOutcome::Done);
        assert_loaded_once(&bad, 40);
    }

    #[tokio::test]
    async fn an_interrupted_removal_is_finished_by_the_next_loader() {
        let setup = setup(30, 10, None);
        assert!(load(&setup, false, Some(Crash::AfterCheckpoint(2)))
            .await
            .is_err());
        // The generation moved on (as a failed MD5 check does) but the rows were not removed yet.
        let restart = Restart {
            state: shard_state::FAILED,
            error: Some("test".into()),
            md5_ok: None,
            items_seen: None,
            over_chunk_in_flight: false,
        };
        assert!(setup
            .target
            .ledger
            .restart_shard(RUN, "s", 0, &restart)
            .await
            .unwrap());
        assert_eq!(setup.target.rows(0).len(), 20, "stale rows still there");
        assert_eq!(load(&setup, true, None).await.unwrap(), ShardOutcome::Done);
        assert_loaded_once(&setup, 30);
        let ledger = setup.target.ledger.lock();
        assert!(ledger
            .loads
            .values()
            .filter(|l| l.generation == 0)
            .all(|l| l.cleaned));
    }

    /// A `reset` racing an autocommit COPY: while a chunk is marked as written ahead of its
    /// checkpoint, a restart that does not hold the shard is refused and changes nothing (the
    /// COPY may still commit); one that states no loader is alive ends the generation, and the
    /// next loader removes the stored chunk before loading every row once.
    #[tokio::test]
    async fn a_restart_waits_for_a_chunk_in_flight_unless_forced() {
        let setup = setup(30, 10, None);
        assert!(load(&setup, false, Some(Crash::AfterTableEnd(2)))
            .await
            .is_err());
        let before = setup.target.shard_record("s");
        assert_eq!(
            before.copying_from,
            Some(10),
            "the second chunk is in flight"
        );
        assert_eq!(setup.target.rows(0).len(), 20, "its rows are stored");
        let mut restart = Restart {
            state: shard_state::PENDING,
            over_chunk_in_flight: false,
            ..Restart::default()
        };
        assert!(!setup
            .target
            .ledger
            .restart_shard(RUN, "s", 0, &restart)
            .await
            .unwrap());
        let after = setup.target.shard_record("s");
        assert_eq!(
            (after.generation, after.committed_lines, after.copying_from),
            (0, 10, Some(10)),
            "a refused restart changes nothing"
        );
        restart.over_chunk_in_flight = true;
        assert!(setup
            .target
            .ledger
            .restart_shard(RUN, "s", 0, &restart)
            .await
            .unwrap());
        assert_eq!(setup.target.shard_record("s").generation, 1);
        assert_eq!(load(&setup, false, None).await.unwrap(), ShardOutcome::Done);
        assert_loaded_once(&setup, 30);
    }
}
