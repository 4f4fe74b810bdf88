//! `Verify` (`POST /api/verify`): starts a verify run, which compares a source prefix with its
//! target prefix; with `"repair": true` it also queues a copy (that ignores the checkpoint)
//! for every missing or stale object. It answers as `StartRun` does (`202 Accepted`,
//! `Location`); the run's summary carries the tallies and its report a line per difference.

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// The run body for a verify request: its `repair` and `metadata` flags move under `verify`,
/// the rest (source, target, notify) is a run's, parsed by the run spec's rules.
pub fn run_body(body: &str) -> Result<String> {
    let mut v: Value =
        serde_json::from_str(body).map_err(|e| Error::invalid(format!("request body is not JSON: {e}")))?;
    let Some(m) = v.as_object_mut() else {
        return Err(Error::invalid("request body must be a JSON object"));
    };
    let mut flag = |name: &str| match m.remove(name) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(_) => Err(Error::invalid(format!("request body: `{name}`: must be true or false"))),
    };
    let repair = flag("repair")?;
    let metadata = flag("metadata")?;
    if m.contains_key("verify") {
        return Err(Error::invalid(
            "request body: `verify`: not here; give `repair` and `metadata` at the top level",
        ));
    }
    m.insert("verify".into(), json!({"repair": repair, "metadata": metadata}));
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_move_under_verify_and_bad_ones_are_named() {
        let b: Value = serde_json::from_str(
            &run_body(r#"{"source":{"bucket":"b"},"target":{"container":"c"},"repair":true}"#).unwrap(),
        )
        .unwrap();
        assert_eq!(b["verify"], json!({"repair": true, "metadata": false}));
        assert!(b.get("repair").is_none());
        for (bad, needle) in [
            (r#"{"repair":"yes"}"#, "`repair`"),
            (r#"{"metadata":1}"#, "`metadata`"),
            ("[1]", "JSON object"),
            ("{", "not JSON"),
            (r#"{"verify":{}}"#, "`verify`"),
        ] {
            let e = run_body(bad).unwrap_err();
            assert!(e.message().contains(needle), "{bad}: {e}");
        }
    }
}
