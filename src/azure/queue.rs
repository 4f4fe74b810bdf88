//! Azure Storage queues over the official `azure_storage_queue` client: the `copy-objects`
//! work queue, its poison queue, and `sqs-rejects`. Message text is base64 of the JSON, as
//! the Functions queue trigger expects (`messageEncoding: base64` in host.json).

use std::sync::Arc;
use std::time::Duration;

use azure_storage_queue::models::{QueueClientReceiveMessagesOptions, QueueClientSendMessageOptions, QueueMessage};
use azure_storage_queue::{QueueClient, QueueClientOptions};
use base64::Engine;

use crate::azure::auth::Authorizer;
use crate::config::azure::StorageAccount;
use crate::error::{ok_if, Error, ErrorKind, Idempotency, Result};
use crate::model::validate_queue_name;
use crate::retry::RetryPolicy;

/// Azure's limit on a message, after base64.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A received work item.
#[derive(Debug, Clone)]
pub struct WorkItem {
    /// Message id.
    pub id: String,
    /// Pop receipt, for delete and visibility updates.
    pub pop_receipt: String,
    /// Decoded text.
    pub text: String,
    /// How many times it was dequeued, this time included.
    pub dequeue_count: u32,
}

/// One queue.
#[derive(Clone)]
pub struct WorkQueue {
    client: Arc<QueueClient>,
    name: String,
    retry: RetryPolicy,
}

impl std::fmt::Debug for WorkQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkQueue").field("name", &self.name).finish()
    }
}

impl WorkQueue {
    /// A client for queue `name` in `account`.
    pub fn new(account: &StorageAccount, auth: &Authorizer, name: &str, retry: RetryPolicy) -> Result<Self> {
        validate_queue_name(name)?;
        let mut url = account.queue_endpoint.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}/{name}"));
        let cred = match auth {
            Authorizer::Token(c) => Some(c.clone()),
            Authorizer::Sas(_) => None,
        };
        let client = QueueClient::new(
            url,
            cred,
            Some(QueueClientOptions {
                client_options: super::client_options(account, auth),
                ..Default::default()
            }),
        )
        .map_err(|e| super::map_azure_error(e, format!("queue {name}")))?;
        Ok(WorkQueue {
            client: Arc::new(client),
            name: name.to_string(),
            retry,
        })
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates the queue; an existing one is fine.
    pub async fn create_if_missing(&self) -> Result<()> {
        let r = self
            .retry
            .run("create queue", Idempotency::Idempotent, || async {
                self.client
                    .create(None)
                    .await
                    .map(|_| ())
                    .map_err(|e| super::map_azure_error(e, format!("create queue {}", self.name)))
            })
            .await;
        ok_if(r, ErrorKind::Precondition)
    }

    /// About how many messages the queue holds (Azure's count is never lower than the truth,
    /// and may be higher); 0 for a queue that does not exist.
    pub async fn approximate_count(&self) -> Result<u64> {
        use azure_storage_queue::models::QueueClientGetPropertiesResultHeaders;
        let r = self
            .retry
            .run("get queue properties", Idempotency::Idempotent, || async {
                let rsp = self
                    .client
                    .get_properties(None)
                    .await
                    .map_err(|e| super::map_azure_error(e, format!("get properties of queue {}", self.name)))?;
                rsp.approximate_messages_count()
                    .map_err(|e| super::map_azure_error(e, format!("get properties of queue {}", self.name)))
            })
            .await;
        match r {
            Ok(n) => Ok(n.unwrap_or(0).max(0) as u64),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Deletes the queue (tests).
    pub async fn delete_queue(&self) -> Result<()> {
        let r = self.client.delete(None).await;
        ok_if(
            r.map_err(|e| super::map_azure_error(e, format!("delete queue {}", self.name))),
            ErrorKind::NotFound,
        )
    }

    /// Sends `text` (base64-encoded on the wire), optionally hidden for `delay`.
    ///
    /// Retried on a reset or a server timeout, though the first attempt may have landed:
    /// every message this service sends is one its consumers may receive twice (the queues
    /// are at-least-once by design: copies are idempotent, a listing page or settle check
    /// replays as a no-op), so a duplicate costs a little work, while giving up would fail
    /// a run start or leave a run without its next step (decisions 90).
    pub async fn send(&self, text: &str, delay: Option<Duration>) -> Result<()> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(text);
        if encoded.len() > MAX_MESSAGE_BYTES {
            return Err(Error::invalid(format!(
                "queue {}: message of {} bytes exceeds Azure's 64 KiB",
                self.name,
                encoded.len()
            )));
        }
        self.retry
            // Idempotent: every message is one its consumers may take twice (decisions 90).
            .run("send queue message", Idempotency::Idempotent, || async {
                let msg = QueueMessage {
                    message_text: Some(encoded.clone()),
                };
                let body = azure_core::http::RequestContent::try_from(msg)
                    .map_err(|e| Error::internal(format!("encode queue message: {e}")))?;
                let opts = QueueClientSendMessageOptions {
                    visibility_timeout: delay.map(|d| d.as_secs() as i32),
                    // Never expire: an unprocessed message is work not done.
                    message_time_to_live: Some(-1),
                    ..Default::default()
                };
                self.client
                    .send_message(body, Some(opts))
                    .await
                    .map(|_| ())
                    .map_err(|e| super::map_azure_error(e, format!("send to queue {}", self.name)))
            })
            .await
    }

    /// Receives up to `max` (1-32) messages, hiding them for `visibility`.
    pub async fn receive(&self, max: u32, visibility: Duration) -> Result<Vec<WorkItem>> {
        let resp = self
            .retry
            // Idempotent: a lost reply hides its messages until their visibility ends.
            .run("receive queue messages", Idempotency::Idempotent, || async {
                let opts = QueueClientReceiveMessagesOptions {
                    number_of_messages: Some(max.clamp(1, 32) as i32),
                    visibility_timeout: Some(visibility.as_secs().max(1) as i32),
                    ..Default::default()
                };
                self.client
                    .receive_messages(Some(opts))
                    .await
                    .map_err(|e| super::map_azure_error(e, format!("receive from queue {}", self.name)))
            })
            .await?;
        let list = resp
            .into_model()
            .map_err(|e| super::map_azure_error(e, format!("receive from queue {}", self.name)))?;
        Ok(list
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                let raw = m.message_text.unwrap_or_default();
                // Producers other than us may send plain text; accept it as is.
                let text = base64::engine::general_purpose::STANDARD
                    .decode(raw.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .unwrap_or(raw);
                WorkItem {
                    id: m.message_id.unwrap_or_default(),
                    pop_receipt: m.pop_receipt.unwrap_or_default(),
                    text,
                    dequeue_count: m.dequeue_count.unwrap_or(1).max(1) as u32,
                }
            })
            .collect())
    }

    /// Deletes a received message.
    pub async fn delete(&self, item: &WorkItem) -> Result<()> {
        let r = self
            .retry
            .run("delete queue message", Idempotency::Idempotent, || async {
                self.client
                    .delete_message(&item.id, &item.pop_receipt, None)
                    .await
                    .map(|_| ())
                    .map_err(|e| super::map_azure_error(e, format!("delete from queue {}", self.name)))
            })
            .await;
        ok_if(r, ErrorKind::NotFound)
    }

    /// Makes a received message visible again after `delay` (a retry with backoff).
    pub async fn release(&self, item: &WorkItem, delay: Duration) -> Result<()> {
        self.set_visibility(&item.id, &item.pop_receipt, delay)
            .await
            .map(|_| ())
    }

    /// Keeps a received message hidden for `visibility` more, counted from now: the
    /// heartbeat of a consumer still working on it. Returns the new pop receipt, which the
    /// next update or the delete must use (the old one is void once this lands).
    pub async fn extend(&self, id: &str, pop_receipt: &str, visibility: Duration) -> Result<String> {
        self.set_visibility(id, pop_receipt, visibility).await
    }

    /// Update Message with a new visibility timeout. Once it lands, the pop receipt it was
    /// sent with is void, so a retry after a lost reply or a server timeout that landed gets
    /// 404, which is the truth: the new receipt is lost, and the caller treats the message as
    /// no longer held. A retry after one that did not land keeps the message hidden. So it is
    /// retried: waiting for the next heartbeat could let the message become visible.
    async fn set_visibility(&self, id: &str, pop_receipt: &str, after: Duration) -> Result<String> {
        static POP_RECEIPT: azure_core::http::headers::HeaderName =
            azure_core::http::headers::HeaderName::from_static("x-ms-popreceipt");
        self.retry
            // Idempotent: a repeat after one that landed carries a void receipt and gets 404.
            .run("update queue message", Idempotency::Idempotent, || async {
                let rsp = self
                    .client
                    .update_message(id, pop_receipt, after.as_secs().max(1) as i32, None)
                    .await
                    .map_err(|e| super::map_azure_error(e, format!("update message in queue {}", self.name)))?;
                rsp.headers().get_optional_string(&POP_RECEIPT).ok_or_else(|| {
                    Error::internal(format!("queue {}: Update Message returned no pop receipt", self.name))
                })
            })
            .await
    }
}
