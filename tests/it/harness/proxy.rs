//! A fault-injecting HTTP proxy on loopback, in two roles:
//!
//! 1. **In front of moto or Azurite**: forwards every request unchanged, except for the
//!    faults a test arms: a storm of 503s, connection resets (the socket is closed with no
//!    answer), a flipped byte in GET response bodies, or a GET body cut off halfway.
//! 2. **As a TEST DOUBLE for Azure's Put Blob From URL and Put Block From URL**, which
//!    Azurite cannot serve for external sources (it answers 501). Built from the Azure
//!    Storage REST documentation: a PUT carrying `x-ms-copy-source` makes the double GET the
//!    source URL itself (honouring `x-ms-source-range`, and
//!    `x-ms-source-if-match` as If-Match on that read: 412 `SourceConditionNotMet`), check `x-ms-source-content-md5`
//!    (400 `Md5Mismatch` on a difference), answer `CannotVerifyCopySource` with the source's
//!    status when the source cannot be read, and otherwise store the bytes in Azurite as a
//!    Put Blob (`x-ms-blob-type: BlockBlob`) or Put Block with the same content headers and
//!    metadata. So the bytes really travel S3 -> "Azure" without passing through the engine,
//!    and tests can assert the stored content. As Azure does for Put Block From URL, the
//!    answer carries `x-ms-content-crc64` of the bytes read: Azurite's Put Block computes it
//!    over the body the double forwards (no Content-MD5 is sent), so a corrupted read shows.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use md5::Digest;

/// Faults a test can arm; each counter is consumed one request at a time.
#[derive(Default)]
pub struct Faults {
    /// Answer this many requests with `storm_status` (default 503 ServerBusy).
    pub storm: AtomicU32,
    /// Status for the storm.
    pub storm_status: AtomicU32,
    /// Answer this many requests whose log line (`METHOD path?query`) contains the needle
    /// with 503 ServerBusy: one object's calls fail while everything else goes through.
    pub storm_to: Needle,
    /// Close this many connections without answering.
    pub resets: AtomicU32,
    /// Flip a byte in this many successful GET bodies (proxy role).
    pub corrupt_get: AtomicU32,
    /// Cut this many successful GET bodies off after half their bytes: the headers promise
    /// the whole length, then the connection drops (proxy role).
    pub cut_get: AtomicU32,
    /// Drop the `Range` header from this many GETs, so the upstream answers with the whole
    /// object instead of the range asked for (a server that ignores Range).
    pub ignore_range: AtomicU32,
    /// Flip a byte in this many PUT request bodies on their way upstream (proxy role):
    /// damage in transit that the service's transactional checksum must catch.
    pub corrupt_put: AtomicU32,
    /// Flip a byte in this many copy-source reads (double role): corruption in transit
    /// between S3 and Azure.
    pub corrupt_copy_source: AtomicU32,
    /// Answer every copy-from-URL with CannotVerifyCopySource, as Azure does when it cannot
    /// reach the source.
    pub copy_source_unreachable: AtomicBool,
    /// Delay every request by this many milliseconds (slow network).
    pub delay_ms: AtomicU64,
    /// Hold this many HEAD requests (blob Get Properties) before forwarding them, until the
    /// test calls [`Proxy::release`]: a slow reader, so another writer can act in between.
    pub hold_heads: AtomicU32,
    /// Hold this many copy-from-URL requests (double role) before the double reads the
    /// source, until [`Proxy::release`]: the source can change while "Azure" is about to read.
    pub hold_copies: AtomicU32,
    /// Hold this many writes (POST, PUT, MERGE, PATCH) before forwarding them, until
    /// [`Proxy::release`]: a writer that stalls just before its write lands.
    pub hold_writes: AtomicU32,
    /// Hold this many requests whose log line (`METHOD path?query`) contains the needle,
    /// until [`Proxy::release`]: one chosen request stalls while others go on.
    pub hold_to: Needle,
    /// Reset (before forwarding) this many writes (POST, PUT, MERGE, PATCH) whose path or
    /// body contains the needle: one entity's updates fail while everything else goes through
    /// (a transaction's body names its entities).
    pub reset_writes_to: Needle,
    /// Forward this many requests whose log line (`METHOD path?query`) or body contains the
    /// needle, then drop the reply: the request landed, the caller never hears so.
    pub drop_replies_to: Needle,
    /// Forward this many requests whose log line (`METHOD path?query`) contains the needle,
    /// then answer 500 OperationTimedOut: Azure's server timeout, after which the call may
    /// or may not have been applied (here it was).
    pub timeout_replies_to: Needle,
    /// Answer every request with 503 until this instant (ms since the epoch): an outage.
    pub outage_until_ms: AtomicU64,
    /// S3 as it answers for an INTELLIGENT_TIERING object in its Archive Access tier, for
    /// requests whose log line contains the needle (moto has no archive tiers): HEAD gains
    /// `x-amz-archive-status: ARCHIVE_ACCESS`, GET is refused with 403 InvalidObjectState.
    pub archived: Needle,
    /// Answer this many requests whose log line contains the needle with 400 InvalidRequest:
    /// a refusal that no retry can change.
    pub refuse_to: Needle,
    /// Answer writes that carry `x-ms-tags` with 403 AuthorizationPermissionMismatch, as
    /// Azure does for a SAS without `t` or an identity without the tags/write data action.
    /// A double of Azure's check, which Azurite does not make on writes (it makes it on Get
    /// Blob Tags only).
    pub forbid_tag_writes: AtomicBool,
}

/// What went through the proxy.
#[derive(Default)]
pub struct Stats {
    /// All requests, faults included.
    pub requests: AtomicU64,
    /// Copy-from-URL requests served by the double.
    pub copy_from_url: AtomicU64,
    /// Bytes the double read from copy sources.
    pub source_bytes: AtomicU64,
    /// Bytes of request bodies that came in (what the engine uploaded through us).
    pub uploaded_bytes: AtomicU64,
    /// `METHOD path?query` of each request, SAS values stripped.
    pub log: Mutex<Vec<String>>,
    /// The `Range` header of each GET that had one, in arrival order.
    pub ranges: Mutex<Vec<String>>,
    /// Put Block requests being served right now, and the most there ever were at once.
    pub puts_in_flight: AtomicU64,
    pub max_puts_in_flight: AtomicU64,
    /// Bytes of the response bodies the upstream answered with, counted before any fault
    /// cuts or flips them; the proxy's own error answers are not counted.
    pub replied_bytes: AtomicU64,
    /// Requests held by `hold_heads` so far.
    pub held: AtomicU64,
    /// Credentials that requests carried, raw, as `(what, value)`, each once:
    /// `x-amz-security-token` headers, `x-ms-copy-source` URLs, and the `WebIdentityToken`
    /// of STS form bodies. A secrets test proves with these that a secret really travelled
    /// before asserting that no output holds it.
    pub credentials: Mutex<std::collections::HashSet<(String, String)>>,
    /// The access key id each SigV4-signed request was signed with, in arrival order (the
    /// `Credential=` of its `Authorization` header): which key signed what, across a rotation.
    pub signers: Mutex<Vec<String>>,
}

/// Counts a Put Block as in flight until dropped.
struct InFlight<'a>(&'a Stats);

impl<'a> InFlight<'a> {
    fn enter(stats: &'a Stats) -> Self {
        let now = stats.puts_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        stats.max_puts_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(stats)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.puts_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

struct State {
    upstream: String,
    double: bool,
    faults: Faults,
    stats: Stats,
    client: reqwest::Client,
    /// Permits that let held requests go on.
    gate: tokio::sync::Semaphore,
}

/// A running proxy.
pub struct Proxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// A plain fault proxy in front of `upstream` (e.g. moto).
    pub async fn start(upstream: &str) -> Proxy {
        Self::spawn(upstream, false).await
    }

    /// The copy-from-URL test double in front of Azurite's blob endpoint.
    pub async fn blob_double() -> Proxy {
        Self::spawn("http://127.0.0.1:10000", true).await
    }

    async fn spawn(upstream: &str, double: bool) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(State {
            upstream: upstream.trim_end_matches('/').to_string(),
            double,
            faults: Faults::default(),
            stats: Stats::default(),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            gate: tokio::sync::Semaphore::new(0),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), req));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Proxy { url, state, task }
    }

    /// The faults to arm.
    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.state.stats
    }

    /// Arms a storm of `n` answers with `status` (503 ServerBusy, 500, ...).
    pub fn storm(&self, n: u32, status: u16) {
        self.state.faults.storm_status.store(status as u32, Ordering::SeqCst);
        self.state.faults.storm.store(n, Ordering::SeqCst);
    }

    /// Answers every request with 503 ServerBusy for `d` from now.
    pub fn outage(&self, d: std::time::Duration) {
        let until = now_ms() + d.as_millis() as u64;
        self.state.faults.outage_until_ms.store(until, Ordering::SeqCst);
    }

    /// Lets `n` held requests go on.
    pub fn release(&self, n: usize) {
        self.state.gate.add_permits(n);
    }

    /// Waits (at most 20 s) until `n` requests have been held.
    pub async fn until_held(&self, n: u64) {
        for _ in 0..400 {
            if self.state.stats.held.load(Ordering::SeqCst) >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("no request was held within 20 s");
    }

    /// Blob commits that went through: Put Block List, or a Put Blob (a PUT on a blob with
    /// no `comp=` or `restype=`), whichever way the engine wrote the content.
    pub fn commits(&self) -> usize {
        self.count_where(|l| {
            l.starts_with("PUT ") && (l.contains("comp=blocklist") || !(l.contains("comp=") || l.contains("restype=")))
        })
    }

    /// The distinct raw values of credential `what` (`x-amz-security-token`,
    /// `x-ms-copy-source`, `WebIdentityToken`) that requests carried.
    pub fn credentials(&self, what: &str) -> Vec<String> {
        let seen = self.state.stats.credentials.lock().unwrap();
        seen.iter().filter(|(w, _)| w == what).map(|(_, v)| v.clone()).collect()
    }

    /// Requests whose log line contains `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.count_where(|l| l.contains(needle))
    }

    fn count_where(&self, keep: impl Fn(&str) -> bool) -> usize {
        self.state.stats.log.lock().unwrap().iter().filter(|l| keep(l)).count()
    }
}

type Body = BoxBody<Bytes, std::io::Error>;
type Reply = Result<Response<Body>, std::io::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn take(c: &AtomicU32) -> bool {
    c.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

/// A fault aimed at the requests whose text contains a needle, for a number of uses.
#[derive(Default)]
pub struct Needle(Mutex<Option<(String, u32)>>);

impl Needle {
    /// Aims the fault at the next `n` requests that contain `needle`.
    pub fn arm(&self, needle: impl Into<String>, n: u32) {
        *self.0.lock().unwrap() = Some((needle.into(), n));
    }

    /// Stands the fault down.
    pub fn disarm(&self) {
        *self.0.lock().unwrap() = None;
    }

    /// The uses not yet spent (0 when disarmed).
    pub fn left(&self) -> u32 {
        self.0.lock().unwrap().as_ref().map_or(0, |(_, n)| *n)
    }

    /// Consumes one use when any of `texts` contains the needle.
    fn take(&self, texts: &[&str]) -> bool {
        match self.0.lock().unwrap().as_mut() {
            Some((needle, n)) if *n > 0 && texts.iter().any(|t| t.contains(needle.as_str())) => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

fn azure_error(status: u16, code: &str, extra: &[(&str, String)]) -> Response<Body> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{code} (test double)</Message></Error>"
    );
    let mut b = Response::builder()
        .status(status)
        .header("x-ms-error-code", code)
        .header("content-type", "application/xml");
    for (k, v) in extra {
        b = b.header(*k, v.as_str());
    }
    b.body(full(body)).unwrap()
}

/// Keeps the credentials a request carried (see [`Stats::credentials`]).
fn record_credentials(stats: &Stats, parts: &hyper::http::request::Parts, body: &[u8]) {
    let signer = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').next());
    if let Some(key) = signer {
        stats.signers.lock().unwrap().push(key.to_string());
    }
    let mut seen = stats.credentials.lock().unwrap();
    for h in ["x-amz-security-token", "x-ms-copy-source"] {
        if let Some(v) = parts.headers.get(h).and_then(|v| v.to_str().ok()) {
            seen.insert((h.to_string(), v.to_string()));
        }
    }
    let form = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if form {
        for (k, v) in url::form_urlencoded::parse(body) {
            if k == "WebIdentityToken" {
                seen.insert((k.into_owned(), v.into_owned()));
            }
        }
    }
}

async fn handle(st: Arc<State>, req: Request<Incoming>) -> Reply {
    st.stats.requests.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let path_q = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    // The access key id a request was signed with (not secret), so tests can tell which
    // credentials a client used.
    let akid = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').next())
        .map(|k| format!(" akid={k}"))
        .unwrap_or_default();
    let line = format!("{} {}{akid}", parts.method, s3_blob_sync::redact::redact(&path_q));
    st.stats.log.lock().unwrap().push(line.clone());
    if let (true, Some(r)) = (parts.method == hyper::Method::GET, parts.headers.get("range")) {
        st.stats
            .ranges
            .lock()
            .unwrap()
            .push(r.to_str().unwrap_or("").to_string());
    }
    let _in_flight =
        (parts.method == hyper::Method::PUT && path_q.contains("comp=block&")).then(|| InFlight::enter(&st.stats));
    let body = body.collect().await.map_err(std::io::Error::other)?.to_bytes();
    st.stats.uploaded_bytes.fetch_add(body.len() as u64, Ordering::SeqCst);
    record_credentials(&st.stats, &parts, &body);

    let delay = st.faults.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let write = matches!(parts.method.as_str(), "POST" | "PUT" | "MERGE" | "PATCH");
    if st.faults.hold_to.take(&[&line])
        || (parts.method == hyper::Method::HEAD && take(&st.faults.hold_heads))
        || (write && take(&st.faults.hold_writes))
    {
        st.stats.held.fetch_add(1, Ordering::SeqCst);
        st.gate.acquire().await.map_err(std::io::Error::other)?.forget();
    }
    if take(&st.faults.resets) {
        // Returning an error makes hyper drop the connection with no response: a reset.
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected reset",
        ));
    }
    // The body is read as text only when the fault is armed (bodies may be MiBs).
    let armed = write && st.faults.reset_writes_to.left() > 0;
    if armed
        && st
            .faults
            .reset_writes_to
            .take(&[&path_q, &String::from_utf8_lossy(&body)])
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected reset of a write",
        ));
    }
    if now_ms() < st.faults.outage_until_ms.load(Ordering::SeqCst) {
        return Ok(azure_error(503, "ServerBusy", &[]));
    }
    if st.faults.storm_to.take(&[&line]) {
        return Ok(azure_error(503, "ServerBusy", &[]));
    }
    if st.faults.forbid_tag_writes.load(Ordering::SeqCst) && parts.headers.contains_key("x-ms-tags") {
        return Ok(azure_error(403, "AuthorizationPermissionMismatch", &[]));
    }
    if st.faults.refuse_to.take(&[&line]) {
        return Ok(azure_error(400, "InvalidRequest", &[]));
    }
    let archived = st.faults.archived.take(&[&line]);
    if archived && parts.method == hyper::Method::GET {
        return Ok(azure_error(403, "InvalidObjectState", &[]));
    }
    if take(&st.faults.storm) {
        let status = st.faults.storm_status.load(Ordering::SeqCst) as u16;
        let code = if status == 503 { "ServerBusy" } else { "InternalError" };
        return Ok(azure_error(status, code, &[]));
    }

    let copy_source = parts
        .headers
        .get("x-ms-copy-source")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut headers = parts.headers.clone();
    if parts.method == hyper::Method::GET && headers.contains_key("range") && take(&st.faults.ignore_range) {
        headers.remove("range");
    }
    let mut body = body;
    if let (true, Some(src), true) = (st.double, copy_source, parts.method == hyper::Method::PUT) {
        st.stats.copy_from_url.fetch_add(1, Ordering::SeqCst);
        if st.faults.copy_source_unreachable.load(Ordering::SeqCst) {
            return Ok(azure_error(
                403,
                "CannotVerifyCopySource",
                &[("x-ms-copy-source-status-code", "403".into())],
            ));
        }
        if take(&st.faults.hold_copies) {
            st.stats.held.fetch_add(1, Ordering::SeqCst);
            st.gate.acquire().await.map_err(std::io::Error::other)?.forget();
        }
        let get = || {
            let mut get = st.client.get(&src);
            if let Some(r) = parts.headers.get("x-ms-source-range") {
                get = get.header("range", r.to_str().unwrap_or(""));
            }
            // As Azure does, source conditions apply to the read of the source.
            if let Some(m) = parts.headers.get("x-ms-source-if-match") {
                get = get.header("if-match", m.to_str().unwrap_or(""));
            }
            get
        };
        // Azure's own read of the source does not fail on one dropped connection (a pooled
        // keep-alive connection moto closed under load): the double tries three times before
        // it answers that the source cannot be read.
        let mut resp = get().send().await;
        for _ in 0..2 {
            if resp.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            resp = get().send().await;
        }
        let resp = match resp {
            Ok(r) => r,
            Err(_) => return Ok(azure_error(500, "CannotVerifyCopySource", &[])),
        };
        let status = resp.status().as_u16();
        if status == 412 {
            return Ok(azure_error(412, "SourceConditionNotMet", &[]));
        }
        if !(200..300).contains(&status) {
            return Ok(azure_error(
                status,
                "CannotVerifyCopySource",
                &[("x-ms-copy-source-status-code", status.to_string())],
            ));
        }
        let mut data = resp.bytes().await.map_err(std::io::Error::other)?.to_vec();
        st.stats.source_bytes.fetch_add(data.len() as u64, Ordering::SeqCst);
        if !data.is_empty() && take(&st.faults.corrupt_copy_source) {
            data[0] ^= 0xff;
        }
        if let Some(want) = parts.headers.get("x-ms-source-content-md5") {
            let got = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&data));
            if want.to_str().unwrap_or("") != got {
                return Ok(azure_error(400, "Md5Mismatch", &[]));
            }
        }
        for h in [
            "x-ms-copy-source",
            "x-ms-source-range",
            "x-ms-source-content-md5",
            "x-ms-copy-source-blob-properties",
            "x-ms-source-if-match",
        ] {
            headers.remove(h);
        }
        if !path_q.contains("comp=block") {
            headers.insert("x-ms-blob-type", "BlockBlob".parse().unwrap());
        }
        body = Bytes::from(data);
    }

    if parts.method == hyper::Method::PUT && !body.is_empty() && take(&st.faults.corrupt_put) {
        let mut b = body.to_vec();
        b[0] ^= 0xff;
        body = Bytes::from(b);
    }
    let mut fwd = st
        .client
        .request(parts.method.clone(), format!("{}{}", st.upstream, path_q))
        .header("content-length", body.len().to_string());
    for (k, v) in headers.iter() {
        if !matches!(
            k.as_str(),
            "host" | "content-length" | "connection" | "transfer-encoding"
        ) {
            fwd = fwd.header(k, v);
        }
    }
    let sent_body = String::from_utf8_lossy(&body[..body.len().min(4096)]).to_string();
    let resp = match fwd.body(body).send().await {
        Ok(r) => r,
        Err(e) => return Err(std::io::Error::other(e)),
    };
    if st.faults.drop_replies_to.take(&[&line, &sent_body]) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected reply loss (the request landed)",
        ));
    }
    if st.faults.timeout_replies_to.take(&[&line]) {
        return Ok(azure_error(500, "OperationTimedOut", &[]));
    }
    let status = resp.status();
    let mut out = Response::builder().status(status);
    let head = parts.method == hyper::Method::HEAD;
    if archived && head && status.is_success() {
        out = out.header("x-amz-archive-status", "ARCHIVE_ACCESS");
    }
    for (k, v) in resp.headers() {
        // A HEAD answer has no body, so its Content-Length must be passed on as it is.
        if !matches!(k.as_str(), "connection" | "transfer-encoding") && (head || k.as_str() != "content-length") {
            out = out.header(k, v);
        }
    }
    let mut data = resp.bytes().await.map_err(std::io::Error::other)?.to_vec();
    st.stats.replied_bytes.fetch_add(data.len() as u64, Ordering::SeqCst);
    if parts.method == hyper::Method::GET && status.is_success() && !data.is_empty() && take(&st.faults.corrupt_get) {
        let mid = data.len() / 2;
        data[mid] ^= 0xff;
    }
    if parts.method == hyper::Method::GET && status.is_success() && data.len() > 1 && take(&st.faults.cut_get) {
        let total = data.len();
        data.truncate(total / 2);
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from(data))),
            Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected cut")),
        ];
        let cut = StreamBody::new(futures::stream::iter(frames)).boxed();
        return Ok(out.header("content-length", total.to_string()).body(cut).unwrap());
    }
    Ok(out.body(full(data)).unwrap())
}
