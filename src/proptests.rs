//! Property tests over every entry point that takes outside input (issue 12): the S3 event
//! parser (SQS body and SNS envelope), the invoke payload, the copy-objects message, the run
//! spec, the connection string and `blob_name`. Each gets random bytes and structured,
//! near-valid input, and three properties are checked: nothing panics; every refusal names
//! what was wrong; what parses re-serialises to an equal value. `PROPTEST_CASES` makes a
//! run longer; a failing case is written to `proptest-regressions/` and replayed first.

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::aws::events::{parse, Notification};
use crate::config::azure::StorageAccount;
use crate::config::Config;
use crate::engine::naming::{blob_name, validate_blob_name};
use crate::messages::run_spec::RunSpec;
use crate::messages::CopyMessage;

fn cfg() -> Config {
    let mut c = Config::for_emulators();
    // A webhook setting that holds a private address: refused once it is resolved.
    c.runs.webhooks.insert(
        "SYNC_WEBHOOK_PRIVATE".into(),
        crate::redact::Secret::from("https://10.0.0.1/x".to_string()),
    );
    c
}

/// Keys as users write them: spaces, `+`, `%`, slashes, dots, non-ASCII.
fn key() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 +%/._~é€😀-]{1,60}"
}

fn bucket() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9-]{1,20}[a-z0-9]"
}

/// A key as S3 writes it into an event: form-encoded (space as `+`).
fn event_key(k: &str) -> String {
    url::form_urlencoded::byte_serialize(k.as_bytes()).collect()
}

fn record(name: &str, bucket: &str, key: &str, size: Option<u64>, seq: &Option<String>) -> Value {
    json!({
        "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": name,
        "eventTime": "2026-12-02T10:00:00.000Z",
        "s3": {"bucket": {"name": bucket}, "object": {"key": event_key(key), "size": size, "eTag": "0123abcd", "sequencer": seq}}
    })
}

/// One mutation of a valid event body, and a word its refusal must contain.
#[derive(Debug, Clone)]
enum EventMutation {
    DropEventName,
    DropBucket,
    OtherSource,
    OldVersion,
    KeyNotAString,
    BadPercent,
    EmptyKey,
    RecordsNotAList,
    Truncate(usize),
}

fn mutate(body: &mut Value, m: &EventMutation) -> &'static str {
    let r = &mut body["Records"][0];
    match m {
        EventMutation::DropEventName => {
            r.as_object_mut().unwrap().remove("eventName");
            "eventName"
        }
        EventMutation::DropBucket => {
            r["s3"].as_object_mut().unwrap().remove("bucket");
            "bucket"
        }
        EventMutation::OtherSource => {
            r["eventSource"] = json!("aws:sqs");
            "eventSource"
        }
        EventMutation::OldVersion => {
            r["eventVersion"] = json!("1.0");
            "eventVersion"
        }
        EventMutation::KeyNotAString => {
            r["s3"]["object"]["key"] = json!(42);
            "key"
        }
        EventMutation::BadPercent => {
            // Percent-escapes that decode to bytes that are not UTF-8.
            r["s3"]["object"]["key"] = json!("a%FF%FE");
            "key"
        }
        EventMutation::EmptyKey => {
            r["s3"]["object"]["key"] = json!("");
            "key"
        }
        EventMutation::RecordsNotAList => {
            body["Records"] = json!({"not": "a list"});
            "Records"
        }
        EventMutation::Truncate(_) => "JSON",
    }
}

fn event_mutation() -> impl Strategy<Value = EventMutation> {
    prop_oneof![
        Just(EventMutation::DropEventName),
        Just(EventMutation::DropBucket),
        Just(EventMutation::OtherSource),
        Just(EventMutation::OldVersion),
        Just(EventMutation::KeyNotAString),
        Just(EventMutation::BadPercent),
        Just(EventMutation::EmptyKey),
        Just(EventMutation::RecordsNotAList),
        (1usize..400).prop_map(EventMutation::Truncate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn event_bodies_of_random_bytes_are_refused_with_a_reason(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(why) = parse(&text) {
            prop_assert!(!why.trim().is_empty());
        }
    }

    #[test]
    fn an_event_round_trips_plain_and_in_an_sns_envelope(
        name in prop_oneof![Just("ObjectCreated:Put"), Just("ObjectRemoved:Delete"), Just("ObjectRestore:Completed"), Just("LifecycleExpiration:Delete")],
        b in bucket(), k in key(), size in proptest::option::of(0u64..1 << 40),
        seq in proptest::option::of("[0-9A-F]{16,20}"),
    ) {
        let body = json!({"Records": [record(name, &b, &k, size, &seq)]}).to_string();
        let sns = json!({"Type": "Notification", "MessageId": "m", "Message": body}).to_string();
        for text in [&body, &sns] {
            let Ok(Notification::Records(rs)) = parse(text) else {
                return Err(TestCaseError::fail(format!("refused: {:?}", parse(text))));
            };
            prop_assert_eq!(rs.len(), 1);
            let r = &rs[0];
            prop_assert_eq!(&r.name, name);
            prop_assert_eq!(&r.bucket, &b);
            prop_assert_eq!(&r.key, &k);
            prop_assert_eq!(r.size, size);
            prop_assert_eq!(&r.sequencer, &seq);
            prop_assert_eq!(r.etag.as_deref(), Some("0123abcd"));
        }
    }

    #[test]
    fn a_near_valid_event_is_refused_naming_what_is_wrong(b in bucket(), k in key(), m in event_mutation()) {
        let mut v = json!({"Records": [record("ObjectCreated:Put", &b, &k, Some(5), &None)]});
        let word = mutate(&mut v, &m);
        let mut text = v.to_string();
        if let EventMutation::Truncate(n) = m {
            let mut n = n.min(text.len() - 1);
            while !text.is_char_boundary(n) {
                n -= 1;
            }
            text.truncate(n);
        }
        match parse(&text) {
            Ok(n) => prop_assert!(false, "accepted after {m:?}: {n:?}"),
            Err(why) => prop_assert!(why.contains(word), "{m:?}: `{why}` does not name {word}"),
        }
    }

    #[test]
    fn copy_messages_of_random_bytes_are_refused_with_a_reason(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Err(e) = CopyMessage::parse(&String::from_utf8_lossy(&bytes)) {
            prop_assert!(e.message().starts_with("copy-objects message"), "{}", e.message());
        }
    }

    #[test]
    fn a_copy_message_round_trips(
        b in bucket(), k in key(), container in proptest::option::of("[a-z0-9]{3,20}"),
        run in proptest::option::of("[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}"),
        mode in proptest::option::of(prop_oneof![Just(crate::model::SyncMode::Additive), Just(crate::model::SyncMode::Mirror)]),
        etag in proptest::option::of("[0-9a-f]{32}"), size in proptest::option::of(0u64..1 << 40),
        recheck in proptest::option::of(any::<bool>()),
    ) {
        let m = CopyMessage { bucket: b, key: k, container, run_id: run, mode, etag, size, recheck, ..Default::default() };
        let text = serde_json::to_string(&m).unwrap();
        let back = CopyMessage::parse(&text).map_err(|e| TestCaseError::fail(e.message().to_string()))?;
        prop_assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&m).unwrap());
    }

    #[test]
    fn a_near_valid_copy_message_is_refused_naming_the_field(
        b in bucket(), k in key(),
        m in prop_oneof![
            Just(("bucket", json!(""))), Just(("bucket", json!(5))), Just(("key", json!(""))),
            Just(("key", json!("k".repeat(1025)))), Just(("mode", json!("sideways"))),
            Just(("size", json!("big"))), Just(("recheck", json!("yes"))),
        ],
    ) {
        let mut v = json!({"bucket": b, "key": k});
        v[m.0] = m.1.clone();
        match CopyMessage::parse(&v.to_string()) {
            Ok(_) => prop_assert!(false, "accepted {v}"),
            Err(e) => prop_assert!(e.message().contains(&format!("`{}`", m.0)), "{}", e.message()),
        }
    }

    #[test]
    fn run_specs_of_random_text_are_refused_naming_the_body(text in ".{0,300}") {
        if let Err(e) = RunSpec::parse(&text, "request body", &cfg()) {
            prop_assert!(e.message().contains("request body"), "{}", e.message());
        }
    }

    #[test]
    fn a_run_spec_round_trips(
        b in bucket(), c in "[a-z0-9]{3,20}", sp in "[a-z0-9/]{0,12}", tp in "[a-z0-9/]{0,12}",
        dry in any::<bool>(), mirror in any::<bool>(), max in 0u64..100_000,
    ) {
        let body = json!({"source": {"bucket": b, "prefix": sp}, "target": {"container": c, "prefix": tp},
                          "dryRun": dry, "mode": if mirror { "mirror" } else { "additive" }, "maxDeletes": max});
        let cfg = cfg();
        let (spec, _) = RunSpec::parse(&body.to_string(), "request body", &cfg)
            .map_err(|e| TestCaseError::fail(e.message().to_string()))?;
        let again = serde_json::to_string(&spec).unwrap();
        let (back, _) = RunSpec::parse(&again, "request body", &cfg)
            .map_err(|e| TestCaseError::fail(format!("{again}: {}", e.message())))?;
        prop_assert_eq!(back, spec);
    }

    #[test]
    fn a_near_valid_run_spec_is_refused_naming_the_field(
        b in bucket(),
        m in prop_oneof![
            Just(("/source/bucket", json!("Not_A_Bucket"), "source.bucket")),
            Just(("/target/container", json!("UPPER"), "target.container")),
            Just(("/mode", json!("sideways"), "mode")),
            Just(("/maxDeletes", json!(-1), "maxDeletes")),
            Just(("/notify", json!("http://10.0.0.1/x"), "notify")),
            Just(("/notify", json!("setting:SYNC_WEBHOOK_PRIVATE"), "`notify`: app setting `SYNC_WEBHOOK_PRIVATE`: 10.0.0.1 is")),
            Just(("/notify", json!("setting:SYNC_WEBHOOK_UNSET"), "notify")),
            Just(("/dryRun", json!("yes"), "dryRun")),
        ],
    ) {
        let mut v = json!({"source": {"bucket": b}, "target": {"container": "c01"}});
        let (parent, field) = m.0.rsplit_once('/').unwrap();
        v.pointer_mut(parent).unwrap()[field] = m.1.clone();
        match RunSpec::parse(&v.to_string(), "request body", &cfg()) {
            Ok(_) => prop_assert!(false, "accepted {v}"),
            Err(e) => prop_assert!(e.message().contains(m.2), "{v}: {}", e.message()),
        }
    }

    #[test]
    fn connection_strings_never_panic_and_never_echo_the_key(
        parts in proptest::collection::vec(
            (prop_oneof![Just("AccountName"), Just("AccountKey"), Just("DefaultEndpointsProtocol"), Just("EndpointSuffix"),
                         Just("BlobEndpoint"), Just("QueueEndpoint"), Just("TableEndpoint"), Just("SharedAccessSignature"),
                         Just("UseDevelopmentStorage"), Just("Bogus")],
             "[ -~]{0,24}"),
            0..7),
    ) {
        let cs: String = parts.iter().map(|(k, v)| format!("{k}={v};")).collect();
        if let Err(e) = StorageAccount::from_connection_string(&cs) {
            let msg = e.message();
            prop_assert!(!msg.trim().is_empty());
            for (k, v) in &parts {
                if (*k == "AccountKey" || *k == "SharedAccessSignature") && v.len() >= 6 {
                    prop_assert!(!msg.contains(v.as_str()), "{msg} echoes the {k}");
                }
            }
        }
    }

    #[test]
    fn blob_names_are_valid_or_refused_with_a_reason(k in ".{0,80}", sp in "[a-z/]{0,6}", tp in "[a-z/]{0,6}") {
        match blob_name(&k, &sp, &tp) {
            Ok(name) => {
                prop_assert!(validate_blob_name(&name).is_ok());
                prop_assert!(name.starts_with(&tp));
                prop_assert_eq!(&name[tp.len()..], &k[sp.len()..]);
            }
            Err(issue) => prop_assert!(!issue.reason().trim().is_empty()),
        }
    }

    #[test]
    fn invoke_payloads_of_any_json_never_panic(v in json_value()) {
        if let Ok(req) = serde_json::from_value::<crate::functions::protocol::InvokeRequest>(v.clone()) {
            // Reading the queue message and the HTTP request out of it never panics either.
            for b in req.data.values() {
                let _ = crate::functions::protocol::queue_message_text(b);
                let _ = serde_json::from_value::<crate::functions::protocol::HttpTriggerRequest>(b.clone());
            }
            let _ = crate::functions::protocol::dequeue_count(&req.metadata);
        }
        let _ = crate::functions::protocol::queue_message_text(&v);
    }
}

/// Arbitrary JSON, a few levels deep, with the invoke payload's own names among the keys.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[ -~]{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::vec(
                (
                    prop_oneof![
                        Just("Data".to_string()),
                        Just("Metadata".to_string()),
                        Just("message".to_string()),
                        Just("req".to_string()),
                        Just("DequeueCount".to_string()),
                        "[a-z]{1,6}"
                    ],
                    inner
                ),
                0..4
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}
