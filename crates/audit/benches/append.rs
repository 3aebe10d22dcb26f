//! Append throughput with group commit (durable, fsync before ack) at 1, 16 and 256 concurrent
//! writers and in batches of 1,000; proof generation and verification over a 100k-record tree.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use tollbu_audit::record::Prepared;
use tollbu_audit::tree::{verify_consistency, verify_inclusion};
use tollbu_audit::{AuditConfig, AuditLog, Decision, Pseudonymiser, Record};

fn keys(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let pem = SigningKey::from_bytes(&[1u8; 32])
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap();
    std::fs::write(dir.join("k.pem"), pem.as_bytes()).unwrap();
    std::fs::write(dir.join("p.key"), "11".repeat(32)).unwrap();
    (dir.join("k.pem"), dir.join("p.key"))
}

fn record(i: u64, ps: &Pseudonymiser) -> Record {
    Record {
        time: "2026-03-01T10:00:00.000Z".into(),
        request_id: format!("bench-{i}"),
        consumer: Some("0192:910000001".into()),
        service: "folkeregister".into(),
        operation: "read".into(),
        path_template: Some("/persons/{id}".into()),
        subject: Some(ps.pseudonym(&format!("{:011}", i % 1000))),
        purpose: Some("benchmark".into()),
        legal_basis: Some("law".into()),
        decision: Decision::Allow,
        upstream_status: Some(200),
        latency_us: 1234,
        request_sha256: Some([0x00; 32]),
        response_sha256: Some([0x11; 32]),
        fields_released: vec!["name".into(), "address".into()],
        ..Record::default()
    }
}

fn open(tmp: &Path) -> AuditLog {
    let (k, p) = keys(tmp);
    let mut cfg = AuditConfig::new(tmp.join("log"), "bench.example/log", k, p);
    cfg.checkpoint_every = 10_000;
    AuditLog::open(cfg).unwrap().0
}

fn appends(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("append_durable");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for writers in [1u64, 16, 256] {
        let tmp = tempfile::tempdir().unwrap();
        let log = open(tmp.path());
        let ps = Pseudonymiser::from_key([0x11; 32]);
        let per_writer = (2048 / writers).max(8);
        g.throughput(Throughput::Elements(writers * per_writer));
        g.bench_with_input(
            BenchmarkId::from_parameter(writers),
            &writers,
            |b, &writers| {
                b.iter(|| {
                    rt.block_on(async {
                        let tasks: Vec<_> = (0..writers)
                            .map(|w| {
                                let log = log.clone();
                                let ps = ps.clone();
                                tokio::spawn(async move {
                                    for k in 0..per_writer {
                                        log.append(record(w * 1000 + k, &ps)).await.unwrap();
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.unwrap();
                        }
                    })
                })
            },
        );
        log.shutdown().unwrap();
    }
    g.finish();
}

/// Batches of 1,000 records (as immudb's embedded benchmark uses), durable, from 4 producers
/// (`BATCH_PRODUCERS=16` for more) that each keep one batch in flight, 100 batches per iteration;
/// the records are built before timing starts, validation and encoding are timed.
fn batched(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path());
    let ps = Pseudonymiser::from_key([0x11; 32]);
    let producers: u64 = std::env::var("BATCH_PRODUCERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let batches_each = 100 / producers;
    let batch: Vec<Record> = (0..1_000).map(|i| record(i, &ps)).collect();
    let mut g = c.benchmark_group("append_batched_durable");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(producers * batches_each * 1_000));
    g.bench_function("batches_of_1000", |b| {
        b.iter_batched(
            // Each producer's batches are copied before timing: `append_batch` takes them by value.
            || {
                (0..producers)
                    .map(|_| vec![batch.clone(); batches_each as usize])
                    .collect::<Vec<_>>()
            },
            |per_producer| {
                rt.block_on(async {
                    let tasks: Vec<_> = per_producer
                        .into_iter()
                        .map(|batches| {
                            let log = log.clone();
                            tokio::spawn(async move {
                                for batch in batches {
                                    log.append_batch(batch).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                })
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
    log.shutdown().unwrap();
}

fn proofs(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path());
    let ps = Pseudonymiser::from_key([0x11; 32]);
    // Build 100k records quickly: many concurrent appends share fsyncs.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..500u64)
            .map(|w| {
                let log = log.clone();
                let ps = ps.clone();
                tokio::spawn(async move {
                    for k in 0..200 {
                        log.append(record(w * 200 + k, &ps)).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    eprintln!(
        "batched append of 100k records (500 writers): {:?}",
        start.elapsed()
    );
    let size = 100_000;
    let mut g = c.benchmark_group("proofs_100k");
    g.bench_function("inclusion_generate", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i = (i + 7919) % size;
            log.inclusion_proof(i, size).unwrap()
        })
    });
    let p = log.inclusion_proof(54_321, size).unwrap();
    g.bench_function("inclusion_verify", |b| {
        b.iter(|| {
            assert!(verify_inclusion(
                &p.leaf_hash,
                p.index,
                p.size,
                &p.path,
                &p.root
            ))
        })
    });
    g.bench_function("consistency_generate", |b| {
        b.iter(|| log.consistency_proof(33_333, size).unwrap())
    });
    let c = log.consistency_proof(33_333, size).unwrap();
    g.bench_function("consistency_verify", |b| {
        b.iter(|| {
            assert!(verify_consistency(
                c.old_size,
                c.new_size,
                &c.old_root,
                &c.new_root,
                &c.path
            ))
        })
    });
    g.finish();
    log.shutdown().unwrap();
}

/// What the gateway's request thread does for each record once the bodies are hashed: puts the two
/// digests into the record, then validates and encodes it (`Prepared::new`, the caller's share of
/// an append).
fn prepare(c: &mut Criterion) {
    let base = record(7, &Pseudonymiser::from_key([0x11; 32]));
    let request_digest = [0x5au8; 32];
    let response_digest = [0xa5u8; 32];
    let mut g = c.benchmark_group("record_prepare");
    g.bench_function("gateway_record", |b| {
        b.iter_batched(
            || base.clone(),
            |mut r| {
                r.request_sha256 = Some(request_digest);
                r.response_sha256 = Some(response_digest);
                Prepared::new(&r).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, appends, batched, proofs, prepare);
criterion_main!(benches);
