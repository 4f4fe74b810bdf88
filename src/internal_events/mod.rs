//! Observability as data: one struct per significant event, whose one [`InternalEvent::emit`]
//! writes the log line with its stable fields and, where one applies, bumps a counter (the
//! shape of Vector's `internal_events`). A reader finds every field an event can carry in
//! its struct, and a dashboard query written against [`STABLE_FIELDS`] keeps working.
//!
//! - `copy`: one object brought up to date (or not), step by step.

mod copy;

pub use copy::{CopyRestarted, FailureNotRecorded, ObjectDone, ObjectFailed, ObjectRef, ObjectSplit, RangeStaged};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// The fields the README promises on every per-object event, under these names. Events
/// that concern one object carry them all (an empty string or 0 where one does not apply).
pub const STABLE_FIELDS: [&str; 8] = [
    "bucket",
    "key",
    "blob",
    "bytes",
    "outcome",
    "reason",
    "run_id",
    "duration_ms",
];

/// Something worth a log line and, maybe, a counter.
pub trait InternalEvent {
    /// Writes the event's log line and bumps its counters.
    fn emit(self);
}

/// Emits `event`.
pub fn emit(event: impl InternalEvent) {
    event.emit()
}

/// The process's event counters: `(name, label)` → count, e.g.
/// `("objects", "copied")`. In-process only; the request counters of a cost report hang
/// here too.
fn registry() -> &'static Mutex<BTreeMap<(&'static str, &'static str), &'static AtomicU64>> {
    static R: OnceLock<Mutex<BTreeMap<(&'static str, &'static str), &'static AtomicU64>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Adds `n` to the counter `name{label}`.
pub(crate) fn count(name: &'static str, label: &'static str, n: u64) {
    let cell = *registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry((name, label))
        .or_insert_with(|| Box::leak(Box::new(AtomicU64::new(0))));
    cell.fetch_add(n, Ordering::Relaxed);
}

/// Every counter's current value, as `name{label}` → count.
pub fn counters() -> BTreeMap<String, u64> {
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|((n, l), v)| (format!("{n}{{{l}}}"), v.load(Ordering::Relaxed)))
        .collect()
}

#[cfg(test)]
pub(crate) mod capture {
    //! A subscriber that keeps the events emitted on this thread, field by field.

    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;

    /// One captured event: its level, message and fields (values as text).
    #[derive(Debug, Clone, Default)]
    pub struct Captured {
        pub level: String,
        pub message: String,
        pub fields: Vec<(String, String)>,
    }

    impl Captured {
        pub fn names(&self) -> Vec<&str> {
            self.fields.iter().map(|(n, _)| n.as_str()).collect()
        }
        pub fn get(&self, name: &str) -> Option<&str> {
            self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
        }
    }

    struct Keep(Arc<Mutex<Vec<Captured>>>);

    struct Fields<'a>(&'a mut Captured);

    impl Visit for Fields<'_> {
        fn record_str(&mut self, f: &Field, v: &str) {
            self.put(f, v.to_string());
        }
        fn record_u64(&mut self, f: &Field, v: u64) {
            self.put(f, v.to_string());
        }
        fn record_i64(&mut self, f: &Field, v: i64) {
            self.put(f, v.to_string());
        }
        fn record_bool(&mut self, f: &Field, v: bool) {
            self.put(f, v.to_string());
        }
        fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
            self.put(f, format!("{v:?}"));
        }
    }

    impl Fields<'_> {
        fn put(&mut self, f: &Field, v: String) {
            if f.name() == "message" {
                self.0.message = v;
            } else {
                self.0.fields.push((f.name().to_string(), v));
            }
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Keep {
        fn on_event(&self, e: &tracing::Event<'_>, _: Context<'_, S>) {
            let mut c = Captured {
                level: e.metadata().level().to_string(),
                ..Default::default()
            };
            e.record(&mut Fields(&mut c));
            self.0.lock().unwrap().push(c);
        }
    }

    /// The events `f` emits.
    pub fn events(f: impl FnOnce()) -> Vec<Captured> {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let sub = tracing_subscriber::registry().with(Keep(kept.clone()));
        tracing::subscriber::with_default(sub, f);
        let out = kept.lock().unwrap().clone();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's list of stable fields is this one, so the promise and the code agree.
    #[test]
    fn the_readme_promises_the_stable_fields_the_events_carry() {
        let readme = include_str!("../../README.md");
        let at = readme
            .find("Logs are JSON lines with stable fields:")
            .expect("README names the stable fields");
        let sentence = &readme[at..at + readme[at..].find('.').unwrap()];
        let named: Vec<&str> = sentence.split('`').skip(1).step_by(2).collect();
        // The span's `invocation_id` comes last; it is the Functions host's, not an event's.
        assert_eq!(
            named.split_last(),
            Some((&"invocation_id", &STABLE_FIELDS[..])),
            "{sentence}"
        );
    }

    #[test]
    fn counters_add_up_per_label() {
        let before = counters().get("test_events{a}").copied().unwrap_or(0);
        count("test_events", "a", 2);
        count("test_events", "a", 3);
        count("test_events", "b", 1);
        let now = counters();
        assert_eq!(now["test_events{a}"], before + 5);
        assert!(now["test_events{b}"] >= 1);
    }
}
