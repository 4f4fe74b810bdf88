//! The rejects-queue message for an SQS body that is not an S3 notification.

use serde_json::json;

use crate::aws::sqs::SqsMessage;

/// The most a parked message may take, in bytes of JSON: Azure queues take 64 KiB of
/// base64, which carries 48 KiB; the rest is margin.
pub const MAX_PARKED_BYTES: usize = 46 * 1024;
/// The most of a rejection's reason kept (serde quotes offending input, which can be huge).
pub(super) const MAX_REASON_BYTES: usize = 2048;

/// The rejects-queue message for a malformed SQS body: the reason, the SQS message id, the
/// body's size and SHA-256 (so the original can be matched even when cut), and as much of
/// the body as fits, all within [`MAX_PARKED_BYTES`] whatever the body holds (non-ASCII,
/// control characters that JSON escapes six-fold, one huge string).
pub fn parked_message(m: &SqsMessage, reason: &str) -> String {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(m.body.as_bytes()));
    let reason = cut_at(reason, MAX_REASON_BYTES);
    let mut keep = m.body.len().min(MAX_PARKED_BYTES);
    loop {
        let excerpt = cut_at(&m.body, keep);
        let text = json!({
            "reason": reason,
            "sqsMessageId": m.id,
            "receiveCount": m.receive_count,
            "parkedAt": crate::state::checkpoint::now_rfc3339(),
            "bodyBytes": m.body.len(),
            "bodySha256": digest,
            "body": excerpt,
            "truncated": excerpt.len() < m.body.len(),
        })
        .to_string();
        if text.len() <= MAX_PARKED_BYTES || keep == 0 {
            return text;
        }
        keep /= 2;
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub(super) fn cut_at(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::events;

    fn msg(body: String) -> SqsMessage {
        SqsMessage {
            id: "m-1".into(),
            body,
            ..Default::default()
        }
    }

    #[test]
    fn parked_messages_fit_a_queue_message_whatever_the_body() {
        let huge_string = format!("\"{}\"", "x".repeat(200 * 1024));
        let non_ascii = "ü€😀".repeat(132 * 1024 / 9);
        let controls = "\u{1}".repeat(60 * 1024);
        for body in [huge_string, non_ascii, controls, "short".to_string()] {
            let reason = match events::parse(&body) {
                Err(r) => r,
                Ok(_) => "parsed".into(),
            };
            let text = parked_message(&msg(body.clone()), &reason);
            assert!(text.len() <= MAX_PARKED_BYTES, "{} bytes", text.len());
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["sqsMessageId"], "m-1");
            assert_eq!(v["bodyBytes"], body.len());
            use sha2::Digest;
            assert_eq!(v["bodySha256"], hex::encode(sha2::Sha256::digest(body.as_bytes())));
            assert_eq!(v["truncated"], body.len() > v["body"].as_str().unwrap().len());
            assert!(body.starts_with(v["body"].as_str().unwrap()));
            assert!(!v["reason"].as_str().unwrap().is_empty());
            // base64 of it fits Azure's 64 KiB message.
            assert!(text.len().div_ceil(3) * 4 <= 64 * 1024);
        }
    }
}
