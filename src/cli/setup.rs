//! `setup-events`: points the bucket's event notifications at the SQS queue (ObjectCreated:*,
//! ObjectRemoved:*, ObjectRestore:Completed, and with `--tag-events` ObjectTagging:*,
//! optionally filtered), keeping any other notification the bucket has,
//! and checks that the queue's policy lets S3 send to it.

use std::process::ExitCode;

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::get_bucket_notification_configuration::GetBucketNotificationConfigurationOutput;
use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter, QueueConfiguration,
    S3KeyFilter,
};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{json, Value};

use crate::aws::s3::{map_sdk_error, S3Source};
use crate::aws::sqs::SqsQueue;
use crate::error::{Error, Idempotency, Result};

/// The notification id we own; others on the bucket are left alone.
pub const CONFIG_ID: &str = "s3-blob-sync";

/// Arguments of `setup-events`.
#[derive(Debug, clap::Args)]
pub struct SetupArgs {
    /// The source bucket.
    #[arg(long)]
    pub bucket: String,
    /// The SQS queue URL (default: SYNC_SQS_QUEUE_URL).
    #[arg(long)]
    pub queue_url: Option<String>,
    /// Only keys starting with this.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Only keys ending with this.
    #[arg(long)]
    pub suffix: Option<String>,
    /// Add the missing statement to the queue policy instead of stopping.
    #[arg(long)]
    pub fix_policy: bool,
    /// Print what would change, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also notify on tag changes (ObjectTagging:*), which set the blob's index tags without
    /// copying bytes (SYNC_TAGS=index). Opt-in: each costs a HEAD, a GetObjectTagging and a
    /// Set Blob Tags, and a tool that retags a bucket wholesale sends one per object.
    #[arg(long)]
    pub tag_events: bool,
    /// The AWS account that owns the bucket, for the queue policy's `aws:SourceAccount`
    /// condition (default: the queue's own account, from its ARN).
    #[arg(long)]
    pub source_account: Option<String>,
}

/// Whether `policy` lets S3 send messages from `bucket_arn` to the queue.
pub fn policy_allows(policy: &Value, bucket_arn: &str) -> bool {
    let statements = match &policy["Statement"] {
        Value::Array(a) => a.clone(),
        v @ Value::Object(_) => vec![v.clone()],
        _ => return false,
    };
    let has = |v: &Value, want: &[&str]| match v {
        Value::String(s) => want.contains(&s.as_str()),
        Value::Array(a) => a.iter().any(|x| x.as_str().is_some_and(|s| want.contains(&s))),
        _ => false,
    };
    statements.iter().any(|s| {
        s["Effect"] == "Allow"
            && has(&s["Action"], &["sqs:SendMessage", "sqs:*", "*"])
            && (s["Principal"] == "*" || has(&s["Principal"]["Service"], &["s3.amazonaws.com"]))
            && {
                let cond = &s["Condition"];
                let arns = [&cond["ArnEquals"]["aws:SourceArn"], &cond["ArnLike"]["aws:SourceArn"]];
                cond.is_null() || arns.iter().any(|a| has(a, &[bucket_arn, "arn:aws:s3:::*"]))
            }
    })
}

/// Whether `body` is an XML document whose root element is empty (`<X .../>` or `<X></X>`,
/// white space aside).
fn is_empty_document(body: Option<&[u8]>) -> bool {
    use quick_xml::events::Event;
    let Some(text) = body.and_then(|b| std::str::from_utf8(b).ok()) else {
        return false;
    };
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().trim_text(true);
    let mut depth = 0u32;
    let mut roots = 0u32;
    loop {
        match reader.read_event() {
            Ok(Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_)) => {}
            Ok(Event::Empty(_)) if depth == 0 => roots += 1,
            Ok(Event::Start(_)) if depth == 0 => {
                roots += 1;
                depth = 1;
            }
            Ok(Event::End(_)) if depth == 1 => depth = 0,
            Ok(Event::Eof) => return roots == 1 && depth == 0,
            // Anything inside the root (an element, text) or an unreadable document.
            _ => return false,
        }
    }
}

/// The statement S3 needs on the queue: S3 may send, for this bucket only, and only while
/// the bucket belongs to `account` (a bucket name freed and taken by another account cannot
/// send into the queue).
pub fn required_statement(queue_arn: &str, bucket: &str, account: &str) -> Value {
    json!({
        "Sid": format!("s3-blob-sync-{bucket}"),
        "Effect": "Allow",
        "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": queue_arn,
        "Condition": {
            "ArnEquals": {"aws:SourceArn": format!("arn:aws:s3:::{bucket}")},
            "StringEquals": {"aws:SourceAccount": account}
        }
    })
}

/// The account for `aws:SourceAccount`: `--source-account`, else the queue ARN's account.
fn source_account(given: Option<&str>, queue_arn: &str) -> Result<String> {
    let account = match given {
        Some(a) => a.to_string(),
        None => queue_arn.split(':').nth(4).unwrap_or_default().to_string(),
    };
    if account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) {
        Ok(account)
    } else {
        Err(Error::invalid(format!(
            "--source-account: `{account}` is not a 12-digit AWS account id"
        )))
    }
}

pub(super) async fn run(args: SetupArgs) -> Result<ExitCode> {
    let cfg = super::load_config(None)?;
    crate::telemetry::init(cfg.log_format, "warn");
    let queue_url = args
        .queue_url
        .clone()
        .or(cfg.relay.queue_url.clone())
        .ok_or_else(|| Error::invalid("--queue-url or SYNC_SQS_QUEUE_URL is required"))?;
    let retry = cfg.retry;
    let s3 = S3Source::new(&cfg.aws, retry).await;
    let sqs = SqsQueue::new(&cfg.aws, &queue_url, retry).await;

    // Every call below goes through the one retry policy. Each is safe to repeat: two
    // reads, and two writes that set a whole document (the queue policy, the bucket's
    // notification configuration) to the same value.
    let attrs = retry
        .run("get queue attributes", Idempotency::Idempotent, || async {
            sqs.client()
                .get_queue_attributes()
                .queue_url(&queue_url)
                .attribute_names(QueueAttributeName::QueueArn)
                .attribute_names(QueueAttributeName::Policy)
                .send()
                .await
                .map_err(|e| crate::aws::sqs::map_err(e, "get queue attributes"))
        })
        .await
        .map_err(|e| e.context(format!("cannot read the queue {queue_url}")))?;
    let attr = |n: QueueAttributeName| attrs.attributes().and_then(|a| a.get(&n)).cloned();
    let queue_arn =
        attr(QueueAttributeName::QueueArn).ok_or_else(|| Error::invalid("the queue has no QueueArn attribute"))?;
    let bucket_arn = format!("arn:aws:s3:::{}", args.bucket);
    let mut policy: Value = attr(QueueAttributeName::Policy)
        .and_then(|p| serde_json::from_str(&p).ok())
        .unwrap_or_else(|| json!({"Version": "2012-10-17", "Statement": []}));
    let policy_ok = policy_allows(&policy, &bucket_arn);
    let account = source_account(args.source_account.as_deref(), &queue_arn)?;
    let statement = required_statement(&queue_arn, &args.bucket, &account);
    println!(
        "queue {queue_arn}: policy {}",
        if policy_ok {
            "lets the bucket send events"
        } else {
            "does NOT let the bucket send events"
        }
    );
    if !policy_ok {
        println!(
            "statement needed:\n{}",
            serde_json::to_string_pretty(&statement).unwrap_or_default()
        );
        if !args.fix_policy && !args.dry_run {
            return Err(Error::invalid("the queue policy must allow s3.amazonaws.com to sqs:SendMessage from this bucket; add the statement above or rerun with --fix-policy"));
        }
    }

    let current = retry
        .run("get notification configuration", Idempotency::Idempotent, || async {
            match s3
                .client()
                .get_bucket_notification_configuration()
                .bucket(&args.bucket)
                .send()
                .await
            {
                Ok(c) => Ok(c),
                // An answer with no configuration at all can come back under another root
                // element (moto does this) which the SDK refuses; an empty document means
                // "none". Anything with content that cannot be parsed stays an error:
                // guessing would clobber it.
                Err(SdkError::ServiceError(se))
                    if se.raw().status().as_u16() == 200 && is_empty_document(se.raw().body().bytes()) =>
                {
                    Ok(GetBucketNotificationConfigurationOutput::builder().build())
                }
                Err(e) => Err(map_sdk_error(e, &args.bucket, "", "get notification configuration")),
            }
        })
        .await?;
    let mut filter_rules = Vec::new();
    if let Some(p) = &args.prefix {
        filter_rules.push(FilterRule::builder().name(FilterRuleName::Prefix).value(p).build());
    }
    if let Some(s) = &args.suffix {
        filter_rules.push(FilterRule::builder().name(FilterRuleName::Suffix).value(s).build());
    }
    let mut ours = QueueConfiguration::builder()
        .id(CONFIG_ID)
        .queue_arn(&queue_arn)
        .events(Event::from("s3:ObjectCreated:*"))
        .events(Event::from("s3:ObjectRemoved:*"))
        // A finished restore copies an archived object.
        .events(Event::from("s3:ObjectRestore:Completed"));
    // A tag change is applied without copying bytes (SYNC_TAGS=index).
    if args.tag_events {
        ours = ours.events(Event::from("s3:ObjectTagging:*"));
    }
    if !filter_rules.is_empty() {
        ours = ours.filter(
            NotificationConfigurationFilter::builder()
                .key(S3KeyFilter::builder().set_filter_rules(Some(filter_rules)).build())
                .build(),
        );
    }
    let ours = ours.build().map_err(|e| Error::internal(e.to_string()))?;
    let mut queues: Vec<QueueConfiguration> = current
        .queue_configurations()
        .iter()
        .filter(|q| q.id() != Some(CONFIG_ID))
        .cloned()
        .collect();
    let kept = queues.len() + current.topic_configurations().len() + current.lambda_function_configurations().len();
    queues.push(ours);
    println!(
        "bucket {}: notify {queue_arn} on ObjectCreated:*, ObjectRemoved:*, ObjectRestore:Completed{}{}{}; keeping {kept} other notification(s)",
        args.bucket,
        if args.tag_events { ", ObjectTagging:*" } else { "" },
        args.prefix.as_deref().map(|p| format!(", prefix `{p}`")).unwrap_or_default(),
        args.suffix.as_deref().map(|s| format!(", suffix `{s}`")).unwrap_or_default(),
    );
    if args.dry_run {
        println!("dry run: nothing was changed");
        return Ok(ExitCode::SUCCESS);
    }
    if !policy_ok {
        match policy["Statement"].as_array_mut() {
            Some(a) => a.push(statement),
            None => policy["Statement"] = json!([statement]),
        }
        let text = policy.to_string();
        retry
            // Idempotent: it sets the whole policy.
            .run("set queue attributes", Idempotency::Idempotent, || async {
                sqs.client()
                    .set_queue_attributes()
                    .queue_url(&queue_url)
                    .attributes(QueueAttributeName::Policy, text.clone())
                    .send()
                    .await
                    .map_err(|e| crate::aws::sqs::map_err(e, "set queue attributes"))
            })
            .await
            .map_err(|e| e.context("cannot set the queue policy"))?;
        println!("queue policy updated");
    }
    let config = NotificationConfiguration::builder()
        .set_queue_configurations(Some(queues))
        .set_topic_configurations(Some(current.topic_configurations().to_vec()))
        .set_lambda_function_configurations(Some(current.lambda_function_configurations().to_vec()))
        .set_event_bridge_configuration(current.event_bridge_configuration().cloned())
        .build();
    retry
        // Idempotent: it sets the whole configuration.
        .run("put notification configuration", Idempotency::Idempotent, || async {
            s3.client()
                .put_bucket_notification_configuration()
                .bucket(&args.bucket)
                .notification_configuration(config.clone())
                .send()
                .await
                .map_err(|e| map_sdk_error(e, &args.bucket, "", "put notification configuration"))
        })
        .await?;
    println!("bucket notification configured");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_documents() {
        let d = |s: &str| is_empty_document(Some(s.as_bytes()));
        assert!(d(r#"<?xml version="1.0"?><GetBucketNotificationResponse xmlns="x"/>"#));
        assert!(d("<NotificationConfiguration></NotificationConfiguration>"));
        assert!(!d(
            "<NotificationConfiguration><QueueConfiguration/></NotificationConfiguration>"
        ));
        assert!(!d("garbage"));
        assert!(!is_empty_document(None));
    }

    #[test]
    fn policy_check() {
        let arn = "arn:aws:s3:::bkt";
        let good =
            json!({"Statement": [required_statement("arn:aws:sqs:us-east-1:111122223333:q", "bkt", "111122223333")]});
        assert!(policy_allows(&good, arn));
        assert!(!policy_allows(&good, "arn:aws:s3:::other"));
        assert!(!policy_allows(&json!({"Statement": []}), arn));
        let deny = json!({"Statement": {"Effect": "Deny", "Principal": "*", "Action": "sqs:*"}});
        assert!(!policy_allows(&deny, arn));
        let open = json!({"Statement": {"Effect": "Allow", "Principal": "*", "Action": ["sqs:SendMessage"]}});
        assert!(policy_allows(&open, arn));
    }

    #[test]
    fn the_statement_names_the_bucket_owner() {
        let q = "arn:aws:sqs:eu-west-1:111122223333:events";
        assert_eq!(source_account(None, q).unwrap(), "111122223333");
        assert_eq!(source_account(Some("444455556666"), q).unwrap(), "444455556666");
        let e = source_account(Some("12"), q).unwrap_err();
        assert!(e.message().starts_with("--source-account"), "{e}");
        let st = required_statement(q, "bkt", "111122223333");
        assert_eq!(st["Condition"]["StringEquals"]["aws:SourceAccount"], "111122223333");
        assert_eq!(st["Condition"]["ArnEquals"]["aws:SourceArn"], "arn:aws:s3:::bkt");
    }
}
