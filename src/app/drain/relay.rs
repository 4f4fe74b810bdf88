//! What the relay sends and when it tries again: the `copy-objects` message for one S3
//! event record, and the pause before a message whose relay failed comes back.

use std::time::Duration;

use crate::aws::events::EventRecord;
use crate::messages::CopyMessage;

/// The `copy-objects` message for one event record. The event's version id is not carried:
/// the copy HEADs the key's current version, whichever event woke it.
pub fn relay_message(r: &EventRecord) -> CopyMessage {
    CopyMessage {
        bucket: r.bucket.clone(),
        key: r.key.clone(),
        event: Some(r.name.clone()),
        sequencer: r.sequencer.clone(),
        etag: r.etag.clone(),
        size: r.size,
        event_time: r.event_time.clone(),
        ..Default::default()
    }
}

/// The longest retry pause. SQS refuses a visibility timeout that ends more than 12 h after
/// the message was received, and a drain can set it up to its budget (at most 1 h) after the
/// receive: 11 h always fits.
const MAX_VISIBILITY: Duration = Duration::from_secs(11 * 3600);

/// How long a message whose relay failed on its `receives`-th receive stays hidden:
/// `base` × 4^(receives−1), at most 11 h. Each failed receive spends one of the queue's
/// `maxReceiveCount`, so the pauses grow fast enough that an outage of the Azure side of
/// about an hour (base 60 s, maxReceiveCount 5: 60+240+960+3840 s) sends nothing to the
/// dead-letter queue (decisions 53).
pub fn retry_visibility(base: Duration, receives: u32) -> Duration {
    let factor = 4u32.saturating_pow(receives.saturating_sub(1).min(15));
    base.saturating_mul(factor).min(MAX_VISIBILITY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::events;

    #[test]
    fn a_relayed_event_reads_back_as_the_same_copy_message() {
        let body = r#"{"Records":[{"eventName":"ObjectCreated:Put","eventTime":"2026-12-02T10:00:00.000Z",
            "s3":{"bucket":{"name":"bkt"},"object":{"key":"a%20b.txt","size":5,"eTag":"abc","sequencer":"0A"}}}]}"#;
        let Ok(events::Notification::Records(records)) = events::parse(body) else {
            panic!("not parsed")
        };
        let sent = relay_message(&records[0]);
        let back = CopyMessage::parse(&sent.to_json()).unwrap();
        assert_eq!(back, sent);
        assert_eq!(
            (
                back.key.as_str(),
                back.event.as_deref(),
                back.sequencer.as_deref(),
                back.etag.as_deref(),
                back.size
            ),
            ("a b.txt", Some("ObjectCreated:Put"), Some("0A"), Some("abc"), Some(5))
        );
    }

    #[test]
    fn retry_pauses_grow_to_outlast_an_hour_within_five_receives() {
        let base = Duration::from_secs(60);
        let pauses: Vec<u64> = (1..=5).map(|n| retry_visibility(base, n).as_secs()).collect();
        assert_eq!(pauses, [60, 240, 960, 3840, 15360]);
        // maxReceiveCount 5: four pauses before the fifth receive.
        assert!(pauses[..4].iter().sum::<u64>() >= 3600);
        assert_eq!(retry_visibility(base, 40), MAX_VISIBILITY);
        assert!(MAX_VISIBILITY + Duration::from_secs(3600) <= Duration::from_secs(12 * 3600));
        assert_eq!(retry_visibility(base, 0), base);
    }
}
