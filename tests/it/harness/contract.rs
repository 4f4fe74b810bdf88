//! The HTTP API's contract (`api/openapi.json`) for the tests: responses are checked against
//! its schemas.

use serde_json::{json, Value};

/// The document, as the binary builds it in.
pub fn document() -> Value {
    serde_json::from_str(s3_blob_sync::functions::http::OPENAPI).expect("api/openapi.json is JSON")
}

/// Fails unless `value` matches the document's schema `name` (`#/components/schemas/name`),
/// naming each place where it does not.
pub fn assert_schema(name: &str, value: &Value) {
    let doc = document();
    assert!(
        doc["components"]["schemas"].get(name).is_some(),
        "no schema {name} in api/openapi.json"
    );
    let root = json!({"$ref": format!("#/components/schemas/{name}"), "components": doc["components"]});
    let v = jsonschema::validator_for(&root).expect("the schema compiles");
    let errors: Vec<String> = v
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:?}\n{value}");
}
