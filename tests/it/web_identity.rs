//! AWS credentials from an Azure managed identity: the binary fetches a token from the
//! managed-identity endpoint (faked on loopback by the documented App Service protocol:
//! `GET $IDENTITY_ENDPOINT?resource=…&api-version=2019-08-01` with `X-IDENTITY-HEADER`), and
//! exchanges it with moto's STS (`AssumeRoleWithWebIdentity`). No AWS key is configured.

use serde_json::{json, Value};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::handler::run_binary_async;
use crate::harness::proxy::Proxy;
use crate::harness::tls::{upstream_of, TestCa, TlsFront};
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

/// In a container on ECS (Fargate) the SDK's default chain takes the task role's credentials
/// from the container credentials endpoint: `AWS_CONTAINER_CREDENTIALS_FULL_URI` on loopback
/// here, with its authorization token, as the ECS agent serves them. The first set expires
/// 15 s after it is handed out; a copy that runs past that must sign with the next set, and
/// never with the first again (azcopy's #3487). The S3 proxy records which key signed each
/// request. No key, token or the endpoint's authorization reaches the output.
#[tokio::test]
async fn ecs_task_credentials_are_used_and_rotated_mid_run() {
    const AUTH: &str = "ecs-agent-auth-token-5e1f";
    const FIRST: (&str, &str, &str) = (
        "ASIAECSFIRSTKEY00001",
        "ecsFirstSecretKeyValue000000000000000001",
        "ECSTOKENFIRST0001",
    );
    const SECOND: (&str, &str, &str) = (
        "ASIAECSSECONDKEY0002",
        "ecsSecondSecretKeyValue00000000000000002",
        "ECSTOKENSECOND0002",
    );
    let ctx = TestCtx::new("ecscreds").await;
    let n = 30;
    ctx.put_many(
        (0..n)
            .map(|i| (format!("e/{i:03}"), format!("body {i}").into_bytes()))
            .collect(),
    )
    .await;
    let agent = MockServer::start().await;
    let creds = |(key, secret, token): (&str, &str, &str), valid_s: i64| {
        let until = time::OffsetDateTime::now_utc() + time::Duration::seconds(valid_s);
        ResponseTemplate::new(200).set_body_json(json!({
            "AccessKeyId": key, "SecretAccessKey": secret, "Token": token,
            "Expiration": until.format(&time::format_description::well_known::Rfc3339).unwrap(),
            "RoleArn": "arn:aws:iam::123456789012:role/s3-blob-sync-task",
        }))
    };
    // The first call gets the short-lived set; every later one the next.
    Mock::given(method("GET"))
        .and(path("/v2/credentials/task"))
        .and(header("authorization", AUTH))
        .respond_with(creds(FIRST, 15))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&agent)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/credentials/task"))
        .and(header("authorization", AUTH))
        .respond_with(creds(SECOND, 3600))
        .with_priority(2)
        .mount(&agent)
        .await;
    let s3 = Proxy::start(&ctx.env["AWS_ENDPOINT_URL"]).await;
    // A slow S3, so the copy outlives the first set.
    s3.faults().delay_ms.store(400, std::sync::atomic::Ordering::SeqCst);
    let mut env = ctx.env_with(&[
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            &format!("{}/v2/credentials/task", agent.uri()),
        ),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN", AUTH),
        ("AWS_ENDPOINT_URL", &s3.url),
    ]);
    env.remove("AWS_ACCESS_KEY_ID");
    env.remove("AWS_SECRET_ACCESS_KEY");
    env.remove("AWS_SESSION_TOKEN");
    let src = format!("s3://{}/e/", ctx.bucket);
    let dst = format!("http://127.0.0.1:10000/devstoreaccount1/{}/", ctx.container);
    let (code, out) = run_binary_async(
        &["copy", &src, &dst, "--concurrency", "1", "--no-progress", "--json"],
        &env,
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let summary: Value = serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(summary["counters"]["transferred"], n, "{summary}");
    // Which key signed each S3 request, in order: the first set, then only the second.
    let signers = s3.stats().signers.lock().unwrap().clone();
    let first_of_second = signers.iter().position(|k| k == SECOND.0);
    assert!(signers.first().map(String::as_str) == Some(FIRST.0), "{signers:?}");
    let Some(at) = first_of_second else {
        panic!("the rotated key never signed ({} requests): {signers:?}", signers.len())
    };
    assert!(
        signers[at..].iter().all(|k| k == SECOND.0),
        "the expired key signed after the rotation: {signers:?}"
    );
    assert!(signers.iter().all(|k| k == FIRST.0 || k == SECOND.0), "{signers:?}");
    let tokens = s3.credentials("x-amz-security-token");
    assert!(
        tokens.contains(&FIRST.2.to_string()) && tokens.contains(&SECOND.2.to_string()),
        "{tokens:?}"
    );
    for secret in [AUTH, FIRST.1, FIRST.2, SECOND.1, SECOND.2] {
        assert!(!out.contains(secret), "{secret} reached the output");
    }
    ctx.cleanup().await;
}

/// Azure with a client secret from the environment, as ECS `secrets` or Container Apps
/// secrets inject it: no file, no wrapper. Azurite takes no Entra token over http, so the
/// run is followed up to the token request, made over https to a stand-in of the Entra token
/// endpoint behind a TLS front signed by a test CA.
#[tokio::test]
async fn a_client_secret_from_the_environment_gets_a_token_over_https_and_is_never_printed() {
    const SECRET: &str = "cs-secret-Q9x7vLr2mT5wZ8kP";
    const ISSUED: &str = "eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJzdG9yYWdlIn0.ISSUEDTOKENSIG";
    let ctx = TestCtx::new("csec").await;
    ctx.put("w/a.txt", "hello").await;
    let entra = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/tenant-1/oauth2/v2.0/token"))
        .and(wiremock::matchers::body_string_contains(format!(
            "client_secret={SECRET}"
        )))
        .and(wiremock::matchers::body_string_contains("client_id=app-1"))
        .and(wiremock::matchers::body_string_contains(
            "grant_type=client_credentials",
        ))
        .and(wiremock::matchers::body_string_contains("storage.azure.com"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600, "access_token": ISSUED
        })))
        .mount(&entra)
        .await;
    let ca = TestCa::new();
    let front = TlsFront::start(&ca, &["localhost"], upstream_of(&entra.uri())).await;
    let mut env = ctx.env_with(&[
        ("AZURE_STORAGE_ACCOUNT", "stsyncsecret"),
        ("AZURE_TENANT_ID", "tenant-1"),
        ("AZURE_CLIENT_ID", "app-1"),
        ("AZURE_CLIENT_SECRET", SECRET),
        ("AZURE_AUTHORITY_HOST", &format!("https://localhost:{}", front.port)),
    ]);
    env.remove("AZURE_STORAGE_CONNECTION_STRING");
    let src = format!("s3://{}/w/", ctx.bucket);
    let dst = "https://stsyncsecret.blob.core.windows.net/mirror/";
    let args = ["copy", &src, dst, "--no-progress"];

    // Without the test CA in the trust store the handshake fails: the endpoint really is
    // https, and nothing reaches it.
    let (code, out) = run_binary_async(&args, &env).await;
    assert_ne!(code, 0, "{out}");
    assert!(entra.received_requests().await.unwrap().is_empty(), "{out}");
    assert!(
        out.contains("no Azure credential worked") && out.contains("client secret"),
        "the error names the credential tried: {out}"
    );

    env.insert("SSL_CERT_FILE".into(), ca.file.display().to_string());
    let (code, out) = run_binary_async(&args, &env).await;
    // The storage account itself is not reachable here; the token was issued first.
    assert_ne!(code, 0, "{out}");
    let asked = entra.received_requests().await.unwrap();
    assert!(!asked.is_empty(), "no token request: {out}");
    assert!(
        asked.iter().all(|r| r.url.path() == "/tenant-1/oauth2/v2.0/token"),
        "{asked:?}"
    );
    // What failed is the storage endpoint, after the token: this sandbox resolves no
    // `*.core.windows.net`.
    assert!(
        out.contains("dns error") && !out.contains("no Azure credential worked"),
        "{out}"
    );
    for secret in [SECRET, ISSUED, "ISSUEDTOKENSIG"] {
        assert!(!out.contains(secret), "{secret} leaked: {out}");
    }
}

/// A user-assigned identity (Container Apps, App Service): `AZURE_CLIENT_ID` without a
/// secret names which of the app's identities asks for the token.
#[tokio::test]
async fn azure_client_id_without_a_secret_picks_the_user_assigned_identity() {
    let ctx = TestCtx::new("uami").await;
    ctx.put("w/a.txt", "hello").await;
    let mi = MockServer::start().await;
    let expires = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    Mock::given(method("GET"))
        .and(path("/msi/token"))
        .and(query_param("resource", AUDIENCE))
        .and(query_param("client_id", "uami-client-1"))
        .and(header("x-identity-header", HEADER_SECRET))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": TOKEN, "expires_on": expires.to_string(), "resource": AUDIENCE, "token_type": "Bearer"
        })))
        .expect(1)
        .mount(&mi)
        .await;
    let mut env = env_for(&ctx, &mi, &ctx.env["AWS_ENDPOINT_URL"]);
    env.insert("AZURE_CLIENT_ID".into(), "uami-client-1".into());
    let dst = format!("http://127.0.0.1:10000/devstoreaccount1/{}/", ctx.container);
    let src = format!("s3://{}/w/", ctx.bucket);
    let (code, out) = run_binary_async(&["copy", &src, &dst, "--no-progress"], &env).await;
    assert_eq!(code, 0, "{out}");
    mi.verify().await;
    ctx.cleanup().await;
}
