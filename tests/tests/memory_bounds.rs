//! Memory stays bounded under every HTTP abuse (issue #8).
//!
//! Its own test binary with a single test, so nothing else runs in the
//! process: its resident memory is the in-process gateway (with the devkit
//! issuer, the example registries and a registry stand-in) plus the attack
//! clients. Each attack runs three rounds at a volume that would blow the
//! bounds below if the gateway buffered a huge body or kept more than a few
//! KiB per connection or per request; after each round a well-behaved client
//! must still get its 200, and
//!
//! - resident memory (`VmRSS`) stays within [`SETTLED_BOUND`] of the baseline,
//! - the peak during the attack (`VmHWM`, reset before each attack) stays
//!   within [`PEAK_BOUND`] of the baseline (a body buffered and then freed
//!   shows here, not in the settled figure),
//! - memory does not grow with attack volume: round 3 ends within
//!   [`GROWTH_BOUND`] of round 1 (round 1 pays one-time costs: allocator
//!   arenas, HTTP/2 tables, pool connections).
//!
//! The gateway runs on its shipped limits (1 MiB request body, 8 MiB
//! response body, 32 KiB / 100 headers, 10 s header read timeout, 100 h2
//! streams); only the grant's rate limit is raised, so that attacks carrying
//! a valid token reach the body and registry code instead of a 429.
//!
//! No timing is asserted. Linux only (`/proc/self/status`).
//!
//! `cargo test -p tollbu-tests --test memory_bounds -- --nocapture` prints the
//! figures.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tollbu_tests::*;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

// The bounds. Figures measured on the shared 2-core machine (debug build,
// glibc malloc, several runs); the table is also in docs/SECURITY.md.

/// Settled memory after any round, over the baseline. Measured: at most
/// 25 MiB (after the h2 stream flood: allocator arenas that keep freed
/// memory, and up to 256 pooled registry connections with their buffers).
/// About 4× headroom for other allocators, core counts and noise. It is the
/// backstop for memory kept across attacks (two 64 MiB bodies kept would
/// pass it); [`GROWTH_BOUND`] catches per-connection and per-request leaks
/// sooner.
const SETTLED_BOUND: u64 = 96 * MIB;

/// Peak during an attack (all three rounds), over the baseline. Measured: at
/// most 26 MiB, for the huge response attack (four 8 MiB limited reads at
/// once). Reading the four 64 MiB answers whole instead peaked at 374 MiB
/// over the baseline (tried with `max_response_body_bytes` at 1 GiB); one
/// buffered 64 MiB body and its copy alone is 128 MiB.
const PEAK_BOUND: u64 = 128 * MIB;

/// Growth from the end of round 1 to the end of round 3. Measured: at most
/// 4.2 MiB (allocator settling after slowloris and the h2 flood, flat in
/// later rounds), usually under 2. Rounds 2 and 3 together open 1 000–1 300
/// connections (header, smuggling, path attacks), hold 800 (slowloris) or
/// answer 2 400 streams (h2 flood): a leak of ~8 KiB per request or ~15 KiB
/// per connection passes 16 MiB (tried: 8 KiB leaked per registry request
/// gave 19 MiB; slowloris connections never released gave 29 MiB).
const GROWTH_BOUND: u64 = 16 * MIB;

/// Size of the bodies the attacks send and the stand-in registry answers.
const HUGE: u64 = 64 * MIB;

const WAIT: Duration = Duration::from_secs(10);

// --- resident memory ---------------------------------------------------------

fn status_bytes(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib = text
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .strip_suffix(" kB")?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    kib * KIB
}

/// Resident memory now.
fn rss() -> u64 {
    status_bytes("VmRSS")
}

/// Highest resident memory since the last [`reset_peak`].
fn peak() -> u64 {
    status_bytes("VmHWM")
}

/// Resets `VmHWM` to the current RSS (Linux ≥ 4.0).
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM via /proc/self/clear_refs");
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / MIB as f64)
}

// --- a registry stand-in -----------------------------------------------------

/// 64 KiB of filler, shared by every huge answer (the stand-in allocates nothing per byte sent).
static FILLER: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// `left` bytes of filler, 64 KiB a frame, announced (Content-Length) or not (chunked).
struct Filler {
    left: u64,
    announce: bool,
}

impl Body for Filler {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(FILLER.len() as u64);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
            &FILLER[..n as usize],
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.announce {
            SizeHint::with_exact(self.left)
        } else {
            SizeHint::default()
        }
    }
}

/// The person record, at once.
fn pid_normal() -> String {
    example_pid(0)
}
/// 64 MiB chunked.
fn pid_huge_chunked() -> String {
    example_pid(1)
}
/// 64 MiB with Content-Length.
fn pid_huge_announced() -> String {
    example_pid(2)
}
/// The person record after 200 ms (keeps flooded HTTP/2 streams in flight).
fn pid_slow() -> String {
    example_pid(3)
}

/// A registry stand-in that reads and discards request bodies (counting
/// them) and answers by person; it keeps nothing per request.
struct Registry {
    url: String,
    body_bytes: Arc<AtomicU64>,
}

impl Registry {
    async fn start() -> Registry {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let body_bytes = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&body_bytes);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: http::Request<hyper::body::Incoming>| {
                            let counter = Arc::clone(&counter);
                            async move {
                                let path = request.uri().path().to_owned();
                                let mut body = request.into_body();
                                while let Some(Ok(frame)) = body.frame().await {
                                    if let Some(data) = frame.data_ref() {
                                        counter.fetch_add(data.len() as u64, Ordering::Relaxed);
                                    }
                                }
                                let pid = path.rsplit('/').next().unwrap_or_default();
                                let body = if pid == pid_huge_chunked() {
                                    Filler {
                                        left: HUGE,
                                        announce: false,
                                    }
                                    .boxed()
                                } else if pid == pid_huge_announced() {
                                    Filler {
                                        left: HUGE,
                                        announce: true,
                                    }
                                    .boxed()
                                } else {
                                    if pid == pid_slow() {
                                        tokio::time::sleep(Duration::from_millis(200)).await;
                                    }
                                    http_body_util::Full::new(Bytes::from_static(
                                        STUB_PERSON.as_bytes(),
                                    ))
                                    .boxed()
                                };
                                let mut response = http::Response::new(body);
                                response.headers_mut().insert(
                                    http::header::CONTENT_TYPE,
                                    http::HeaderValue::from_static("application/json"),
                                );
                                Ok::<_, Infallible>(response)
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
            }
        });
        Registry { url, body_bytes }
    }
}

/// The welfare grant of `policies/population.toml`, with a rate limit no attack reaches.
const UNTHROTTLED_GRANT: &str = r#"
[[grant]]
id = "welfare-benefit-assessment"
consumer = ["310000019"]
scopes = ["demo:population"]
operations = ["get-person"]
purposes = ["benefit-assessment"]
legal_basis = "Test basis"
fields = ["name", "address", "marital_status"]
valid_from = 2024-01-01T00:00:00Z
valid_to = 2030-12-31T23:59:59Z
rate_limit = { requests = 1000000, per_seconds = 1 }
"#;

// --- attack helpers ----------------------------------------------------------

struct Ctx {
    base: String,
    addr: SocketAddr,
    token: String,
    registry: Registry,
}

impl Ctx {
    fn head(&self, path: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {}\r\ntollbu-purpose: benefit-assessment\r\n",
            self.token
        )
    }

    fn person_path(&self, pid: &str) -> String {
        format!("/population/persons/{pid}")
    }

    /// One good request on a fresh connection; must be 200.
    async fn assert_still_served(&self, during: &str) {
        let mut s = String::new();
        let answer = get(
            &format!("{}{}", self.base, self.person_path(&pid_normal())),
            &auth(&self.token, Some("benefit-assessment"), &mut s),
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "a well-behaved client must be served ({during}): {:?}",
            answer.body
        );
    }
}

/// Connections a raw attack opens at once. The gateway listens with a
/// backlog of 128: a larger burst of connects loses SYNs, and those clients
/// wait out a 1 s retransmit (slow, not harmful).
const AT_ONCE: usize = 100;

/// Writes `request` on a fresh connection and reads until the gateway
/// closes; the status codes it answered.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u16> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    read_until_close(&mut stream, WAIT).await.statuses()
}

/// Sends each request on its own connection, [`AT_ONCE`] at a time; the
/// status codes of every answer, in one list.
async fn raw_many(addr: SocketAddr, requests: Vec<Bytes>) -> Vec<u16> {
    let slots = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
    let mut set = JoinSet::new();
    for request in requests {
        let slot = Arc::clone(&slots).acquire_owned().await.unwrap();
        set.spawn(async move {
            let statuses = exchange(addr, &request).await;
            drop(slot);
            statuses
        });
    }
    let mut statuses = Vec::new();
    while let Some(done) = set.join_next().await {
        statuses.extend(done.unwrap());
    }
    statuses
}

/// `431×200` style summary of status codes.
fn histogram(statuses: &[u16]) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for status in statuses {
        *counts.entry(*status).or_insert(0usize) += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{s}×{n}")).collect();
    if parts.is_empty() {
        "no answers".into()
    } else {
        parts.join(" ")
    }
}

/// Same bytes, `n` times (shared, not copied).
fn copies(bytes: impl Into<Bytes>, n: usize) -> Vec<Bytes> {
    let bytes = bytes.into();
    vec![bytes; n]
}

// --- HTTP/2 with hand-built frames (tollbu_tests::h2raw) -------------------

mod h2raw {
    use super::*;

    pub use tollbu_tests::h2raw::*;

    /// Preface, SETTINGS, an early ack of the server's, and a large
    /// connection window (answers are never held back by flow control).
    pub async fn connect(addr: SocketAddr) -> TcpStream {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        hello.extend(frame(SETTINGS, 1, 0, &[]));
        hello.extend(frame(WINDOW_UPDATE, 0, 0, &(1u32 << 30).to_be_bytes()));
        stream.write_all(&hello).await.unwrap();
        stream
    }

    /// Reads frames, handing each (type, flags, stream) to `done`, until it
    /// says so, the server closes, or `wait` passes. True if the server closed.
    pub async fn read_frames(
        stream: &mut TcpStream,
        wait: Duration,
        mut done: impl FnMut(u8, u8, u32) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 16384];
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(n)) => pending.extend_from_slice(&buf[..n]),
            }
            let mut at = 0;
            while pending.len() - at >= 9 {
                let head = &pending[at..at + 9];
                let len = (usize::from(head[0]) << 16)
                    | (usize::from(head[1]) << 8)
                    | usize::from(head[2]);
                if pending.len() - at < 9 + len {
                    break;
                }
                let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                let finished = done(head[3], head[4], id);
                at += 9 + len;
                if finished {
                    return false;
                }
            }
            pending.drain(..at);
        }
    }
}

// --- the attacks -------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Attack {
    OversizedHeaders,
    TooManyHeaders,
    Slowloris,
    Smuggling,
    PathTraversal,
    HugeRequestBody,
    HugeResponseBody,
    H2RapidReset,
    H2StreamFlood,
}

const ATTACKS: [Attack; 9] = [
    Attack::OversizedHeaders,
    Attack::TooManyHeaders,
    Attack::Slowloris,
    Attack::Smuggling,
    Attack::PathTraversal,
    Attack::HugeRequestBody,
    Attack::HugeResponseBody,
    Attack::H2RapidReset,
    Attack::H2StreamFlood,
];

impl Attack {
    fn name(self) -> &'static str {
        match self {
            Attack::OversizedHeaders => "oversized headers",
            Attack::TooManyHeaders => "too many headers",
            Attack::Slowloris => "slowloris",
            Attack::Smuggling => "smuggling probes",
            Attack::PathTraversal => "path traversal",
            Attack::HugeRequestBody => "huge request body",
            Attack::HugeResponseBody => "huge response body",
            Attack::H2RapidReset => "h2 rapid reset",
            Attack::H2StreamFlood => "h2 stream flood",
        }
    }

    /// One round; a short description of what it did and what came back.
    async fn round(self, ctx: &Ctx) -> String {
        match self {
            Attack::OversizedHeaders => oversized_headers(ctx).await,
            Attack::TooManyHeaders => too_many_headers(ctx).await,
            Attack::Slowloris => slowloris(ctx).await,
            Attack::Smuggling => smuggling(ctx).await,
            Attack::PathTraversal => path_traversal(ctx).await,
            Attack::HugeRequestBody => huge_request_body(ctx).await,
            Attack::HugeResponseBody => huge_response_body(ctx).await,
            Attack::H2RapidReset => h2_rapid_reset(ctx).await,
            Attack::H2StreamFlood => h2_stream_flood(ctx).await,
        }
    }
}

/// Every answer is one of `allowed`, and there are some (no vacuous pass).
fn assert_answers(what: &str, statuses: &[u16], allowed: impl Fn(u16) -> bool) {
    assert!(
        !statuses.is_empty() && statuses.iter().all(|s| allowed(*s)),
        "{what}: {}",
        histogram(statuses)
    );
}

/// 600 connections, 100 at a time, each with one 40 000-byte header (limit 32 KiB).
async fn oversized_headers(ctx: &Ctx) -> String {
    let request = format!(
        "{}x-big: {}\r\n\r\n",
        ctx.head(&ctx.person_path(&pid_normal())),
        "a".repeat(40_000)
    );
    let statuses = raw_many(ctx.addr, copies(request, 600)).await;
    assert_answers("oversized headers", &statuses, |s| s == 431);
    format!("600 conns: {}", histogram(&statuses))
}

/// 600 connections, 100 at a time, each with 150 headers (limit 100).
async fn too_many_headers(ctx: &Ctx) -> String {
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let request = format!("{}{many}\r\n", ctx.head(&ctx.person_path(&pid_normal())));
    let statuses = raw_many(ctx.addr, copies(request, 600)).await;
    assert_answers("too many headers", &statuses, |s| s == 431);
    format!("600 conns: {}", histogram(&statuses))
}

/// Two waves of 200 connections that each send 24 KiB of an unfinished head
/// (limit 32 KiB), then one more byte every 50 ms; each wave is held open
/// together for half a second (the default header read timeout is 10 s, so
/// the attacker hangs up, not the gateway). The good client is served while
/// a wave is held. Two waves rather than 400 at once: the same volume for the
/// growth check with half the memory in flight, so less allocator settling
/// between rounds.
async fn slowloris(ctx: &Ctx) -> String {
    const CONNS: usize = 200;
    let prefix = Bytes::from(format!(
        "{}x-slow: {}",
        ctx.head(&ctx.person_path(&pid_normal())),
        "a".repeat(24 * 1024)
    ));
    let mut held = Vec::new();
    let cut_off = Arc::new(AtomicU64::new(0));
    for _ in 0..2 {
        let stop = Arc::new(AtomicBool::new(false));
        let connecting = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
        let (held_tx, mut held_rx) = tokio::sync::mpsc::channel::<()>(CONNS);
        let mut set = JoinSet::new();
        for _ in 0..CONNS {
            let prefix = prefix.clone();
            let stop = Arc::clone(&stop);
            let cut_off = Arc::clone(&cut_off);
            let connecting = Arc::clone(&connecting);
            let held_tx = held_tx.clone();
            let addr = ctx.addr;
            set.spawn(async move {
                let slot = connecting.acquire_owned().await.unwrap();
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let sent = stream.write_all(&prefix).await;
                drop(slot);
                let _ = held_tx.send(()).await;
                if sent.is_err() {
                    cut_off.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                while !stop.load(Ordering::Relaxed) {
                    if stream.write_all(b"a").await.is_err() {
                        cut_off.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }
        drop(held_tx);
        for _ in 0..CONNS {
            held_rx.recv().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        ctx.assert_still_served("while slowloris connections are held")
            .await;
        held.push(mib(rss()));
        stop.store(true, Ordering::Relaxed);
        while let Some(done) = set.join_next().await {
            done.unwrap();
        }
    }
    format!(
        "2 waves of {CONNS} conns held ~0.5 s, RSS while held {} MiB, cut off by the gateway: {}",
        held.join(" / "),
        cut_off.load(Ordering::Relaxed)
    )
}

/// The probes of `http_abuse::smuggling_probes_…` (plus `connection: close`,
/// so the gateway hangs up after its answer), 40 connections each, 100 at a time.
async fn smuggling(ctx: &Ctx) -> String {
    let victim = ctx.person_path(&pid_normal());
    let token = &ctx.token;
    let smuggled = format!(
        "GET /persons/{} HTTP/1.1\r\nhost: registry\r\n\r\n",
        example_pid(1)
    );
    let head = format!("{}connection: close\r\n", ctx.head(&victim));
    let chunked_body = format!("0\r\n\r\n{smuggled}");
    let probes = [
        format!("{head}content-length: 5\r\ntransfer-encoding: chunked\r\n\r\n{chunked_body}"),
        format!("{head}transfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n{chunked_body}"),
        format!("{head}transfer-encoding: xchunked\r\n\r\n{chunked_body}"),
        format!("{head}transfer-encoding: chunked, identity\r\n\r\n{chunked_body}"),
        format!(
            "{head}transfer-encoding: chunked\r\ntransfer-encoding: identity\r\n\r\n{chunked_body}"
        ),
        format!("{head}transfer-encoding : chunked\r\n\r\n{chunked_body}"),
        format!("{head}transfer-encoding:\x0bchunked\r\n\r\n{chunked_body}"),
        format!("{head}transfer-encoding:\r\n chunked\r\n\r\n{chunked_body}"),
        format!(
            "{head}content-length: 0\r\ncontent-length: {}\r\n\r\n{smuggled}",
            smuggled.len()
        ),
        format!("{head}content-length: 0, 5\r\n\r\n{smuggled}"),
        format!("{head}content-length: +0\r\n\r\n{smuggled}"),
        format!("{head}transfer-encoding: chunked\r\n\r\nffffffffffffffffff\r\n{smuggled}"),
        format!(
            "GET {victim} HTTP/1.1\nhost: gateway\nauthorization: Bearer {token}\ntollbu-purpose: benefit-assessment\nconnection: close\ntransfer-encoding: chunked\n\n0\n\n{smuggled}"
        ),
    ];
    let requests: Vec<Bytes> = probes.iter().flat_map(|p| copies(p.clone(), 40)).collect();
    let n = requests.len();
    let statuses = raw_many(ctx.addr, requests).await;
    assert_answers("smuggling", &statuses, |s| [200, 400, 401].contains(&s));
    format!("{n} conns: {}", histogram(&statuses))
}

/// Dot segments, encoded dots and separators: 82 paths, 8 connections each, 100 at a time.
async fn path_traversal(ctx: &Ctx) -> String {
    let pid = pid_normal();
    let paths = attacks::traversal_paths(&pid);
    let requests: Vec<Bytes> = paths
        .iter()
        .flat_map(|path| copies(format!("{}connection: close\r\n\r\n", ctx.head(path)), 8))
        .collect();
    let n = requests.len();
    let statuses = raw_many(ctx.addr, requests).await;
    assert_answers("path traversal", &statuses, |s| (400..500).contains(&s));
    format!("{n} conns: {}", histogram(&statuses))
}

/// Four requests declaring a 1 GiB Content-Length and four chunked ones,
/// at once, each streaming 64 MiB as fast as the gateway takes it (limit
/// 1 MiB).
async fn huge_request_body(ctx: &Ctx) -> String {
    let forwarded_before = ctx.registry.body_bytes.load(Ordering::Relaxed);
    let mut set = JoinSet::new();
    for chunked in [false, false, false, false, true, true, true, true] {
        let framing = if chunked {
            "transfer-encoding: chunked\r\n".to_owned()
        } else {
            format!("content-length: {}\r\n", 1u64 << 30)
        };
        let head = format!(
            "{}{framing}connection: close\r\n\r\n",
            ctx.head(&ctx.person_path(&pid_normal()))
        );
        let addr = ctx.addr;
        set.spawn(async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut read, mut write) = stream.into_split();
            let sent = Arc::new(AtomicU64::new(0));
            let counter = Arc::clone(&sent);
            let writer = tokio::spawn(async move {
                if write.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk_head = format!("{:x}\r\n", FILLER.len());
                while counter.load(Ordering::Relaxed) < HUGE {
                    let ok = if chunked {
                        write.write_all(chunk_head.as_bytes()).await.is_ok()
                            && write.write_all(&FILLER).await.is_ok()
                            && write.write_all(b"\r\n").await.is_ok()
                    } else {
                        write.write_all(&FILLER).await.is_ok()
                    };
                    if !ok {
                        return;
                    }
                    counter.fetch_add(FILLER.len() as u64, Ordering::Relaxed);
                }
                if chunked {
                    let _ = write.write_all(b"0\r\n\r\n").await;
                }
            });
            let mut answer = Vec::new();
            let mut buf = vec![0u8; 4096];
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                match tokio::time::timeout_at(deadline, read.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            // The gateway answered and hung up (or gave up): stop sending.
            writer.abort();
            let _ = writer.await;
            let sent = sent.load(Ordering::Relaxed);
            let outcome = RawOutcome {
                bytes: answer,
                closed: true,
            };
            (chunked, outcome.statuses(), sent)
        });
    }
    let mut statuses = Vec::new();
    let (mut sent_declared, mut sent_chunked) = (Vec::new(), Vec::new());
    while let Some(done) = set.join_next().await {
        let (chunked, s, n) = done.unwrap();
        statuses.extend(s);
        if chunked {
            sent_chunked.push(n / MIB);
        } else {
            sent_declared.push(n / MIB);
        }
    }
    let forwarded = ctx.registry.body_bytes.load(Ordering::Relaxed) - forwarded_before;
    assert_answers("huge request bodies", &statuses, |s| s == 413);
    assert!(
        forwarded <= 4 * MIB,
        "at most the 1 MiB limit of each chunked body reaches the registry: {forwarded}"
    );
    sent_declared.sort_unstable();
    sent_chunked.sort_unstable();
    format!(
        "8 bodies: {}; MiB sent before the gateway hung up: declared {sent_declared:?}, \
         chunked {sent_chunked:?}; registry got {} MiB",
        histogram(&statuses),
        mib(forwarded)
    )
}

/// Four requests at once for 64 MiB answers (limit 8 MiB): two chunked, two
/// announcing their length.
async fn huge_response_body(ctx: &Ctx) -> String {
    let mut set = JoinSet::new();
    for pid in [
        pid_huge_chunked(),
        pid_huge_chunked(),
        pid_huge_announced(),
        pid_huge_announced(),
    ] {
        let url = format!("{}{}", ctx.base, ctx.person_path(&pid));
        let token = ctx.token.clone();
        set.spawn(async move {
            let mut s = String::new();
            let answer = get(&url, &auth(&token, Some("benefit-assessment"), &mut s)).await;
            (answer.status.as_u16(), answer.code(), answer.body.len())
        });
    }
    let mut statuses = Vec::new();
    while let Some(done) = set.join_next().await {
        let (status, code, len) = done.unwrap();
        assert!(
            status == 502 && code == "upstream_too_large" && len < 1000,
            "huge response: {status} {code} ({len} bytes)"
        );
        statuses.push(status);
    }
    format!("4 answers of 64 MiB: {}", histogram(&statuses))
}

/// Eight connections at once, each sending up to 5 000 HEADERS + RST_STREAM
/// pairs (CVE-2023-44487) in batches of 100, then reading until the gateway closes.
async fn h2_rapid_reset(ctx: &Ctx) -> String {
    use h2raw::*;
    let authorization = format!("Bearer {}", ctx.token);
    let block = Arc::new(get_block(
        "gateway",
        &ctx.person_path(&pid_normal()),
        &[
            ("authorization", &authorization),
            ("tollbu-purpose", "benefit-assessment"),
        ],
    ));
    let mut set = JoinSet::new();
    for _ in 0..8 {
        let block = Arc::clone(&block);
        let addr = ctx.addr;
        set.spawn(async move {
            let mut stream = connect(addr).await;
            let sent = rapid_reset(&mut stream, &block).await;
            let mut goaway = false;
            let closed = read_frames(&mut stream, WAIT, |kind, _, _| {
                goaway |= kind == GOAWAY;
                false
            })
            .await;
            (sent, goaway, closed)
        });
    }
    let (mut sent, mut goaways, mut closed) = (0, 0, 0);
    while let Some(done) = set.join_next().await {
        let (s, g, c) = done.unwrap();
        sent += s;
        goaways += usize::from(g);
        closed += usize::from(c);
    }
    assert_eq!(goaways, 8, "every rapid-reset connection gets GOAWAY");
    format!("8 conns, {sent} HEADERS+RST sent, GOAWAY {goaways}, closed {closed}")
}

/// Three waves of four connections at once, each opening 300 streams
/// (limit 100) whose answers the registry holds for 200 ms; each reads until
/// every stream is answered or refused. Waves rather than twelve at once:
/// the same volume for the growth check with less memory in flight.
async fn h2_stream_flood(ctx: &Ctx) -> String {
    use h2raw::*;
    let authorization = format!("Bearer {}", ctx.token);
    let block = Arc::new(get_block(
        "gateway",
        &ctx.person_path(&pid_slow()),
        &[
            ("authorization", &authorization),
            ("tollbu-purpose", "benefit-assessment"),
        ],
    ));
    let (conns, waves) = (4, 3);
    let (mut answered, mut refused) = (0, 0);
    for _ in 0..waves {
        let mut set = JoinSet::new();
        for _ in 0..conns {
            let block = Arc::clone(&block);
            let addr = ctx.addr;
            set.spawn(async move {
                let mut stream = connect(addr).await;
                let mut bytes = Vec::new();
                for i in 0..300u32 {
                    bytes.extend(frame(HEADERS, END_STREAM | END_HEADERS, 1 + 2 * i, &block));
                }
                stream.write_all(&bytes).await.unwrap();
                let (mut answered, mut refused, mut ended) = (0usize, 0usize, 0usize);
                read_frames(&mut stream, WAIT, |kind, flags, id| {
                    if id == 0 {
                        return false;
                    }
                    if kind == RST_STREAM {
                        refused += 1;
                        ended += 1;
                    } else if (kind == HEADERS || kind == DATA) && flags & END_STREAM != 0 {
                        answered += 1;
                        ended += 1;
                    }
                    ended >= 300
                })
                .await;
                (answered, refused)
            });
        }
        while let Some(done) = set.join_next().await {
            let (a, r) = done.unwrap();
            answered += a;
            refused += r;
        }
    }
    assert!(
        refused > 0,
        "streams beyond max_h2_streams are refused ({answered} answered)"
    );
    format!("{waves} waves of {conns} conns × 300 streams: answered {answered}, refused {refused}")
}

// --- the test ----------------------------------------------------------------

/// Waits (without asserting) until the gateway has no client connection
/// open, then a little longer for per-request tasks to finish.
async fn settle(env: &Env) {
    for _ in 0..250 {
        if env.gateway().live.open_connections.load(Ordering::Relaxed) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

struct Row {
    attack: &'static str,
    round1: u64,
    round3: u64,
    peak: u64,
    details: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_under_every_http_abuse() {
    let registry = Registry::start().await;
    let policies = policy_dir(&format!("{POPULATION_SERVICE_TOML}{UNTHROTTLED_GRANT}"));
    let env = Env::start(Options {
        population_upstream: Some(registry.url.clone()),
        policies: Some(policies.path().to_path_buf()),
        ..Options::default()
    })
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let ctx = Ctx {
        base: env.base(),
        addr: addr_of(&env.base()),
        token,
        registry,
    };

    // Warm up: normal traffic over HTTP/1.1 and HTTP/2.
    let url = format!("{}{}", ctx.base, ctx.person_path(&pid_normal()));
    let h2 = client(true);
    for _ in 0..50 {
        ctx.assert_still_served("warm-up").await;
        let mut s = String::new();
        let answer = get_with(
            &h2,
            &url,
            &auth(&ctx.token, Some("benefit-assessment"), &mut s),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    drop(h2);
    settle(&env).await;
    let baseline = rss();

    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for attack in ATTACKS {
        reset_peak();
        let mut row = Row {
            attack: attack.name(),
            round1: 0,
            round3: 0,
            peak: 0,
            details: Vec::new(),
        };
        for round in 1..=3 {
            let started = std::time::Instant::now();
            let detail = attack.round(&ctx).await;
            let detail = format!("{detail} ({:.1} s)", started.elapsed().as_secs_f64());
            ctx.assert_still_served(&format!("after {} round {round}", attack.name()))
                .await;
            settle(&env).await;
            let now = rss();
            if now > baseline + SETTLED_BOUND {
                failures.push(format!(
                    "{} round {round}: RSS {} MiB > baseline {} MiB + {} MiB",
                    attack.name(),
                    mib(now),
                    mib(baseline),
                    mib(SETTLED_BOUND)
                ));
            }
            match round {
                1 => row.round1 = now,
                3 => row.round3 = now,
                _ => {}
            }
            row.details.push(format!("round {round}: {detail}"));
        }
        row.peak = peak();
        if row.peak > baseline + PEAK_BOUND {
            failures.push(format!(
                "{}: peak RSS {} MiB > baseline {} MiB + {} MiB",
                attack.name(),
                mib(row.peak),
                mib(baseline),
                mib(PEAK_BOUND)
            ));
        }
        if row.round3.saturating_sub(row.round1) > GROWTH_BOUND {
            failures.push(format!(
                "{}: RSS grew {} MiB from round 1 to round 3 (> {} MiB)",
                attack.name(),
                mib(row.round3 - row.round1),
                mib(GROWTH_BOUND)
            ));
        }
        rows.push(row);
    }

    let mut table = format!(
        "\nresident memory (MiB) under HTTP abuse; baseline {} MiB\n\
         | attack | baseline | after round 1 | after round 3 | peak | peak − baseline |\n\
         |---|---:|---:|---:|---:|---:|\n",
        mib(baseline)
    );
    for row in &rows {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            row.attack,
            mib(baseline),
            mib(row.round1),
            mib(row.round3),
            mib(row.peak),
            mib(row.peak.saturating_sub(baseline))
        ));
    }
    for row in &rows {
        table.push_str(&format!(
            "\n{}:\n  {}",
            row.attack,
            row.details.join("\n  ")
        ));
    }
    eprintln!("{table}\n");
    assert!(
        failures.is_empty(),
        "memory not bounded:\n{}",
        failures.join("\n")
    );
}
