//! SQS access over the official SDK: receive, delete in batches, extend visibility, and
//! queue depth. Retries go through the crate's policy.

use std::time::Duration;

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName};

use crate::config::AwsConfig;
use crate::error::{kind_from_status, Error, ErrorKind, Idempotency, Result};
use crate::retry::RetryPolicy;

/// One received message.
#[derive(Debug, Clone, Default)]
pub struct SqsMessage {
    /// Message id.
    pub id: String,
    /// Receipt handle (for delete and visibility); opaque and not logged.
    pub receipt: String,
    /// Body.
    pub body: String,
    /// When SQS accepted it (ms since the epoch).
    pub sent_ms: Option<i64>,
    /// How many times it has been received.
    pub receive_count: u32,
    /// The queue SQS dead-lettered it from (`DeadLetterQueueSourceArn`), on a dead-letter
    /// queue's messages.
    pub dead_letter_source: Option<String>,
}

/// Queue depth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// `ApproximateNumberOfMessages`.
    pub visible: u64,
    /// `ApproximateNumberOfMessagesNotVisible` (in flight).
    pub in_flight: u64,
}

/// An SQS queue.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
    retry: RetryPolicy,
}

/// Maps an SQS SDK error to ours, keeping the service's status, code and the cause: a 4xx is
/// `Invalid` (not retried), as for S3 and Azure, but for the codes that mean something else.
pub(crate) fn map_err<E, R>(e: aws_sdk_sqs::error::SdkError<E, R>, what: &str) -> Error
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + crate::aws::s3::HasStatus + Send + Sync + 'static,
{
    use aws_sdk_sqs::error::SdkError;
    let detail = aws_smithy_types::error::display::DisplayErrorContext(&e).to_string();
    let (kind, service) = match &e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status();
            let code = se.err().code().map(str::to_string);
            let kind = match code.as_deref() {
                Some("AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist") => ErrorKind::Invalid,
                // 400s that pass with time: throttling, KMS throttling, too many in flight.
                Some(
                    "ThrottlingException"
                    | "RequestThrottled"
                    | "KmsThrottled"
                    | "KMS.ThrottlingException"
                    | "OverLimit",
                ) => ErrorKind::Throttled,
                Some(c) if c.contains("AccessDenied") => ErrorKind::Auth,
                c => kind_from_status(status, c),
            };
            (kind, Some((status, code)))
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            (crate::error::transport_kind(&e), None)
        }
        _ => (ErrorKind::Internal, None),
    };
    let err = Error::new(kind, format!("sqs {what}: {detail}"));
    let err = match service {
        Some((status, code)) => err.with_service(status, code.as_deref()),
        None => err,
    };
    err.with_source(e)
}

impl SqsQueue {
    /// A client for the queue at `url`.
    pub async fn new(cfg: &AwsConfig, url: &str, retry: RetryPolicy) -> Self {
        let sdk = crate::aws::aws_sdk_config(cfg, retry).await;
        SqsQueue {
            client: aws_sdk_sqs::Client::new(&sdk),
            url: url.to_string(),
            retry,
        }
    }

    /// The queue URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The raw SDK client (setup and tests).
    pub fn client(&self) -> &aws_sdk_sqs::Client {
        &self.client
    }

    /// Long-polls for up to `max` (1-10) messages, waiting up to `wait`, hiding them for
    /// `visibility`.
    pub async fn receive(&self, max: i32, wait: Duration, visibility: Duration) -> Result<Vec<SqsMessage>> {
        let out = self
            .retry
            // Idempotent: a lost reply hides its messages until their visibility ends; none is lost.
            .run("sqs receive", Idempotency::Idempotent, || async {
                self.client
                    .receive_message()
                    .queue_url(&self.url)
                    .max_number_of_messages(max.clamp(1, 10))
                    .wait_time_seconds(wait.as_secs().min(20) as i32)
                    .visibility_timeout(visibility.as_secs() as i32)
                    .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                    .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                    .message_system_attribute_names(MessageSystemAttributeName::DeadLetterQueueSourceArn)
                    .send()
                    .await
                    .map_err(|e| map_err(e, "receive"))
            })
            .await?;
        Ok(out
            .messages()
            .iter()
            .map(|m| {
                let attr = |n: MessageSystemAttributeName| m.attributes().and_then(|a| a.get(&n)).cloned();
                SqsMessage {
                    id: m.message_id().unwrap_or_default().to_string(),
                    receipt: m.receipt_handle().unwrap_or_default().to_string(),
                    body: m.body().unwrap_or_default().to_string(),
                    sent_ms: attr(MessageSystemAttributeName::SentTimestamp).and_then(|v| v.parse().ok()),
                    receive_count: attr(MessageSystemAttributeName::ApproximateReceiveCount)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1),
                    dead_letter_source: attr(MessageSystemAttributeName::DeadLetterQueueSourceArn),
                }
            })
            .collect())
    }

    /// Deletes messages in batches of ten. Returns the ids SQS refused to delete (they will
    /// be delivered again; duplicates are harmless downstream).
    pub async fn delete_batch(&self, msgs: &[&SqsMessage]) -> Result<Vec<String>> {
        let mut failed = Vec::new();
        for chunk in msgs.chunks(10) {
            let entries: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(format!("m{i}"))
                        .receipt_handle(&m.receipt)
                        .build()
                        .expect("id and receipt are set")
                })
                .collect();
            let out = self
                .retry
                // Idempotent: deleting twice is harmless; a stale receipt only fails.
                .run("sqs delete batch", Idempotency::Idempotent, || async {
                    self.client
                        .delete_message_batch()
                        .queue_url(&self.url)
                        .set_entries(Some(entries.clone()))
                        .send()
                        .await
                        .map_err(|e| map_err(e, "delete batch"))
                })
                .await?;
            for f in out.failed() {
                let idx: usize = f.id().trim_start_matches('m').parse().unwrap_or(0);
                let id = chunk.get(idx).map(|m| m.id.clone()).unwrap_or_default();
                tracing::warn!(message_id = %id, code = f.code(), "sqs refused to delete a message; it will be redelivered");
                failed.push(id);
            }
        }
        Ok(failed)
    }

    /// Keeps messages hidden for `visibility` more (work that runs long).
    pub async fn extend_visibility(&self, msgs: &[&SqsMessage], visibility: Duration) -> Result<()> {
        use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry as E;
        for chunk in msgs.chunks(10) {
            let entries: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    E::builder()
                        .id(format!("m{i}"))
                        .receipt_handle(&m.receipt)
                        .visibility_timeout(visibility.as_secs() as i32)
                        .build()
                        .expect("fields set")
                })
                .collect();
            let out = self
                .retry
                // Idempotent: setting the same visibility again is harmless.
                .run("sqs change visibility", Idempotency::Idempotent, || async {
                    self.client
                        .change_message_visibility_batch()
                        .queue_url(&self.url)
                        .set_entries(Some(entries.clone()))
                        .send()
                        .await
                        .map_err(|e| map_err(e, "change visibility"))
                })
                .await?;
            if let Some(f) = out.failed().first() {
                return Err(Error::new(
                    ErrorKind::Invalid,
                    format!(
                        "sqs change visibility to {} s refused for {} of {} messages: {} {}",
                        visibility.as_secs(),
                        out.failed().len(),
                        chunk.len(),
                        f.code(),
                        f.message().unwrap_or_default()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The queue's ARN.
    pub async fn arn(&self) -> Result<String> {
        self.attributes(&[QueueAttributeName::QueueArn])
            .await?
            .remove(&QueueAttributeName::QueueArn)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Transient,
                    format!("queue {}: no QueueArn in its attributes", self.url),
                )
            })
    }

    /// The queue's attributes `names` (those it has).
    async fn attributes(
        &self,
        names: &[QueueAttributeName],
    ) -> Result<std::collections::HashMap<QueueAttributeName, String>> {
        let out = self
            .retry
            .run("sqs get attributes", Idempotency::Idempotent, || async {
                self.client
                    .get_queue_attributes()
                    .queue_url(&self.url)
                    .set_attribute_names(Some(names.to_vec()))
                    .send()
                    .await
                    .map_err(|e| map_err(e, "get attributes"))
            })
            .await?;
        Ok(out.attributes().cloned().unwrap_or_default())
    }

    /// Sends one message (redrive). Not idempotent: a lost reply may duplicate it, which
    /// the sequencer and the source's HEAD make harmless downstream.
    pub async fn send(&self, body: &str) -> Result<()> {
        self.retry
            // Idempotent: a redriven event sent twice is applied once (events are idempotent).
            .run("sqs send", Idempotency::Idempotent, || async {
                self.client
                    .send_message()
                    .queue_url(&self.url)
                    .message_body(body)
                    .send()
                    .await
                    .map_err(|e| map_err(e, "send"))
            })
            .await
            .map(|_| ())
    }

    /// The queue's dead-letter queue and its `maxReceiveCount`, from its RedrivePolicy;
    /// `None` when it has none.
    pub async fn dead_letter(&self) -> Result<Option<(SqsQueue, u32)>> {
        let attrs = self.attributes(&[QueueAttributeName::RedrivePolicy]).await?;
        let Some(policy) = attrs.get(&QueueAttributeName::RedrivePolicy) else {
            return Ok(None);
        };
        let v: serde_json::Value = serde_json::from_str(policy)
            .map_err(|e| Error::invalid(format!("queue {}: RedrivePolicy is not JSON: {e}", self.url)))?;
        let arn = v["deadLetterTargetArn"].as_str().unwrap_or_default();
        // arn:aws:sqs:REGION:ACCOUNT:NAME
        let parts: Vec<&str> = arn.split(':').collect();
        let [_, _, "sqs", _, account, name] = parts[..] else {
            return Err(Error::invalid(format!(
                "queue {}: RedrivePolicy.deadLetterTargetArn `{arn}` is not an SQS queue ARN",
                self.url
            )));
        };
        let max = match &v["maxReceiveCount"] {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        }
        .unwrap_or(0) as u32;
        let url = self
            .retry
            .run("sqs get queue url", Idempotency::Idempotent, || async {
                self.client
                    .get_queue_url()
                    .queue_name(name)
                    .queue_owner_aws_account_id(account)
                    .send()
                    .await
                    .map_err(|e| map_err(e, "get queue url"))
            })
            .await?
            .queue_url()
            .unwrap_or_default()
            .to_string();
        let dlq = SqsQueue {
            client: self.client.clone(),
            url,
            retry: self.retry,
        };
        Ok(Some((dlq, max)))
    }

    /// Approximate depth.
    pub async fn depth(&self) -> Result<QueueDepth> {
        let attrs = self
            .attributes(&[
                QueueAttributeName::ApproximateNumberOfMessages,
                QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            ])
            .await?;
        let get = |n: QueueAttributeName| attrs.get(&n).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok(QueueDepth {
            visible: get(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }
}
