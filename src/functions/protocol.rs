//! The Azure Functions custom-handler invoke protocol: what the host POSTs to
//! `/<FunctionName>` and what it expects back.
//!
//! Facts this follows (from the custom-handler docs and the host's behaviour): top-level keys
//! are PascalCase; trigger values under `Data.<binding>` are JSON-serialized by the host, so a
//! queue message arrives as a JSON string that may itself hold a quoted JSON string (decoded
//! twice here); `Metadata.DequeueCount` may be a number or a string; a non-2xx reply fails the
//! invocation so the host retries it and, after `maxDequeueCount`, moves it to `<queue>-poison`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::Error;

/// What the host sends.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InvokeRequest {
    /// One entry per trigger or input binding, by binding name.
    #[serde(default)]
    pub data: Map<String, Value>,
    /// Trigger metadata (`DequeueCount`, `Id`, `sys`, ...).
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// What the handler answers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InvokeResponse {
    /// Output bindings by name (e.g. `res` for HTTP, a queue output's name).
    pub outputs: Map<String, Value>,
    /// Lines the host writes to the invocation log.
    pub logs: Vec<String>,
    /// The `$return` binding's value.
    pub return_value: Option<Value>,
}

/// The HTTP trigger payload, `Data.req`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HttpTriggerRequest {
    /// Original URL.
    #[serde(default)]
    pub url: String,
    /// Upper-case method.
    #[serde(default)]
    pub method: String,
    /// Query parameters (older hosts send a JSON string; both accepted).
    #[serde(default, deserialize_with = "map_or_json_string")]
    pub query: HashMap<String, String>,
    /// Headers: name -> values.
    #[serde(default)]
    pub headers: HashMap<String, Vec<String>>,
    /// Route parameters.
    #[serde(default)]
    pub params: HashMap<String, String>,
    /// Body text (absent when empty).
    #[serde(default)]
    pub body: Option<String>,
}

/// The HTTP output binding, `Outputs.res`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpOutput {
    /// Status code for the caller.
    pub status_code: u16,
    /// Response headers.
    pub headers: HashMap<String, String>,
    /// Response body.
    pub body: String,
}

fn map_or_json_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HashMap<String, String>, D::Error> {
    let v = Value::deserialize(d)?;
    let v = match v {
        Value::String(s) if s.trim().is_empty() => return Ok(HashMap::new()),
        Value::String(s) => serde_json::from_str(&s).map_err(serde::de::Error::custom)?,
        Value::Null => return Ok(HashMap::new()),
        other => other,
    };
    let Value::Object(m) = v else {
        return Err(serde::de::Error::custom("Query must be an object"));
    };
    Ok(m.into_iter()
        .map(|(k, v)| (k, v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
        .collect())
}

/// The text of a queue message under `Data.<binding>`, undoing the host's JSON encoding
/// (once or twice). An object value (older hosts) is re-serialized.
pub fn queue_message_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => {
            let mut text = s.clone();
            // A string that is itself a JSON string literal was encoded once more.
            for _ in 0..2 {
                match serde_json::from_str::<Value>(&text) {
                    Ok(Value::String(inner)) => text = inner,
                    _ => break,
                }
            }
            Some(text)
        }
        Value::Object(_) => Some(v.to_string()),
        _ => None,
    }
}

/// `Metadata.DequeueCount` as a number, whether sent as `3`, `"3"` or `"\"3\""`.
pub fn dequeue_count(meta: &Map<String, Value>) -> Option<u32> {
    match meta.get("DequeueCount")? {
        Value::Number(n) => n.as_u64().map(|n| n as u32),
        Value::String(s) => s.trim_matches('"').parse().ok(),
        _ => None,
    }
}

/// A metadata string with the host's extra quotes removed.
pub fn meta_str(meta: &Map<String, Value>, name: &str) -> Option<String> {
    meta.get(name)?.as_str().map(|s| s.trim_matches('"').to_string())
}

/// An HTTP function's reply before it is shaped for either door (the invoke protocol's
/// `Outputs.res`, or a direct axum response).
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// JSON body.
    pub body: Value,
    /// A body that is not JSON, with its content type (the report's JSON Lines); it
    /// replaces `body`.
    pub text: Option<(&'static str, String)>,
}

impl Reply {
    /// A JSON reply.
    pub fn json(status: u16, body: Value) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body,
            text: None,
        }
    }

    /// An error reply: `{"error": …, "kind": …}`.
    pub fn error(status: u16, e: &Error) -> Self {
        Reply::json(status, json!({"error": e.message(), "kind": e.kind().as_str()}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_text_decodes_once_or_twice() {
        let raw = r#"{"bucket":"b","key":"k"}"#;
        let once = Value::String(raw.into());
        let twice = Value::String(serde_json::to_string(raw).unwrap());
        assert_eq!(queue_message_text(&once).unwrap(), raw);
        assert_eq!(queue_message_text(&twice).unwrap(), raw);
        assert_eq!(queue_message_text(&serde_json::json!({"a":1})).unwrap(), r#"{"a":1}"#);
        assert_eq!(queue_message_text(&Value::Null), None);
    }

    #[test]
    fn dequeue_count_forms() {
        for v in [serde_json::json!(3), serde_json::json!("3"), serde_json::json!("\"3\"")] {
            let mut m = Map::new();
            m.insert("DequeueCount".into(), v);
            assert_eq!(dequeue_count(&m), Some(3));
        }
    }

    #[test]
    fn http_request_query_forms() {
        let a: HttpTriggerRequest = serde_json::from_str(r#"{"Query":{"x":"1"},"Method":"GET"}"#).unwrap();
        let b: HttpTriggerRequest = serde_json::from_str(r#"{"Query":"{\"x\":\"1\"}"}"#).unwrap();
        assert_eq!(a.query, b.query);
    }
}
