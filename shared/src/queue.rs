//! How shards reach workers: the [`WorkQueue`] trait and [`MemoryQueue`], used by the single-machine
//! `migrate` (the fleet puts SQS behind the same trait).

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// One unit of work: a shard of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardTask {
    /// The run.
    pub run_id: String,
    /// The shard (derived from the data file's key).
    pub shard_id: String,
}

/// A queue of shard tasks. A task is acknowledged only after its shard's last commit; a task that is
/// released goes back for another worker.
#[async_trait]
pub trait WorkQueue: Send + Sync {
    /// The next task, or `None` when the queue is empty.
    async fn receive(&self) -> Option<ShardTask>;
    /// The task's shard is done (or failed for good): never deliver it again.
    async fn acknowledge(&self, task: &ShardTask);
    /// The worker gives the task back unfinished.
    async fn release(&self, task: ShardTask);
}

/// An in-process FIFO queue.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    tasks: Mutex<VecDeque<ShardTask>>,
}

impl MemoryQueue {
    /// A queue holding `tasks` in order.
    pub fn new(tasks: impl IntoIterator<Item = ShardTask>) -> MemoryQueue {
        MemoryQueue {
            tasks: Mutex::new(tasks.into_iter().collect()),
        }
    }

    /// Tasks waiting.
    pub fn len(&self) -> usize {
        self.tasks.lock().map(|t| t.len()).unwrap_or(0)
    }

    /// Whether no task waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl WorkQueue for MemoryQueue {
    async fn receive(&self) -> Option<ShardTask> {
        self.tasks.lock().ok()?.pop_front()
    }

    async fn acknowledge(&self, _task: &ShardTask) {}

    async fn release(&self, task: ShardTask) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push_back(task);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fifo_with_release() {
        let task = |s: &str| ShardTask {
            run_id: "r".into(),
            shard_id: s.into(),
        };
        let queue = MemoryQueue::new([task("a"), task("b")]);
        let a = queue.receive().await.unwrap();
        assert_eq!(a.shard_id, "a");
        queue.release(a).await;
        assert_eq!(queue.receive().await.unwrap().shard_id, "b");
        assert_eq!(queue.receive().await.unwrap().shard_id, "a");
        assert!(queue.receive().await.is_none());
        assert!(queue.is_empty());
    }
}
