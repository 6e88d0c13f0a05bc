//! The Parquet sink's exactly-once argument against the in-memory ledger
//! ([`ferry_ledger::memory`], which records the files too) and a real local output folder: crashes after a file is published and after a checkpoint,
//! racing loaders, a file that fails its MD5, and a stale load's files, each ending with every
//! item in exactly one published file and no temporary file visible.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use ferry_ledger::shard_state;
use ferry_shared::output::LocalOutput;
use ferry_shared::schema::OnTypeMismatch;
use ferry_shared::store::{LocalStore, ObjectStore};
use md5::{Digest, Md5};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::super::driver::{load_shard, LoadContext, ShardOutcome};
use super::super::{Checkpoint, KeyValue, Presence, Sink, TableEnd, TableRows};
use super::*;
use crate::target::{LoadPath, Target, TargetKind};
use ferry_ledger::memory::MemoryLedger;
use ferry_ledger::{Ledger, Restart, RunRecord, ShardRecord};

const RUN: &str = "run";

/// Where a [`Crashing`] sink dies, as a killed process would: nothing after that step happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Crash {
    /// After the n-th file was published, before anything else.
    AfterPublish(usize),
    /// After the n-th checkpoint moved.
    AfterCheckpoint(usize),
}

struct Crashing<'c> {
    inner: ParquetSink<'c>,
    crash: Option<Crash>,
    published: usize,
    commits: usize,
}

fn crashed() -> WorkerError {
    WorkerError::Internal("crashed (test)".into())
}

#[async_trait]
impl Sink for Crashing<'_> {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn rows_commit_with_checkpoint(&self) -> bool {
        self.inner.rows_commit_with_checkpoint()
    }
    async fn begin_chunk(&mut self) -> Result<()> {
        self.inner.begin_chunk().await
    }
    async fn probe(&self, table: usize, key: &[KeyValue], provenance: i64) -> Result<Presence> {
        self.inner.probe(table, key, provenance).await
    }
    async fn begin_table(&mut self, table: usize) -> Result<()> {
        self.inner.begin_table(table).await
    }
    async fn send(&mut self, rows: TableRows) -> Result<()> {
        self.inner.send(rows).await
    }
    async fn end_table(&mut self) -> Result<TableEnd> {
        let end = self.inner.end_table().await?;
        if let TableEnd::Written(_) = end {
            self.published += 1;
            if self.crash == Some(Crash::AfterPublish(self.published)) {
                return Err(crashed());
            }
        }
        Ok(end)
    }
    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
    async fn commit(&mut self, checkpoint: &Checkpoint<'_>) -> Result<bool> {
        let moved = self.inner.commit(checkpoint).await?;
        self.commits += 1;
        if moved && self.crash == Some(Crash::AfterCheckpoint(self.commits)) {
            return Err(crashed());
        }
        Ok(moved)
    }
}

/// A data file of `items` lines (keys `k<i>`/`i`, every line with a decimal and a set), one of
/// them malformed when `bad_line` is set; returns its MD5 (base64).
fn write_file(path: &std::path::Path, items: u64, bad_line: Option<u64>, extra: &str) -> String {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for i in 1..=items {
        if Some(i) == bad_line {
            writeln!(gz, "{{\"Item\":").unwrap();
        } else {
            writeln!(
                gz,
                r#"{{"Item":{{"pk":{{"S":"k{i}"}},"sk":{{"N":"{i}"}},"n":{{"N":"{i}.5"}},"ss":{{"SS":["a{i}"]}}{extra}}}}}"#
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
    ledger: MemoryLedger,
    output: Arc<ParquetOutput>,
    ctx: LoadContext,
}

/// One shard "s" of `items` lines, `chunk` lines per chunk; the `n` column is decimal(38,1).
fn setup(items: u64, chunk: u64, bad_line: Option<u64>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let md5 = write_file(&dir.path().join("s.json.gz"), items, bad_line, "");
    let mut schema = (*crate::decode::tests::test_schema(OnTypeMismatch::Overflow)).clone();
    schema.provenance = true;
    schema.columns[2].pg_type = PgType::NumericScaled {
        precision: 38,
        scale: 1,
    };
    let ledger =
        MemoryLedger::with_shards([ShardRecord::for_test("s", "s.json.gz", items, Some(md5))]);
    let run = RunRecord::for_test(RUN, dir.path(), schema, chunk, items, Some("parquet"));
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()));
    let mut settings = ferry_shared::config::load_settings(None).unwrap().load;
    settings.block_lines = std::num::NonZeroUsize::new(7).unwrap();
    let target_kind = Target {
        kind: TargetKind::HeliosDb,
        server_version: "fake".into(),
        load_path: LoadPath::Parquet,
    };
    let ctx = LoadContext::new(run, store, &settings, target_kind, "fake://").unwrap();
    let out = dir.path().join("out");
    let output = Arc::new(ParquetOutput {
        run_id: RUN.into(),
        spec: ParquetSpec {
            location: out.display().to_string(),
            compression: ParquetCompression::Zstd,
            row_group_rows: 1000,
        },
        store: Box::new(LocalOutput::create(&out).unwrap()),
    });
    Setup {
        dir_path: dir.path().to_path_buf(),
        _dir: dir,
        ledger,
        output,
        ctx,
    }
}

async fn load(setup: &Setup, crash: Option<Crash>) -> Result<ShardOutcome> {
    let files = ParquetFiles::new(&setup.ledger, setup.output.clone());
    let inner = ParquetSink::new(
        &setup.ledger,
        setup.output.clone(),
        "s",
        setup.ctx.tables.clone(),
        true,
    )?;
    let mut sink = Crashing {
        inner,
        crash,
        published: 0,
        commits: 0,
    };
    load_shard(&setup.ledger, &files, &mut sink, &setup.ctx, "s").await
}

/// Every visible file of the dataset (names not starting with `.`) and, per key, how many rows
/// hold it; also checks the decimal column's values and the provenance of each file.
fn dataset(setup: &Setup) -> (Vec<String>, BTreeMap<String, usize>) {
    let dir = setup.dir_path.join("out/t");
    let mut names = Vec::new();
    let mut keys = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return (names, keys);
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".tmp-"),
            "a temporary file is left: {name}"
        );
        names.push(name.clone());
        let (load, chunk) = parse_object_key(&format!("t/{name}")).expect("a data file's name");
        let file = std::fs::File::open(&path).unwrap();
        for batch in ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
        {
            let batch = batch.unwrap();
            let pk = batch
                .column_by_name("pk")
                .unwrap()
                .as_string::<i32>()
                .clone();
            let n = batch
                .column_by_name("n")
                .unwrap()
                .as_primitive::<arrow_array::types::Decimal128Type>()
                .clone();
            let provenance = batch
                .column_by_name(PROVENANCE_COLUMN)
                .unwrap()
                .as_primitive::<arrow_array::types::Int64Type>()
                .clone();
            for row in 0..batch.num_rows() {
                let key = pk.value(row).to_string();
                let i: i128 = key[1..].parse().unwrap();
                assert_eq!(n.value(row), i * 10 + 5, "{key}: n is {i}.5 exactly");
                assert_eq!(
                    split_provenance(provenance.value(row)),
                    (load, chunk),
                    "{name}: the rows' provenance is the file's load and chunk"
                );
                *keys.entry(key).or_insert(0) += 1;
            }
        }
    }
    names.sort();
    (names, keys)
}

fn assert_every_key_once(setup: &Setup, items: u64, rejected: &[u64]) {
    let (names, keys) = dataset(setup);
    let expected = items - rejected.len() as u64;
    assert_eq!(keys.len() as u64, expected, "{names:?}");
    assert!(
        keys.values().all(|n| *n == 1),
        "a key is in two files: {keys:?}"
    );
    for i in rejected {
        assert!(!keys.contains_key(&format!("k{i}")));
    }
    let shard = setup.ledger.shard_record("s");
    assert_eq!(shard.state, shard_state::DONE);
    assert_eq!(shard.loaded_rows, expected);
    // The ledger knows exactly the files the folder holds.
    let recorded: Vec<String> = setup
        .ledger
        .lock()
        .files
        .values()
        .map(|f| f.key.trim_start_matches("t/").to_string())
        .collect();
    assert_eq!(recorded, names);
    let rows: u64 = setup.ledger.lock().files.values().map(|f| f.rows).sum();
    assert_eq!(rows, expected);
}

#[tokio::test]
async fn a_shard_becomes_one_file_per_chunk_named_by_load_and_chunk() {
    let setup = setup(50, 10, None);
    assert_eq!(load(&setup, None).await.unwrap(), ShardOutcome::Done);
    assert_every_key_once(&setup, 50, &[]);
    let (names, _) = dataset(&setup);
    assert_eq!(
        names,
        (0..5)
            .map(|c| format!("part-s-l000001-c{c:06}.parquet"))
            .collect::<Vec<_>>()
    );
    assert_eq!(load(&setup, None).await.unwrap(), ShardOutcome::AlreadyDone);
}

#[tokio::test]
async fn a_crash_at_any_step_resumes_exactly_once() {
    for n in 1..=5 {
        for crash in [Crash::AfterPublish(n), Crash::AfterCheckpoint(n)] {
            let setup = setup(50, 10, Some(23));
            let first = load(&setup, Some(crash)).await;
            assert!(first.is_err(), "{crash:?} did not fire");
            // A file published before the crash is visible whole, never twice.
            let (_, keys) = dataset(&setup);
            assert!(keys.values().all(|n| *n == 1));
            assert_eq!(
                load(&setup, None).await.unwrap(),
                ShardOutcome::Done,
                "{crash:?}"
            );
            assert_every_key_once(&setup, 50, &[23]);
            let shard = setup.ledger.shard_record("s");
            assert_eq!(
                (shard.loaded_rows, shard.rejected_rows),
                (49, 1),
                "{crash:?}"
            );
        }
    }
}

#[tokio::test]
async fn racing_loaders_publish_each_chunk_once() {
    let setup = Arc::new(setup(200, 10, Some(77)));
    let mut tasks = Vec::new();
    for _ in 0..3 {
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
    assert_every_key_once(&setup, 200, &[77]);
}

#[tokio::test]
async fn a_bad_file_leaves_no_file_and_a_new_generation_replaces_the_old_files() {
    let bad = setup(40, 10, None);
    write_file(
        &bad.dir_path.join("s.json.gz"),
        40,
        None,
        r#","x":{"S":"wrong"}"#,
    );
    let ShardOutcome::Failed(reason) = load(&bad, None).await.unwrap() else {
        panic!("an MD5 mismatch must fail")
    };
    assert!(reason.contains("MD5 mismatch"), "{reason}");
    let (names, _) = dataset(&bad);
    assert!(
        names.is_empty(),
        "no file of a bad data file stays: {names:?}"
    );
    assert!(bad.ledger.lock().files.is_empty());
    // The right file back: a clean load from the start, under the new load's names.
    write_file(&bad.dir_path.join("s.json.gz"), 40, None, "");
    assert_eq!(load(&bad, None).await.unwrap(), ShardOutcome::Done);
    assert_every_key_once(&bad, 40, &[]);
    let (names, _) = dataset(&bad);
    assert!(names.iter().all(|n| n.contains("-l000002-")), "{names:?}");

    // A load interrupted, then its generation ended (a reset): its files go before anything loads.
    let setup = setup(30, 10, None);
    assert!(load(&setup, Some(Crash::AfterCheckpoint(2))).await.is_err());
    assert_eq!(dataset(&setup).0.len(), 2);
    let restart = Restart {
        state: shard_state::PENDING,
        error: None,
        md5_ok: None,
        items_seen: None,
        over_chunk_in_flight: false,
    };
    assert!(setup
        .ledger
        .restart_shard(RUN, "s", 0, &restart)
        .await
        .unwrap());
    assert_eq!(load(&setup, None).await.unwrap(), ShardOutcome::Done);
    assert_every_key_once(&setup, 30, &[]);
    let (names, _) = dataset(&setup);
    assert!(names.iter().all(|n| n.contains("-l000002-")), "{names:?}");
}
