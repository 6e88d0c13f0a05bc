//! A pool of shard loaders on one process: N tasks, each with its own connection, taking shards
//! from a [`WorkQueue`] until it is empty or a stop is requested.
//!
//! A shard whose load fails for a reason that may pass (the target restarted, the network dropped)
//! is retried from its last checkpoint with exponential backoff, on a fresh connection, up to
//! `attempts` times. A shard another worker is loading (lost race) goes back to the queue.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ferry_shared::queue::{ShardTask, WorkQueue};
use tokio_postgres::Client;

use crate::ledger::connect;
use crate::load::{load_shard, LoadContext, ShardOutcome};
use crate::Result;

/// A shard that could not be loaded after every attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardError {
    /// The shard.
    pub shard_id: String,
    /// The last error.
    pub error: String,
}

/// Pool settings.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// The target's URL.
    pub target_url: String,
    /// Concurrent loaders.
    pub workers: usize,
    /// Attempts per shard (and per connection).
    pub attempts: u32,
}

async fn connect_with_retry(url: &str, attempts: u32) -> Result<Client> {
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match connect(url).await {
            Ok(client) => return Ok(client),
            Err(e) if attempt >= attempts => return Err(e),
            Err(e) => {
                tracing::warn!(attempt, error = %e, "cannot connect to the target: retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
                attempt += 1;
            }
        }
    }
}

/// Loads shards from `queue` with `settings.workers` concurrent loaders; returns the shards that
/// failed for good with something other than their data (data failures are in the ledger).
pub async fn run_pool(
    ctx: LoadContext,
    queue: Arc<dyn WorkQueue>,
    settings: PoolSettings,
) -> Vec<ShardError> {
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..settings.workers.max(1) {
        let (ctx, queue, settings) = (ctx.clone(), queue.clone(), settings.clone());
        tasks.spawn(async move { worker_loop(worker, ctx, queue, settings).await });
    }
    let mut errors = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(mut worker_errors) => errors.append(&mut worker_errors),
            Err(e) => errors.push(ShardError {
                shard_id: "-".into(),
                error: format!("worker task died: {e}"),
            }),
        }
    }
    errors
}

async fn worker_loop(
    worker: usize,
    ctx: LoadContext,
    queue: Arc<dyn WorkQueue>,
    settings: PoolSettings,
) -> Vec<ShardError> {
    let mut errors = Vec::new();
    let mut client: Option<Client> = None;
    let mut lost_races = 0u32;
    while !ctx.stop.load(Ordering::Relaxed) {
        let Some(task) = queue.receive().await else {
            break;
        };
        let mut attempt = 1;
        let mut delay = Duration::from_millis(500);
        loop {
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                match connect_with_retry(&settings.target_url, settings.attempts).await {
                    Ok(c) => client = Some(c),
                    Err(e) => {
                        errors.push(ShardError {
                            shard_id: task.shard_id.clone(),
                            error: e.to_string(),
                        });
                        queue.release(task).await;
                        ctx.stop.store(true, Ordering::Relaxed);
                        return errors;
                    }
                }
            }
            let connection = client.as_mut().expect("connected above");
            match load_shard(connection, &ctx, &task.shard_id).await {
                Ok(ShardOutcome::LostRace) => {
                    lost_races += 1;
                    // Someone else holds the shard; let them finish it, and look again later.
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(lost_races.min(10))))
                        .await;
                    queue.release(task).await;
                    break;
                }
                Ok(ShardOutcome::Stopped) => {
                    queue.release(task).await;
                    break;
                }
                Ok(outcome) => {
                    tracing::debug!(worker, shard = %task.shard_id, ?outcome, "shard finished");
                    queue.acknowledge(&task).await;
                    break;
                }
                Err(e) if attempt < settings.attempts && !ctx.stop.load(Ordering::Relaxed) => {
                    tracing::warn!(worker, shard = %task.shard_id, attempt, error = %e, "shard load failed: retrying from its checkpoint");
                    client = None;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                    attempt += 1;
                }
                Err(e) => {
                    tracing::error!(worker, shard = %task.shard_id, error = %e, "shard load failed");
                    errors.push(ShardError {
                        shard_id: task.shard_id.clone(),
                        error: e.to_string(),
                    });
                    queue.acknowledge(&task).await;
                    client = None;
                    break;
                }
            }
        }
    }
    errors
}

/// Tasks for every shard of a run that is not done.
pub fn pending_tasks(run_id: &str, shards: &[crate::ledger::ShardRecord]) -> Vec<ShardTask> {
    shards
        .iter()
        .filter(|s| s.state != ferry_shared::ledger::shard_state::DONE)
        .map(|s| ShardTask {
            run_id: run_id.to_string(),
            shard_id: s.shard_id.clone(),
        })
        .collect()
}
