//! The HTTP API's contract, `api/openapi.json`: every `/api/*` route the router serves is in
//! it with its methods, nothing else is, `serve` answers it, and responses the other tests
//! receive are checked against its schemas (`harness::contract::assert_schema`).

use std::path::Path;

use serde_json::{json, Value};

use crate::harness::contract::{assert_schema, document};
use crate::harness::handler::HandlerProc;
use crate::harness::host::{http_invoke, http_payload};
use crate::harness::TestCtx;

/// `(path, method)` pairs the router serves under `/api/`, read from its source.
fn served() -> Vec<(String, String)> {
    let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/functions/mod.rs")).unwrap();
    let mut out = Vec::new();
    for part in src.split(".route(\"").skip(1) {
        let Some((path, rest)) = part.split_once('"') else {
            continue;
        };
        if !path.starts_with("/api/") {
            continue;
        }
        let call = rest.split(")\n").next().unwrap_or_default();
        for m in ["get", "post", "put", "delete", "patch"] {
            if call.contains(&format!("{m}(")) {
                out.push((path.to_string(), m.to_string()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_api_route_is_in_the_contract_and_nothing_else_is() {
    let doc = document();
    let served = served();
    assert!(served.len() >= 10, "{served:?}");
    let mut documented = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for m in ops.as_object().unwrap().keys() {
            documented.push((path.clone(), m.clone()));
            assert!(
                ops[m]["operationId"].is_string() && ops[m]["responses"].is_object(),
                "{m} {path}: needs an operationId and responses"
            );
        }
    }
    documented.sort();
    assert_eq!(served, documented, "the router's /api routes against api/openapi.json");
    // Each operation is named as its function is, so the Functions layout and the contract
    // agree.
    for (path, m) in &documented {
        let id = doc["paths"][path][m]["operationId"].as_str().unwrap();
        assert!(
            s3_blob_sync::functions::FUNCTIONS.contains(&id),
            "{m} {path}: operationId {id} is no function"
        );
    }
    // The schemas the responses name exist, and every schema compiles.
    for name in doc["components"]["schemas"].as_object().unwrap().keys() {
        let root = json!({"$ref": format!("#/components/schemas/{name}"), "components": doc["components"]});
        jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // The check can fail: a state the contract does not name is refused.
    let bad = std::panic::catch_unwind(|| {
        assert_schema(
            "RunList",
            &json!({"runs": [{"runId": "r", "state": "Sideways", "phase": "done"}]}),
        )
    });
    assert!(bad.is_err(), "a wrong state passed the schema");
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "$ref to missing {name}"
        );
    }
}

#[tokio::test]
async fn serve_answers_the_contract_and_its_refusals_match_it() {
    let ctx = TestCtx::new("contract").await;
    let h = HandlerProc::start(&ctx.env).await;
    let (status, _, doc) = http_invoke(
        &h,
        "OpenApi",
        &http_payload("GET", "/api/openapi.json", json!({}), None),
    )
    .await;
    assert_eq!((status, &doc), (200, &document()));
    let direct = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{}/api/openapi.json", h.port))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status().as_u16(), 200);
    let body: Value = serde_json::from_str(&direct.text().await.unwrap()).unwrap();
    assert_eq!(body["openapi"], "3.1.0");
    // Refusals are Error bodies that name what was wrong.
    let (status, _, e) = http_invoke(
        &h,
        "StartRun",
        &http_payload(
            "POST",
            "/api/runs",
            json!({}),
            Some(r#"{"source":{"bucket":"b-1"},"target":{}}"#),
        ),
    )
    .await;
    assert_eq!(status, 400, "{e}");
    assert_schema("Error", &e);
    assert!(e["error"].as_str().unwrap().contains("container"), "{e}");
    let (status, _, e) = http_invoke(
        &h,
        "GetRun",
        &http_payload(
            "GET",
            "/api/runs/20260101T000000Z-00000000",
            json!({"id": "20260101T000000Z-00000000"}),
            None,
        ),
    )
    .await;
    assert_eq!(status, 404, "{e}");
    assert_schema("Error", &e);
    let (status, _, list) = http_invoke(&h, "ListRuns", &http_payload("GET", "/api/runs", json!({}), None)).await;
    assert_eq!(status, 200);
    assert_schema("RunList", &list);
    ctx.cleanup().await;
}

/// schemathesis (installed pinned by `scripts/install-contract`) generates requests from the
/// document for every `/api/*` operation and checks each answer: no 5xx, a documented
/// status, and a body its schema accepts. The seed is fixed, so a failure replays.
#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let st = root.join(".tools/contract-venv/bin/st");
    assert!(
        st.exists(),
        "{} is missing: run scripts/install-contract (scripts/test does)",
        st.display()
    );
    let ctx = TestCtx::new("fuzz").await;
    let h = HandlerProc::start(&ctx.env).await;
    let out = tokio::process::Command::new(&st)
        .current_dir(std::env::temp_dir())
        .args([
            "run",
            root.join("api/openapi.json").to_str().unwrap(),
            "--url",
            &format!("http://127.0.0.1:{}", h.port),
            "--checks",
            "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance",
            "--max-examples",
            "15",
            "--workers",
            "1",
            "--seed",
            "20261207",
            "--no-color",
        ])
        .output()
        .await
        .expect("run schemathesis");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found failures:\n{text}");
    assert!(text.contains("Tested: 10"), "every operation was tried:\n{text}");
    ctx.cleanup().await;
}

/// The contract, and the Logic Apps custom connector made from it (`scripts/connector`,
/// Swagger 2.0), are valid documents of their versions; the connector is what the contract
/// gives today, and offers "Start run", "Start verify run" and "Wait for run".
#[test]
fn the_contract_and_its_logic_apps_connector_are_valid_and_agree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let validator = root.join(".tools/contract-venv/bin/openapi-spec-validator");
    assert!(validator.exists(), "run scripts/install-contract (scripts/test does)");
    let connector = root.join("infra/logic-app/connector/apiDefinition.swagger.json");
    for (file, version) in [(root.join("api/openapi.json"), "3.1.0"), (connector.clone(), "2.0")] {
        let out = std::process::Command::new(&validator)
            .args(["--schema", version])
            .arg(&file)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {text}", file.display());
    }
    let out = std::process::Command::new("python3")
        .arg(root.join("scripts/connector"))
        .arg("--check")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let c: Value = serde_json::from_str(&std::fs::read_to_string(&connector).unwrap()).unwrap();
    let summary = |path: &str, m: &str| c["paths"][path][m]["summary"].as_str().unwrap_or_default().to_string();
    assert_eq!(summary("/api/runs", "post"), "Start run");
    assert_eq!(summary("/api/verify", "post"), "Start verify run");
    assert_eq!(summary("/api/runs/{id}", "get"), "Wait for run");
    assert!(c["paths"]["/api/runs/{id}"]["get"]["responses"]["202"]["headers"]["Location"].is_object());
    assert_eq!(c["securityDefinitions"]["functionKey"]["name"], "x-functions-key");
}
