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
//!
//! # Messages
//! A task travels as JSON ([`ShardTask::to_message`], [`ShardTask::parse_message`]): its format
//! version, the run, the shard, and the *target token*, a random value the run's ledger holds
//! (`ferry.run_tokens`). Anyone who can write to the queue can put a message on it, so a worker
//! checks all of it before acting: a message that does not parse, has another version, or names a
//! run or shard no run could have is left for the dead-letter queue; one whose token is not its
//! target's is never loaded, however its run id matches (two environments deriving the same run
//! id from the same export share nothing but the queue).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Result;

/// One unit of work: a shard of a run. This is the SQS message body, as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardTask {
    /// The message format ([`TASK_VERSION`]).
    #[serde(default)]
    pub version: u32,
    /// The run.
    pub run_id: String,
    /// The shard (derived from the data file's key).
    pub shard_id: String,
    /// The token of the target whose ledger holds the run; empty for tasks that never leave the
    /// process (the in-memory queue of `migrate`).
    #[serde(default)]
    pub target: String,
}

/// The message format this Ferry writes and reads.
pub const TASK_VERSION: u32 = 1;

/// The largest message body a worker reads (a task is well under 1 KiB).
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Run ids, shard ids and target tokens: 1 to 200 characters of `A-Z a-z 0-9 . _ - : / #`.
fn valid_name(text: &str) -> bool {
    (1..=200).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:/#".contains(&b))
}

impl ShardTask {
    /// A task for the in-process queue (no target token).
    pub fn new(run_id: &str, shard_id: &str) -> ShardTask {
        ShardTask {
            version: TASK_VERSION,
            run_id: run_id.to_string(),
            shard_id: shard_id.to_string(),
            target: String::new(),
        }
    }

    /// The same task, bound to the target whose ledger holds `token` for its run.
    pub fn for_target(mut self, token: &str) -> ShardTask {
        self.target = token.to_string();
        self
    }

    /// The message body.
    pub fn to_message(&self) -> String {
        serde_json::to_string(self).expect("a task serialises")
    }

    /// Parses and checks a message body: the format version, and names no run could have
    /// refused. The target token is checked against the ledger by the worker.
    pub fn parse_message(body: &str) -> Result<ShardTask> {
        if body.len() > MAX_MESSAGE_BYTES {
            return Err(crate::Error::Message(format!(
                "{} bytes, over the {MAX_MESSAGE_BYTES}-byte limit",
                body.len()
            )));
        }
        let task: ShardTask =
            serde_json::from_str(body).map_err(|e| crate::Error::Message(e.to_string()))?;
        if task.version != TASK_VERSION {
            return Err(crate::Error::Message(format!(
                "format version {}, this worker reads version {TASK_VERSION}: run workers of the \
                 Ferry version that submitted it",
                task.version
            )));
        }
        for (what, value) in [
            ("run_id", &task.run_id),
            ("shard_id", &task.shard_id),
            ("target", &task.target),
        ] {
            if !valid_name(value) {
                return Err(crate::Error::Message(format!(
                    "{what} is not 1 to 200 characters of letters, digits and ._-:/#"
                )));
            }
        }
        Ok(task)
    }
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
        ShardTask::new("r", s)
    }

    #[test]
    fn messages_round_trip_and_bad_ones_are_refused() {
        let task =
            ShardTask::new("01700000000000-0a1b2c3d-a44bc923", "xeueebdlswah").for_target("9f2c");
        let body = task.to_message();
        assert_eq!(
            body,
            r#"{"version":1,"run_id":"01700000000000-0a1b2c3d-a44bc923","shard_id":"xeueebdlswah","target":"9f2c"}"#
        );
        assert_eq!(ShardTask::parse_message(&body).unwrap(), task);
        let refused = |body: &str| ShardTask::parse_message(body).unwrap_err().to_string();
        // A task from an older Ferry: no version, no target.
        assert!(refused(r#"{"run_id":"r","shard_id":"s"}"#).contains("format version 0"));
        assert!(
            refused(r#"{"version":2,"run_id":"r","shard_id":"s","target":"t"}"#)
                .contains("format version 2")
        );
        assert!(refused(r#"{"version":1,"run_id":"r","shard_id":"s"}"#).contains("target"));
        assert!(
            refused(r#"{"version":1,"run_id":"r","shard_id":"../x y","target":"t"}"#)
                .contains("shard_id")
        );
        assert!(
            refused(r#"{"version":1,"run_id":"r","shard_id":"s","target":"t","x":1}"#)
                .contains("unknown field")
        );
        assert!(
            refused("not json").starts_with("not a ferry shard task"),
            "{}",
            refused("not json")
        );
        assert!(refused(&"x".repeat(5000)).contains("over the 4096-byte limit"));
        let long = format!(
            r#"{{"version":1,"run_id":"{}","shard_id":"s","target":"t"}}"#,
            "r".repeat(201)
        );
        assert!(refused(&long).contains("run_id"));
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
