//! The Functions layout matches the binary: every `functions/<Name>/function.json` is a
//! route the handler serves, its trigger binding is the one the handler reads, and
//! host.json starts the binary as a custom handler.

use std::path::Path;

use serde_json::Value;

use crate::harness::handler::HandlerProc;
use crate::harness::TestCtx;

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()))
}

#[tokio::test]
async fn function_json_files_match_routes_and_bindings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let host = read_json(&root.join("host.json"));
    assert_eq!(host["version"], "2.0");
    assert_eq!(
        host["customHandler"]["description"]["defaultExecutablePath"],
        "s3-blob-sync"
    );
    assert_eq!(host["customHandler"]["description"]["arguments"][0], "serve");
    let max_dequeue = host["extensions"]["queues"]["maxDequeueCount"].as_u64().unwrap();
    assert_eq!(max_dequeue, 5, "keep equal to SYNC_MAX_DEQUEUE_COUNT's default");

    let ctx = TestCtx::new("layout").await;
    let h = HandlerProc::start(&ctx.env).await;
    let mut seen = 0;
    for entry in std::fs::read_dir(root.join("functions")).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_str().unwrap().to_string();
        let f = read_json(&dir.join("function.json"));
        let trigger = f["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["direction"] == "in")
            .unwrap();
        let siblings = s3_blob_sync::functions::COPY_SIBLINGS;
        assert!(
            s3_blob_sync::functions::FUNCTIONS.contains(&name.as_str()) || siblings.contains(&name.as_str()),
            "functions/{name} has no handler route"
        );
        let bindings = f["bindings"].as_array().unwrap();
        match trigger["type"].as_str().unwrap() {
            "queueTrigger" => {
                // `CopyObjectK` takes the K-th copy queue, as `QueueConfig::copy_names` names it.
                let copies = s3_blob_sync::config::Config::from(&std::collections::HashMap::from([
                    (
                        "AZURE_STORAGE_CONNECTION_STRING".to_string(),
                        "UseDevelopmentStorage=true".to_string(),
                    ),
                    ("SYNC_COPY_QUEUES".to_string(), "16".to_string()),
                ]))
                .unwrap()
                .queues
                .copy_names();
                let (binding, queue) = match name.as_str() {
                    "ListPage" => (s3_blob_sync::functions::list_page::BINDING, "list-pages".to_string()),
                    "CopyObject" => (s3_blob_sync::functions::copy_object::BINDING, copies[0].clone()),
                    copy if copy.starts_with("CopyObject") => {
                        let k: usize = copy["CopyObject".len()..].parse().unwrap();
                        (s3_blob_sync::functions::copy_object::BINDING, copies[k].clone())
                    }
                    other => panic!("unexpected queue function {other}"),
                };
                assert_eq!(trigger["name"], binding, "{name}");
                assert_eq!(trigger["queueName"], queue, "{name}: keep equal to the config default");
                assert_eq!(trigger["connection"], "WorkQueue", "{name}");
            }
            "httpTrigger" => {
                assert_eq!(trigger["name"], s3_blob_sync::functions::http::BINDING, "{name}");
                let out = bindings.iter().find(|b| b["direction"] == "out").expect("http output");
                assert_eq!(out["type"], "http");
                assert_eq!(out["name"], s3_blob_sync::functions::http::OUTPUT, "{name}");
                let route = trigger["route"].as_str().unwrap();
                let expected = match name.as_str() {
                    "StartRun" => ("runs", "post"),
                    "ListRuns" => ("runs", "get"),
                    "GetRun" => ("runs/{id}", "get"),
                    "GetRunReport" => ("runs/{id}/report", "get"),
                    "CancelRun" => ("runs/{id}/cancel", "post"),
                    "Verify" => ("verify", "post"),
                    "Cutover" => ("cutover", "get"),
                    "Dashboard" => ("dashboard", "get"),
                    "DashboardData" => ("dashboard/data", "get"),
                    "OpenApi" => ("openapi.json", "get"),
                    other => panic!("unexpected http function {other}"),
                };
                assert_eq!((route, trigger["methods"][0].as_str().unwrap()), expected, "{name}");
            }
            "timerTrigger" => {}
            other => panic!("{name}: unexpected trigger {other}"),
        }
        // The route exists: an empty payload is refused with a clear error, not a 404 (a
        // timer with nothing configured says so and succeeds).
        let (status, body) = h.invoke(&name, &serde_json::json!({"Data": {}, "Metadata": {}})).await;
        assert_ne!(status, 404, "{name} is not served");
        if name == "ScheduledRun" {
            assert_eq!(
                (status, &body["ReturnValue"]["started"]),
                (200, &serde_json::json!(false)),
                "{body}"
            );
        } else {
            assert!(status >= 400, "{name}: {body}");
            let error = body["ReturnValue"]["error"].as_str().unwrap_or_default();
            assert!(!error.is_empty(), "{name}: {body}");
        }
        seen += 1;
    }
    assert_eq!(
        seen,
        s3_blob_sync::functions::FUNCTIONS.len() + s3_blob_sync::functions::COPY_SIBLINGS.len(),
        "a function has no function.json"
    );
    // One function per copy queue the configuration allows.
    assert_eq!(
        s3_blob_sync::functions::COPY_SIBLINGS.len() + 1,
        s3_blob_sync::config::MAX_COPY_QUEUES as usize
    );
    let (status, _) = h.invoke("NoSuchFunction", &serde_json::json!({})).await;
    assert_eq!(status, 404);
    ctx.cleanup().await;
}

/// The Logic App starts a run on the route StartRun serves, with a body StartRun accepts,
/// keeps the HTTP action's asynchronous polling on, and notifies on success and failure.
#[test]
fn logic_app_workflow_uses_the_real_run_api() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let wf = read_json(&root.join("infra/logic-app/workflow.json"));
    let host = read_json(&root.join("host.json"));
    let start_fn = read_json(&root.join("functions/StartRun/function.json"));
    let trigger = &start_fn["bindings"][0];
    let route = format!(
        "/{}/{}",
        host["extensions"]["http"]["routePrefix"].as_str().unwrap(),
        trigger["route"].as_str().unwrap()
    );
    assert_eq!(route, "/api/runs");

    let actions = wf["actions"].as_object().expect("workflow actions");
    let http: Vec<(&String, &Value)> = actions.iter().filter(|(_, a)| a["type"] == "Http").collect();
    let (name, start) = http
        .iter()
        .find(|(_, a)| a["inputs"]["uri"].as_str().unwrap_or("").contains(&route))
        .unwrap_or_else(|| panic!("no Http action calls {route}"));
    assert_eq!(
        start["inputs"]["method"].as_str().unwrap().to_ascii_lowercase(),
        trigger["methods"][0].as_str().unwrap(),
        "{name}: method"
    );
    assert_ne!(
        start["operationOptions"], "DisableAsyncPattern",
        "{name} must follow the 202 polling"
    );

    // The body, with the workflow's parameters filled in, is a run StartRun accepts.
    let mut body = start["inputs"]["body"].to_string();
    for (p, v) in [
        ("bucket", "src-bucket"),
        ("prefix", "data/"),
        ("container", "migrated"),
        ("targetPrefix", ""),
    ] {
        body = body.replace(&format!("@{{parameters('{p}')}}"), v);
    }
    assert!(!body.contains("@{"), "unfilled expression in {body}");
    let cfg = s3_blob_sync::config::Config::from(&crate::harness::stack_env().clone()).unwrap();
    let (spec, _) = s3_blob_sync::messages::run_spec::RunSpec::parse(&body, "workflow body", &cfg).unwrap();
    assert_eq!(spec.source.bucket, "src-bucket");

    // The summary is posted whether the run succeeded or failed.
    let notify = actions
        .values()
        .find(|a| a["runAfter"].get(name.as_str()).is_some())
        .expect("an action after the run");
    let after: Vec<&str> = notify["runAfter"][name.as_str()]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(after.contains(&"Succeeded") && after.contains(&"Failed"), "{after:?}");
}

/// `scripts/package` lays the zip out as the Functions host expects, keeps the executable
/// bit, and the binary inside serves the invoke protocol.
#[tokio::test]
async fn package_zip_has_the_host_layout_and_its_binary_serves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(root.join("scripts/package"))
        .args(["--binary", env!("CARGO_BIN_EXE_s3-blob-sync")])
        .output()
        .expect("run scripts/package");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("glibc floor 2."), "{text}");
    let dir = tempfile::tempdir().unwrap();
    // Unpack with the modes stored in the zip, as the platform's zip deployment does.
    let unpack = std::process::Command::new("python3")
        .args([
            "-c",
            "import os,sys,zipfile\nz=zipfile.ZipFile(sys.argv[1])\nfor i in z.infolist():\n z.extract(i,sys.argv[2])\n m=i.external_attr>>16\n if m: os.chmod(os.path.join(sys.argv[2],i.filename),m&0o777)\nprint('\\n'.join(z.namelist()))",
        ])
        .arg(root.join("dist/s3-blob-sync.zip"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(unpack.status.success(), "{}", String::from_utf8_lossy(&unpack.stderr));
    let mut names: Vec<String> = String::from_utf8_lossy(&unpack.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    names.sort();
    let mut want = vec!["host.json".to_string(), "s3-blob-sync".to_string()];
    want.extend(
        s3_blob_sync::functions::FUNCTIONS
            .iter()
            .chain(&s3_blob_sync::functions::COPY_SIBLINGS)
            .map(|f| format!("{f}/function.json")),
    );
    want.sort();
    assert_eq!(names, want, "zip layout");
    use std::os::unix::fs::PermissionsExt;
    let exe = dir.path().join("s3-blob-sync");
    assert!(
        std::fs::metadata(&exe).unwrap().permissions().mode() & 0o111 != 0,
        "lost the executable bit"
    );
    let host = read_json(&dir.path().join("host.json"));
    assert_eq!(
        host["customHandler"]["description"]["defaultExecutablePath"],
        "s3-blob-sync"
    );

    let ctx = TestCtx::new("pkg").await;
    let h = HandlerProc::start_at(&exe, &ctx.env).await;
    let req = crate::harness::host::http_payload("GET", "/api/runs", serde_json::json!({}), None);
    let (status, _, body) = crate::harness::host::http_invoke(&h, "ListRuns", &req).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["runs"].as_array().unwrap().is_empty());
    ctx.cleanup().await;
}

/// Every variable the binary reads is in local.settings.sample.json, with a description.
#[test]
fn sample_settings_list_every_variable_the_binary_reads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sample = read_json(&root.join("local.settings.sample.json"));
    let mut read = std::collections::BTreeSet::new();
    let mut src = std::fs::read_to_string(root.join("src/azure/auth.rs")).unwrap();
    for f in std::fs::read_dir(root.join("src/config")).unwrap() {
        src.push_str(&std::fs::read_to_string(f.unwrap().path()).unwrap());
    }
    for part in src.split('"').skip(1).step_by(2) {
        let is_var = (part.starts_with("SYNC_") || part.starts_with("AZURE_STORAGE_") || part.starts_with("AWS_"))
            && part
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit());
        if is_var {
            read.insert(part.to_string());
        }
    }
    assert!(read.len() > 20, "{read:?}");
    for v in &read {
        // A name ending in `_` is a prefix (SYNC_WEBHOOK_<NAME>): one example stands for it.
        let v = match v.ends_with('_') {
            true => sample["Values"]
                .as_object()
                .unwrap()
                .keys()
                .find(|k| k.starts_with(v.as_str()))
                .unwrap_or_else(|| panic!("no {v}<NAME> example in local.settings.sample.json")),
            false => v,
        };
        assert!(
            sample["Values"].get(v).is_some(),
            "{v} is read but missing from local.settings.sample.json"
        );
        assert!(
            sample["_comments"][v].as_str().is_some_and(|c| c.len() > 10),
            "{v} has no description in _comments"
        );
    }
}

/// The cutover workflow asks the route `Cutover` serves, with the query the gate reads, until
/// the answer's `ready` holds, and posts the answer however the wait ended.
#[test]
fn cutover_workflow_waits_on_the_real_gate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let wf = read_json(&root.join("infra/logic-app/cutover-workflow.json"));
    let host = read_json(&root.join("host.json"));
    let f = read_json(&root.join("functions/Cutover/function.json"));
    let route = format!(
        "/{}/{}",
        host["extensions"]["http"]["routePrefix"].as_str().unwrap(),
        f["bindings"][0]["route"].as_str().unwrap()
    );
    let until = &wf["actions"]["Wait_until_ready"];
    assert_eq!(until["type"], "Until");
    assert!(until["expression"].as_str().unwrap().contains("['ready']"), "{until}");
    let ask = &until["actions"]["Check_cutover"];
    let uri = ask["inputs"]["uri"].as_str().unwrap();
    assert!(
        uri.contains(&format!("{route}?bucket=")) && uri.contains("&container="),
        "{uri}"
    );
    // The gate is asked about the workflow's own prefix pair, not the events' default.
    assert!(
        uri.contains("&sourcePrefix=@{encodeUriComponent(parameters('prefix'))}")
            && uri.contains("&targetPrefix=@{encodeUriComponent(parameters('targetPrefix'))}"),
        "{uri}"
    );
    assert_eq!(
        ask["inputs"]["method"].as_str().unwrap().to_ascii_lowercase(),
        f["bindings"][0]["methods"][0].as_str().unwrap()
    );
    let after: Vec<&str> = wf["actions"]["Notify_when_configured"]["runAfter"]["Wait_until_ready"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(after.contains(&"TimedOut") && after.contains(&"Succeeded"), "{after:?}");
    // The module passes the same parameters to both workflows; each must declare them.
    let run_wf = read_json(&root.join("infra/logic-app/workflow.json"));
    let names = |w: &Value| -> Vec<String> { w["parameters"].as_object().unwrap().keys().cloned().collect() };
    assert_eq!(names(&wf), names(&run_wf));
}

/// Every log alert in `infra/azure/main.bicep` filters on an `outcome` the code emits, so an
/// alert cannot wait for an event that was renamed away.
#[test]
fn every_alert_watches_an_outcome_the_code_emits() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bicep = std::fs::read_to_string(root.join("infra/azure/main.bicep")).unwrap();
    let mut src = String::new();
    for f in crate::harness::rust_files(&root.join("src")) {
        src.push_str(&std::fs::read_to_string(f).unwrap());
    }
    let watched: Vec<&str> = bicep
        .split("outcome == \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(watched.len() >= 6, "{watched:?}");
    for o in watched {
        // A tracing field, or an event of `internal_events` (`object_event!(…, outcome: …)`).
        assert!(
            src.contains(&format!("outcome = \"{o}\"")) || src.contains(&format!("outcome: \"{o}\",")),
            "the alert on outcome `{o}` watches for an event the code never emits"
        );
    }
}
