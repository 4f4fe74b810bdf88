//! The entity format (OData JSON with type annotations), `$filter` building, and the
//! cursor a query page hands back.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// One table entity: keys, ETag, and the other properties as OData JSON.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entity {
    /// PartitionKey.
    pub partition_key: String,
    /// RowKey.
    pub row_key: String,
    /// The ETag the service gave this version, for If-Match.
    pub etag: Option<String>,
    /// Other properties (type annotations included, e.g. `Size@odata.type`).
    pub props: Map<String, Value>,
}

/// An OData `$filter` of comparisons joined by `and`, each string value quoted here and
/// nowhere else (a `'` in a bucket name or key doubles, as OData requires).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter(String);

impl Filter {
    /// `prop eq 'value'` as the first comparison.
    pub fn eq(prop: &str, value: &str) -> Self {
        Filter::default().and(prop, "eq", value)
    }

    /// Adds `prop op 'value'` (`op` one of `eq`, `ne`, `ge`, `gt`, `le`, `lt`).
    pub fn and(mut self, prop: &str, op: &str, value: &str) -> Self {
        debug_assert!(matches!(op, "eq" | "ne" | "ge" | "gt" | "le" | "lt"), "{op}");
        if !self.0.is_empty() {
            self.0.push_str(" and ");
        }
        self.0.push_str(&format!("{prop} {op} {}", literal(value)));
        self
    }

    /// The expression.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `value` as an OData string literal: quoted, an inner quote doubled. The one place a
/// value is quoted, for filters and entity addresses alike.
pub(super) fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Whether `stored` has every property of `sent` with the same value (the service adds
/// `Timestamp` and may drop type annotations it does not need).
pub(super) fn holds_all(stored: &Entity, sent: &Entity) -> bool {
    sent.props
        .iter()
        .filter(|(k, _)| !k.ends_with("@odata.type"))
        .all(|(k, v)| stored.props.get(k) == Some(v))
}

impl Entity {
    /// A new entity with no properties.
    pub fn new(partition_key: impl Into<String>, row_key: impl Into<String>) -> Self {
        Entity {
            partition_key: partition_key.into(),
            row_key: row_key.into(),
            ..Default::default()
        }
    }

    /// Sets a string property.
    pub fn set_str(&mut self, name: &str, v: impl Into<String>) -> &mut Self {
        self.props.insert(name.into(), Value::String(v.into()));
        self
    }

    /// Sets an Edm.Int64 property (sent as a string with its type annotation).
    pub fn set_i64(&mut self, name: &str, v: i64) -> &mut Self {
        self.props
            .insert(format!("{name}@odata.type"), Value::String("Edm.Int64".into()));
        self.props.insert(name.into(), Value::String(v.to_string()));
        self
    }

    /// A string property.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.props.get(name).and_then(Value::as_str)
    }

    /// An integer property, whether stored as Edm.Int64 (string) or Edm.Int32 (number).
    pub fn get_i64(&self, name: &str) -> Option<i64> {
        match self.props.get(name)? {
            Value::String(s) => s.parse().ok(),
            Value::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    pub(super) fn to_json(&self) -> Value {
        let mut m = self.props.clone();
        m.insert("PartitionKey".into(), Value::String(self.partition_key.clone()));
        m.insert("RowKey".into(), Value::String(self.row_key.clone()));
        Value::Object(m)
    }

    pub(super) fn from_json(mut m: Map<String, Value>, etag: Option<String>) -> Result<Self> {
        let take = |m: &mut Map<String, Value>, k: &str| match m.remove(k) {
            Some(Value::String(s)) => Ok(s),
            _ => Err(Error::internal(format!("table entity without {k}"))),
        };
        let partition_key = take(&mut m, "PartitionKey")?;
        let row_key = take(&mut m, "RowKey")?;
        let etag = etag.or_else(|| m.get("odata.etag").and_then(Value::as_str).map(str::to_string));
        m.retain(|k, _| !k.starts_with("odata.") && k != "Timestamp" && k != "Timestamp@odata.type");
        Ok(Entity {
            partition_key,
            row_key,
            etag,
            props: m,
        })
    }
}

/// Where a query stopped, to pass back for the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuation {
    pub(super) next_partition_key: String,
    pub(super) next_row_key: Option<String>,
}

impl Continuation {
    /// An opaque cursor for an API caller to send back (URL-safe base64).
    pub fn encode(&self) -> String {
        use base64::Engine;
        let raw = format!(
            "{}\n{}",
            self.next_partition_key,
            self.next_row_key.as_deref().unwrap_or("")
        );
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// A cursor from [`Self::encode`]; `None` for anything else.
    pub fn decode(cursor: &str) -> Option<Self> {
        use base64::Engine;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (pk, rk) = raw.split_once('\n')?;
        if pk.is_empty() {
            return None;
        }
        Some(Continuation {
            next_partition_key: pk.to_string(),
            next_row_key: (!rk.is_empty()).then(|| rk.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_json_round_trip() {
        let mut e = Entity::new("b:0a", "ff");
        e.set_str("Key", "a/b").set_i64("Size", 1 << 40);
        let j = e.to_json();
        assert_eq!(j["Size@odata.type"], "Edm.Int64");
        let mut m = j.as_object().unwrap().clone();
        m.insert("odata.etag".into(), "W/\"x\"".into());
        m.insert("Timestamp".into(), "2020".into());
        let back = Entity::from_json(m, None).unwrap();
        assert_eq!(back.get_i64("Size"), Some(1 << 40));
        assert_eq!(back.get_str("Key"), Some("a/b"));
        assert_eq!(back.etag.as_deref(), Some("W/\"x\""));
        assert!(!back.props.contains_key("Timestamp"));
    }

    #[test]
    fn filters_quote_every_value_once() {
        let f = Filter::eq("PartitionKey", "it's")
            .and("RowKey", "ge", "k61")
            .and("Outcome", "eq", "failed");
        assert_eq!(
            f.as_str(),
            "PartitionKey eq 'it''s' and RowKey ge 'k61' and Outcome eq 'failed'"
        );
    }
}
