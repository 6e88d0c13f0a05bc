//! The cost model behind `plan --dry-run`: how fast a fleet of workers loads an export, from
//! measured constants, and where the target saturates.
//!
//! Three constants, each taken from the best source there is, and named with it:
//! - a worker's rate (items/s): the latest finished run in the target's ledger (its shards' items
//!   over the time their loads took, [`run_rate`]), else the latest probe's decode rate per core
//!   × `load.estimate_cores_per_worker`, else `load.estimate_items_per_second`. A shard's load
//!   time is from its load's claim (`ferry.loads.created_at`) to its last checkpoint
//!   (`ferry.shards.updated_at`). On the transaction paths that checkpoint's `now()` is its
//!   transaction's start, so the last chunk's time is not in it, and its lines are left out of the
//!   shard's items too ([`timed_items`]); a shard of one chunk then says nothing;
//! - a worker's source read rate (stored bytes/s, turned into items/s with the export's stored
//!   bytes per item): the latest probe when it read the same kind of store (S3 or a folder), else
//!   `load.estimate_source_bytes_per_second`;
//! - the target's ingest ceiling (items/s, all workers together): the latest probe, else
//!   `load.estimate_target_items_per_second`; raised to what the latest run reached, which the
//!   target evidently takes.
//!
//! The model ([`Model`]): a worker loads `min(worker rate, source rate)`; `w` workers load
//! `min(w × that, ceiling)`; a run takes at least its items over that, and at least its largest
//! shard over one worker's rate (a worker loads one shard at a time).
//!
//! Reading the ledger ([`read_ledger`]) only ever runs SELECTs: a target without a ledger, an
//! older ledger without `ferry.probes`, or a target that cannot be reached leaves the constants
//! to the configuration, and the text says so.

use std::fmt::Write as _;

use ferry_ledger::sql;
use ferry_shared::manifest::ExportListing;
use ferry_shared::store::is_s3;
use tokio_postgres::Client;

use crate::probe::Level;

/// How long `plan --dry-run` waits for the target before estimating without it.
const CONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// The largest fleet the scaling table considers.
const MAX_WORKERS: usize = 1 << 16;

/// One shard of a finished run: its items, and when its load was claimed and finished (seconds
/// since the epoch).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ShardTiming {
    /// Items accounted for (loaded + rejected + filtered).
    pub items: u64,
    /// When its load was claimed.
    pub started: f64,
    /// When it was marked done.
    pub finished: f64,
}

/// What a finished run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRate {
    /// The run.
    pub run_id: String,
    /// When it finished, as the ledger says.
    pub finished_at: String,
    /// Shards timed.
    pub shards: usize,
    /// Items timed in them (see [`timed_items`]).
    pub items: u64,
    /// Items per second one worker loaded (all items over the sum of the shards' load times).
    pub per_worker: f64,
    /// Items per second the whole run loaded (all items over first claim to last finish).
    pub aggregate: f64,
    /// The most shards loading at once.
    pub concurrency: usize,
}

/// The items of a shard that its recorded interval covers: all of them when its checkpoints were
/// written in autocommit (`checkpoint_is_commit_time`, the CSV path), else those of every chunk but
/// the last (whose transaction's start is the recorded time), in proportion to its lines.
pub fn timed_items(
    items: u64,
    committed_lines: u64,
    chunk_lines: u64,
    checkpoint_is_commit_time: bool,
) -> u64 {
    if checkpoint_is_commit_time || committed_lines == 0 {
        return items;
    }
    let chunk_lines = chunk_lines.max(1);
    let before_last = (committed_lines - 1) / chunk_lines * chunk_lines;
    (items as u128 * before_last as u128 / committed_lines as u128) as u64
}

/// A worker's rate, the run's rate and its concurrency from its shards' timings; `None` without
/// a timed shard.
pub fn run_rate(timings: &[ShardTiming]) -> Option<(f64, f64, usize)> {
    let timed: Vec<&ShardTiming> = timings
        .iter()
        .filter(|t| t.finished > t.started && t.items > 0)
        .collect();
    let busy: f64 = timed.iter().map(|t| t.finished - t.started).sum();
    if timed.is_empty() || busy <= 0.0 {
        return None;
    }
    let items: u64 = timed.iter().map(|t| t.items).sum();
    let first = timed
        .iter()
        .map(|t| t.started)
        .fold(f64::INFINITY, f64::min);
    let last = timed
        .iter()
        .map(|t| t.finished)
        .fold(f64::NEG_INFINITY, f64::max);
    // The most intervals open at once (an end before a start at the same instant).
    let mut events: Vec<(f64, i32)> = timed
        .iter()
        .flat_map(|t| [(t.started, 1), (t.finished, -1)])
        .collect();
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut open, mut most) = (0i32, 0i32);
    for (_, step) in events {
        open += step;
        most = most.max(open);
    }
    Some((
        items as f64 / busy,
        items as f64 / (last - first).max(1e-9),
        most.max(1) as usize,
    ))
}

/// The latest probe, as `ferry.probes` holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeRecord {
    /// Its id.
    pub probe_id: String,
    /// When it was recorded, as the ledger says.
    pub at: String,
    /// The machine it ran on.
    pub host: String,
    /// Its cores.
    pub cores: u64,
    /// The target's `server_version`.
    pub server: String,
    /// `binary` or `csv`.
    pub load_path: String,
    /// The lines decoded.
    pub items_source: String,
    /// Items per second per core, decoded and encoded.
    pub decode_per_core: f64,
    /// The target's ceiling, rows per second.
    pub ceiling: f64,
    /// Connections at the ceiling.
    pub ceiling_connections: u64,
    /// Every level measured.
    pub levels: Vec<Level>,
    /// The source it read, if any.
    pub source_location: Option<String>,
    /// Its stored bytes per second.
    pub source_bytes_per_sec: Option<f64>,
}

/// What the target's ledger holds for the estimate.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Readings {
    /// Whether the ledger was read (else every constant is the configuration's).
    pub read: bool,
    /// What could not be read or was not there, in words.
    pub notes: Vec<String>,
    /// The latest finished run with timed shards.
    pub run: Option<RunRate>,
    /// The latest probe.
    pub probe: Option<ProbeRecord>,
}

impl Readings {
    /// No ledger read, for the reason given: the configuration's constants.
    pub fn without_ledger(why: &str) -> Readings {
        Readings {
            notes: vec![why.to_string()],
            ..Readings::default()
        }
    }

    /// Where the measurements came from, in words.
    pub fn describe(&self) -> String {
        let notes = self.notes.join("; ");
        match (self.read, notes.is_empty()) {
            (true, true) => "measurements: read from the target's ledger".into(),
            (true, false) => format!("measurements: read from the target's ledger ({notes})"),
            (false, _) => {
                format!("measurements: none read ({notes}): the constants are the configuration's")
            }
        }
    }
}

/// Reads the latest finished run and the latest probe from the target's ledger, with SELECTs
/// only; never fails: what cannot be read is said in [`Readings::notes`].
pub async fn read_ledger(url: &str) -> Readings {
    let client = match tokio::time::timeout(CONNECT_WAIT, ferry_worker::conn::control(url)).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => {
            return Readings::without_ledger(&format!(
                "the target is unreachable: {}",
                ferry_worker::chain_text(&e)
            ))
        }
        Err(_) => {
            return Readings::without_ledger(&format!(
                "the target did not answer within {} s",
                CONNECT_WAIT.as_secs()
            ))
        }
    };
    let tables: Vec<String> = match client.query(sql::SELECT_LEDGER_TABLES, &[]).await {
        Ok(rows) => rows.iter().map(|r| r.get::<_, String>(0)).collect(),
        Err(e) => {
            return Readings::without_ledger(&format!(
                "the target's catalog cannot be read: {}",
                ferry_worker::server_message(&e)
            ))
        }
    };
    let has = |name: &str| tables.iter().any(|t| t == name);
    if !has("runs") && !has("probes") {
        return Readings::without_ledger("the target has no ferry ledger");
    }
    let mut readings = Readings {
        read: true,
        ..Readings::default()
    };
    if has("probes") {
        match latest_probe(&client).await {
            Ok(Some(probe)) => readings.probe = Some(probe),
            Ok(None) => readings.notes.push("no probe recorded".into()),
            Err(e) => readings
                .notes
                .push(format!("ferry.probes cannot be read: {e}")),
        }
    } else {
        readings
            .notes
            .push("no probe recorded (run `ferry-coordinator probe`)".into());
    }
    if has("runs") && has("shards") && has("loads") {
        match latest_run(&client).await {
            Ok(Some(run)) => readings.run = Some(run),
            Ok(None) => readings
                .notes
                .push("no finished run with timed shards".into()),
            Err(e) => readings.notes.push(format!("the runs cannot be read: {e}")),
        }
    } else {
        readings.notes.push("no runs".into());
    }
    readings
}

async fn latest_probe(client: &Client) -> Result<Option<ProbeRecord>, String> {
    let row = client
        .query_opt(sql::SELECT_LATEST_PROBE, &[])
        .await
        .map_err(|e| ferry_worker::server_message(&e))?;
    let Some(row) = row else { return Ok(None) };
    let number = |column: &str| row.get::<_, i64>(column) as f64;
    let levels: String = row.get("levels_json");
    Ok(Some(ProbeRecord {
        probe_id: row.get("probe_id"),
        at: row.get("at"),
        host: row.get("host"),
        cores: row.get::<_, i64>("cores").max(0) as u64,
        server: row.get("server"),
        load_path: row.get("load_path"),
        items_source: row.get("items_source"),
        decode_per_core: number("decode_items_per_sec"),
        ceiling: number("ceiling_rows_per_sec"),
        ceiling_connections: row.get::<_, i64>("ceiling_connections").max(0) as u64,
        levels: serde_json::from_str(&levels).unwrap_or_default(),
        source_location: row.get("source_location"),
        source_bytes_per_sec: row
            .get::<_, Option<i64>>("source_bytes_per_sec")
            .map(|v| v as f64),
    }))
}

async fn latest_run(client: &Client) -> Result<Option<RunRate>, String> {
    let text = |e: tokio_postgres::Error| ferry_worker::server_message(&e);
    let runs = client
        .query(sql::SELECT_FINISHED_RUNS, &[])
        .await
        .map_err(text)?;
    for run in runs {
        let run_id: String = run.get("run_id");
        let load_path: Option<String> = run.get("load_path");
        // A Parquet run's rate is not a database load's.
        if load_path.as_deref() == Some("parquet") {
            continue;
        }
        // Nor is a catch-up window's (an older ledger has no windows: not one).
        let window = client
            .query_opt(sql::SELECT_IS_WINDOW, &[&run_id])
            .await
            .map(|r| r.is_some())
            .unwrap_or(false);
        if window {
            continue;
        }
        let rows = client
            .query(sql::SELECT_SHARD_TIMINGS, &[&run_id])
            .await
            .map_err(text)?;
        // Only the CSV path checkpoints in autocommit (its time is the commit's).
        let autocommit = load_path.as_deref() == Some("csv");
        let chunk_lines = run.get::<_, i64>("chunk_lines").max(1) as u64;
        let seconds = |row: &tokio_postgres::Row, column: &str| {
            row.get::<_, Option<String>>(column)
                .and_then(|t| t.trim().parse::<f64>().ok())
        };
        let timings: Vec<ShardTiming> = rows
            .iter()
            .filter_map(|row| {
                Some(ShardTiming {
                    items: timed_items(
                        row.get::<_, i64>("items").max(0) as u64,
                        row.get::<_, i64>("committed_lines").max(0) as u64,
                        chunk_lines,
                        autocommit,
                    ),
                    started: seconds(row, "started")?,
                    finished: seconds(row, "finished")?,
                })
            })
            .collect();
        if let Some((per_worker, aggregate, concurrency)) = run_rate(&timings) {
            let timed: Vec<&ShardTiming> = timings.iter().filter(|t| t.items > 0).collect();
            return Ok(Some(RunRate {
                run_id,
                finished_at: run.get("at"),
                shards: timed.len(),
                items: timed.iter().map(|t| t.items).sum(),
                per_worker,
                aggregate,
                concurrency,
            }));
        }
    }
    Ok(None)
}

/// A constant of the model and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Constant {
    /// Its value.
    pub value: f64,
    /// Its source, in words.
    pub source: String,
}

/// The model's constants.
#[derive(Clone, Debug, PartialEq)]
pub struct Constants {
    /// Items per second one worker decodes, encodes and loads.
    pub worker: Constant,
    /// Stored bytes per second one worker reads.
    pub source_bytes: Constant,
    /// Items per second the target takes with every worker together.
    pub ceiling: Constant,
}

fn short_time(at: &str) -> &str {
    // `2026-11-30 14:00:43.107682+00` → to the second.
    at.get(..19).unwrap_or(at)
}

/// Each constant from its best source (see the module's notes). `export_on_s3`: where the
/// export being estimated is.
pub fn choose_constants(
    readings: &Readings,
    load: &ferry_shared::config::LoadSettings,
    export_on_s3: bool,
) -> Constants {
    let probe_name = |p: &ProbeRecord| {
        format!(
            "probe {} ({}, {} cores, {})",
            p.probe_id,
            p.host,
            p.cores,
            short_time(&p.at)
        )
    };
    let worker = match (&readings.run, &readings.probe) {
        (Some(run), _) => Constant {
            value: run.per_worker,
            source: format!(
                "latest finished run {} ({} items timed in {} shards, up to {} at once, finished {})",
                run.run_id,
                run.items,
                run.shards,
                run.concurrency,
                short_time(&run.finished_at)
            ),
        },
        (None, Some(probe)) if probe.decode_per_core > 0.0 => Constant {
            value: probe.decode_per_core * load.estimate_cores_per_worker as f64,
            source: format!(
                "{}: {:.0} items/s per core × {} (load.estimate_cores_per_worker)",
                probe_name(probe),
                probe.decode_per_core,
                load.estimate_cores_per_worker
            ),
        },
        _ => Constant {
            value: load.estimate_items_per_second as f64,
            source: "config load.estimate_items_per_second".into(),
        },
    };
    let configured_source = |why: &str| Constant {
        value: load.estimate_source_bytes_per_second as f64,
        source: format!("config load.estimate_source_bytes_per_second{why}"),
    };
    let source_bytes = match &readings.probe {
        Some(probe) => match (&probe.source_location, probe.source_bytes_per_sec) {
            (Some(location), Some(rate)) if is_s3(location) == export_on_s3 && rate > 0.0 => {
                Constant {
                    value: rate,
                    source: format!("{} reading {location}", probe_name(probe)),
                }
            }
            (Some(location), Some(_)) => configured_source(&format!(
                " (the probe read {}, this export is {})",
                if is_s3(location) {
                    "S3"
                } else {
                    "a local folder"
                },
                if export_on_s3 { "on S3" } else { "local" }
            )),
            _ => configured_source(" (the probe read no export)"),
        },
        None => configured_source(""),
    };
    let measured_ceiling = match &readings.probe {
        Some(probe) if probe.ceiling > 0.0 => Constant {
            value: probe.ceiling,
            source: format!(
                "{}: peak at {} connection{}",
                probe_name(probe),
                probe.ceiling_connections,
                if probe.ceiling_connections == 1 {
                    ""
                } else {
                    "s"
                }
            ),
        },
        _ => Constant {
            value: load.estimate_target_items_per_second as f64,
            source: "config load.estimate_target_items_per_second".into(),
        },
    };
    let ceiling = match &readings.run {
        Some(run) if run.aggregate > measured_ceiling.value => Constant {
            value: run.aggregate,
            source: format!(
                "latest finished run {} reached it with up to {} shards at once (above {:.0} from {})",
                run.run_id, run.concurrency, measured_ceiling.value, measured_ceiling.source
            ),
        },
        _ => measured_ceiling,
    };
    Constants {
        worker,
        source_bytes,
        ceiling,
    }
}

/// What bounds an estimate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// The workers: more of them would be faster.
    Workers,
    /// The target's ceiling.
    Target,
    /// The largest shard, loaded by one worker.
    LargestShard,
}

impl Bound {
    fn describe(self) -> &'static str {
        match self {
            Bound::Workers => "worker-bound",
            Bound::Target => "target-bound",
            Bound::LargestShard => "bound by the largest shard",
        }
    }
}

/// A time estimate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// Workers with a shard to load (at most one per shard).
    pub busy: usize,
    /// Items per second of the fleet.
    pub items_per_second: f64,
    /// Seconds.
    pub seconds: f64,
    /// What bounds it.
    pub bound: Bound,
}

/// The model: one worker's rate and the target's ceiling, in items per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Model {
    /// Items per second one worker loads: `min(worker rate, source rate)`.
    pub per_worker: f64,
    /// Items per second the target takes.
    pub ceiling: f64,
}

impl Model {
    /// The model of a worker rate, an optional source rate (items/s) and a ceiling.
    pub fn new(worker: f64, source: Option<f64>, ceiling: f64) -> Model {
        Model {
            per_worker: source
                .map_or(worker, |s| worker.min(s))
                .max(f64::MIN_POSITIVE),
            ceiling: ceiling.max(f64::MIN_POSITIVE),
        }
    }

    /// Items per second of `workers` workers: `min(workers × per worker, ceiling)`.
    pub fn fleet(&self, workers: usize) -> f64 {
        (workers as f64 * self.per_worker).min(self.ceiling)
    }

    /// The fewest workers that saturate the target.
    pub fn saturation_workers(&self) -> usize {
        let exact = self.ceiling / self.per_worker;
        // 1e-9: a ceiling an exact multiple of the rate saturates at that multiple.
        ((exact - 1e-9).ceil().max(1.0) as usize).min(MAX_WORKERS)
    }

    /// The time `workers` workers take for `items` items in `shards` shards, the largest holding
    /// `largest` items: the items over the fleet's rate (a worker without a shard idles), and at
    /// least the largest shard over one worker's rate.
    pub fn estimate(&self, items: u64, largest: u64, shards: usize, workers: usize) -> Estimate {
        let busy = workers.min(shards).max(1);
        let rate = self.fleet(busy);
        let all = items as f64 / rate;
        let alone = largest as f64 / self.per_worker;
        let bound = if alone > all {
            Bound::LargestShard
        } else if busy as f64 * self.per_worker > self.ceiling {
            Bound::Target
        } else {
            Bound::Workers
        };
        Estimate {
            busy,
            items_per_second: rate,
            seconds: all.max(alone),
            bound,
        }
    }

    /// The scaling table's fleet sizes: 1, 2, 4, … below the saturation point, then the
    /// saturation point.
    pub fn scaling_workers(&self) -> Vec<usize> {
        let saturation = self.saturation_workers();
        let mut sizes: Vec<usize> = std::iter::successors(Some(1usize), |n| n.checked_mul(2))
            .take_while(|n| *n < saturation)
            .collect();
        sizes.push(saturation);
        sizes
    }
}

fn seconds_text(seconds: f64) -> String {
    let whole = seconds.ceil().max(0.0) as u64;
    match whole {
        0..=5_999 => format!("{whole} s"),
        6_000..=359_999 => format!("{whole} s ({:.1} min)", seconds / 60.0),
        _ => format!("{whole} s ({:.1} h)", seconds / 3600.0),
    }
}

/// The estimate part of `plan --dry-run`: the constants and their sources, the model, the fleet
/// table up to saturation, and the time for `workers`.
pub fn estimate_text(
    listing: &ExportListing,
    workers: usize,
    load: &ferry_shared::config::LoadSettings,
    readings: &Readings,
) -> String {
    let mut out = String::new();
    let Some(items) = listing.manifest_items() else {
        let _ = writeln!(out, "estimate: unknown (no manifest item counts)");
        return out;
    };
    let export_on_s3 = is_s3(&listing.location);
    let constants = choose_constants(readings, load, export_on_s3);
    let stored = listing.total_bytes();
    let bytes_per_item = (items > 0).then(|| stored as f64 / items as f64);
    let source_items = bytes_per_item
        .filter(|b| *b > 0.0)
        .map(|b| constants.source_bytes.value / b);
    let model = Model::new(
        constants.worker.value,
        source_items,
        constants.ceiling.value,
    );
    let _ = writeln!(out, "{}", readings.describe());
    let _ = writeln!(
        out,
        "  worker  {:>12.0} items/s per worker  <- {}",
        constants.worker.value, constants.worker.source
    );
    match (bytes_per_item, source_items) {
        (Some(per_item), Some(rate)) => {
            let _ = writeln!(
                out,
                "  source  {:>12.0} items/s per worker  <- {:.1} MB/s at {per_item:.0} stored bytes per item; {}",
                rate,
                constants.source_bytes.value / 1e6,
                constants.source_bytes.source
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "  source  not bounding (the export's bytes per item are unknown)"
            );
        }
    }
    let _ = writeln!(
        out,
        "  target  {:>12.0} items/s in all       <- {}",
        constants.ceiling.value, constants.ceiling.source
    );
    let saturation = model.saturation_workers();
    let _ = writeln!(
        out,
        "model: a worker loads min(worker, source) = {:.0} items/s; w workers load min(w × {:.0}, {:.0}); \
         the target saturates at {saturation} worker{}",
        model.per_worker,
        model.per_worker,
        model.ceiling,
        if saturation == 1 { "" } else { "s" }
    );
    let largest = listing
        .files
        .iter()
        .filter_map(|f| f.item_count)
        .max()
        .unwrap_or(0);
    let shards = listing.files.len();
    let _ = writeln!(out, "{:>8} {:>14} {:>22}", "workers", "items/s", "time");
    for size in model.scaling_workers() {
        let estimate = model.estimate(items, largest, shards, size);
        let _ = writeln!(
            out,
            "{:>8} {:>14.0} {:>22}{}",
            size,
            model.fleet(size),
            seconds_text(estimate.seconds),
            if size == saturation {
                "  <- the target saturates"
            } else {
                ""
            }
        );
    }
    let estimate = model.estimate(items, largest, shards, workers);
    let _ = writeln!(
        out,
        "estimate: {} with {workers} workers at {:.0} items/s in all ({}{}; the largest shard alone takes {})",
        seconds_text(estimate.seconds),
        estimate.items_per_second,
        estimate.bound.describe(),
        if estimate.busy < workers {
            format!(", {} shards keep only {} busy", shards, estimate.busy)
        } else {
            String::new()
        },
        seconds_text(largest as f64 / model.per_worker)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_rate_grows_until_the_ceiling() {
        let model = Model::new(50_000.0, None, 120_000.0);
        assert_eq!(model.fleet(1), 50_000.0);
        assert_eq!(model.fleet(2), 100_000.0);
        assert_eq!(model.fleet(3), 120_000.0);
        assert_eq!(model.fleet(16), 120_000.0);
        // 120,000 / 50,000 = 2.4: the third worker saturates it.
        assert_eq!(model.saturation_workers(), 3);
        assert_eq!(model.scaling_workers(), vec![1, 2, 3]);
    }

    #[test]
    fn saturation_on_an_exact_multiple_and_at_one_worker() {
        let exact = Model::new(25_000.0, None, 100_000.0);
        assert_eq!(exact.saturation_workers(), 4);
        assert_eq!(exact.scaling_workers(), vec![1, 2, 4]);
        let slow_target = Model::new(50_000.0, None, 20_000.0);
        assert_eq!(slow_target.saturation_workers(), 1);
        assert_eq!(slow_target.scaling_workers(), vec![1]);
        assert_eq!(slow_target.fleet(8), 20_000.0);
        let wide = Model::new(10_000.0, None, 1_000_000.0);
        assert_eq!(wide.saturation_workers(), 100);
        assert_eq!(wide.scaling_workers(), vec![1, 2, 4, 8, 16, 32, 64, 100]);
    }

    #[test]
    fn the_source_bounds_a_worker() {
        // Decoding 80,000/s, S3 gives 30,000 items/s: the worker loads 30,000.
        let model = Model::new(80_000.0, Some(30_000.0), 100_000.0);
        assert_eq!(model.per_worker, 30_000.0);
        assert_eq!(model.saturation_workers(), 4);
    }

    #[test]
    fn time_is_items_over_the_fleet_rate() {
        let model = Model::new(50_000.0, None, 120_000.0);
        // 1,200,000 items in 12 even shards of 100,000.
        let one = model.estimate(1_200_000, 100_000, 12, 1);
        assert_eq!(one.seconds, 24.0);
        assert_eq!(one.bound, Bound::Workers);
        let two = model.estimate(1_200_000, 100_000, 12, 2);
        assert_eq!(two.seconds, 12.0);
        assert_eq!(two.items_per_second, 100_000.0);
        let eight = model.estimate(1_200_000, 100_000, 12, 8);
        assert_eq!(eight.seconds, 10.0);
        assert_eq!(eight.bound, Bound::Target);
    }

    #[test]
    fn the_largest_shard_bounds_the_time() {
        let model = Model::new(50_000.0, None, 1_000_000.0);
        // 1,000,000 items, one shard of 600,000: 16 workers would take 1.25 s, but one worker
        // loads that shard alone in 12 s.
        let estimate = model.estimate(1_000_000, 600_000, 5, 16);
        assert_eq!(estimate.seconds, 12.0);
        assert_eq!(estimate.bound, Bound::LargestShard);
        // Five shards keep five workers busy, not sixteen.
        assert_eq!(estimate.busy, 5);
        assert_eq!(estimate.items_per_second, 250_000.0);
    }

    #[test]
    fn a_run_gives_the_rate_per_worker_and_its_concurrency() {
        // Two shards loading at once for 10 s each, then one alone for 5 s.
        let timings = [
            ShardTiming {
                items: 100_000,
                started: 1000.0,
                finished: 1010.0,
            },
            ShardTiming {
                items: 100_000,
                started: 1000.0,
                finished: 1010.0,
            },
            ShardTiming {
                items: 50_000,
                started: 1010.0,
                finished: 1015.0,
            },
        ];
        let (per_worker, aggregate, concurrency) = run_rate(&timings).unwrap();
        assert_eq!(per_worker, 250_000.0 / 25.0);
        assert_eq!(aggregate, 250_000.0 / 15.0);
        assert_eq!(concurrency, 2);
        // Untimed shards (no duration) tell nothing.
        let untimed = [ShardTiming {
            items: 10,
            started: 5.0,
            finished: 5.0,
        }];
        assert_eq!(run_rate(&untimed), None);
    }

    #[test]
    fn a_transaction_checkpoint_leaves_the_last_chunk_out() {
        // Autocommit: the checkpoint's time is the commit's, every item is timed.
        assert_eq!(timed_items(25_000, 25_000, 10_000, true), 25_000);
        // In a transaction: 25,000 lines in chunks of 10,000, the last (5,000) untimed.
        assert_eq!(timed_items(25_000, 25_000, 10_000, false), 20_000);
        // Lines that are not items (blank lines, rejects kept apart) scale in proportion.
        assert_eq!(timed_items(24_000, 25_000, 10_000, false), 19_200);
        // An exact multiple: the last whole chunk is untimed.
        assert_eq!(timed_items(30_000, 30_000, 10_000, false), 20_000);
        // One chunk: nothing timed.
        assert_eq!(timed_items(900, 900, 10_000, false), 0);
    }

    fn probe_record(ceiling: f64, source: Option<(&str, f64)>) -> ProbeRecord {
        ProbeRecord {
            probe_id: "probe-1".into(),
            at: "2026-11-30 14:00:43.107682+00".into(),
            host: "box".into(),
            cores: 2,
            server: "15.4".into(),
            load_path: "binary".into(),
            items_source: "synthetic".into(),
            decode_per_core: 90_000.0,
            ceiling,
            ceiling_connections: 2,
            levels: Vec::new(),
            source_location: source.map(|(l, _)| l.to_string()),
            source_bytes_per_sec: source.map(|(_, r)| r),
        }
    }

    #[test]
    fn constants_come_from_the_run_then_the_probe_then_the_config() {
        let load = ferry_shared::config::Settings::default().load;
        let none = choose_constants(&Readings::default(), &load, true);
        assert_eq!(none.worker.value, load.estimate_items_per_second as f64);
        assert_eq!(none.worker.source, "config load.estimate_items_per_second");
        assert_eq!(
            none.ceiling.source,
            "config load.estimate_target_items_per_second"
        );

        let mut readings = Readings {
            probe: Some(probe_record(120_000.0, Some(("s3://b/e/", 40e6)))),
            ..Readings::default()
        };
        let probed = choose_constants(&readings, &load, true);
        assert_eq!(
            probed.worker.value,
            90_000.0 * load.estimate_cores_per_worker as f64
        );
        assert!(probed
            .worker
            .source
            .starts_with("probe probe-1 (box, 2 cores, 2026-11-30 14:00:43)"));
        assert_eq!(probed.source_bytes.value, 40e6);
        assert_eq!(probed.ceiling.value, 120_000.0);
        // A probe that read a local folder says nothing of S3.
        let local = choose_constants(&readings, &load, false);
        assert_eq!(
            local.source_bytes.value,
            load.estimate_source_bytes_per_second as f64
        );

        readings.run = Some(RunRate {
            run_id: "run-1".into(),
            finished_at: "2026-11-30 15:00:00+00".into(),
            shards: 4,
            items: 400_000,
            per_worker: 30_000.0,
            aggregate: 150_000.0,
            concurrency: 6,
        });
        let ran = choose_constants(&readings, &load, true);
        assert_eq!(ran.worker.value, 30_000.0);
        assert!(ran.worker.source.starts_with("latest finished run run-1"));
        // The run loaded faster than the probe's ceiling: the target takes at least that.
        assert_eq!(ran.ceiling.value, 150_000.0);
    }
}
