//! `verify --deep`: every value proven, not only the counts.
//!
//! At load, each chunk records with its checkpoint, per table it wrote, the count of its items and
//! the sum of their hashes ([`ferry_worker::normal`]: each row turned into the item `export-back`
//! would write from it, hashed; the sum modulo 2^256 is order-free and counts duplicates).
//!
//! Verifying a table is one streamed pass over it (no per-chunk scans: `_ferry_chunk` has no
//! index): each row is turned into its item the way `export-back` does, hashed, and summed per
//! `_ferry_chunk`; then each recorded chunk is compared with what the table holds under its
//! provenance. A value the server changed (a coercion, a rounding, a collation), a row updated,
//! deleted or written behind Ferry's back, changes its chunk's sum or count. Tables are verified
//! in parallel (`--workers`), each on its own connection, the rows turned into items on rayon in
//! batches (bounded memory: a few batches in flight and one sum per chunk).
//!
//! For a chunk that differs, its lines are read again from the export ([`ferry_worker::reread`])
//! and the table is read once more for that chunk's rows (and rows without provenance): the items
//! that differ are named by key, with the attributes that differ and, per `load.reject_lines`, their
//! values. At most [`CHUNKS_NAMED`] chunks and [`ITEMS_NAMED`] items per table are named.
//!
//! `--sample P` compares a deterministic share of the chunks (chosen by a hash of their
//! provenance); rows without provenance are always counted. Rows of other runs (an `--append`
//! into the same table) are not this run's to verify: they are counted and said.
//!
//! Each table's result is recorded in `ferry.verifications`.
//!
//! Not verified here (refused with a message): a Parquet dataset, and a run followed by catch-up
//! windows (its windows' upserts replace rows of its chunks; their digests are not recorded yet).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferry_ledger::digests::{self as ledger_digests, Verification};
use ferry_ledger::lineage::Lineage;
use ferry_ledger::runs as ledger;
use ferry_ledger::{Ledger, RunRecord};
use ferry_shared::config::{AwsSettings, RejectLines};
use ferry_shared::ident::quote_ident;
use ferry_shared::schema::{CHUNK_INDEX_BITS, PROVENANCE_COLUMN};
use ferry_worker::normal::{self, item_hash, write_value, Item, ItemDigest, ItemPlan};
use futures_util::StreamExt;
use rayon::prelude::*;
use serde::Serialize;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::{CoordinatorError, Result};

/// Chunks that differ whose items are named, per table.
pub const CHUNKS_NAMED: usize = 3;

/// Items named per table.
pub const ITEMS_NAMED: usize = 20;

/// Rows converted per rayon task.
const BATCH_ROWS: usize = 2048;

/// What to verify.
#[derive(Clone, Debug)]
pub struct DeepRequest {
    /// The database holding the tables and the ledger.
    pub target_url: String,
    /// The run.
    pub run_id: String,
    /// Chunks compared, per mille (1000: every chunk).
    pub sample_per_mille: u32,
    /// Tables verified at once.
    pub workers: usize,
    /// How values are shown in the differences (`load.reject_lines`).
    pub reject_lines: RejectLines,
    /// To read the export again (an S3 export).
    pub aws: AwsSettings,
    /// Draw a progress display (rows read of the rows the run loaded).
    pub progress: bool,
}

/// One table's result.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TableDeep {
    /// The table.
    pub table: String,
    /// Rows read.
    pub rows_read: u64,
    /// This run's chunks compared.
    pub chunks: u64,
    /// Of those, how many differ.
    pub chunks_differing: u64,
    /// Rows of other runs (an `--append` into the table), not verified.
    pub rows_of_other_runs: u64,
    /// Rows of this run's chunks that recorded no digest (loaded with `load.digest = false`).
    pub rows_without_digest: u64,
    /// What differs: per chunk, and the items named.
    pub differences: Vec<String>,
    /// Seconds.
    pub seconds: f64,
}

impl TableDeep {
    /// `verified`, `differs` or `unverifiable`.
    pub fn state(&self) -> &'static str {
        if !self.differences.is_empty() {
            "differs"
        } else if self.rows_without_digest > 0 {
            "unverifiable"
        } else {
            "verified"
        }
    }
}

/// The whole verification.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DeepReport {
    /// The run.
    pub run_id: String,
    /// Chunks compared, per mille.
    pub sample_per_mille: u32,
    /// Per table.
    pub tables: Vec<TableDeep>,
    /// Seconds.
    pub seconds: f64,
}

impl DeepReport {
    /// Whether every value of every compared chunk is proven.
    pub fn verified(&self) -> bool {
        self.tables.iter().all(|t| t.state() == "verified")
    }

    /// The problems, one line each (empty when verified).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for table in &self.tables {
            if table.chunks_differing > 0 {
                out.push(format!(
                    "deep verification: table {:?}: {} of {} chunks differ from what the run loaded",
                    table.table, table.chunks_differing, table.chunks
                ));
            } else if let Some(first) = table.differences.first() {
                out.push(format!(
                    "deep verification: table {:?} holds rows the run did not load: {first}",
                    table.table
                ));
            }
            if table.rows_without_digest > 0 {
                out.push(format!(
                    "deep verification: table {:?}: {} rows were loaded without a chunk digest (load.digest = false): not verified",
                    table.table, table.rows_without_digest
                ));
            }
        }
        out
    }

    /// In words.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "deep verification of run {} ({}): {}\n",
            self.run_id,
            if self.sample_per_mille >= 1000 {
                "every chunk".to_string()
            } else {
                format!(
                    "a sample of {:.1}% of the chunks",
                    self.sample_per_mille as f64 / 10.0
                )
            },
            if self.verified() {
                "every value matches what was loaded"
            } else {
                "DIFFERENCES FOUND"
            }
        );
        for table in &self.tables {
            out.push_str(&format!(
                "  {}: {} — {} rows read, {} chunks compared, {} differ ({:.1} s)\n",
                table.table,
                table.state(),
                table.rows_read,
                table.chunks,
                table.chunks_differing,
                table.seconds
            ));
            if table.rows_of_other_runs > 0 {
                out.push_str(&format!(
                    "    {} rows of other runs (--append) are not this run's to verify\n",
                    table.rows_of_other_runs
                ));
            }
            for line in &table.differences {
                out.push_str("    ");
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// Whether the chunk `provenance` is in a sample of `per_mille`.
pub fn sampled(provenance: i64, per_mille: u32) -> bool {
    if per_mille >= 1000 {
        return true;
    }
    // A fixed mix of the bits (splitmix64's finalizer), so the sample spreads over loads.
    let mut z = provenance as u64;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % 1000) < u64::from(per_mille)
}

/// Verifies `request.run_id`'s tables; see the module docs.
pub async fn verify_deep(request: &DeepRequest) -> Result<DeepReport> {
    let started = Instant::now();
    let client = ferry_worker::conn::control(&request.target_url).await?;
    let run = crate::report::run_with_tables(
        &client,
        &request.run_id,
        "verify --deep",
        " (its chunk digests are recorded; comparing them with the files is not built yet)",
    )
    .await?;
    let lineage = Lineage::of(&client, run.clone()).await?;
    if lineage.window.is_some() {
        return Err(CoordinatorError::Invalid(format!(
            "run {} is a catch-up window: verify --deep verifies a full run",
            run.run_id
        )));
    }
    if !lineage.windows.is_empty() {
        return Err(CoordinatorError::Invalid(format!(
            "run {} is followed by {} catch-up window(s), whose changes replaced rows of its chunks: verify --deep does not yet carry a run's digests through its windows; verify before the first catch-up",
            run.run_id,
            lineage.windows.len()
        )));
    }
    let shards = ledger::get_shards(&client, &run.run_id).await?;
    let unfinished = shards
        .iter()
        .filter(|s| s.state != ferry_ledger::shard_state::DONE)
        .count();
    if unfinished > 0 {
        return Err(CoordinatorError::Invalid(format!(
            "run {}: {unfinished} of {} shards are not done: verify --deep compares a whole load",
            run.run_id,
            shards.len()
        )));
    }
    let current = ferry_ledger::outputs::current_loads(&client, &run.run_id).await?;
    let load_runs = ledger_digests::load_runs(&client).await?;
    let mut expected: HashMap<String, HashMap<i64, ItemDigest>> = HashMap::new();
    for digest in ledger_digests::run_digests(&client, &run.run_id).await? {
        if !current.contains(&digest.load_id) {
            continue;
        }
        let Some(sum) = ItemDigest::from_parts(digest.items, &digest.digest) else {
            return Err(CoordinatorError::Invalid(format!(
                "the ledger's digest of chunk {} of table {:?} is not 64 hex digits",
                digest.provenance, digest.table
            )));
        };
        expected
            .entry(digest.table)
            .or_default()
            .insert(digest.provenance, sum);
    }
    let plans = normal::item_plans(&run.schema);
    let bar = if request.progress {
        let loaded: u64 = expected
            .values()
            .flat_map(|t| t.values())
            .map(|d| d.items)
            .sum();
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(loaded),
            indicatif::ProgressDrawTarget::stderr(),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] verify --deep {wide_bar} {human_pos}/{human_len} rows, ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        crate::migrate::logs_above(&bar);
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let context = Arc::new(TableContext {
        bar: bar.clone(),
        run: run.clone(),
        current,
        load_runs,
        request: request.clone(),
    });
    let semaphore = Arc::new(tokio::sync::Semaphore::new(request.workers.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, plan) in plans.into_iter().enumerate() {
        let expected = expected.remove(&plan.table).unwrap_or_default();
        let (semaphore, context) = (semaphore.clone(), context.clone());
        tasks.spawn(async move {
            let _permit = semaphore.acquire().await;
            verify_table(&context, index, plan, expected).await
        });
    }
    let mut report = DeepReport {
        run_id: run.run_id.clone(),
        sample_per_mille: request.sample_per_mille.min(1000),
        ..Default::default()
    };
    while let Some(done) = tasks.join_next().await {
        let table =
            done.map_err(|e| CoordinatorError::Invalid(format!("verify task died: {e}")))??;
        ledger_digests::record_verification(
            &client,
            &run.run_id,
            &Verification {
                table: table.table.clone(),
                state: table.state().into(),
                sample_per_mille: i64::from(report.sample_per_mille),
                rows_read: table.rows_read as i64,
                chunks: table.chunks as i64,
                chunks_differing: table.chunks_differing as i64,
                detail: table.differences.join("\n"),
            },
        )
        .await?;
        report.tables.push(table);
    }
    bar.finish_and_clear();
    report.tables.sort_by(|a, b| a.table.cmp(&b.table));
    report.seconds = started.elapsed().as_secs_f64();
    tracing::info!(run = %run.run_id, tables = report.tables.len(), verified = report.verified(), seconds = report.seconds, "deep verification finished");
    Ok(report)
}

struct TableContext {
    /// Rows read, over every table.
    bar: indicatif::ProgressBar,
    run: RunRecord,
    /// The loads of the run's shards' current generations.
    current: HashSet<i64>,
    /// Every load and its run.
    load_runs: HashMap<i64, String>,
    request: DeepRequest,
}

/// Per provenance (`None`: rows without one), the digest of the rows read.
type Sums = HashMap<Option<i64>, ItemDigest>;

fn load_of(provenance: i64) -> i64 {
    provenance >> CHUNK_INDEX_BITS
}

async fn verify_table(
    context: &TableContext,
    index: usize,
    plan: ItemPlan,
    expected: HashMap<i64, ItemDigest>,
) -> Result<TableDeep> {
    let started = Instant::now();
    let request = &context.request;
    let per_mille = request.sample_per_mille.min(1000);
    let client = ferry_worker::conn::control(&request.target_url).await?;
    let plan = Arc::new(plan);
    let sums: Arc<Mutex<Sums>> = Arc::default();
    let rows_read = {
        let (for_rows, sums, bar) = (plan.clone(), sums.clone(), context.bar.clone());
        scan_table(&client, &plan, move |batch| {
            let plan = &for_rows;
            bar.inc(batch.len() as u64);
            let mut local: Sums = HashMap::new();
            let hashed: Vec<(Option<i64>, [u8; 32])> = batch
                .par_iter()
                .filter_map(|(provenance, row)| {
                    if provenance.is_some_and(|p| !sampled(p, per_mille)) {
                        return None;
                    }
                    Some((*provenance, normal::row_hash(plan, row)))
                })
                .collect();
            for (provenance, hash) in hashed {
                local.entry(provenance).or_default().add_hash(&hash);
            }
            let mut sums = sums.lock().expect("sums lock");
            for (provenance, digest) in local {
                sums.entry(provenance).or_default().merge(&digest);
            }
        })
        .await?
    };
    let sums = std::mem::take(&mut *sums.lock().expect("sums lock"));
    let mut table = TableDeep {
        table: plan.table.clone(),
        rows_read,
        ..Default::default()
    };
    let run_id = &context.run.run_id;
    // Chunks to look into: provenance → what differs, in words.
    let mut differing: BTreeMap<i64, String> = BTreeMap::new();
    let mut without_provenance = 0u64;
    for (provenance, found) in &sums {
        let Some(p) = provenance else {
            without_provenance = found.items;
            continue;
        };
        if expected.contains_key(p) {
            continue;
        }
        let load = load_of(*p);
        match context.load_runs.get(&load) {
            Some(owner) if owner != run_id => table.rows_of_other_runs += found.items,
            Some(_) if context.current.contains(&load) => {
                table.rows_without_digest += found.items;
            }
            Some(_) => {
                differing.insert(
                    *p,
                    format!(
                        "{} rows carry provenance {p} of an ended load of this run (their shard was loaded again since): they should have been removed",
                        found.items
                    ),
                );
            }
            None => {
                differing.insert(
                    *p,
                    format!(
                        "{} rows carry provenance {p}, which no load in the ledger wrote",
                        found.items
                    ),
                );
            }
        }
    }
    for (p, want) in &expected {
        if !sampled(*p, per_mille) {
            continue;
        }
        table.chunks += 1;
        let found = sums.get(&Some(*p)).copied().unwrap_or_default();
        if found != *want {
            differing.insert(
                *p,
                if found.items == want.items {
                    format!(
                        "chunk {} ({} items): values differ",
                        describe_chunk(*p),
                        want.items
                    )
                } else {
                    format!(
                        "chunk {}: {} items loaded, {} rows hold its provenance now",
                        describe_chunk(*p),
                        want.items,
                        found.items
                    )
                },
            );
        }
    }
    table.chunks_differing = differing
        .keys()
        .filter(|p| expected.contains_key(p))
        .count() as u64;
    if without_provenance > 0 {
        table.differences.push(format!(
            "rows without provenance (written outside Ferry): {without_provenance}"
        ));
    }
    if !differing.is_empty() || without_provenance > 0 {
        let named = name_differences(
            context,
            &client,
            index,
            &plan,
            &differing,
            without_provenance > 0,
        )
        .await?;
        for (p, what) in &differing {
            table.differences.push(what.clone());
            if let Some(items) = named.get(p) {
                for line in items {
                    table.differences.push(format!("  {line}"));
                }
            }
        }
        if let Some(outside) = named.get(&NO_PROVENANCE) {
            for line in outside {
                table.differences.push(format!("  {line}"));
            }
        }
    }
    table.seconds = started.elapsed().as_secs_f64();
    tracing::info!(table = %table.table, rows = table.rows_read, chunks = table.chunks, differing = table.chunks_differing, seconds = table.seconds, "table verified");
    Ok(table)
}

fn describe_chunk(provenance: i64) -> String {
    format!(
        "{provenance} (load {}, chunk {})",
        load_of(provenance),
        provenance & ((1 << CHUNK_INDEX_BITS) - 1)
    )
}

/// Streams `plan`'s table (its COPY columns and the provenance), handing batches of
/// `(provenance, values)` to `each` on the blocking pool, a few in flight; returns the rows read.
async fn scan_table<F>(client: &Client, plan: &ItemPlan, each: F) -> Result<u64>
where
    F: Fn(Vec<(Option<i64>, Vec<Option<String>>)>) + Send + Sync + 'static,
{
    let mut select: Vec<String> = plan.copy_columns.iter().map(|c| quote_ident(c)).collect();
    select.push(quote_ident(PROVENANCE_COLUMN));
    let sql = format!(
        "SELECT {} FROM {}",
        select.join(", "),
        quote_ident(&plan.table)
    );
    let read_error = |source| {
        CoordinatorError::Worker(ferry_worker::WorkerError::Db {
            context: format!("cannot read table {:?}", plan.table),
            source,
        })
    };
    let stream = client.simple_query_raw(&sql).await.map_err(read_error)?;
    futures_util::pin_mut!(stream);
    let each = Arc::new(each);
    let width = plan.copy_columns.len();
    let mut batch = Vec::with_capacity(BATCH_ROWS);
    let mut pending = std::collections::VecDeque::new();
    let mut rows = 0u64;
    while let Some(message) = stream.next().await {
        let SimpleQueryMessage::Row(row) = message.map_err(read_error)? else {
            continue;
        };
        rows += 1;
        let values: Vec<Option<String>> =
            (0..width).map(|i| row.get(i).map(str::to_string)).collect();
        let provenance = row.get(width).and_then(|t| t.parse::<i64>().ok());
        batch.push((provenance, values));
        if batch.len() >= BATCH_ROWS {
            let (each, full) = (each.clone(), std::mem::take(&mut batch));
            pending.push_back(tokio::task::spawn_blocking(move || each(full)));
            if pending.len() >= 4 {
                if let Some(task) = pending.pop_front() {
                    task.await
                        .map_err(|e| CoordinatorError::Invalid(format!("verify task died: {e}")))?;
                }
            }
        }
    }
    if !batch.is_empty() {
        let each = each.clone();
        pending.push_back(tokio::task::spawn_blocking(move || each(batch)));
    }
    for task in pending {
        task.await
            .map_err(|e| CoordinatorError::Invalid(format!("verify task died: {e}")))?;
    }
    Ok(rows)
}

/// The key under which rows without provenance are named.
const NO_PROVENANCE: i64 = i64::MIN;

/// A row of the table as read: its item (or why it is none) and its hash.
struct Found {
    item: std::result::Result<Item, String>,
    hash: [u8; 32],
}

/// Names the items of the first [`CHUNKS_NAMED`] differing chunks of this run: each chunk's lines
/// read again from the export against the table's rows of that chunk (and rows without
/// provenance, where an item re-inserted behind Ferry's back is found).
async fn name_differences(
    context: &TableContext,
    client: &Client,
    index: usize,
    plan: &Arc<ItemPlan>,
    differing: &BTreeMap<i64, String>,
    look_outside: bool,
) -> Result<HashMap<i64, Vec<String>>> {
    let run = &context.run;
    let mode = context.request.reject_lines;
    let chunks: Vec<i64> = differing
        .keys()
        .copied()
        .filter(|p| context.current.contains(&load_of(*p)))
        .take(CHUNKS_NAMED)
        .collect();
    let mut named: HashMap<i64, Vec<String>> = HashMap::new();
    // The table's rows of those chunks, and those without provenance, by key.
    let wanted: HashSet<i64> = chunks.iter().copied().collect();
    let found: Arc<Mutex<HashMap<i64, BTreeMap<String, Found>>>> = Arc::default();
    if !chunks.is_empty() || look_outside {
        let (plan2, found2) = (plan.clone(), found.clone());
        let wanted = Arc::new(wanted);
        scan_table(client, plan, move |batch| {
            let rows: Vec<(i64, String, Found)> = batch
                .into_par_iter()
                .filter_map(|(provenance, row)| {
                    let p = match provenance {
                        Some(p) if wanted.contains(&p) => p,
                        None if look_outside => NO_PROVENANCE,
                        _ => return None,
                    };
                    let item = normal::row_to_item(&plan2, &row);
                    let hash = normal::row_hash(&plan2, &row);
                    let key = item
                        .as_ref()
                        .map(|i| key_text(&plan2, i))
                        .unwrap_or_else(|e| format!("!{e}"));
                    Some((p, key, Found { item, hash }))
                })
                .collect();
            let mut found = found2.lock().expect("found lock");
            for (p, key, row) in rows {
                found.entry(p).or_default().insert(key, row);
            }
        })
        .await?;
    }
    let mut found = std::mem::take(&mut *found.lock().expect("found lock"));
    let mut outside = found.remove(&NO_PROVENANCE).unwrap_or_default();
    let encoder = ferry_worker::reread::encoder(run)?;
    // The export is read again only for differing chunks; one that cannot be opened (moved or
    // deleted since the load) leaves the chunks unnamed, not the verification undone.
    let export = if chunks.is_empty() {
        None
    } else {
        Some(ferry_shared::store::open_export(&run.export_location, &context.request.aws).await)
    };
    let mut budget = ITEMS_NAMED;
    for p in chunks {
        let lines = named.entry(p).or_default();
        let export = match &export {
            Some(Ok(export)) => export,
            Some(Err(e)) => {
                lines.push(format!(
                    "its lines could not be read again: the export {} cannot be opened: {e}",
                    run.export_location
                ));
                continue;
            }
            None => break,
        };
        let Some((_, _, data_key)) = client.load_owner(load_of(p)).await? else {
            lines.push(format!("load {} is not in the ledger", load_of(p)));
            continue;
        };
        let location = export.store.location(&data_key);
        let rows = match ferry_worker::reread::chunk_rows(
            &export.store,
            &data_key,
            encoder.clone(),
            run.chunk_lines,
            (p & ((1 << CHUNK_INDEX_BITS) - 1)) as u64,
            index,
        )
        .await
        {
            Ok(rows) => rows,
            Err(e) => {
                lines.push(format!(
                    "its lines could not be read again from {location}: {e}"
                ));
                continue;
            }
        };
        let mut in_table = found.remove(&p).unwrap_or_default();
        for (line, values) in rows {
            let loaded = normal::row_to_item(plan, &values);
            let hash = normal::row_hash(plan, &values);
            let key = loaded
                .as_ref()
                .map(|i| key_text(plan, i))
                .unwrap_or_else(|e| format!("!{e}"));
            let shown_key = show_key(plan, loaded.as_ref().ok(), mode);
            let what = match in_table.remove(&key) {
                Some(row) if row.hash == hash => continue,
                Some(row) => format!(
                    "line {line} of {location}, key {shown_key}: {}",
                    describe_change(loaded.as_ref().ok(), row.item.as_ref().ok(), mode)
                ),
                None => match outside.remove(&key) {
                    Some(row) if row.hash == hash => format!(
                        "line {line} of {location}, key {shown_key}: the row was written again outside Ferry (no provenance), with the same value"
                    ),
                    Some(row) => format!(
                        "line {line} of {location}, key {shown_key}: the row was written again outside Ferry (no provenance): {}",
                        describe_change(loaded.as_ref().ok(), row.item.as_ref().ok(), mode)
                    ),
                    None => format!("line {line} of {location}, key {shown_key}: missing from the table"),
                },
            };
            if budget > 0 {
                lines.push(what);
                budget -= 1;
            }
        }
        for (_, row) in in_table {
            if budget > 0 {
                lines.push(format!(
                    "key {}: a row under this chunk's provenance that its lines do not hold",
                    show_key(plan, row.item.as_ref().ok(), mode)
                ));
                budget -= 1;
            }
        }
    }
    if !outside.is_empty() {
        let lines = named.entry(NO_PROVENANCE).or_default();
        for (_, row) in outside.into_iter().take(budget.max(1)) {
            lines.push(format!(
                "key {}: a row without provenance (written outside Ferry)",
                show_key(plan, row.item.as_ref().ok(), mode)
            ));
        }
    }
    Ok(named)
}

/// The key attributes' values of `item`, as one comparable text.
fn key_text(plan: &ItemPlan, item: &Item) -> String {
    let mut out = String::new();
    for key in &plan.keys {
        match item.get(key) {
            Some(value) => write_value(&mut out, value),
            None => out.push_str("<absent>"),
        }
        out.push('\u{1f}');
    }
    out
}

/// The key as a message shows it under `mode`.
fn show_key(plan: &ItemPlan, item: Option<&Item>, mode: RejectLines) -> String {
    let Some(item) = item else {
        return "(not readable)".into();
    };
    let parts: Vec<String> = plan
        .keys
        .iter()
        .map(|k| {
            let text = match item.get(k) {
                Some(normal::DValue::S(s)) | Some(normal::DValue::N(s)) => s.clone(),
                Some(other) => {
                    let mut out = String::new();
                    write_value(&mut out, other);
                    out
                }
                None => "<absent>".into(),
            };
            format!("{k}={}", ferry_worker::redact::key_value(&text, mode))
        })
        .collect();
    format!("({})", parts.join(", "))
}

/// A value as a message shows it under `mode`.
fn show_value(value: Option<&normal::DValue>, mode: RejectLines) -> String {
    let Some(value) = value else {
        return "absent".into();
    };
    let mut text = String::new();
    write_value(&mut text, value);
    match mode {
        RejectLines::Raw => {
            if text.chars().count() > 120 {
                let cut: String = text.chars().take(120).collect();
                format!("{cut}… ({} bytes)", text.len())
            } else {
                text
            }
        }
        RejectLines::Redacted => format!("<{} bytes, redacted>", text.len()),
        RejectLines::Omitted => "<omitted>".into(),
    }
}

/// Which attributes differ between the item loaded and the row found, and how.
fn describe_change(loaded: Option<&Item>, found: Option<&Item>, mode: RejectLines) -> String {
    let (Some(loaded), Some(found)) = (loaded, found) else {
        return "the row cannot be read back as an item".into();
    };
    let mut names: Vec<&String> = loaded.keys().chain(found.keys()).collect();
    names.sort();
    names.dedup();
    let changes: Vec<String> = names
        .into_iter()
        .filter(|n| loaded.get(*n) != found.get(*n))
        .map(|n| {
            format!(
                "attribute {n:?} was {}, is {}",
                show_value(loaded.get(n), mode),
                show_value(found.get(n), mode)
            )
        })
        .collect();
    if changes.is_empty() {
        // Same attributes, same values: the hashes differ only if the text does.
        format!(
            "the item's text differs ({} vs {})",
            hex8(&item_hash(loaded)),
            hex8(&item_hash(found))
        )
    } else {
        changes.join("; ")
    }
}

fn hex8(hash: &[u8; 32]) -> String {
    hash[..4].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_a_stable_share_of_the_chunks() {
        let all: Vec<i64> = (0..10_000).map(|i| (7 << CHUNK_INDEX_BITS) | i).collect();
        let tenth = all.iter().filter(|p| sampled(**p, 100)).count();
        assert!((800..1200).contains(&tenth), "{tenth}");
        assert!(all.iter().all(|p| sampled(*p, 1000)));
        assert!(all.iter().all(|p| !sampled(*p, 0)));
        assert_eq!(
            all.iter().filter(|p| sampled(**p, 100)).count(),
            tenth,
            "the same chunks every time"
        );
    }

    #[test]
    fn a_change_names_its_attributes_and_hides_values_when_asked() {
        let loaded: Item = [
            ("pk".to_string(), normal::DValue::S("a".into())),
            ("n".to_string(), normal::DValue::N("1.25".into())),
        ]
        .into_iter()
        .collect();
        let mut found = loaded.clone();
        found.insert("n".into(), normal::DValue::N("1.3".into()));
        assert_eq!(
            describe_change(Some(&loaded), Some(&found), RejectLines::Raw),
            r#"attribute "n" was {"N":"1.25"}, is {"N":"1.3"}"#
        );
        assert_eq!(
            describe_change(Some(&loaded), Some(&found), RejectLines::Omitted),
            r#"attribute "n" was <omitted>, is <omitted>"#
        );
        found.remove("n");
        assert!(
            describe_change(Some(&loaded), Some(&found), RejectLines::Redacted)
                .contains("is absent")
        );
    }
}
