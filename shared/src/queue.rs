//! How shards reach workers: the [`WorkQueue`] trait and [`MemoryQueue`], used by the single-machine
//! `migrate`. The fleet puts SQS behind the same trait ([`crate::sqs::SqsQueue`]).
//!
//! A queue delivers [`Delivery`]s. A worker settles each one in exactly one way:
//! - [`WorkQueue::acknowledge`] after the shard's last commit (the shard is done, or was already);
//! - [`WorkQueue::release`] when it gives the shard back unfinished (shutdown, a lost race), to be
//!   offered again after a delay;
//! - [`WorkQueue::fail`] when loading failed here; SQS offers it again after the retry delay, and
//!   its redrive policy moves a shard that keeps failing to the dead-letter queue; in memory the
//!   ledger's record of the failure is enough.
//!
//! While it holds a delivery, a worker calls [`WorkQueue::extend`] every
//! [`WorkQueue::heartbeat`] so no other worker is handed the same shard. Losing a delivery (a
//! crash, an expired visibility) never loses data: the ledger, not the queue, says what is loaded.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Result;

/// One unit of work: a shard of a run. This is the SQS message body, as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardTask {
    /// The run.
    pub run_id: String,
    /// The shard (derived from the data file's key).
    pub shard_id: String,
}

/// A task as received, with what the queue needs to settle it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The task.
    pub task: ShardTask,
    /// The queue's handle for this receipt (the SQS receipt handle; empty in memory).
    pub receipt: String,
    /// How many times the queue has handed out this message, this one included.
    pub receive_count: u32,
}

/// A queue of shard tasks.
#[async_trait]
pub trait WorkQueue: Send + Sync {
    /// Up to `max` tasks, waiting up to the queue's long-poll time; empty when none came.
    async fn receive(&self, max: usize) -> Result<Vec<Delivery>>;
    /// Keeps a held delivery from other workers for another visibility period.
    async fn extend(&self, delivery: &Delivery) -> Result<()>;
    /// The shard is done: never deliver it again.
    async fn acknowledge(&self, delivery: &Delivery) -> Result<()>;
    /// The worker gives the shard back unfinished; it is offered again after `delay`.
    async fn release(&self, delivery: &Delivery, delay: Duration) -> Result<()>;
    /// Loading the shard failed here (see the module docs).
    async fn fail(&self, delivery: &Delivery) -> Result<()>;
    /// How often a held delivery must be extended, if ever.
    fn heartbeat(&self) -> Option<Duration>;
}

/// An in-process queue: FIFO, with release delays honoured.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    tasks: Mutex<VecDeque<(Instant, ShardTask)>>,
}

impl MemoryQueue {
    /// A queue holding `tasks` in order.
    pub fn new(tasks: impl IntoIterator<Item = ShardTask>) -> MemoryQueue {
        let now = Instant::now();
        MemoryQueue {
            tasks: Mutex::new(tasks.into_iter().map(|t| (now, t)).collect()),
        }
    }

    /// Tasks waiting (delayed ones included).
    pub fn len(&self) -> usize {
        self.tasks.lock().map(|t| t.len()).unwrap_or(0)
    }

    /// Whether no task waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes up to `max` tasks that are due, or says how long until the first one is.
    fn take_due(&self, max: usize) -> std::result::Result<Vec<ShardTask>, Option<Duration>> {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut taken = Vec::new();
        let mut index = 0;
        while index < tasks.len() && taken.len() < max {
            if tasks[index].0 <= now {
                taken.push(tasks.remove(index).expect("index in range").1);
            } else {
                index += 1;
            }
        }
        if !taken.is_empty() {
            return Ok(taken);
        }
        Err(tasks.iter().map(|(due, _)| *due - now).min())
    }
}

#[async_trait]
impl WorkQueue for MemoryQueue {
    async fn receive(&self, max: usize) -> Result<Vec<Delivery>> {
        loop {
            match self.take_due(max.max(1)) {
                Ok(tasks) => {
                    return Ok(tasks
                        .into_iter()
                        .map(|task| Delivery {
                            task,
                            receipt: String::new(),
                            receive_count: 1,
                        })
                        .collect())
                }
                Err(None) => return Ok(Vec::new()),
                Err(Some(wait)) => tokio::time::sleep(wait).await,
            }
        }
    }

    async fn extend(&self, _delivery: &Delivery) -> Result<()> {
        Ok(())
    }

    async fn acknowledge(&self, _delivery: &Delivery) -> Result<()> {
        Ok(())
    }

    async fn release(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.push_back((Instant::now() + delay, delivery.task.clone()));
        Ok(())
    }

    async fn fail(&self, _delivery: &Delivery) -> Result<()> {
        Ok(())
    }

    fn heartbeat(&self) -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(s: &str) -> ShardTask {
        ShardTask {
            run_id: "r".into(),
            shard_id: s.into(),
        }
    }

    #[tokio::test]
    async fn fifo_with_release() {
        let queue = MemoryQueue::new([task("a"), task("b")]);
        let a = queue.receive(1).await.unwrap().remove(0);
        assert_eq!(a.task.shard_id, "a");
        queue.release(&a, Duration::ZERO).await.unwrap();
        assert_eq!(queue.receive(1).await.unwrap()[0].task.shard_id, "b");
        assert_eq!(queue.receive(1).await.unwrap()[0].task.shard_id, "a");
        assert!(queue.receive(1).await.unwrap().is_empty());
        assert!(queue.is_empty());
    }

    #[tokio::test]
    async fn a_delayed_release_waits_its_turn() {
        let queue = MemoryQueue::new([task("a"), task("b")]);
        let both = queue.receive(5).await.unwrap();
        assert_eq!(both.len(), 2);
        queue
            .release(&both[0], Duration::from_millis(150))
            .await
            .unwrap();
        queue.release(&both[1], Duration::ZERO).await.unwrap();
        let started = Instant::now();
        assert_eq!(queue.receive(1).await.unwrap()[0].task.shard_id, "b");
        assert_eq!(queue.receive(1).await.unwrap()[0].task.shard_id, "a");
        assert!(started.elapsed() >= Duration::from_millis(140));
    }
}
