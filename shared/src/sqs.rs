//! [`SqsQueue`]: the fleet's shard queue on Amazon SQS (or any SQS wire endpoint).
//!
//! - `submit` sends tasks with `SendMessageBatch`, ten per call; entries a batch reports as failed
//!   are sent again with backoff, and an error names the shards that never made it.
//! - Workers long-poll `ReceiveMessage`; a received shard stays invisible for
//!   `queue.visibility_timeout_secs`, renewed every `queue.heartbeat_secs` while it loads.
//! - `DeleteMessage` only after the shard's last commit; `ChangeMessageVisibility` 0 when a worker
//!   gives a shard back on shutdown, and `queue.retry_delay_secs` when loading failed, so a shard
//!   that keeps failing reaches the dead-letter queue after `maxReceiveCount` receives.
//!
//! A standard queue may deliver a message twice and a visibility timeout may expire under a slow
//! load: neither loads an item twice, because the ledger's conditional checkpoint decides.
//! Likewise a delete or visibility change that fails (a receipt handle gone stale after the
//! message was handed to another worker) is logged, not fatal: the next receiver of that message
//! finds the shard done in the ledger and deletes it.
//!
//! A queue serves one target: `queue create --target` tags it with that target's ledger token
//! ([`TARGET_TAG`]), and a worker or `submit` of another target refuses it before receiving or
//! sending anything ([`SqsQueue::check_target`]), since every receive counts towards the
//! dead-letter queue of the side that owns the message.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use serde::Serialize;

use crate::aws::request_error;
use crate::config::QueueSettings;
use crate::queue::{Delivery, ShardTask, WorkQueue};
use crate::{Error, Result};

/// Entries per `SendMessageBatch` call (the SQS limit).
pub const BATCH: usize = 10;

/// The attempts `send` makes for entries a batch reports as failed.
const SEND_ATTEMPTS: u32 = 5;

/// An SQS queue of shard tasks.
#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
    settings: QueueSettings,
}

/// A queue and its dead-letter queue, as `queue create` made them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CreatedQueues {
    /// The shard queue's URL.
    pub url: String,
    /// The dead-letter queue's URL.
    pub dead_letter_url: String,
    /// Receives before a message moves to the dead-letter queue.
    pub max_receive_count: u32,
}

/// Message counts of a queue and its dead-letter queue (SQS's approximate numbers).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct QueueDepth {
    /// Messages waiting to be received.
    pub waiting: u64,
    /// Messages received and not yet deleted (shards being loaded).
    pub in_flight: u64,
    /// Messages delayed.
    pub delayed: u64,
    /// The dead-letter queue's URL, when the queue has a redrive policy.
    pub dead_letter_url: Option<String>,
    /// Messages in the dead-letter queue.
    pub dead_letter: Option<u64>,
}

/// The queue tag naming the target a queue serves: its ledger's target token.
pub const TARGET_TAG: &str = "ferry-target";

/// How a queue is bound to the target a command serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetBinding {
    /// Tagged with this target's token.
    This,
    /// No target tag (created before tags, or without `--target`).
    Untagged,
}

impl SqsQueue {
    /// The queue at `url`.
    pub fn new(
        client: aws_sdk_sqs::Client,
        url: impl Into<String>,
        settings: QueueSettings,
    ) -> SqsQueue {
        SqsQueue {
            client,
            url: url.into(),
            settings,
        }
    }

    /// Opens the queue named by `settings.url` (or `url`) with the standard AWS chain.
    pub async fn connect(
        url: &str,
        aws: &crate::config::AwsSettings,
        settings: &QueueSettings,
    ) -> SqsQueue {
        let config = crate::aws::sdk_config(aws).await;
        SqsQueue::new(crate::aws::sqs_client(&config), url, settings.clone())
    }

    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn error(&self, operation: &str, e: &(dyn std::error::Error + 'static)) -> Error {
        request_error(operation, &self.url, e)
    }

    /// Creates `name` and its dead-letter queue `name-dlq` (or updates their attributes when
    /// they exist): the queue's visibility timeout and long-poll wait come from `settings`, its
    /// redrive policy sends a message to the dead-letter queue after
    /// `settings.max_receive_count` receives.
    pub async fn create(
        client: &aws_sdk_sqs::Client,
        name: &str,
        settings: &QueueSettings,
    ) -> Result<CreatedQueues> {
        let dlq_name = format!("{name}-dlq");
        let fourteen_days = (14 * 24 * 3600).to_string();
        let dlq_url = create_or_update(
            client,
            &dlq_name,
            HashMap::from([(
                QueueAttributeName::MessageRetentionPeriod,
                fourteen_days.clone(),
            )]),
        )
        .await?;
        let dlq_arn = client
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| request_error("GetQueueAttributes", &dlq_url, &e))?
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .ok_or_else(|| Error::Queue {
                location: dlq_url.clone(),
                reason: "the dead-letter queue has no QueueArn".into(),
            })?;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": settings.max_receive_count.to_string(),
        })
        .to_string();
        let url = create_or_update(
            client,
            name,
            HashMap::from([
                (
                    QueueAttributeName::VisibilityTimeout,
                    settings.visibility_timeout.as_secs().to_string(),
                ),
                (
                    QueueAttributeName::ReceiveMessageWaitTimeSeconds,
                    settings.wait.as_secs().to_string(),
                ),
                (QueueAttributeName::MessageRetentionPeriod, fourteen_days),
                (QueueAttributeName::RedrivePolicy, redrive),
            ]),
        )
        .await?;
        Ok(CreatedQueues {
            url,
            dead_letter_url: dlq_url,
            max_receive_count: settings.max_receive_count,
        })
    }

    /// The queue's [`TARGET_TAG`]: the token of the target it was bound to, if any.
    pub async fn target_tag(&self) -> Result<Option<String>> {
        let tags = self
            .client
            .list_queue_tags()
            .queue_url(&self.url)
            .send()
            .await
            .map_err(|e| self.error("ListQueueTags", &e))?;
        Ok(tags.tags().and_then(|t| t.get(TARGET_TAG)).cloned())
    }

    /// Binds the queue to the target whose ledger holds `token` (`queue create --target`): tags
    /// an untagged queue; refuses a queue bound to another target.
    pub async fn bind_to_target(&self, token: &str) -> Result<()> {
        match self.target_tag().await? {
            Some(tag) if tag == token => Ok(()),
            Some(_) => Err(self.other_target()),
            None => {
                self.client
                    .tag_queue()
                    .queue_url(&self.url)
                    .tags(TARGET_TAG, token)
                    .send()
                    .await
                    .map_err(|e| self.error("TagQueue", &e))?;
                Ok(())
            }
        }
    }

    /// Refuses, before anything is received or sent, a queue bound to another target than the
    /// one whose ledger holds `token` (`None`: the ledger has no token, so no queue was bound to
    /// it). SQS counts every receive towards the dead-letter queue, so a worker that received
    /// another target's messages to hand them back would burn that target's receive counts; an
    /// untagged queue is served as before (each message's run token still guards the load).
    pub async fn check_target(&self, token: Option<&str>) -> Result<TargetBinding> {
        match (self.target_tag().await?, token) {
            (None, _) => Ok(TargetBinding::Untagged),
            (Some(tag), Some(token)) if tag == token => Ok(TargetBinding::This),
            (Some(_), _) => Err(self.other_target()),
        }
    }

    fn other_target(&self) -> Error {
        Error::Queue {
            location: self.url.clone(),
            reason: format!(
                "this queue is bound to another target (its {TARGET_TAG} tag is not this                  target's ledger token): its workers and submits use it, and receiving its                  messages here would count towards its dead-letter queue. Create a queue per                  target (`ferry-coordinator queue create --name <name> --target <url>`)"
            ),
        }
    }

    /// Sends `tasks`, ten per `SendMessageBatch`, sending again the entries a batch reports as
    /// failed. Returns how many were sent.
    pub async fn send(&self, tasks: &[ShardTask]) -> Result<usize> {
        for batch in tasks.chunks(BATCH) {
            let mut pending: Vec<(String, String)> = batch
                .iter()
                .enumerate()
                .map(|(i, task)| {
                    let body = task.to_message();
                    (format!("t{i}"), body)
                })
                .collect();
            let mut delay = Duration::from_millis(200);
            for attempt in 1..=SEND_ATTEMPTS {
                let entries = pending
                    .iter()
                    .map(|(id, body)| {
                        SendMessageBatchRequestEntry::builder()
                            .id(id)
                            .message_body(body)
                            .build()
                            .expect("id and body are set")
                    })
                    .collect::<Vec<_>>();
                let out = self
                    .client
                    .send_message_batch()
                    .queue_url(&self.url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(|e| self.error("SendMessageBatch", &e))?;
                let failed: Vec<(&str, String)> = out
                    .failed()
                    .iter()
                    .map(|f| (f.id(), f.message().unwrap_or(f.code()).to_string()))
                    .collect();
                if failed.is_empty() {
                    pending.clear();
                    break;
                }
                tracing::warn!(attempt, failed = failed.len(), first = %failed[0].1, "some messages of a batch were not sent: sending them again");
                pending.retain(|(id, _)| failed.iter().any(|(f, _)| f == id));
                if attempt < SEND_ATTEMPTS {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
            if !pending.is_empty() {
                return Err(Error::Queue {
                    location: self.url.clone(),
                    reason: format!(
                        "{} messages were refused {SEND_ATTEMPTS} times: {}",
                        pending.len(),
                        pending
                            .iter()
                            .map(|(_, b)| b.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        Ok(tasks.len())
    }

    /// The queue's and its dead-letter queue's message counts.
    pub async fn depth(&self) -> Result<QueueDepth> {
        let counts = |url: String| async move {
            self.client
                .get_queue_attributes()
                .queue_url(&url)
                .attribute_names(QueueAttributeName::All)
                .send()
                .await
                .map_err(|e| request_error("GetQueueAttributes", &url, &e))
                .map(|out| out.attributes().cloned().unwrap_or_default())
        };
        let attributes = counts(self.url.clone()).await?;
        let number = |attrs: &HashMap<QueueAttributeName, String>, name| {
            attrs
                .get(&name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let mut depth = QueueDepth {
            waiting: number(&attributes, QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: number(
                &attributes,
                QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            ),
            delayed: number(
                &attributes,
                QueueAttributeName::ApproximateNumberOfMessagesDelayed,
            ),
            ..QueueDepth::default()
        };
        let dlq_arn = attributes
            .get(&QueueAttributeName::RedrivePolicy)
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
            .and_then(|p| p.get("deadLetterTargetArn")?.as_str().map(str::to_string));
        if let Some(arn) = dlq_arn {
            // arn:aws:sqs:<region>:<account>:<name>
            let parts: Vec<&str> = arn.split(':').collect();
            if let [.., account, name] = parts.as_slice() {
                let url = self
                    .client
                    .get_queue_url()
                    .queue_name(*name)
                    .queue_owner_aws_account_id(*account)
                    .send()
                    .await
                    .map_err(|e| request_error("GetQueueUrl", &arn, &e))?
                    .queue_url()
                    .unwrap_or_default()
                    .to_string();
                let dlq = counts(url.clone()).await?;
                depth.dead_letter = Some(
                    number(&dlq, QueueAttributeName::ApproximateNumberOfMessages)
                        + number(
                            &dlq,
                            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                        ),
                );
                depth.dead_letter_url = Some(url);
            }
        }
        Ok(depth)
    }

    async fn change_visibility(&self, delivery: &Delivery, seconds: u64, why: &str) -> Result<()> {
        let seconds = i32::try_from(seconds.min(43_200)).expect("at most 12 hours");
        if let Err(e) = self
            .client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&delivery.receipt)
            .visibility_timeout(seconds)
            .send()
            .await
        {
            tracing::warn!(shard = %delivery.task.shard_id, why, error = %crate::aws::error_text(&e), "cannot change a message's visibility");
        }
        Ok(())
    }
}

async fn create_or_update(
    client: &aws_sdk_sqs::Client,
    name: &str,
    attributes: HashMap<QueueAttributeName, String>,
) -> Result<String> {
    match client
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes.clone()))
        .send()
        .await
    {
        Ok(out) => Ok(out.queue_url().unwrap_or_default().to_string()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_queue_name_exists()) =>
        {
            // The queue exists with other attributes: bring them up to date.
            let url = client
                .get_queue_url()
                .queue_name(name)
                .send()
                .await
                .map_err(|e| request_error("GetQueueUrl", name, &e))?
                .queue_url()
                .unwrap_or_default()
                .to_string();
            client
                .set_queue_attributes()
                .queue_url(&url)
                .set_attributes(Some(attributes))
                .send()
                .await
                .map_err(|e| request_error("SetQueueAttributes", &url, &e))?;
            Ok(url)
        }
        Err(e) => Err(request_error("CreateQueue", name, &e)),
    }
}

#[async_trait]
impl WorkQueue for SqsQueue {
    async fn receive(&self, max: usize) -> Result<Vec<Delivery>> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, BATCH) as i32)
            .wait_time_seconds(self.settings.wait.as_secs() as i32)
            .visibility_timeout(self.settings.visibility_timeout.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| self.error("ReceiveMessage", &e))?;
        let mut deliveries = Vec::new();
        for message in out.messages() {
            let receipt = message.receipt_handle().unwrap_or_default().to_string();
            let body = message.body().unwrap_or_default();
            let receive_count = message
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            match ShardTask::parse_message(body) {
                Ok(task) => deliveries.push(Delivery {
                    task,
                    receipt,
                    receive_count,
                }),
                // Not one this worker can act on: left alone, the redrive policy moves it to the
                // dead-letter queue after max_receive_count receives.
                Err(e) => tracing::error!(
                    queue = %self.url,
                    message_id = message.message_id().unwrap_or_default(),
                    receive_count,
                    error = %e,
                    "unusable queue message: leaving it for the dead-letter queue"
                ),
            }
        }
        Ok(deliveries)
    }

    async fn extend(&self, delivery: &Delivery) -> Result<()> {
        self.change_visibility(
            delivery,
            self.settings.visibility_timeout.as_secs(),
            "heartbeat",
        )
        .await
    }

    async fn acknowledge(&self, delivery: &Delivery) -> Result<()> {
        if let Err(e) = self
            .client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(&delivery.receipt)
            .send()
            .await
        {
            tracing::warn!(shard = %delivery.task.shard_id, error = %crate::aws::error_text(&e), "cannot delete a finished shard's message: its next receiver will find the shard done");
        }
        Ok(())
    }

    async fn release(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        self.change_visibility(delivery, delay.as_secs(), "release")
            .await
    }

    async fn fail(&self, delivery: &Delivery) -> Result<()> {
        self.change_visibility(delivery, self.settings.retry_delay.as_secs(), "failed")
            .await
    }

    fn heartbeat(&self) -> Option<Duration> {
        self.settings.heartbeat
    }
}

#[cfg(test)]
mod tests {
    //! `send` against a fake SQS endpoint (a unit test: moto never fails single entries): the
    //! first `SendMessageBatch` reports one entry failed, and only that entry is sent again.

    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Serves AWS JSON 1.0 `SendMessageBatch` calls: records each call's entry ids, and fails
    /// entry `t1` on the first call only.
    async fn fake_sqs(calls: Arc<Mutex<Vec<Vec<String>>>>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let calls = calls.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    loop {
                        // One request: headers, then content-length bytes of JSON.
                        let header_end = loop {
                            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                                break at + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let headers = String::from_utf8_lossy(&buffer[..header_end]).to_lowercase();
                        let length: usize = headers
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        while buffer.len() < header_end + length {
                            let mut chunk = [0u8; 4096];
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let body: serde_json::Value =
                            serde_json::from_slice(&buffer[header_end..header_end + length])
                                .unwrap();
                        buffer.drain(..header_end + length);
                        let ids: Vec<String> = body["Entries"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|e| e["Id"].as_str().unwrap().to_string())
                            .collect();
                        let first = {
                            let mut calls = calls.lock().unwrap();
                            calls.push(ids.clone());
                            calls.len() == 1
                        };
                        let (failed, ok): (Vec<&String>, Vec<&String>) =
                            ids.iter().partition(|id| first && id.as_str() == "t1");
                        let response = serde_json::json!({
                            "Successful": ok.iter().map(|id| serde_json::json!({
                                "Id": id, "MessageId": format!("m-{id}"),
                                "MD5OfMessageBody": "00000000000000000000000000000000"
                            })).collect::<Vec<_>>(),
                            "Failed": failed.iter().map(|id| serde_json::json!({
                                "Id": id, "SenderFault": false, "Code": "InternalError",
                                "Message": "try again"
                            })).collect::<Vec<_>>(),
                        })
                        .to_string();
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n{response}",
                            response.len()
                        );
                        if socket.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn entries_a_batch_refuses_are_sent_again() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let endpoint = fake_sqs(calls.clone()).await;
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "k", "s", None, None, "test",
            ))
            .endpoint_url(&endpoint)
            .http_client(crate::aws::http_client())
            .build();
        let settings = crate::config::Settings::default().queue;
        let queue = SqsQueue::new(
            aws_sdk_sqs::Client::from_conf(config),
            format!("{endpoint}/123456789012/q"),
            settings,
        );
        let tasks: Vec<ShardTask> = (0..12)
            .map(|i| ShardTask::new("r", &format!("s{i}")).for_target("t"))
            .collect();
        assert_eq!(queue.send(&tasks).await.unwrap(), 12);
        let calls = calls.lock().unwrap().clone();
        let expected_first: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
        assert_eq!(
            calls,
            vec![
                expected_first,
                vec!["t1".to_string()],
                vec!["t0".to_string(), "t1".to_string()],
            ],
            "ten per call; the refused entry alone again; then the last two"
        );
    }
}
