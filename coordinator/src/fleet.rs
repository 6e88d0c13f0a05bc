//! The coordinator's side of the fleet (design.md §1): make the SQS queue, submit a planned run's
//! shards to it, and report progress from the ledger and the queue.
//!
//! `submit` is safe to repeat: it sends every shard that is not done, and a shard that is on the
//! queue twice is loaded once (the second delivery finds it done, or loses the checkpoint race).

use std::fmt::Write as _;

use ferry_ledger::runs as ledger;
use ferry_ledger::shard_state;
use ferry_ledger::{RunRecord, ShardRecord};
use ferry_shared::queue::ShardTask;
use ferry_shared::sqs::{QueueDepth, SqsQueue};
use ferry_worker::pool::pending_tasks;
use serde::Serialize;
use tokio_postgres::Client;

use crate::Result;

/// What `submit` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Submitted {
    /// Shards sent to the queue.
    pub sent: usize,
    /// Shards already done, not sent.
    pub already_done: usize,
}

/// Sends every shard of `run_id` that is not done to `queue`.
pub async fn submit(client: &Client, queue: &SqsQueue, run_id: &str) -> Result<Submitted> {
    // A queue bound to another target is refused before anything is sent.
    queue
        .check_target(ledger::target_token(client).await?.as_deref())
        .await?;
    let shards = ledger::get_shards(client, run_id).await?;
    // Each message carries the run's target token (made now for runs planned before tokens).
    let token = ledger::ensure_run_token(client, run_id).await?;
    let tasks: Vec<ShardTask> = pending_tasks(run_id, &shards)
        .into_iter()
        .map(|task| task.for_target(&token))
        .collect();
    let sent = queue.send(&tasks).await?;
    tracing::info!(run = run_id, queue = queue.url(), sent, "submitted shards");
    Ok(Submitted {
        sent,
        already_done: shards.len() - tasks.len(),
    })
}

/// A failed shard in the status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FailedShard {
    /// The shard.
    pub shard_id: String,
    /// Its data file.
    pub data_key: String,
    /// Why.
    pub error: String,
}

/// A run's progress: the ledger against the manifest, and the queue.
#[derive(Clone, Debug, Serialize)]
pub struct FleetStatus {
    /// The run.
    pub run_id: String,
    /// Its table.
    pub table: String,
    /// The run's state in the ledger.
    pub state: String,
    /// Items per the manifest.
    pub manifest_items: Option<u64>,
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
    /// Bytes accounted for (done shards whole, others in proportion to their committed lines).
    pub bytes_committed: u64,
    /// Shards in the run.
    pub shards_total: usize,
    /// Shards done.
    pub shards_done: usize,
    /// Shards with some lines committed but not done.
    pub shards_in_progress: usize,
    /// Shards not started.
    pub shards_waiting: usize,
    /// Shards failed (their data, or their last attempt).
    pub shards_failed: Vec<FailedShard>,
    /// The queue, when one was named.
    pub queue: Option<QueueDepth>,
    /// Items per second since the run was planned, or between two `--watch` samples.
    pub items_per_second: Option<f64>,
    /// Seconds to go at that rate.
    pub eta_seconds: Option<f64>,
    /// Every shard's state and progress.
    pub shards: Vec<ShardProgress>,
    /// For a run with catch-up windows (or a window): how far behind its tables are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<ferry_ledger::lineage::Behind>,
    /// The keys of tables the run created without them, until built (`crate::keys`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<ferry_ledger::PendingKey>,
}

/// One shard's line in the status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShardProgress {
    /// The shard.
    pub shard_id: String,
    /// pending, done or failed.
    pub state: String,
    /// Lines committed (the checkpoint).
    pub committed_lines: u64,
    /// Items per the manifest.
    pub item_count: Option<u64>,
    /// Stored bytes.
    pub size_bytes: Option<u64>,
}

/// Shards named in the text per kind (loading, failed) at most.
const SHARDS_LISTED: usize = 20;

impl FleetStatus {
    /// The committed counts that `migrate`'s display and the `ferry_run_*` metrics show.
    pub fn sample(&self) -> ferry_worker::progress::RunSample {
        ferry_worker::progress::RunSample {
            items_expected: self.manifest_items,
            items_committed: self.items_committed,
            rows_loaded: self.rows_loaded,
            rows_rejected: self.rows_rejected,
            values_spilled: self.values_spilled,
            bytes_total: self.bytes_total,
            bytes_committed: self.bytes_committed,
            shards_done: self.shards_done as u64,
            shards_loading: self.shards_in_progress as u64,
            shards_waiting: self.shards_waiting as u64,
            shards_failed: self.shards_failed.len() as u64,
            sampled_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        }
    }

    /// Every shard is done.
    pub fn complete(&self) -> bool {
        self.shards_done == self.shards_total
    }

    /// Nothing more will happen without help: no shard waits or loads, and some failed.
    pub fn stuck(&self) -> bool {
        !self.complete()
            && self.shards_failed.len() + self.shards_done == self.shards_total
            && self
                .queue
                .as_ref()
                .is_none_or(|q| q.waiting + q.in_flight + q.delayed == 0)
    }

    /// The human-readable status.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let percent = |part: u64, whole: u64| {
            if whole == 0 {
                100.0
            } else {
                part as f64 * 100.0 / whole as f64
            }
        };
        let _ = writeln!(
            out,
            "run {} ({}) into {:?}",
            self.run_id, self.state, self.table
        );
        match self.manifest_items {
            Some(total) => {
                let _ = writeln!(
                    out,
                    "items   {} of {} ({:.1}%), {} loaded, {} rejected, {} values spilled",
                    self.items_committed,
                    total,
                    percent(self.items_committed, total),
                    self.rows_loaded,
                    self.rows_rejected,
                    self.values_spilled
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "items   {} (no manifest count), {} loaded, {} rejected, {} values spilled",
                    self.items_committed, self.rows_loaded, self.rows_rejected, self.values_spilled
                );
            }
        }
        let _ = writeln!(
            out,
            "bytes   {} of {} ({:.1}%)",
            self.bytes_committed,
            self.bytes_total,
            percent(self.bytes_committed, self.bytes_total)
        );
        let _ = writeln!(
            out,
            "shards  {} total: {} done, {} loading, {} waiting, {} failed",
            self.shards_total,
            self.shards_done,
            self.shards_in_progress,
            self.shards_waiting,
            self.shards_failed.len()
        );
        if let Some(q) = &self.queue {
            let _ = writeln!(
                out,
                "queue   {} waiting, {} in flight, {} delayed; dead-letter: {}",
                q.waiting,
                q.in_flight,
                q.delayed,
                match q.dead_letter {
                    Some(n) => n.to_string(),
                    None => "no redrive policy".into(),
                }
            );
        }
        match (self.items_per_second, self.eta_seconds) {
            (Some(rate), Some(eta)) => {
                let _ = writeln!(out, "rate    {rate:.0} items/s, about {eta:.0} s to go");
            }
            (Some(rate), None) => {
                let _ = writeln!(out, "rate    {rate:.0} items/s");
            }
            _ => {}
        }
        // Shards being loaded, each with its checkpoint; done and waiting ones are only counted
        // above, so the text stays short at any number of shards (--json lists every shard).
        let loading: Vec<&ShardProgress> = self
            .shards
            .iter()
            .filter(|s| {
                s.state != shard_state::DONE
                    && s.state != shard_state::FAILED
                    && s.committed_lines > 0
            })
            .collect();
        if !loading.is_empty() {
            let _ = writeln!(
                out,
                "  {:<30} {:<8} {:>22}",
                "loading", "state", "lines committed"
            );
            for shard in loading.iter().take(SHARDS_LISTED) {
                let of = shard
                    .item_count
                    .map(|n| format!(" of {n}"))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {:<30} {:<8} {:>22}",
                    shard.shard_id,
                    shard.state,
                    format!("{}{of}", shard.committed_lines)
                );
            }
            if loading.len() > SHARDS_LISTED {
                let _ = writeln!(
                    out,
                    "  … {} shards loading in all (--json lists every shard)",
                    loading.len()
                );
            }
        }
        for failed in self.shards_failed.iter().take(SHARDS_LISTED) {
            let _ = writeln!(
                out,
                "failed  shard {} ({}): {}",
                failed.shard_id, failed.data_key, failed.error
            );
        }
        if self.shards_failed.len() > SHARDS_LISTED {
            let _ = writeln!(
                out,
                "failed  … {} shards in all (--json lists every one)",
                self.shards_failed.len()
            );
        }
        if let Some(behind) = &self.catch_up {
            out.push_str(&behind.to_text());
        }
        for key in self.keys.iter().filter(|k| !k.built()) {
            let detail = match (&key.builder, &key.error) {
                (_, Some(error)) => format!(": {error}"),
                (Some(builder), None) => format!(" ({builder})"),
                (None, None) => " (finalize builds it once every shard is done)".into(),
            };
            let _ = writeln!(
                out,
                "key     table {:?}: {}{detail}",
                key.table_name, key.state
            );
        }
        out
    }
}

/// Builds the status of `run` from the ledger and, when given, the queue. `previous` (an earlier
/// sample and the seconds since) gives the rate under `--watch`; otherwise the rate is averaged
/// since the run was planned.
pub async fn status(
    client: &Client,
    run: &RunRecord,
    queue: Option<&SqsQueue>,
    previous: Option<(&FleetStatus, f64)>,
) -> Result<FleetStatus> {
    let shards = ledger::get_shards(client, &run.run_id).await?;
    let queue = match queue {
        Some(queue) => Some(queue.depth().await?),
        None => None,
    };
    let mut status = summarize(run, &shards, queue);
    let remaining = status
        .manifest_items
        .map(|total| total.saturating_sub(status.items_committed));
    status.items_per_second = match previous {
        Some((earlier, seconds)) if seconds > 0.0 => Some(
            status
                .items_committed
                .saturating_sub(earlier.items_committed) as f64
                / seconds,
        ),
        _ => run_age_seconds(client, &run.run_id)
            .await
            .filter(|age| *age > 0.0)
            .map(|age| status.items_committed as f64 / age),
    };
    status.eta_seconds = match (status.items_per_second, remaining) {
        (Some(rate), Some(remaining)) if rate > 0.0 && !status.complete() => {
            Some(remaining as f64 / rate)
        }
        _ => None,
    };
    status.catch_up = catch_up_of(client, run).await;
    status.keys = match ferry_ledger::keys::run_keys(client, &run.run_id).await {
        Ok(keys) => keys,
        Err(e) => {
            tracing::warn!(run = %run.run_id, error = %e, "cannot read the run's pending keys: the status leaves them out");
            Vec::new()
        }
    };
    Ok(status)
}

/// How far behind a run with catch-up windows is (`None` for a run without any, or a ledger
/// from before windows).
async fn catch_up_of(client: &Client, run: &RunRecord) -> Option<ferry_ledger::lineage::Behind> {
    let behind = ferry_ledger::lineage::behind(client, run).await.ok()?;
    let is_window = ferry_ledger::window::get_window(client, &run.run_id)
        .await
        .ok()
        .flatten()
        .is_some();
    (is_window || behind.windows_applied > 0 || behind.applying.is_some()).then_some(behind)
}

/// Seconds since the run was planned, when the server can say.
async fn run_age_seconds(client: &Client, run_id: &str) -> Option<f64> {
    client
        .query_opt(
            "SELECT (extract(epoch FROM now()) - extract(epoch FROM created_at))::float8 \
             FROM ferry.runs WHERE run_id = $1::text",
            &[&run_id],
        )
        .await
        .ok()
        .flatten()
        .and_then(|row| row.try_get::<_, f64>(0).ok())
}

fn summarize(run: &RunRecord, shards: &[ShardRecord], queue: Option<QueueDepth>) -> FleetStatus {
    let mut status = FleetStatus {
        run_id: run.run_id.clone(),
        table: run.target_table.clone(),
        state: run.state.clone(),
        manifest_items: run.manifest_items,
        items_committed: 0,
        rows_loaded: 0,
        rows_rejected: 0,
        values_spilled: 0,
        bytes_total: 0,
        bytes_committed: 0,
        shards_total: shards.len(),
        shards_done: 0,
        shards_in_progress: 0,
        shards_waiting: 0,
        shards_failed: Vec::new(),
        queue,
        items_per_second: None,
        eta_seconds: None,
        catch_up: None,
        keys: Vec::new(),
        shards: shards
            .iter()
            .map(|s| ShardProgress {
                shard_id: s.shard_id.clone(),
                state: s.state.clone(),
                committed_lines: s.committed_lines,
                item_count: s.item_count,
                size_bytes: s.size_bytes,
            })
            .collect(),
    };
    for shard in shards {
        let committed = shard.loaded_rows + shard.rejected_rows + shard.filtered_rows;
        status.items_committed += committed;
        status.rows_loaded += shard.loaded_rows;
        status.rows_rejected += shard.rejected_rows;
        status.values_spilled += shard.spilled_values;
        let size = shard.size_bytes.unwrap_or(0);
        status.bytes_total += size;
        if shard.state == shard_state::DONE {
            status.shards_done += 1;
            status.bytes_committed += size;
            continue;
        }
        if let Some(items) = shard.item_count.filter(|n| *n > 0) {
            status.bytes_committed +=
                (size as f64 * (committed.min(items) as f64 / items as f64)) as u64;
        }
        if shard.state == shard_state::FAILED {
            status.shards_failed.push(FailedShard {
                shard_id: shard.shard_id.clone(),
                data_key: shard.data_key.clone(),
                error: shard.error.clone().unwrap_or_else(|| "failed".into()),
            });
        } else if shard.committed_lines > 0 {
            status.shards_in_progress += 1;
        } else {
            status.shards_waiting += 1;
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_of(manifest_items: Option<u64>) -> RunRecord {
        RunRecord {
            run_id: "r".into(),
            export_location: "s3://b/p/".into(),
            export_arn: None,
            export_time: None,
            target_table: "t".into(),
            schema: ferry_shared::schema::TableSchema {
                routing: None,
                provenance: true,
                table: "t".into(),
                columns: Vec::new(),
                overflow_column: "attrs".into(),
                nested_json: Default::default(),
                on_type_mismatch: Default::default(),
                numeric_limit: Default::default(),
            },
            chunk_lines: 10,
            max_rejects: 0,
            manifest_verified: true,
            manifest_items,
            state: "loading".into(),
            load_path: Some("binary".into()),
        }
    }

    fn shard(id: &str, state: &str, items: u64, committed: u64, size: u64) -> ShardRecord {
        ShardRecord {
            shard_id: id.into(),
            data_key: format!("data/{id}.json.gz"),
            item_count: Some(items),
            md5_checksum: None,
            size_bytes: Some(size),
            committed_lines: committed,
            loaded_rows: committed,
            rejected_rows: 0,
            filtered_rows: 0,
            spilled_values: 0,
            items_seen: None,
            md5_ok: None,
            state: state.into(),
            error: (state == shard_state::FAILED).then(|| "corrupt gzip".into()),
            generation: 0,
            copying_from: None,
        }
    }

    #[test]
    fn summarizes_shards_against_the_manifest() {
        let run = run_of(Some(400));
        let shards = [
            shard("a", shard_state::DONE, 100, 100, 1000),
            shard("b", shard_state::PENDING, 100, 50, 1000),
            shard("c", shard_state::PENDING, 100, 0, 1000),
            shard("d", shard_state::FAILED, 100, 0, 1000),
        ];
        let status = summarize(&run, &shards, None);
        assert_eq!(status.items_committed, 150);
        assert_eq!(status.bytes_total, 4000);
        assert_eq!(status.bytes_committed, 1500);
        assert_eq!(
            (
                status.shards_done,
                status.shards_in_progress,
                status.shards_waiting
            ),
            (1, 1, 1)
        );
        assert_eq!(status.shards_failed[0].shard_id, "d");
        assert!(!status.complete());
        assert!(!status.stuck(), "shards b and c can still load");
        let text = status.to_text();
        assert!(text.contains("items   150 of 400 (37.5%)"), "{text}");
        assert!(
            text.contains("failed  shard d (data/d.json.gz): corrupt gzip"),
            "{text}"
        );
        let words = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert!(
            text.lines()
                .any(|l| words(l) == ["b", "pending", "50", "of", "100"]),
            "{text}"
        );
        assert!(
            !text
                .lines()
                .any(|l| words(l).first().map(String::as_str) == Some("a")
                    || words(l).first().map(String::as_str) == Some("c")),
            "done and waiting shards are only counted: {text}"
        );
        assert_eq!(status.shards.len(), 4);
    }

    #[test]
    fn the_text_stays_short_at_ten_thousand_shards() {
        let mut shards: Vec<ShardRecord> = (0..10_000)
            .map(|i| {
                let state = match i % 100 {
                    0 => shard_state::FAILED,
                    1..=49 => shard_state::DONE,
                    _ => shard_state::PENDING,
                };
                shard(
                    &format!("s{i:05}"),
                    state,
                    100,
                    u64::from(i % 100 == 50) * 10,
                    1000,
                )
            })
            .collect();
        shards.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
        let status = summarize(&run_of(Some(1_000_000)), &shards, None);
        assert_eq!(status.shards_failed.len(), 100);
        assert_eq!(status.shards_in_progress, 100);
        let text = status.to_text();
        let lines = text.lines().count();
        assert!(lines <= 50, "{lines} lines:\n{text}");
        assert!(text.contains("… 100 shards loading in all"), "{text}");
        assert!(text.contains("failed  … 100 shards in all"), "{text}");
        assert_eq!(status.shards.len(), 10_000, "--json keeps every shard");
    }
}
