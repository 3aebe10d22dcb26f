//! An open-loop append load as the gateway puts on the log, shared by the latency examples.
//!
//! A pacing thread starts one append every `1/rate` seconds, each on its own task like a gateway
//! request, whether or not earlier ones finished. Latency is measured from each append's scheduled
//! start, so a stalled writer shows up in the figures instead of slowing the load down (no
//! coordinated omission).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tollbu_audit::{AuditLog, Decision, Record};

/// One acknowledged append.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it was due, from the start of the load.
    #[allow(dead_code, reason = "read by retention_timing, not by ack_latency")]
    pub due_at: Duration,
    /// From its scheduled start to its acknowledgement.
    pub from_due_us: u64,
    /// From the `append` call to its acknowledgement.
    pub from_call_us: u64,
}

/// What a run gave.
pub struct Load {
    pub samples: Vec<Sample>,
    pub failed: u64,
    pub took: Duration,
}

/// Appends `rate` gateway-like records a second for `seconds` on a 2-thread runtime, each timed
/// `time` (RFC 3339).
pub fn run(log: &AuditLog, rate: u64, seconds: u64, time: &str) -> Load {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let total = rate * seconds;
    let gap = Duration::from_secs(1) / rate.max(1) as u32;
    let samples = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let failures = Arc::new(Mutex::new(0u64));
    let start = Instant::now();
    // A plain thread paces the requests (tokio's timer has 1 ms granularity, which would bunch
    // them into bursts); each append then runs on the runtime like a gateway request.
    let handle = rt.handle().clone();
    let time: Arc<str> = time.into();
    let pacer = {
        let log = log.clone();
        let samples = samples.clone();
        let failures = failures.clone();
        std::thread::spawn(move || {
            let mut tasks = Vec::with_capacity(total as usize);
            for k in 0..total {
                let due_at = gap * k as u32;
                let due = start + due_at;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let log = log.clone();
                let samples = samples.clone();
                let failures = failures.clone();
                let time = time.clone();
                tasks.push(handle.spawn(async move {
                    let record = gateway_record(&log, k, &time);
                    let called = Instant::now();
                    match log.append(record).await {
                        Ok(_) => samples.lock().unwrap().push(Sample {
                            due_at,
                            from_due_us: due.elapsed().as_micros() as u64,
                            from_call_us: called.elapsed().as_micros() as u64,
                        }),
                        Err(_) => *failures.lock().unwrap() += 1,
                    }
                }));
            }
            tasks
        })
    };
    let tasks = pacer.join().unwrap();
    rt.block_on(async {
        for t in tasks {
            t.await.unwrap();
        }
    });
    let took = start.elapsed();
    let samples = std::mem::take(&mut *samples.lock().unwrap());
    let failed = *failures.lock().unwrap();
    Load {
        samples,
        failed,
        took,
    }
}

/// A record shaped like the gateway's (subject pseudonym, consumer, digests, released fields).
pub fn gateway_record(log: &AuditLog, k: u64, time: &str) -> Record {
    Record {
        time: time.to_owned(),
        request_id: format!("lat-{k}"),
        consumer: Some(format!("0192:91{:07}", k % 1_000)),
        service: "folkeregister".into(),
        operation: "read".into(),
        path_template: Some("/persons/{id}".into()),
        subject: Some(log.pseudonymise(&format!("{:011}", k % 100_000))),
        purpose: Some("benchmark".into()),
        legal_basis: Some("law".into()),
        decision: Decision::Allow,
        upstream_status: Some(200),
        request_sha256: Some([0x00; 32]),
        response_sha256: Some([0x11; 32]),
        fields_released: vec!["name".into(), "address".into()],
        ..Record::default()
    }
}

/// "p50 … µs, p99 … µs, p99.9 … µs, max … µs" of `latencies` (sorted here).
pub fn percentiles(mut latencies: Vec<u64>) -> String {
    if latencies.is_empty() {
        return "no samples".into();
    }
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    format!(
        "p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
        pct(0.50),
        pct(0.99),
        pct(0.999),
        latencies[latencies.len() - 1]
    )
}
