//! Live counters of one process's loading, shared by every loader of the process: what progress
//! displays, status lines and the Prometheus metrics read. Counters only ever grow, and each is
//! updated once a chunk has committed (or a shard has ended), so a reader sees committed work.
//!
//! Beside them, the run's own committed counts as the ledger last said them ([`RunSample`]): a
//! process that samples the ledger (`migrate`'s display, `status --watch`) stores each sample
//! here, and the metrics expose it as the `ferry_run_*` gauges, so the display, `status` and the
//! metrics show the same figures.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds, in seconds, of the chunk commit time histogram's buckets (the last is +Inf).
pub const COMMIT_SECONDS_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How a shard's load by this process ended, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ShardEnd {
    /// Every line committed and reconciled.
    Done,
    /// The ledger already had it done.
    AlreadyDone,
    /// Another worker held it; this one backed off.
    LostRace,
    /// Its data file is bad (the ledger says why).
    Failed,
    /// Stopped on request between chunks.
    Stopped,
    /// The load failed for a reason outside the data (retried, or given up).
    Error,
}

impl ShardEnd {
    /// The label value used in metrics.
    pub fn label(self) -> &'static str {
        match self {
            ShardEnd::Done => "done",
            ShardEnd::AlreadyDone => "already_done",
            ShardEnd::LostRace => "lost_race",
            ShardEnd::Failed => "failed",
            ShardEnd::Stopped => "stopped",
            ShardEnd::Error => "error",
        }
    }

    /// Every outcome, in label order.
    pub const ALL: [ShardEnd; 6] = [
        ShardEnd::Done,
        ShardEnd::AlreadyDone,
        ShardEnd::LostRace,
        ShardEnd::Failed,
        ShardEnd::Stopped,
        ShardEnd::Error,
    ];
}

/// A histogram of durations with the fixed buckets of [`COMMIT_SECONDS_BUCKETS`].
#[derive(Debug, Default)]
pub struct DurationHistogram {
    /// Observations per bucket (not cumulative); the last entry is above every bound.
    buckets: [AtomicU64; COMMIT_SECONDS_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// A point-in-time copy of a [`DurationHistogram`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative counts per upper bound of [`COMMIT_SECONDS_BUCKETS`] (`le` semantics).
    pub cumulative: Vec<(f64, u64)>,
    /// Sum of every observation, in seconds.
    pub sum_seconds: f64,
    /// Number of observations (the `+Inf` bucket).
    pub count: u64,
}

impl DurationHistogram {
    /// Records one observation.
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let bucket = COMMIT_SECONDS_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(COMMIT_SECONDS_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(duration.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The histogram as it is now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let cumulative = COMMIT_SECONDS_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(bound, count)| {
                running += count.load(Ordering::Relaxed);
                (*bound, running)
            })
            .collect();
        HistogramSnapshot {
            cumulative,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// Live counters for progress displays and metrics, shared by every loader of a process.
#[derive(Debug, Default)]
pub struct Progress {
    /// Items committed (loaded, rejected or filtered).
    pub items: AtomicU64,
    /// Stored bytes read from data files (counted as they are read, committed or not).
    pub bytes: Arc<AtomicU64>,
    /// Lines rejected (committed).
    pub rejects: AtomicU64,
    /// Rows loaded (committed).
    pub rows_loaded: AtomicU64,
    /// Items skipped by a routing filter (committed).
    pub filtered: AtomicU64,
    /// Chunks committed.
    pub chunks: AtomicU64,
    /// Committed rejects by reason class ([`crate::decode::RejectKind::label`]).
    rejects_by_reason: Mutex<BTreeMap<&'static str, u64>>,
    /// Shard loads by outcome.
    shard_ends: Mutex<BTreeMap<ShardEnd, u64>>,
    /// Time from a chunk's last row sent to its checkpoint committed.
    pub commit_seconds: DurationHistogram,
    /// Shards being loaded right now.
    pub shards_in_progress: std::sync::atomic::AtomicI64,
    /// The run's counts as the ledger last said them, if this process samples it.
    run: Mutex<Option<RunSample>>,
}

/// A run's committed counts as one read of the ledger gave them (by the code `status` uses): the
/// whole fleet's work, not only this process's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunSample {
    /// Items per the manifest.
    pub items_expected: Option<u64>,
    /// Items committed (loaded, rejected or filtered).
    pub items_committed: u64,
    /// Rows loaded.
    pub rows_loaded: u64,
    /// Lines rejected.
    pub rows_rejected: u64,
    /// Values spilled to the overflow column.
    pub values_spilled: u64,
    /// Bytes of the export's data files.
    pub bytes_total: u64,
    /// Bytes accounted for by committed lines.
    pub bytes_committed: u64,
    /// Shards done.
    pub shards_done: u64,
    /// Shards with some lines committed, not done.
    pub shards_loading: u64,
    /// Shards not started.
    pub shards_waiting: u64,
    /// Shards failed.
    pub shards_failed: u64,
    /// When the ledger was read, in seconds since the Unix epoch.
    pub sampled_at: f64,
}

impl RunSample {
    /// Shards by state, in the order the display and the metrics list them.
    pub fn shards(&self) -> [(&'static str, u64); 4] {
        [
            ("done", self.shards_done),
            ("loading", self.shards_loading),
            ("waiting", self.shards_waiting),
            ("failed", self.shards_failed),
        ]
    }
}

impl Progress {
    /// Counts one committed chunk.
    pub fn chunk_committed(
        &self,
        rows: u64,
        filtered: u64,
        reject_reasons: impl IntoIterator<Item = &'static str>,
        commit_time: Duration,
    ) {
        let mut rejects = 0u64;
        {
            let mut by_reason = self.rejects_by_reason.lock().expect("progress lock");
            for reason in reject_reasons {
                *by_reason.entry(reason).or_default() += 1;
                rejects += 1;
            }
        }
        self.rows_loaded.fetch_add(rows, Ordering::Relaxed);
        self.filtered.fetch_add(filtered, Ordering::Relaxed);
        self.rejects.fetch_add(rejects, Ordering::Relaxed);
        self.items
            .fetch_add(rows + filtered + rejects, Ordering::Relaxed);
        self.chunks.fetch_add(1, Ordering::Relaxed);
        self.commit_seconds.observe(commit_time);
    }

    /// Counts one shard load's end.
    pub fn shard_ended(&self, end: ShardEnd) {
        *self
            .shard_ends
            .lock()
            .expect("progress lock")
            .entry(end)
            .or_default() += 1;
    }

    /// Committed rejects by reason class, every class listed (zeros included).
    pub fn rejects_by_reason(&self) -> BTreeMap<&'static str, u64> {
        let counted = self.rejects_by_reason.lock().expect("progress lock");
        let mut all: BTreeMap<&'static str, u64> = crate::decode::RejectKind::ALL
            .iter()
            .map(|kind| (kind.label(), 0))
            .collect();
        for (reason, count) in counted.iter() {
            *all.entry(reason).or_default() += count;
        }
        all
    }

    /// Stores the run's latest sample.
    pub fn set_run_sample(&self, sample: RunSample) {
        *self.run.lock().expect("progress lock") = Some(sample);
    }

    /// The run's latest sample, if this process has taken one.
    pub fn run_sample(&self) -> Option<RunSample> {
        self.run.lock().expect("progress lock").clone()
    }

    /// Shard loads by outcome (every outcome listed, zeros included).
    pub fn shard_ends(&self) -> BTreeMap<ShardEnd, u64> {
        let ends = self.shard_ends.lock().expect("progress lock");
        ShardEnd::ALL
            .iter()
            .map(|end| (*end, ends.get(end).copied().unwrap_or(0)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let histogram = DurationHistogram::default();
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_millis(30));
        histogram.observe(Duration::from_secs(60));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 3);
        assert_eq!(snapshot.cumulative[0], (0.005, 1));
        assert_eq!(snapshot.cumulative[3], (0.05, 2));
        assert_eq!(
            snapshot.cumulative.last().unwrap().1,
            2,
            "60 s is only in +Inf"
        );
        assert!((snapshot.sum_seconds - 60.033).abs() < 1e-9);
    }

    #[test]
    fn chunks_count_items_rejects_and_outcomes() {
        let progress = Progress::default();
        progress.chunk_committed(10, 2, ["malformed", "malformed", "cast"], Duration::ZERO);
        progress.shard_ended(ShardEnd::Done);
        assert_eq!(progress.items.load(Ordering::Relaxed), 15);
        assert_eq!(progress.rejects.load(Ordering::Relaxed), 3);
        assert_eq!(progress.rejects_by_reason().get("malformed"), Some(&2));
        assert_eq!(progress.rejects_by_reason().get("no_rule"), Some(&0));
        assert_eq!(progress.shard_ends()[&ShardEnd::Done], 1);
        assert_eq!(progress.shard_ends()[&ShardEnd::Failed], 0);
    }
}
