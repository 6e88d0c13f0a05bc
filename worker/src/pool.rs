//! A pool of shard loaders in one process: N tasks, each with its own connection, taking shards
//! from a [`WorkQueue`] one at a time, so a process holds at most N shards (and, per shard, at
//! most `pipeline_depth` decoded blocks) at once.
//!
//! - A held delivery's visibility is renewed every [`WorkQueue::heartbeat`] while its shard loads.
//! - A shard whose load fails for a reason that may pass (the target restarted, the network
//!   dropped) is retried from its last checkpoint with exponential backoff, on a fresh connection,
//!   up to `attempts` times; then the queue is told it failed ([`WorkQueue::fail`]).
//! - A shard another worker is loading (lost race) is released for a later look; a stop request
//!   (SIGTERM, too many rejects) ends the current chunk (commit or rollback) and releases the shard
//!   at once, so another worker can take it.
//! - A loader exits when the queue has been empty for `idle_exit`, unless `poll_forever`.
//!
//! Messages name their run; [`RunContexts`] opens each run once from the ledger (its schema, chunk
//! size and export location), so one worker fleet can serve any run on its target.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_shared::config::AwsSettings;
use ferry_shared::queue::{ShardTask, WorkQueue};
use tokio_postgres::Client;

use crate::progress::{Progress, ShardEnd};
use crate::sink::{LoadContext, ShardOutcome};
use crate::target::Target;
use crate::{Result, WorkerError};
use ferry_ledger::runs as ledger;

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
    /// Concurrent loaders (shards held at once).
    pub workers: usize,
    /// Attempts per shard (and per connection).
    pub attempts: u32,
    /// How long a loader waits on an empty queue before it exits.
    pub idle_exit: Duration,
    /// Never exit on an empty queue.
    pub poll_forever: bool,
    /// How long a shard lost to another worker stays away before it is looked at again.
    pub lost_race_delay: Duration,
    /// A loading connection that awaits an answer with no byte moving for this long fails, and
    /// the heartbeat stops renewing its shard's visibility (so another worker can take it).
    pub progress_timeout: Option<Duration>,
}

impl PoolSettings {
    /// Settings for an in-process queue holding every task from the start: exit when it is empty.
    pub fn in_process(target_url: &str, workers: usize, attempts: u32) -> PoolSettings {
        PoolSettings {
            target_url: target_url.to_string(),
            workers,
            attempts,
            idle_exit: Duration::ZERO,
            poll_forever: false,
            lost_race_delay: Duration::from_millis(500),
            progress_timeout: crate::conn::options().progress_timeout,
        }
    }
}

/// Renews a held delivery's visibility every period while its loader makes progress; stops when
/// dropped (the load ended, or the loader task died and unwound), or when the loader's
/// connection has awaited an answer with nothing moving for the progress timeout: a loader stuck
/// on a half-open connection lets its shard go back to the queue.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    fn start(
        queue: Arc<dyn WorkQueue>,
        delivery: ferry_shared::queue::Delivery,
        period: Duration,
        activity: Arc<crate::conn::Activity>,
        progress_timeout: Option<Duration>,
    ) -> Heartbeat {
        let timeouts_before = activity.timeouts();
        Heartbeat(tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let stalled = activity.stalled_for().unwrap_or_default();
                if let Some(limit) = progress_timeout {
                    // A connection of this loader was given up for lack of progress, or one has
                    // waited that long already: the loader is stuck on the network.
                    if stalled >= limit || activity.timeouts() > timeouts_before {
                        tracing::warn!(
                            shard = %delivery.task.shard_id,
                            stalled_secs = stalled.as_secs(),
                            "no progress on the target connection: no longer renewing the shard's visibility, so another worker can take it"
                        );
                        return;
                    }
                }
                if let Err(e) = queue.extend(&delivery).await {
                    tracing::warn!(shard = %delivery.task.shard_id, error = %e, "cannot extend a held shard's visibility");
                }
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where a pool gets the [`LoadContext`] of a message's run.
pub struct RunContexts {
    known: tokio::sync::Mutex<HashMap<String, LoadContext>>,
    opener: Option<ContextOpener>,
    /// Set to stop every loader after its current chunk.
    pub stop: Arc<AtomicBool>,
    /// Counters shared by every run's loads.
    pub progress: Arc<Progress>,
}

/// What is needed to open a run named by a message.
struct ContextOpener {
    load: ferry_shared::config::LoadSettings,
    aws: AwsSettings,
    target: Target,
    target_url: String,
}

impl RunContexts {
    /// One known run (the single-machine `migrate`).
    pub fn single(ctx: LoadContext) -> RunContexts {
        let (stop, progress) = (ctx.stop.clone(), ctx.progress.clone());
        RunContexts {
            known: tokio::sync::Mutex::new(HashMap::from([(ctx.run.run_id.clone(), ctx)])),
            opener: None,
            stop,
            progress,
        }
    }

    /// Runs opened from the ledger as their messages arrive (the fleet worker).
    pub fn from_ledger(
        load: ferry_shared::config::LoadSettings,
        aws: AwsSettings,
        target: Target,
        target_url: &str,
    ) -> RunContexts {
        RunContexts {
            known: tokio::sync::Mutex::new(HashMap::new()),
            opener: Some(ContextOpener {
                load,
                aws,
                target,
                target_url: target_url.to_string(),
            }),
            stop: Arc::new(AtomicBool::new(false)),
            progress: Arc::new(Progress::default()),
        }
    }

    /// The context of `run_id`, opening it on first use.
    pub async fn get(&self, client: &Client, run_id: &str) -> Result<LoadContext> {
        let mut known = self.known.lock().await;
        if let Some(ctx) = known.get(run_id) {
            return Ok(ctx.clone());
        }
        let Some(opener) = &self.opener else {
            return Err(WorkerError::ledger(format!(
                "a task names run {run_id}, which this process does not load"
            )));
        };
        let run = ledger::get_run(client, run_id).await?.ok_or_else(|| {
            WorkerError::ledger(format!(
                "run {run_id} is not in the target's ledger: plan it there first"
            ))
        })?;
        let export = ferry_shared::store::open_export(&run.export_location, &opener.aws).await?;
        let mut ctx = LoadContext::new(
            run,
            export.store,
            &opener.load,
            opener.target.clone(),
            &opener.target_url,
        )?;
        ctx.stop = self.stop.clone();
        ctx.progress = self.progress.clone();
        // A catch-up window applies change records with the full run's schema.
        crate::sink::prepare_context(client, &mut ctx).await?;
        tracing::info!(run = run_id, export = %export.location, "opened run");
        known.insert(run_id.to_string(), ctx.clone());
        Ok(ctx)
    }
}

/// Connects to the target, retrying with backoff up to `attempts` times (a database restarting,
/// a pod starting before its network is ready).
pub async fn connect_with_retry(url: &str, attempts: u32) -> Result<Client> {
    retry_connect(url, attempts, crate::conn::Purpose::Control).await
}

async fn retry_connect(url: &str, attempts: u32, purpose: crate::conn::Purpose) -> Result<Client> {
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match crate::conn::connect(url, purpose)
            .await
            .map(|(client, _)| client)
        {
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
    contexts: Arc<RunContexts>,
    queue: Arc<dyn WorkQueue>,
    settings: PoolSettings,
) -> Vec<ShardError> {
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..settings.workers.max(1) {
        let (contexts, queue, settings) = (contexts.clone(), queue.clone(), settings.clone());
        tasks.spawn(async move { worker_loop(worker, contexts, queue, settings).await });
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

/// Resolves once `stop` is set.
async fn stopped(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How one delivery ended, for the queue.
enum Settle {
    Acknowledge,
    Release(Duration),
    Fail,
}

async fn worker_loop(
    worker: usize,
    contexts: Arc<RunContexts>,
    queue: Arc<dyn WorkQueue>,
    settings: PoolSettings,
) -> Vec<ShardError> {
    let mut errors = Vec::new();
    let mut client: Option<Client> = None;
    // This loader's connections (its ledger client and the COPY connection its sink opens) report
    // their progress here and share the server they reached.
    let scope = crate::conn::LoaderScope::new(settings.progress_timeout);
    let mut idle_since = Instant::now();
    let mut receive_errors = 0u32;
    while !contexts.stop.load(Ordering::Relaxed) {
        let received = tokio::select! {
            received = queue.receive(1) => received,
            () = stopped(&contexts.stop) => break,
        };
        let deliveries = match received {
            Ok(deliveries) => {
                receive_errors = 0;
                deliveries
            }
            Err(e) => {
                receive_errors += 1;
                tracing::warn!(worker, error = %e, "cannot receive from the queue: retrying");
                if receive_errors >= settings.attempts.max(1) * 4 {
                    errors.push(ShardError {
                        shard_id: "-".into(),
                        error: format!("the queue keeps failing: {e}"),
                    });
                    break;
                }
                tokio::time::sleep(Duration::from_secs(u64::from(receive_errors.min(10)))).await;
                continue;
            }
        };
        if deliveries.is_empty() {
            if !settings.poll_forever && idle_since.elapsed() >= settings.idle_exit {
                tracing::debug!(worker, "queue empty: loader exits");
                break;
            }
            continue;
        }
        for delivery in deliveries {
            let heartbeat = queue.heartbeat().map(|period| {
                Heartbeat::start(
                    queue.clone(),
                    delivery.clone(),
                    period,
                    scope.activity.clone(),
                    settings.progress_timeout,
                )
            });
            contexts
                .progress
                .shards_in_progress
                .fetch_add(1, Ordering::Relaxed);
            let settle = scope
                .run(load_delivery(
                    worker,
                    &contexts,
                    &mut client,
                    &delivery.task,
                    &settings,
                    &mut errors,
                ))
                .await;
            contexts
                .progress
                .shards_in_progress
                .fetch_sub(1, Ordering::Relaxed);
            drop(heartbeat);
            let settled = match settle {
                Settle::Acknowledge => queue.acknowledge(&delivery).await,
                Settle::Release(delay) => queue.release(&delivery, delay).await,
                Settle::Fail => queue.fail(&delivery).await,
            };
            if let Err(e) = settled {
                tracing::warn!(worker, shard = %delivery.task.shard_id, error = %e, "cannot settle a delivery");
            }
            idle_since = Instant::now();
        }
    }
    errors
}

async fn load_delivery(
    worker: usize,
    contexts: &RunContexts,
    client: &mut Option<Client>,
    task: &ShardTask,
    settings: &PoolSettings,
    errors: &mut Vec<ShardError>,
) -> Settle {
    let mut attempt = 1;
    let mut delay = Duration::from_millis(500);
    loop {
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            match retry_connect(
                &settings.target_url,
                settings.attempts,
                crate::conn::Purpose::Loading,
            )
            .await
            {
                Ok(c) => *client = Some(c),
                Err(e) => {
                    errors.push(ShardError {
                        shard_id: task.shard_id.clone(),
                        error: e.to_string(),
                    });
                    // Without a target nothing can load here: stop this process's loaders.
                    contexts.stop.store(true, Ordering::Relaxed);
                    return Settle::Release(Duration::ZERO);
                }
            }
        }
        let connection = client.as_mut().expect("connected above");
        if !task.target.is_empty() {
            // A task travelling through a shared queue names the target its run belongs to:
            // never load another target's shard, whatever its run id.
            match ledger::run_token(connection, &task.run_id).await {
                Ok(Some(token)) if token == task.target => {}
                Ok(found) => {
                    tracing::error!(
                        worker,
                        run = %task.run_id,
                        shard = %task.shard_id,
                        planned_here = found.is_some(),
                        "a queue message belongs to another target (its token is not this ledger's): returned to the queue, not loaded"
                    );
                    contexts.progress.shard_ended(ShardEnd::Error);
                    return Settle::Release(Duration::ZERO);
                }
                Err(e) => {
                    tracing::warn!(worker, shard = %task.shard_id, error = %e, "cannot read the run's target token: retrying");
                    *client = None;
                    if attempt >= settings.attempts {
                        return Settle::Release(Duration::ZERO);
                    }
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                    continue;
                }
            }
        }
        let result = match contexts.get(connection, &task.run_id).await {
            Ok(ctx) => load_one(connection, &ctx, &task.shard_id).await,
            Err(e) => Err(e),
        };
        contexts.progress.shard_ended(match &result {
            Ok(ShardOutcome::Done) => ShardEnd::Done,
            Ok(ShardOutcome::AlreadyDone) => ShardEnd::AlreadyDone,
            Ok(ShardOutcome::LostRace) => ShardEnd::LostRace,
            Ok(ShardOutcome::Failed(_)) => ShardEnd::Failed,
            Ok(ShardOutcome::Stopped) => ShardEnd::Stopped,
            Err(_) => ShardEnd::Error,
        });
        match result {
            Ok(ShardOutcome::LostRace) => return Settle::Release(settings.lost_race_delay),
            Ok(ShardOutcome::Stopped) => return Settle::Release(Duration::ZERO),
            Ok(ShardOutcome::Failed(reason)) => {
                tracing::error!(worker, shard = %task.shard_id, reason = %reason, "shard failed");
                return Settle::Fail;
            }
            Ok(outcome) => {
                tracing::debug!(worker, shard = %task.shard_id, ?outcome, "shard finished");
                return Settle::Acknowledge;
            }
            Err(e) if attempt < settings.attempts && !contexts.stop.load(Ordering::Relaxed) => {
                tracing::warn!(worker, shard = %task.shard_id, attempt, error = %e, "shard load failed: retrying from its checkpoint");
                *client = None;
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
                *client = None;
                return Settle::Fail;
            }
        }
    }
}

/// Loads one shard on `client` through the sink of its run's load path.
async fn load_one(client: &Client, ctx: &LoadContext, shard_id: &str) -> Result<ShardOutcome> {
    crate::sink::load_shard_on(client, ctx, shard_id).await
}

/// Tasks for every shard of a run that is not done.
pub fn pending_tasks(run_id: &str, shards: &[ferry_ledger::ShardRecord]) -> Vec<ShardTask> {
    shards
        .iter()
        .filter(|s| s.state != ferry_ledger::shard_state::DONE)
        .map(|s| ShardTask::new(run_id, &s.shard_id))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use ferry_shared::queue::{Delivery, ShardTask};

    use super::*;

    /// Counts visibility renewals.
    #[derive(Default)]
    struct CountingQueue {
        extends: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl WorkQueue for CountingQueue {
        async fn receive(&self, _max: usize) -> ferry_shared::Result<Vec<Delivery>> {
            Ok(Vec::new())
        }
        async fn extend(&self, _delivery: &Delivery) -> ferry_shared::Result<()> {
            self.extends.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        async fn acknowledge(&self, _delivery: &Delivery) -> ferry_shared::Result<()> {
            Ok(())
        }
        async fn release(
            &self,
            _delivery: &Delivery,
            _delay: Duration,
        ) -> ferry_shared::Result<()> {
            Ok(())
        }
        async fn fail(&self, _delivery: &Delivery) -> ferry_shared::Result<()> {
            Ok(())
        }
        fn heartbeat(&self) -> Option<Duration> {
            Some(Duration::from_millis(10))
        }
    }

    fn delivery() -> Delivery {
        Delivery {
            task: ShardTask::new("r", "s"),
            receipt: String::new(),
            receive_count: 1,
        }
    }

    #[tokio::test]
    async fn a_loader_that_dies_stops_its_heartbeat() {
        let queue = Arc::new(CountingQueue::default());
        let shared: Arc<dyn WorkQueue> = queue.clone();
        let loader = tokio::spawn(async move {
            let period = Duration::from_millis(10);
            let activity = Arc::new(crate::conn::Activity::new());
            let _heartbeat = Heartbeat::start(shared, delivery(), period, activity, None);
            tokio::time::sleep(Duration::from_millis(100)).await;
            panic!("the loader dies mid-shard");
        });
        assert!(loader.await.unwrap_err().is_panic());
        let at_death = queue.extends.load(Ordering::SeqCst);
        assert!(at_death >= 3, "renewed while alive: {at_death}");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            queue.extends.load(Ordering::SeqCst),
            at_death,
            "no renewal after the loader died"
        );
    }

    #[tokio::test]
    async fn a_stalled_loader_stops_renewing_its_shard() {
        let queue = Arc::new(CountingQueue::default());
        let activity = Arc::new(crate::conn::Activity::new());
        let _heartbeat = Heartbeat::start(
            queue.clone(),
            delivery(),
            Duration::from_millis(10),
            activity.clone(),
            Some(Duration::from_millis(80)),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            queue.extends.load(Ordering::SeqCst) >= 3,
            "idle is not stalled"
        );
        activity.start_waiting_for_test();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stopped = queue.extends.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            queue.extends.load(Ordering::SeqCst),
            stopped,
            "renewal stopped"
        );
    }
}
