//! AWS credentials from an Azure managed identity: the binary fetches a token from the
//! managed-identity endpoint (faked on loopback by the documented App Service protocol:
//! `GET $IDENTITY_ENDPOINT?resource=…&api-version=2019-08-01` with `X-IDENTITY-HEADER`), and
//! exchanges it with moto's STS (`AssumeRoleWithWebIdentity`). No AWS key is configured.

use serde_json::{json, Value};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::handler::run_binary_async;
use crate::harness::proxy::Proxy;
use crate::harness::TestCtx;

const AUDIENCE: &str = "api://s3-blob-sync-test";
const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJhcGk6Ly9zMy1ibG9iLXN5bmMtdGVzdCJ9.TOKENSIGNATURESECRET";
const HEADER_SECRET: &str = "hdr-secret-value-7f3a";

fn env_for(ctx: &TestCtx, mi: &MockServer, aws_endpoint: &str) -> std::collections::HashMap<String, String> {
    let mut env = ctx.env_with(&[
        ("SYNC_AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/s3-blob-sync"),
        ("SYNC_AWS_TOKEN_AUDIENCE", AUDIENCE),
        ("IDENTITY_ENDPOINT", &format!("{}/msi/token", mi.uri())),
        ("IDENTITY_HEADER", HEADER_SECRET),
        ("AWS_ENDPOINT_URL", aws_endpoint),
    ]);
    env.remove("AWS_ACCESS_KEY_ID");
    env.remove("AWS_SECRET_ACCESS_KEY");
    env
}

#[tokio::test]
async fn managed_identity_token_becomes_aws_credentials() {
    let ctx = TestCtx::new("wid").await;
    ctx.put("w/a.txt", "hello").await;
    ctx.put("w/b.txt", "world").await;
    let mi = MockServer::start().await;
    let expires = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    Mock::given(method("GET"))
        .and(path("/msi/token"))
        .and(query_param("resource", AUDIENCE))
        .and(header("x-identity-header", HEADER_SECRET))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": TOKEN, "expires_on": expires.to_string(), "resource": AUDIENCE, "token_type": "Bearer"
        })))
        .expect(1) // cached with the temporary credentials, not fetched per request
        .mount(&mi)
        .await;
    let moto = Proxy::start(&ctx.env["AWS_ENDPOINT_URL"]).await;
    // STS answers 503 three times first: the crate's one retry policy rides it out (the
    // SDK's own three attempts, used before, gave up on the third).
    moto.faults().storm.store(3, std::sync::atomic::Ordering::SeqCst);
    let env = env_for(&ctx, &mi, &moto.url);
    let dst = format!("http://127.0.0.1:10000/devstoreaccount1/{}/", ctx.container);
    let src = format!("s3://{}/w/", ctx.bucket);
    let (code, out) = run_binary_async(&["copy", &src, &dst, "--json", "--no-progress"], &env).await;
    assert_eq!(code, 0, "{out}");
    let summary: Value = serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(summary["counters"]["transferred"], 2, "{summary}");
    // Every signed S3 request used the key STS issued; nothing else was configured.
    // The storm met the STS call: nothing is signed before credentials exist.
    assert_eq!(moto.faults().storm.load(std::sync::atomic::Ordering::SeqCst), 0);
    let signed = moto.count(" akid=");
    assert!(signed >= 3, "signed requests: {signed}");
    assert_eq!(moto.count(" akid=testing"), 0);
    mi.verify().await;
    for secret in ["TOKENSIGNATURESECRET", HEADER_SECRET] {
        assert!(!out.contains(secret), "{secret} leaked: {out}");
    }
    ctx.cleanup().await;
}

#[tokio::test]
async fn a_refused_token_request_is_a_clear_error_without_secrets() {
    let ctx = TestCtx::new("widbad").await;
    ctx.put("w/a.txt", "hello").await;
    let mi = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/msi/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_resource", "error_description": "AADSTS500011: resource principal not found"
        })))
        .mount(&mi)
        .await;
    let env = env_for(&ctx, &mi, &ctx.env["AWS_ENDPOINT_URL"].clone());
    let dst = format!("http://127.0.0.1:10000/devstoreaccount1/{}/", ctx.container);
    let (code, out) = run_binary_async(
        &["copy", &format!("s3://{}/w/", ctx.bucket), &dst, "--no-progress"],
        &env,
    )
    .await;
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("managed-identity token for audience `api://s3-blob-sync-test` failed"),
        "{out}"
    );
    assert!(!out.contains(HEADER_SECRET), "{out}");

    // A role without an audience is refused at start-up, naming the variable.
    let mut env2 = env.clone();
    env2.remove("SYNC_AWS_TOKEN_AUDIENCE");
    let (code, out) = run_binary_async(&["copy", &format!("s3://{}/w/", ctx.bucket), &dst], &env2).await;
    assert_eq!(code, 2);
    assert!(
        out.contains("SYNC_AWS_TOKEN_AUDIENCE: must be set with SYNC_AWS_ROLE_ARN"),
        "{out}"
    );
    ctx.cleanup().await;
}
