//! A model-based test of command sequences: seeded random sequences of `migrate` (a full run of
//! export A, or of a disjoint export B with `--append`), crashes at seeded failpoints, SIGKILLs at
//! seeded moments, and `reset`
//! of a shard (with and without `--force`), run by the real `ferry-coordinator` against a real
//! target, each step checked against a model of what the sequence must leave:
//! - every row in the table is an item of A or B with its exact value, and no key is there twice;
//! - a run whose `migrate` exited 0 has every item present until one of its shards is reset;
//! - a reset shard's items are gone at once;
//! - a full run into a table holding the other run's rows is refused without `--append`, and a
//!   reset of a shard whose chunk is in flight is refused without `--force`;
//! - two `migrate` processes of one run at once (racing loaders) end with the run complete;
//! - `finalize` verifies (exit 0) exactly the runs the model holds complete;
//! - `export-back` writes exactly the table's rows as items (read back and compared value by
//!   value), and refuses a used output folder without `--replace`;
//! - a table's history (a full export H into its own table, three incremental windows, the
//!   final state): `catch-up` (stopped at failpoints and by SIGKILL, run again) leaves H's items
//!   before any window and the final state exactly after them; it is refused while H is
//!   incomplete; once a window follows H, `reset` of H's shards is refused, and a window's shard
//!   is never reset;
//! - at the end, running every planned run again ends with exactly A ∪ B and the history's final
//!   state (nothing jams).
//!
//! A failing sequence is shrunk (steps removed one at a time while it still fails, each attempt on
//! a fresh target) and printed with its seed. CI runs fixed seeds on PostgreSQL's two load paths
//! (binary COPY in a transaction, CSV COPY in autocommit) and on HeliosDB;
//! `scripts/sequences` runs many more (`FERRY_SEQUENCE_SEEDS`, `FERRY_SEQUENCE_STEPS`,
//! `FERRY_SEQUENCE_FIRST_SEED`, `FERRY_SEQUENCE_TARGETS`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ferry_tests::compare::{compare, read_source_items, read_table_text, SourceItems};
use ferry_tests::gen::{generate_export, rewrite_lines, GenOptions, Rng};
use ferry_tests::harness::{
    binary, connect, empty_target, query_text, run_coordinator, stderr_of, TestTarget,
};
use ferry_tests::history::History;
use ferry_tests::parquet::read_listed;
use serde_json::Value;

/// Which export a step works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    A,
    B,
}

/// One command of a sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// `migrate` of the export (`--append` as given; B always appends).
    Migrate { which: Which, append: bool },
    /// `migrate` stopped by a failpoint (`point=exit@n`).
    Crash {
        which: Which,
        point: &'static str,
        n: u64,
    },
    /// `migrate` killed with SIGKILL `after_ms` after it started, every chunk held 150 ms after
    /// its COPY (rows stored or staged, checkpoint not moved) so the kill lands mid-load.
    Kill { which: Which, after_ms: u64 },
    /// `reset --shard` of the run's n-th shard.
    Reset {
        which: Which,
        shard: usize,
        force: bool,
    },
    /// Two `migrate` processes of the export at once (racing loaders on every shard).
    Race { which: Which },
    /// `finalize` of the run: exit 0 exactly when the model says it is complete.
    Finalize { which: Which },
    /// `export-back` of the run into the sequence's one output folder (`--replace` as given): the
    /// first export and every `--replace` must write exactly the table's rows as items (read back
    /// independently and compared value by value); any other export into the used folder is
    /// refused.
    ExportBack { which: Which, replace: bool },
    /// `migrate` of the history's full export H into its own table (`shop_items`), stopped at a
    /// failpoint when given.
    History { crash: Option<(&'static str, u64)> },
    /// `catch-up` of the history's three windows onto H's run, stopped at a failpoint, or killed
    /// with SIGKILL `kill_ms` after it started (every chunk held 150 ms before its COMMIT), when
    /// given.
    CatchUp {
        crash: Option<(&'static str, u64)>,
        kill_ms: Option<u64>,
    },
    /// `reset --shard` of H's first shard, or (`window`) of the first window's first shard:
    /// refused once a window follows H, and always for a window's shard.
    ResetHistory { window: bool, force: bool },
}

impl Step {
    fn kind(&self) -> &'static str {
        match self {
            Step::Migrate { .. } => "migrate",
            Step::Crash { .. } => "crash",
            Step::Kill { .. } => "kill -9",
            Step::Reset { .. } => "reset",
            Step::Race { .. } => "race",
            Step::Finalize { .. } => "finalize",
            Step::ExportBack { .. } => "export-back",
            Step::History { .. } => "history migrate",
            Step::CatchUp { .. } => "catch-up",
            Step::ResetHistory { window: false, .. } => "reset of a run windows follow",
            Step::ResetHistory { window: true, .. } => "reset of a window",
        }
    }
}

/// A load path under test.
#[derive(Clone, Copy, Debug)]
enum LoadPath {
    PostgresBinary,
    PostgresCsv,
    HeliosDb,
    /// A Parquet dataset in a local folder, the ledger in PostgreSQL.
    Parquet,
}

impl LoadPath {
    fn target(self) -> TestTarget {
        match self {
            LoadPath::HeliosDb => TestTarget::HeliosDb,
            _ => TestTarget::Postgres,
        }
    }

    fn copy_format(self) -> &'static str {
        match self {
            LoadPath::PostgresBinary => "binary",
            _ => "csv",
        }
    }
}

/// The two exports: A, and B holding the same items under other partition keys (`B-…`).
struct Exports {
    _dir: tempfile::TempDir,
    a: PathBuf,
    b: PathBuf,
    items_a: SourceItems,
    items_b: SourceItems,
    /// Per export, per shard (data file, in shard-id order as the ledger lists them): its keys.
    shard_keys: [Vec<(String, BTreeSet<String>)>; 2],
    /// A table's history (boto3-typed): its full export H, three incremental windows, and the
    /// final state they lead to.
    history: History,
    /// H's items.
    items_full: SourceItems,
    /// The final state's items.
    items_final: SourceItems,
}

const ITEMS: u64 = 240;
const FILES: usize = 3;

fn exports() -> anyhow::Result<Exports> {
    let dir = tempfile::tempdir()?;
    let options = GenOptions {
        edge_cases: false,
        ..GenOptions::sized(97, ITEMS, FILES)
    };
    let a = generate_export(&dir.path().join("a"), &options)?;
    let b = generate_export(
        &dir.path().join("b"),
        &GenOptions {
            export_id: "01700000000003-0d0d0d0d".into(),
            ..options
        },
    )?;
    rewrite_lines(&b, |line| {
        line.replacen(r#""PK":{"S":""#, r#""PK":{"S":"B-"#, 1)
    })?;
    let keys_of = |export: &ferry_tests::gen::GeneratedExport| -> anyhow::Result<Vec<(String, BTreeSet<String>)>> {
        let mut shards = Vec::new();
        for file in &export.data_files {
            let single = tempfile::tempdir()?;
            std::fs::copy(&file.path, single.path().join("f.json.gz"))?;
            let keys = read_source_items(single.path(), &["PK", "SK"])?
                .into_keys()
                .collect();
            shards.push((file.key.clone(), keys));
        }
        Ok(shards)
    };
    let shard_keys = [keys_of(&a)?, keys_of(&b)?];
    let history = History::generate(&dir.path().join("history"), 40, 5)?;
    Ok(Exports {
        items_full: read_source_items(&history.full(), &["PK", "SK"])?,
        items_final: read_source_items(&history.final_export_dir(), &["PK", "SK"])?,
        history,
        items_a: read_source_items(&a.export_dir, &["PK", "SK"])?,
        items_b: read_source_items(&b.export_dir, &["PK", "SK"])?,
        a: a.root.clone(),
        b: b.root.clone(),
        _dir: dir,
        shard_keys,
    })
}

impl Exports {
    /// The Parquet dataset folder of the sequence whose ledger is at `url`.
    fn lake_of(&self, url: &str) -> PathBuf {
        self.output_of(url).with_extension("lake")
    }

    /// The export-back folder of the sequence on the target at `url`.
    fn output_of(&self, url: &str) -> PathBuf {
        let name: String = url
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        self._dir.path().join("export-back").join(name)
    }

    fn path(&self, which: Which) -> &Path {
        match which {
            Which::A => &self.a,
            Which::B => &self.b,
        }
    }

    fn items(&self, which: Which) -> &SourceItems {
        match which {
            Which::A => &self.items_a,
            Which::B => &self.items_b,
        }
    }
}

/// How far H's windows got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Windows {
    /// No `catch-up` got past its checks.
    #[default]
    None,
    /// A `catch-up` started and was stopped: the table is somewhere between H and the final
    /// state.
    Started,
    /// Every window applied: the table is the final state.
    Applied,
}

/// What the model knows of the history's runs.
#[derive(Clone, Copy, Debug, Default)]
struct HistoryModel {
    /// H's `migrate` exited 0 and its shards were not reset since.
    complete: bool,
    /// Its windows.
    windows: Windows,
}

/// What the model knows of one run.
#[derive(Clone, Debug, Default)]
struct RunModel {
    /// Its `migrate` exited 0 and none of its shards was reset since.
    complete: bool,
}

fn generate(seed: u64, steps: usize) -> Vec<Step> {
    let mut rng = Rng::new(seed);
    let which = |rng: &mut Rng| if rng.chance(50) { Which::A } else { Which::B };
    (0..steps)
        .map(|_| match rng.below(130) {
            0..=34 => {
                let which = which(&mut rng);
                Step::Migrate {
                    which,
                    append: which == Which::B || rng.chance(40),
                }
            }
            35..=54 => Step::Crash {
                which: which(&mut rng),
                point: rng.pick_str(&["after_copy", "after_checkpoint", "after_commit"]),
                n: rng.range(1, 4),
            },
            55..=64 => Step::Kill {
                which: which(&mut rng),
                after_ms: rng.range(200, 2500),
            },
            65..=84 => Step::Reset {
                which: which(&mut rng),
                shard: rng.below(FILES as u64) as usize,
                force: rng.chance(30),
            },
            85..=89 => Step::Race {
                which: which(&mut rng),
            },
            90..=95 => Step::ExportBack {
                which: which(&mut rng),
                replace: rng.chance(50),
            },
            96..=99 => Step::Finalize {
                which: which(&mut rng),
            },
            100..=109 => Step::History {
                crash: rng.chance(40).then(|| {
                    (
                        rng.pick_str(&["after_copy", "after_checkpoint", "after_commit"]),
                        rng.range(1, 4),
                    )
                }),
            },
            110..=121 => {
                let stop = rng.below(3);
                Step::CatchUp {
                    crash: (stop == 1).then(|| {
                        (
                            rng.pick_str(&["after_copy", "after_checkpoint", "after_commit"]),
                            rng.range(1, 6),
                        )
                    }),
                    kill_ms: (stop == 2).then(|| rng.range(300, 2500)),
                }
            }
            _ => Step::ResetHistory {
                window: rng.chance(30),
                force: rng.chance(30),
            },
        })
        .collect()
}

async fn text(url: &str, sql: &str) -> anyhow::Result<String> {
    Ok(query_text(url, sql).await?.unwrap_or_default())
}

/// The run id of the export at `export`, if it was planned (a target without a ledger yet has
/// none).
async fn run_of(url: &str, export: &Path) -> anyhow::Result<Option<String>> {
    let client = connect(url).await?;
    let Ok(messages) = client
        .simple_query("SELECT run_id, export_location FROM ferry.runs")
        .await
    else {
        return Ok(None);
    };
    for message in messages {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            if row
                .get(1)
                .is_some_and(|l| l.starts_with(&export.display().to_string()))
            {
                return Ok(row.get(0).map(str::to_string));
            }
        }
    }
    Ok(None)
}

/// Runs one step; `Ok(false)` when there was nothing to act on (skipped), `Err` a finding (the
/// message says which expectation failed).
async fn run_step(
    path: LoadPath,
    url: &str,
    exports: &Exports,
    models: &mut [RunModel; 2],
    history: &mut HistoryModel,
    step: &Step,
) -> anyhow::Result<bool> {
    let index = |which: Which| if which == Which::A { 0 } else { 1 };
    let parquet = matches!(path, LoadPath::Parquet);
    // The table exists once either run was planned.
    let table_rows = |url: String| async move {
        if parquet {
            // A dataset holding another run's files counts as holding rows.
            let files = std::fs::read_dir(exports.lake_of(&url).join("AppTable"))
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok())
                        .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
                        .count()
                })
                .unwrap_or(0);
            return anyhow::Ok(files as i64);
        }
        let planned =
            run_of(&url, &exports.a).await?.is_some() || run_of(&url, &exports.b).await?.is_some();
        if !planned {
            return anyhow::Ok(0i64);
        }
        Ok(text(&url, "SELECT count(*) FROM \"AppTable\"")
            .await?
            .parse::<i64>()?)
    };
    let lake = exports.lake_of(url);
    let migrate_args = |which: Which, append: bool| {
        let mut args = vec![
            "migrate".to_string(),
            "--export".into(),
            exports.path(which).display().to_string(),
            "--key".into(),
            "PK,SK".into(),
        ];
        if parquet {
            args.extend(["--parquet".into(), lake.display().to_string()]);
            args.extend(["--ledger".into(), url.to_string()]);
        } else {
            args.extend(["--target".into(), url.to_string()]);
        }
        if append {
            args.push("--append".into());
        }
        args
    };
    let env = |failpoint: Option<String>| {
        let mut env = vec![
            ("FERRY_LOAD__CHUNK_LINES".to_string(), "30".to_string()),
            ("FERRY_LOAD__BLOCK_LINES".into(), "10".into()),
            ("FERRY_LOAD__WORKERS".into(), "2".into()),
            ("FERRY_LOAD__COPY_FORMAT".into(), path.copy_format().into()),
        ];
        if let Some(failpoint) = failpoint {
            env.push(("FERRY_FAILPOINTS".into(), failpoint));
        }
        env
    };
    let run = |args: Vec<String>, env: Vec<(String, String)>| -> anyhow::Result<(i32, String)> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let output = run_coordinator(&args, &env)?;
        Ok((output.status.code().unwrap_or(-1), stderr_of(&output)))
    };
    if parquet
        && matches!(
            step,
            Step::ExportBack { .. }
                | Step::History { .. }
                | Step::CatchUp { .. }
                | Step::ResetHistory { .. }
        )
    {
        return Ok(false); // no export-back or catch-up from a Parquet dataset
    }
    match step {
        Step::Migrate { which, .. } | Step::Crash { which, .. } => {
            let append = match step {
                Step::Migrate { append, .. } => *append,
                _ => *which == Which::B,
            };
            let planned = run_of(url, exports.path(*which)).await?.is_some();
            let other_rows = table_rows(url.to_string()).await?;
            let refused_expected = !planned && !append && other_rows > 0;
            let failpoint = match step {
                Step::Crash { point, n, .. } => Some(format!("{point}=exit@{n}")),
                _ => None,
            };
            let crash = failpoint.is_some();
            let (code, stderr) = run(migrate_args(*which, append), env(failpoint))?;
            match code {
                2 if refused_expected => {
                    anyhow::ensure!(
                        stderr.contains("--append"),
                        "the refusal does not say --append: {stderr}"
                    );
                }
                0 if !refused_expected => models[index(*which)].complete = true,
                86 if crash && !refused_expected => {}
                _ => anyhow::bail!(
                    "{step:?} exited {code} (refusal expected: {refused_expected}): {stderr}"
                ),
            }
        }
        Step::Kill { which, after_ms } => {
            let append = *which == Which::B;
            let planned = run_of(url, exports.path(*which)).await?.is_some();
            let other_rows = table_rows(url.to_string()).await?;
            if !planned && !append && other_rows > 0 {
                return Ok(false); // refused as in Migrate; nothing to kill
            }
            let mut child = std::process::Command::new(binary("ferry-coordinator"))
                .args(migrate_args(*which, append))
                .envs(env(Some("after_copy=sleep150@1+".into())))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()?;
            tokio::time::sleep(std::time::Duration::from_millis(*after_ms)).await;
            child.kill()?; // SIGKILL; a process that already ended is not an error
            let output = child.wait_with_output()?;
            match output.status.code() {
                None => {} // killed: whatever it left, the model's view of the run stands
                Some(0) => models[index(*which)].complete = true,
                Some(code) => {
                    anyhow::bail!(
                        "{step:?} exited {code} before the kill: {}",
                        stderr_of(&output)
                    )
                }
            }
        }
        Step::Race { which } => {
            let append = *which == Which::B;
            let planned = run_of(url, exports.path(*which)).await?.is_some();
            let other_rows = table_rows(url.to_string()).await?;
            if !planned && !append && other_rows > 0 {
                return Ok(false); // refused as in Migrate; nothing to race
            }
            let spawn = || -> anyhow::Result<std::process::Child> {
                Ok(std::process::Command::new(binary("ferry-coordinator"))
                    .args(migrate_args(*which, append))
                    .envs(env(None))
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()?)
            };
            let (first, second) = (spawn()?, spawn()?);
            let outputs = [first.wait_with_output()?, second.wait_with_output()?];
            let codes: Vec<i32> = outputs
                .iter()
                .map(|o| o.status.code().unwrap_or(-1))
                .collect();
            // Two plans of one run race too: the loser may report the run unverified (1) while
            // the winner loads; neither may fail otherwise, and one of them verifies.
            anyhow::ensure!(
                codes.iter().all(|c| *c == 0 || *c == 1) && codes.contains(&0),
                "racing migrates exited {codes:?}: {}",
                outputs
                    .iter()
                    .map(stderr_of)
                    .collect::<Vec<_>>()
                    .join("\n----\n")
            );
            models[index(*which)].complete = true;
        }
        Step::ExportBack { which, replace } => {
            let Some(run_id) = run_of(url, exports.path(*which)).await? else {
                return Ok(false); // no run to act on: the step is skipped
            };
            let output = exports.output_of(url);
            let used = output.join("_ferry_export_back.json").exists();
            let mut args = vec![
                "export-back".to_string(),
                "--target".into(),
                url.to_string(),
                "--run-id".into(),
                run_id.clone(),
                "--output".into(),
                output.display().to_string(),
            ];
            if *replace {
                args.push("--replace".into());
            }
            let (code, stderr) = run(args, Vec::new())?;
            if used && !replace {
                anyhow::ensure!(
                    code == 2 && stderr.contains("--replace"),
                    "export-back into a used folder exited {code}: {stderr}"
                );
                return Ok(true);
            }
            anyhow::ensure!(code == 0, "export-back exited {code}: {stderr}");
            // The output, read back by the test's own reader, is the table now, value by value.
            let exported = read_source_items(&output.join("data"), &["PK", "SK"])?;
            let client = connect(url).await?;
            let (_, columns, rows) = read_table_text(&client, &run_id).await?;
            let overflow = columns.last().map(|c| c.name.clone()).unwrap_or_default();
            let diffs = compare(&exported, &["PK", "SK"], &columns, &overflow, &rows);
            anyhow::ensure!(
                diffs.is_empty() && exported.len() == rows.len(),
                "export-back wrote {} items for {} rows: {:?}",
                exported.len(),
                rows.len(),
                &diffs[..diffs.len().min(5)]
            );
        }
        Step::Finalize { which } => {
            let Some(run_id) = run_of(url, exports.path(*which)).await? else {
                return Ok(false); // no run to act on: the step is skipped
            };
            let complete = models[index(*which)].complete;
            let (code, stderr) = run(
                vec![
                    "finalize".into(),
                    "--target".into(),
                    url.to_string(),
                    "--run-id".into(),
                    run_id,
                ],
                Vec::new(),
            )?;
            anyhow::ensure!(
                code == if complete { 0 } else { 1 },
                "finalize exited {code}, the run being {}: {stderr}",
                if complete { "complete" } else { "incomplete" }
            );
            if parquet && complete {
                check_dataset(&lake, exports, models)?;
            }
        }
        Step::Reset {
            which,
            shard,
            force,
        } => {
            let Some(run_id) = run_of(url, exports.path(*which)).await? else {
                return Ok(false); // nothing to reset: the step is skipped
            };
            let shard_id = text(
                url,
                &format!(
                    "SELECT shard_id FROM ferry.shards WHERE run_id = '{run_id}' AND data_key = '{}'",
                    exports.shard_keys[index(*which)][*shard].0
                ),
            )
            .await?;
            let (in_flight, code, stderr) = reset_shard(url, &run_id, &shard_id, *force).await?;
            let refused_expected = in_flight && !force;
            match code {
                2 if refused_expected => anyhow::ensure!(
                    stderr.contains("in flight") && stderr.contains("--force"),
                    "the refusal does not say why: {stderr}"
                ),
                0 if !refused_expected && parquet => {
                    models[index(*which)].complete = false;
                }
                0 if !refused_expected => {
                    models[index(*which)].complete = false;
                    // The shard's items are gone at once.
                    let client = connect(url).await?;
                    let run_id = run_of(url, exports.path(*which)).await?.unwrap_or_default();
                    let (_, _, rows) = read_table_text(&client, &run_id).await?;
                    let keys = &exports.shard_keys[index(*which)][*shard].1;
                    let left = rows
                        .iter()
                        .filter(|row| keys.contains(&row_key(row)))
                        .count();
                    anyhow::ensure!(left == 0, "{left} rows of the reset shard are still there");
                }
                _ => anyhow::bail!(
                    "{step:?} exited {code} (refusal expected: {refused_expected}): {stderr}"
                ),
            }
        }
        Step::History { crash } => {
            let failpoint = crash.map(|(point, n)| format!("{point}=exit@{n}"));
            let (code, stderr) = run(history_migrate_args(exports, url), env(failpoint))?;
            match code {
                0 => history.complete = true,
                86 if crash.is_some() => {}
                _ => anyhow::bail!("{step:?} exited {code}: {stderr}"),
            }
        }
        Step::CatchUp { crash, kill_ms } => {
            let Some(run_id) = run_of(url, &exports.history.full()).await? else {
                return Ok(false); // no full run to follow: the step is skipped
            };
            let args = catch_up_args(exports, url, &run_id);
            let failpoint = crash.map(|(point, n)| format!("{point}=exit@{n}"));
            let (code, stderr) = match kill_ms {
                Some(after_ms) => {
                    let mut child = std::process::Command::new(binary("ferry-coordinator"))
                        .args(&args)
                        .envs(env(Some("after_checkpoint=sleep150@1+".into())))
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::piped())
                        .spawn()?;
                    tokio::time::sleep(std::time::Duration::from_millis(*after_ms)).await;
                    child.kill()?; // SIGKILL
                    let output = child.wait_with_output()?;
                    (output.status.code().unwrap_or(-9), stderr_of(&output))
                }
                None => run(args, env(failpoint))?,
            };
            let stopped = code == -9 || (code == 86 && crash.is_some());
            match code {
                // Every window applied (or had been): the table is the final state.
                0 => {
                    history.complete = true;
                    history.windows = Windows::Applied;
                }
                // Refused before anything was written: H is not complete.
                2 if !history.complete
                    && stderr.contains("cannot be applied before the full run") => {}
                _ if stopped => {
                    if history.complete && history.windows != Windows::Applied {
                        history.windows = Windows::Started;
                    }
                }
                _ => anyhow::bail!(
                    "{step:?} exited {code} (H complete: {}): {}",
                    history.complete,
                    last_lines(&stderr)
                ),
            }
        }
        Step::ResetHistory { window, force } => {
            let Some(base) = run_of(url, &exports.history.full()).await? else {
                return Ok(false); // nothing to reset: the step is skipped
            };
            let run_id = if *window {
                let first = query_text(
                    url,
                    &format!(
                        "SELECT run_id FROM ferry.windows WHERE base_run_id = '{base}' ORDER BY seq LIMIT 1"
                    ),
                )
                .await;
                match first {
                    Ok(Some(first)) => first,
                    _ => return Ok(false), // no window yet: the step is skipped
                }
            } else {
                base
            };
            let shard_id = text(
                url,
                &format!("SELECT min(shard_id) FROM ferry.shards WHERE run_id = '{run_id}'"),
            )
            .await?;
            let (in_flight, code, stderr) = reset_shard(url, &run_id, &shard_id, *force).await?;
            if *window {
                anyhow::ensure!(
                    code == 2 && stderr.contains("never reset"),
                    "a reset of a window's shard exited {code}: {stderr}"
                );
            } else if history.windows != Windows::None {
                anyhow::ensure!(
                    code == 2 && stderr.contains("followed by"),
                    "a reset of a run that windows follow exited {code}: {stderr}"
                );
            } else if in_flight && !force {
                anyhow::ensure!(
                    code == 2 && stderr.contains("in flight"),
                    "a reset of a shard in flight exited {code}: {stderr}"
                );
            } else {
                anyhow::ensure!(code == 0, "{step:?} exited {code}: {stderr}");
                history.complete = false;
            }
        }
    }
    if parquet {
        return Ok(true); // the dataset is checked when a finalize lists it
    }
    check_table(url, exports, models).await?;
    check_history(url, exports, history).await.map(|()| true)
}

fn row_key(row: &serde_json::Map<String, Value>) -> String {
    let part = |k: &str| match row.get(k) {
        Some(Value::String(s)) => s.clone(),
        other => format!("{other:?}"),
    };
    serde_json::to_string(&[part("PK"), part("SK")]).unwrap_or_default()
}

/// A finalized dataset (the files `_manifest.json` lists, read by pyarrow):
/// each row an item of A or B with its exact value, no key twice, every item of a complete run
/// there; an `--append` never removed or unlisted another run's files.
fn check_dataset(lake: &Path, exports: &Exports, models: &[RunModel; 2]) -> anyhow::Result<()> {
    let read = read_listed(&lake.join("AppTable"))?;
    // Files beyond the manifest's are another run's chunks in flight: only while a run sharing
    // the dataset is incomplete, and then the manifest says the dataset is not complete.
    if !read.unlisted.is_empty() {
        anyhow::ensure!(
            read.manifest["complete"] == false,
            "the manifest says complete, and the folder holds files it does not list: {:?}",
            read.unlisted
        );
    }
    let keys: Vec<String> = read.rows.iter().map(row_key).collect();
    let distinct: BTreeSet<&String> = keys.iter().collect();
    anyhow::ensure!(distinct.len() == keys.len(), "a key twice in the dataset");
    let mut expected = SourceItems::new();
    for key in &keys {
        match exports
            .items_a
            .get(key)
            .or_else(|| exports.items_b.get(key))
        {
            Some(item) => {
                expected.insert(key.clone(), item.clone());
            }
            None => anyhow::bail!("a row of no export in the dataset: {key}"),
        }
    }
    for (which, model) in [Which::A, Which::B].into_iter().zip(models) {
        if model.complete {
            expected.extend(exports.items(which).clone());
        }
    }
    let diffs = compare(&expected, &["PK", "SK"], &read.columns, "attrs", &read.rows);
    anyhow::ensure!(
        diffs.is_empty(),
        "the dataset: {} differences: {:?}",
        diffs.len(),
        &diffs[..diffs.len().min(5)]
    );
    Ok(())
}

/// `reset --shard` of `shard_id` of `run_id` (`--force` as given): whether a chunk of the shard
/// was in flight just before, the exit code and stderr.
async fn reset_shard(
    url: &str,
    run_id: &str,
    shard_id: &str,
    force: bool,
) -> anyhow::Result<(bool, i32, String)> {
    let in_flight = text(
        url,
        &format!(
            "SELECT count(*) FROM ferry.shards WHERE run_id = '{run_id}' AND shard_id = '{shard_id}' AND copying_from IS NOT NULL"
        ),
    )
    .await?
        != "0";
    let mut args = vec![
        "reset", "--target", url, "--run-id", run_id, "--shard", shard_id,
    ];
    if force {
        args.push("--force");
    }
    let output = run_coordinator(&args, &[])?;
    Ok((
        in_flight,
        output.status.code().unwrap_or(-1),
        stderr_of(&output),
    ))
}

/// The last lines of a command's stderr (its error, after the log lines).
fn last_lines(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    lines[lines.len().saturating_sub(3)..].join("\n")
}

/// `migrate` of the history's full export into `shop_items`.
fn history_migrate_args(exports: &Exports, url: &str) -> Vec<String> {
    [
        "migrate",
        "--export",
        &exports.history.full().display().to_string(),
        "--target",
        url,
        "--key",
        "PK,SK",
        "--table",
        "shop_items",
    ]
    .map(str::to_string)
    .to_vec()
}

/// `catch-up` of the history's windows onto run `run_id`, one loader (a window's files apply in
/// name order).
fn catch_up_args(exports: &Exports, url: &str, run_id: &str) -> Vec<String> {
    [
        "catch-up",
        "--export",
        &exports.history.windows().display().to_string(),
        "--target",
        url,
        "--run-id",
        run_id,
        "--workers",
        "1",
    ]
    .map(str::to_string)
    .to_vec()
}

/// H's table against the model: the final state exactly once every window applied; before any
/// window, only H's items with their exact values (all of them once H is complete); between the
/// two (a stopped `catch-up`), nothing is claimed until it is run again.
async fn check_history(url: &str, exports: &Exports, model: &HistoryModel) -> anyhow::Result<()> {
    let Some(run_id) = run_of(url, &exports.history.full()).await? else {
        return Ok(());
    };
    let expected = match model.windows {
        Windows::Started => return Ok(()),
        Windows::Applied => &exports.items_final,
        Windows::None => &exports.items_full,
    };
    let client = connect(url).await?;
    let (_, columns, rows) = read_table_text(&client, &run_id).await?;
    let unknown: Vec<String> = rows
        .iter()
        .map(row_key)
        .filter(|key| !expected.contains_key(key))
        .collect();
    anyhow::ensure!(
        unknown.is_empty(),
        "shop_items holds {} rows that are not in the {:?} state: {:?}",
        unknown.len(),
        model.windows,
        &unknown[..unknown.len().min(5)]
    );
    let whole = model.windows == Windows::Applied || model.complete;
    let present: SourceItems = if whole {
        expected.clone()
    } else {
        let keys: BTreeSet<String> = rows.iter().map(row_key).collect();
        expected
            .iter()
            .filter(|(key, _)| keys.contains(*key))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let overflow = columns.last().map(|c| c.name.clone()).unwrap_or_default();
    let diffs = compare(&present, &["PK", "SK"], &columns, &overflow, &rows);
    anyhow::ensure!(
        diffs.is_empty(),
        "shop_items ({:?}, H complete: {}): {} differences: {:?}",
        model.windows,
        model.complete,
        diffs.len(),
        &diffs[..diffs.len().min(5)]
    );
    Ok(())
}

/// The invariant after every step: each row is an item of A or B with its exact value, no key
/// twice, and every item of a complete run present.
async fn check_table(url: &str, exports: &Exports, models: &[RunModel; 2]) -> anyhow::Result<()> {
    let mut run_id = None;
    for which in [Which::A, Which::B] {
        if let Some(id) = run_of(url, exports.path(which)).await? {
            run_id = Some(id);
            break;
        }
    }
    let Some(run_id) = run_id else { return Ok(()) };
    let client = connect(url).await?;
    let (_, columns, rows) = read_table_text(&client, &run_id).await?;
    let mut expected = SourceItems::new();
    for (which, model) in [Which::A, Which::B].into_iter().zip(models) {
        if model.complete {
            expected.extend(exports.items(which).clone());
        }
    }
    let mut unknown = Vec::new();
    for row in &rows {
        let key = row_key(row);
        if expected.contains_key(&key) {
            continue;
        }
        match exports
            .items_a
            .get(&key)
            .or_else(|| exports.items_b.get(&key))
        {
            Some(item) => {
                expected.insert(key, item.clone());
            }
            None => unknown.push(key),
        }
    }
    anyhow::ensure!(unknown.is_empty(), "rows of no export: {unknown:?}");
    let overflow = columns.last().map(|c| c.name.clone()).unwrap_or_default();
    let diffs = compare(&expected, &["PK", "SK"], &columns, &overflow, &rows);
    anyhow::ensure!(
        diffs.is_empty(),
        "{} differences: {:?}",
        diffs.len(),
        &diffs[..diffs.len().min(5)]
    );
    Ok(())
}

/// Runs `steps` on a fresh target, then every planned run again; the first finding, if any.
async fn run_sequence(
    path: LoadPath,
    n: u64,
    exports: &Exports,
    steps: &[Step],
    ran: &mut BTreeMap<&'static str, usize>,
) -> anyhow::Result<Option<String>> {
    let (url, _server) = empty_target(path.target(), &format!("seq{n}")).await?;
    let mut models: [RunModel; 2] = Default::default();
    let mut history = HistoryModel::default();
    for (i, step) in steps.iter().enumerate() {
        match run_step(path, &url, exports, &mut models, &mut history, step).await {
            Ok(true) => *ran.entry(step.kind()).or_default() += 1,
            Ok(false) => {}
            Err(e) => return Ok(Some(format!("step {i} {step:?}: {e:#}"))),
        }
    }
    // Nothing jams: every planned run loads to the end, and the table is then exactly A ∪ B
    // of the runs planned.
    for which in [Which::A, Which::B] {
        if run_of(&url, exports.path(which)).await?.is_some() {
            let step = Step::Migrate {
                which,
                append: true,
            };
            if let Err(e) = run_step(path, &url, exports, &mut models, &mut history, &step).await {
                return Ok(Some(format!("final {step:?}: {e:#}")));
            }
            if !models[if which == Which::A { 0 } else { 1 }].complete {
                return Ok(Some(format!("final {step:?} did not complete")));
            }
        }
    }
    // A dataset: every planned run's finalize lists every run's files, exactly A ∪ B.
    if matches!(path, LoadPath::Parquet) {
        for which in [Which::A, Which::B] {
            if run_of(&url, exports.path(which)).await?.is_some() {
                let step = Step::Finalize { which };
                if let Err(e) =
                    run_step(path, &url, exports, &mut models, &mut history, &step).await
                {
                    return Ok(Some(format!("final {step:?}: {e:#}")));
                }
            }
        }
        // Every run complete: the manifest says so and lists every file in the folder.
        let lake = exports.lake_of(&url).join("AppTable");
        if lake.join("_manifest.json").exists() {
            let read = read_listed(&lake)?;
            if read.manifest["complete"] != true || !read.unlisted.is_empty() {
                return Ok(Some(format!(
                    "the final dataset: manifest complete {}, files it does not list {:?}",
                    read.manifest["complete"], read.unlisted
                )));
            }
        }
    }
    // The history too: H loads to the end, and windows once started apply to the final state.
    if run_of(&url, &exports.history.full()).await?.is_some() {
        let mut finals = vec![Step::History { crash: None }];
        if history.windows != Windows::None {
            finals.push(Step::CatchUp {
                crash: None,
                kill_ms: None,
            });
        }
        for step in finals {
            if let Err(e) = run_step(path, &url, exports, &mut models, &mut history, &step).await {
                return Ok(Some(format!("final {step:?}: {e:#}")));
            }
        }
        if !history.complete {
            return Ok(Some("the final history migrate did not complete".into()));
        }
    }
    Ok(None)
}

/// Removes steps one at a time while the sequence still fails.
async fn shrink(
    path: LoadPath,
    n: &mut u64,
    exports: &Exports,
    mut steps: Vec<Step>,
) -> anyhow::Result<(Vec<Step>, String)> {
    let mut finding = String::new();
    let mut i = 0;
    while i < steps.len() {
        let mut shorter = steps.clone();
        shorter.remove(i);
        *n += 1;
        match run_sequence(path, *n, exports, &shorter, &mut BTreeMap::new()).await? {
            Some(found) => {
                steps = shorter;
                finding = found;
            }
            None => i += 1,
        }
    }
    Ok((steps, finding))
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_command_sequences_keep_every_item_exactly_once() -> anyhow::Result<()> {
    let exports = exports()?;
    // CI: fixed seeds per load path, chosen so that every kind of step runs on each target
    // (`ran` in the summary line); by hand (`scripts/sequences`): a range of seeds on each.
    let steps = env_u64("FERRY_SEQUENCE_STEPS", 10) as usize;
    let seeds = |ci: &[u64]| -> Vec<u64> {
        match std::env::var("FERRY_SEQUENCE_SEEDS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            Some(count) => {
                let first = env_u64("FERRY_SEQUENCE_FIRST_SEED", 1);
                (first..first + count).collect()
            }
            None => ci.to_vec(),
        }
    };
    let targets = std::env::var("FERRY_SEQUENCE_TARGETS").unwrap_or_default();
    let mut plan: Vec<(LoadPath, Vec<u64>)> = vec![
        (LoadPath::PostgresBinary, seeds(&[605, 110, 511])),
        (LoadPath::PostgresCsv, seeds(&[762, 205, 511])),
        (LoadPath::HeliosDb, seeds(&[605, 257])),
        (LoadPath::Parquet, seeds(&[186, 447])),
    ];
    if !targets.is_empty() {
        plan.retain(|(p, _)| {
            targets
                .split(',')
                .any(|t| format!("{p:?}").eq_ignore_ascii_case(t))
        });
    }
    let mut n = 0;
    let mut findings = Vec::new();
    let (mut sequences, mut total_steps) = (0, 0);
    let mut ran = BTreeMap::new();
    let started = std::time::Instant::now();
    if std::env::var("FERRY_SEQUENCE_LIST").is_ok() {
        // Only list the generated sequences (for choosing seeds), running nothing.
        for (path, seeds) in &plan {
            for seed in seeds {
                eprintln!("{path:?} seed {seed}: {:?}", generate(*seed, steps));
            }
        }
        return Ok(());
    }
    for (path, seeds) in plan {
        for seed in seeds {
            let sequence = generate(seed, steps);
            n += 1;
            sequences += 1;
            total_steps += sequence.len();
            if let Some(found) = run_sequence(path, n, &exports, &sequence, &mut ran).await? {
                let (minimal, finding) = shrink(path, &mut n, &exports, sequence).await?;
                findings.push(format!(
                    "{path:?} seed {seed}: {found}\n  minimal sequence: {minimal:?}\n  its finding: {finding}"
                ));
            }
        }
    }
    eprintln!(
        "sequences: {sequences} sequences, {total_steps} steps ({ran:?} run, the rest skipped), {} findings, {:.1} s",
        findings.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(findings.is_empty(), "{}", findings.join("\n"));
    Ok(())
}
