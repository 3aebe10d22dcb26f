//! Counters and histograms for `/metrics`, in Prometheus text format.
//!
//! Label sets are bounded: services and reason codes come from config and
//! code; consumers are organisation numbers that passed token validation
//! (or `none`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the request-duration histogram.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// (service, consumer, decision, reason, status).
type RequestLabels = (String, String, String, String, u16);

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    total: u64,
}

/// The gateway's request metrics.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<RequestLabels, u64>>,
    durations: Mutex<BTreeMap<String, Histogram>>,
}

impl Metrics {
    /// Counts one finished request.
    pub fn observe(
        &self,
        service: &str,
        consumer: Option<&str>,
        decision: &str,
        reason: Option<&str>,
        status: u16,
        took: Duration,
    ) {
        let service = if service.is_empty() { "none" } else { service };
        if let Ok(mut requests) = self.requests.lock() {
            let key = (
                service.to_owned(),
                consumer.unwrap_or("none").to_owned(),
                decision.to_owned(),
                reason.unwrap_or("none").to_owned(),
                status,
            );
            *requests.entry(key).or_default() += 1;
        }
        if let Ok(mut durations) = self.durations.lock() {
            let histogram = durations.entry(service.to_owned()).or_default();
            let seconds = took.as_secs_f64();
            for (count, bound) in histogram.counts.iter_mut().zip(BUCKETS) {
                if seconds <= bound {
                    *count += 1;
                }
            }
            histogram.sum += seconds;
            histogram.total += 1;
        }
    }

    /// Renders the request metrics.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP tollbu_requests_total Requests decided by the gateway.\n# TYPE tollbu_requests_total counter\n");
        if let Ok(requests) = self.requests.lock() {
            for ((service, consumer, decision, reason, status), count) in requests.iter() {
                let _ = writeln!(
                    out,
                    "tollbu_requests_total{{service=\"{service}\",consumer=\"{consumer}\",decision=\"{decision}\",reason=\"{reason}\",status=\"{status}\"}} {count}"
                );
            }
        }
        out.push_str("# HELP tollbu_request_duration_seconds Time from request to released response.\n# TYPE tollbu_request_duration_seconds histogram\n");
        if let Ok(durations) = self.durations.lock() {
            for (service, histogram) in durations.iter() {
                for (count, bound) in histogram.counts.iter().zip(BUCKETS) {
                    let _ = writeln!(
                        out,
                        "tollbu_request_duration_seconds_bucket{{service=\"{service}\",le=\"{bound}\"}} {count}"
                    );
                }
                let _ = writeln!(
                    out,
                    "tollbu_request_duration_seconds_bucket{{service=\"{service}\",le=\"+Inf\"}} {}",
                    histogram.total
                );
                let _ = writeln!(
                    out,
                    "tollbu_request_duration_seconds_sum{{service=\"{service}\"}} {}",
                    histogram.sum
                );
                let _ = writeln!(
                    out,
                    "tollbu_request_duration_seconds_count{{service=\"{service}\"}} {}",
                    histogram.total
                );
            }
        }
    }
}
