//! The applier's exactly-once argument, unit-tested against an in-memory target (as [`super::fake`]
//! tests the load paths): tables holding each key's row, a second unique column for constraint
//! deferrals, beside the one in-memory ledger ([`ferry_ledger::memory`]: shards, loads, rejects and
//! deferred records), and a sink that applies a
//! chunk's changes and checkpoint as one transaction and can be killed at any step. The real
//! applier ([`super::apply`]) runs the same scenarios against PostgreSQL and HeliosDB in `tests/`.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine;
use ferry_ledger::shard_state;
use ferry_shared::store::{LocalStore, ObjectStore};
use md5::{Digest, Md5};

use super::apply::{Changes, Deferral};
use super::driver::{load_shard, LoadContext, ShardOutcome};
use super::encode::BlockEncoder;
use super::{Checkpoint, Key, KeyValue, Payload, Presence, Sink, TableEnd, TableRows};
use crate::decode::{LineRef, RawBlock};
use crate::target::{LoadPath, Target, TargetKind};
use crate::{Result, WorkerError};
use ferry_ledger::memory::MemoryLedger;
use ferry_ledger::{RunRecord, ShardRecord};

const RUN: &str = "window";
/// The value column the tests compare (`n` in the test schema: index 2).
const N: usize = 2;

#[derive(Debug, Default)]
struct State {
    /// Per table: key → the row's values.
    tables: Vec<BTreeMap<Key, Vec<Option<String>>>>,
    /// A second unique constraint: (table, value index).
    unique: Option<(usize, usize)>,
}

#[derive(Clone, Debug, Default)]
struct FakeTarget {
    state: Arc<Mutex<State>>,
    /// The window's ledger (shards, loads, rejects, deferred records).
    ledger: MemoryLedger,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Crash {
    /// In the n-th commit, after the checkpoint moved, before COMMIT: nothing of it stays.
    BeforeCommit(usize),
    /// After the n-th COMMIT, before the loader goes on.
    AfterCommit(usize),
}

fn crashed() -> WorkerError {
    WorkerError::Internal("crashed (test)".into())
}

impl State {
    /// Applies one table's changes the way the SQL applier does: deletes, then upserts; an upsert
    /// taking a unique value another key holds is deferred.
    fn apply(&mut self, changes: &[Changes], deferred: &mut Vec<Deferral>) {
        for (table, c) in changes.iter().enumerate() {
            for delete in &c.deletes {
                self.tables[table].remove(&delete.key);
            }
        }
        for (table, c) in changes.iter().enumerate() {
            for upsert in &c.upserts {
                if let Some((unique_table, column)) = self.unique {
                    let value = &upsert.values[column];
                    let taken = unique_table == table
                        && self.tables[table]
                            .iter()
                            .any(|(k, v)| *k != upsert.key && v[column] == *value);
                    if taken {
                        deferred.push(Deferral {
                            line_no: upsert.line_no,
                            reason: format!("duplicate key value {value:?}"),
                            raw: upsert.raw.to_vec(),
                        });
                        continue;
                    }
                }
                self.tables[table].insert(upsert.key.clone(), upsert.values.clone());
            }
        }
    }
}

struct FakeApplySink {
    target: FakeTarget,
    crash: Option<Crash>,
    commits: usize,
    pending: Vec<Changes>,
    current: Option<usize>,
}

impl FakeTarget {
    fn sink(&self, crash: Option<Crash>) -> FakeApplySink {
        let tables = self.state.lock().unwrap().tables.len();
        FakeApplySink {
            target: self.clone(),
            crash,
            commits: 0,
            pending: (0..tables).map(|_| Changes::default()).collect(),
            current: None,
        }
    }

    fn n_values(&self, table: usize) -> BTreeMap<Key, Option<String>> {
        self.state.lock().unwrap().tables[table]
            .iter()
            .map(|(k, v)| (k.clone(), v[N].clone()))
            .collect()
    }

    fn shard_record(&self) -> ShardRecord {
        self.ledger.shard_record("s")
    }
}

#[async_trait]
impl Sink for FakeApplySink {
    fn describe(&self) -> String {
        "fake applier".into()
    }
    fn rows_commit_with_checkpoint(&self) -> bool {
        true
    }
    async fn begin_chunk(&mut self) -> Result<()> {
        self.pending
            .iter_mut()
            .for_each(|c| *c = Changes::default());
        Ok(())
    }
    async fn probe(&self, _: usize, _: &[KeyValue], _: i64) -> Result<Presence> {
        panic!("the applier's chunks are never proven")
    }
    async fn begin_table(&mut self, table: usize) -> Result<()> {
        self.current = Some(table);
        Ok(())
    }
    async fn send(&mut self, rows: TableRows) -> Result<()> {
        let Payload::Changes(mut changes) = rows.payload else {
            panic!("the applier gets changes")
        };
        assert!(rows.first_key.is_none(), "nothing to prove");
        let pending = &mut self.pending[rows.table];
        pending.upserts.append(&mut changes.upserts);
        pending.deletes.append(&mut changes.deletes);
        Ok(())
    }
    async fn end_table(&mut self) -> Result<TableEnd> {
        self.current = None;
        Ok(TableEnd::Written(0))
    }
    async fn abort(&mut self) -> Result<()> {
        self.begin_chunk().await
    }
    async fn commit(&mut self, checkpoint: &Checkpoint<'_>) -> Result<bool> {
        self.commits += 1;
        let pending = std::mem::take(&mut self.pending);
        self.pending = pending.iter().map(|_| Changes::default()).collect();
        let mut ledger = self.target.ledger.lock();
        // The conditional checkpoint, the transaction's first write.
        if !ledger.can_advance(checkpoint.shard_id, checkpoint.generation, checkpoint.from) {
            return Ok(false);
        }
        if self.crash == Some(Crash::BeforeCommit(self.commits)) {
            return Err(crashed());
        }
        let kept = checkpoint.kept_rejects();
        assert!(ledger.advance(&checkpoint.advance(&kept).get()));
        let mut deferred = Vec::new();
        self.target
            .state
            .lock()
            .unwrap()
            .apply(&pending, &mut deferred);
        for d in deferred {
            ledger
                .deferred
                .insert((checkpoint.shard_id.to_string(), d.line_no), d.raw);
        }
        if self.crash == Some(Crash::AfterCommit(self.commits)) {
            return Err(crashed());
        }
        Ok(true)
    }
}

/// A change record of the test table (`pk` S, `sk` N; `n` the compared value).
fn upsert_line(i: u64, n: &str, extra: &str) -> String {
    format!(
        r#"{{"Metadata":{{"WriteTimestampMicros":{{"N":"17{i}"}}}},"Keys":{{"pk":{{"S":"k{i}"}},"sk":{{"N":"{i}"}}}},"NewImage":{{"pk":{{"S":"k{i}"}},"sk":{{"N":"{i}"}},"n":{{"N":"{n}"}}{extra}}}}}"#
    )
}

fn delete_line(i: u64) -> String {
    format!(
        r#"{{"Keys":{{"pk":{{"S":"k{i}"}},"sk":{{"N":"{i}"}}}},"OldImage":{{"pk":{{"S":"k{i}"}},"sk":{{"N":"{i}"}}}}}}"#
    )
}

fn key(i: u64) -> Key {
    vec![
        KeyValue::Text(format!("k{i}")),
        KeyValue::Text(i.to_string()),
    ]
}

struct Setup {
    _dir: tempfile::TempDir,
    target: FakeTarget,
    ctx: LoadContext,
    /// What the table must hold after the window: key → n.
    expected: BTreeMap<Key, Option<String>>,
}

/// A full run's table of keys 1..=30 (n = "i.5") and one window over it: updates, inserts (up to
/// 40), deletes, one malformed record (line 13) and, when `unique`, a unique `n` column whose
/// values move between keys inside the window.
fn setup(chunk: u64, unique: bool) -> Setup {
    let mut schema =
        (*crate::decode::tests::test_schema(ferry_shared::schema::OnTypeMismatch::Overflow))
            .clone();
    schema.provenance = true;
    let values = |n: String| {
        let mut v = vec![None; 11];
        v[N] = Some(n);
        v
    };
    let mut base = BTreeMap::new();
    for i in 1..=30u64 {
        base.insert(key(i), values(format!("{i}.5")));
    }
    let mut expected: BTreeMap<Key, Option<String>> = base
        .iter()
        .map(|(k, v)| (k.clone(), v[N].clone()))
        .collect();
    let mut lines = Vec::new();
    for i in 1..=40u64 {
        if i == 13 {
            lines.push("{\"Keys\":".to_string());
            continue;
        }
        match i % 4 {
            0 => {
                lines.push(delete_line(i));
                expected.remove(&key(i));
            }
            1 | 2 => {
                // With a unique n: key i takes the value key i+1 holds now (which moves on in
                // a later line), so lines applied in file order meet a taken value.
                let n = if unique && i % 4 == 1 && i < 30 {
                    format!("{}.5", i + 1)
                } else {
                    format!("{i}.75")
                };
                lines.push(upsert_line(i, &n, ""));
                expected.insert(key(i), Some(n));
            }
            _ => {}
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for line in &lines {
        writeln!(gz, "{line}").unwrap();
    }
    let bytes = gz.finish().unwrap();
    std::fs::write(dir.path().join("s.json.gz"), &bytes).unwrap();
    let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&bytes));
    let target = FakeTarget::default();
    {
        let mut state = target.state.lock().unwrap();
        state.tables = vec![base];
        state.unique = unique.then_some((0, N));
        target.ledger.lock().shards.insert(
            "s".into(),
            ShardRecord::for_test("s", "s.json.gz", lines.len() as u64, Some(md5)),
        );
    }
    let run = RunRecord::for_test(
        RUN,
        dir.path(),
        schema.clone(),
        chunk,
        lines.len() as u64,
        Some("binary"),
    );
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()));
    let mut settings = ferry_shared::config::load_settings(None).unwrap().load;
    settings.block_lines = std::num::NonZeroUsize::new(3).unwrap();
    let kind = Target {
        kind: TargetKind::Postgres,
        server_version: "fake".into(),
        load_path: LoadPath::BinaryCopyInTransaction,
    };
    let mut ctx = LoadContext::new(run, store, &settings, kind, "fake://").unwrap();
    let encoder =
        BlockEncoder::for_changes(&schema, None, LoadPath::BinaryCopyInTransaction).unwrap();
    ctx.tables = encoder.tables().clone();
    ctx.encoder = Arc::new(encoder);
    Setup {
        _dir: dir,
        target,
        ctx,
        expected,
    }
}

async fn load(setup: &Setup, crash: Option<Crash>) -> Result<ShardOutcome> {
    let mut sink = setup.target.sink(crash);
    load_shard(
        &setup.target.ledger,
        &super::apply::KeepWindowRows,
        &mut sink,
        &setup.ctx,
        "s",
    )
    .await
}

/// The end of the window: deferred records again, one at a time, in rounds.
fn resolve_deferred(setup: &Setup) -> usize {
    let mut applied = 0;
    loop {
        let waiting: Vec<((String, u64), Vec<u8>)> = setup
            .target
            .ledger
            .lock()
            .deferred
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut progressed = false;
        for ((shard, line), raw) in waiting {
            let block = RawBlock {
                lines: vec![LineRef {
                    line_no: line,
                    start: 0,
                    end: raw.len(),
                }],
                data: raw,
            };
            let encoded = setup.ctx.encoder.encode(&block, 1 << 24).unwrap();
            let mut changes = vec![Changes::default()];
            for part in encoded.tables {
                let Payload::Changes(c) = part.payload else {
                    unreachable!()
                };
                changes[part.table] = c;
            }
            let mut state = setup.target.state.lock().unwrap();
            let mut still = Vec::new();
            state.apply(&changes, &mut still);
            if still.is_empty() {
                setup.target.ledger.lock().deferred.remove(&(shard, line));
                applied += 1;
                progressed = true;
            }
        }
        if !progressed {
            return applied;
        }
    }
}

fn assert_window_applied(setup: &Setup) {
    assert_eq!(setup.target.n_values(0), setup.expected);
    let shard = setup.target.shard_record();
    assert_eq!(shard.state, shard_state::DONE);
    // Every record accounted for once: 10 deletes + 19 upserts applied, the malformed one rejected.
    assert_eq!((shard.loaded_rows, shard.rejected_rows), (29, 1));
    assert!(shard.reconciled(), "{shard:?}");
    assert_eq!(setup.target.ledger.lock().rejects.len(), 1);
}

#[tokio::test]
async fn a_window_applies_exactly_once_through_a_crash_at_any_step() {
    let clean = setup(4, false);
    assert_eq!(load(&clean, None).await.unwrap(), ShardOutcome::Done);
    assert_window_applied(&clean);
    assert_eq!(load(&clean, None).await.unwrap(), ShardOutcome::AlreadyDone);
    // 30 records, 4 per chunk: 8 commits.
    for n in 1..=8 {
        for crash in [Crash::BeforeCommit(n), Crash::AfterCommit(n)] {
            let setup = setup(4, false);
            assert!(load(&setup, Some(crash)).await.is_err(), "{crash:?} fired");
            // A second crash in the resumed load, then a clean one.
            let _ = load(&setup, Some(Crash::BeforeCommit(1))).await;
            let outcome = load(&setup, None).await.unwrap();
            assert!(
                matches!(outcome, ShardOutcome::Done | ShardOutcome::AlreadyDone),
                "{crash:?}: {outcome:?}"
            );
            assert_window_applied(&setup);
        }
    }
}

#[tokio::test]
async fn racing_loaders_apply_each_chunk_once() {
    let setup = Arc::new(setup(3, false));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let setup = setup.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                match load(&setup, None).await.unwrap() {
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
    assert_window_applied(&setup);
}

#[tokio::test]
async fn a_stale_loader_cannot_resurrect_a_row_a_later_window_deleted() {
    let setup = setup(4, false);
    // A loader reads the shard at line 0 and encodes its first chunk, then stalls.
    let mut stale = setup.target.sink(None);
    let block = RawBlock {
        data: upsert_line(1, "9.9", "").into_bytes(),
        lines: vec![LineRef {
            line_no: 1,
            start: 0,
            end: upsert_line(1, "9.9", "").len(),
        }],
    };
    let encoded = setup.ctx.encoder.encode(&block, 1 << 24).unwrap();
    // Meanwhile the window is applied by another loader, and the next window deletes key 1.
    assert_eq!(load(&setup, None).await.unwrap(), ShardOutcome::Done);
    setup.target.state.lock().unwrap().tables[0].remove(&key(1));
    // The stale loader wakes up and commits its chunk: its checkpoint moved, nothing applies.
    stale.begin_chunk().await.unwrap();
    for part in encoded.tables {
        stale.begin_table(part.table).await.unwrap();
        stale.send(part).await.unwrap();
        stale.end_table().await.unwrap();
    }
    let checkpoint = Checkpoint {
        run_id: RUN,
        shard_id: "s",
        generation: 0,
        from: 0,
        to: 4,
        rows: 1,
        spilled: 0,
        filtered: 0,
        rejects: &[],
        file_end: None,
        digests: Vec::new(),
    };
    assert!(!stale.commit(&checkpoint).await.unwrap(), "a lost race");
    assert!(
        !setup.target.n_values(0).contains_key(&key(1)),
        "the deleted row stays deleted"
    );
}

#[tokio::test]
async fn a_unique_value_moving_between_keys_is_deferred_then_applied_at_the_window_end() {
    let setup = setup(40, true);
    assert_eq!(load(&setup, None).await.unwrap(), ShardOutcome::Done);
    let deferred = setup.target.ledger.lock().deferred.len();
    assert!(deferred > 0, "file order meets values still taken");
    assert_ne!(setup.target.n_values(0), setup.expected);
    assert_eq!(resolve_deferred(&setup), deferred);
    assert!(setup.target.ledger.lock().deferred.is_empty());
    assert_window_applied(&setup);
}

#[tokio::test]
async fn a_bad_file_starts_over_without_removing_the_rows_it_applied() {
    let setup = setup(4, false);
    // Three chunks in, a crash; then the manifest's MD5 turns out not to match.
    assert!(load(&setup, Some(Crash::AfterCommit(3))).await.is_err());
    setup
        .target
        .ledger
        .lock()
        .shards
        .get_mut("s")
        .unwrap()
        .md5_checksum = Some("bm90IHRoZSBtZDU=".into());
    let ShardOutcome::Failed(reason) = load(&setup, None).await.unwrap() else {
        panic!("an MD5 mismatch fails the shard")
    };
    assert!(reason.contains("MD5 mismatch"), "{reason}");
    // Nothing of the table was removed: the rows of the first 12 lines are the window's.
    let rows = setup.target.n_values(0);
    assert_eq!(rows.get(&key(1)), Some(&Some("1.75".to_string())));
    assert!(!rows.contains_key(&key(4)));
    // The right file back: the whole window applies again, to the same state.
    let good = self::setup(4, false);
    let md5 = good.target.shard_record().md5_checksum;
    {
        let mut ledger = setup.target.ledger.lock();
        let shard = ledger.shards.get_mut("s").unwrap();
        shard.md5_checksum = md5;
        shard.state = shard_state::PENDING.into();
    }
    assert_eq!(load(&setup, None).await.unwrap(), ShardOutcome::Done);
    assert_window_applied(&setup);
}

#[test]
fn routed_items_that_change_rule_leave_their_old_table() {
    let routing = ferry_shared::schema::routing::Routing::from_toml(
        r#"
[routing]
[[routing.rules]]
name = "archived orders"
table = "archive"
match = { pk_prefix = "USER#", attribute = "status", equals = "archived" }
columns = [
  { name = "pk", from = "PK", type = "text" },
  { name = "sk", from = "SK", type = "text" },
]
[[routing.rules]]
name = "orders"
table = "orders"
match = { pk_prefix = "USER#" }
skip_when = { attribute = "status", equals = "void" }
columns = [
  { name = "pk", from = "PK", type = "text" },
  { name = "sk", from = "SK", type = "text" },
  { name = "total", from = "total", type = "numeric(12,2)", required = true },
]
"#,
    )
    .unwrap();
    let mut schema =
        (*crate::decode::tests::test_schema(ferry_shared::schema::OnTypeMismatch::Overflow))
            .clone();
    schema.columns.truncate(2);
    schema.columns[1].ddb_type = ferry_shared::schema::DdbType::S;
    schema.columns[0].name = "PK".into();
    schema.columns[1].name = "SK".into();
    schema.routing = Some(routing);
    schema.provenance = true;
    let encoder =
        BlockEncoder::for_changes(&schema, None, LoadPath::BinaryCopyInTransaction).unwrap();
    let line = |sk: &str, image: &str| {
        format!(r#"{{"Keys":{{"PK":{{"S":"USER#1"}},"SK":{{"S":"{sk}"}}}}{image}}}"#)
    };
    let image = |sk: &str, rest: &str| {
        format!(r#","NewImage":{{"PK":{{"S":"USER#1"}},"SK":{{"S":"{sk}"}}{rest}}}"#)
    };
    let lines = [
        // Moves to the archive.
        line("O1", &image("O1", r#","status":{"S":"archived"}"#)),
        // Stays an order (was maybe archived).
        line("O2", &image("O2", r#","total":{"N":"5.10"}"#)),
        // Filtered by the orders rule: leaves every table.
        line(
            "O3",
            &image("O3", r#","status":{"S":"void"},"total":{"N":"1"}"#),
        ),
        // Rejected (total required): leaves every table, and is a reject.
        line("O4", &image("O4", "")),
        // A delete.
        line("O5", ""),
    ];
    let block = RawBlock::of_lines(&lines);
    let encoded = encoder.encode(&block, 7).unwrap();
    assert_eq!(
        (encoded.rows, encoded.filtered, encoded.rejects.len()),
        (3, 1, 1)
    );
    assert!(
        encoded.rejects[0].reason.contains("required"),
        "{:?}",
        encoded.rejects
    );
    type Lines = Vec<(u64, String)>;
    let mut by_table: BTreeMap<usize, (Lines, Lines)> = BTreeMap::new();
    let sk = |key: &Key| match &key[1] {
        KeyValue::Text(t) => t.clone(),
        other => panic!("{other:?}"),
    };
    for part in encoded.tables {
        let Payload::Changes(c) = part.payload else {
            unreachable!()
        };
        let entry = by_table.entry(part.table).or_default();
        entry.0 = c.upserts.iter().map(|u| (u.line_no, sk(&u.key))).collect();
        entry.1 = c.deletes.iter().map(|d| (d.line_no, sk(&d.key))).collect();
    }
    // Table 0 (archive): O1 in; O2 out (it may have been archived); O3, O4, O5 out.
    assert_eq!(by_table[&0].0, vec![(1, "O1".to_string())]);
    assert_eq!(
        by_table[&0].1,
        vec![
            (2, "O2".into()),
            (3, "O3".into()),
            (4, "O4".into()),
            (5, "O5".into())
        ]
    );
    // Table 1 (orders): O2 in, with its exact total; O1 out; O3, O4, O5 out.
    assert_eq!(by_table[&1].0, vec![(2, "O2".to_string())]);
    assert_eq!(
        by_table[&1].1,
        vec![
            (1, "O1".into()),
            (3, "O3".into()),
            (4, "O4".into()),
            (5, "O5".into())
        ]
    );
}
