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

/// One finished request, as metrics see it.
pub struct Observation<'a> {
    pub service: &'a str,
    pub consumer: Option<&'a str>,
    pub decision: &'a str,
    pub reason: Option<&'a str>,
    pub status: u16,
    pub total: Duration,
    pub upstream: Option<Duration>,
}

/// The gateway's request metrics.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<RequestLabels, u64>>,
    /// Time spent in the gateway itself (total minus upstream), per service.
    gateway_durations: Mutex<BTreeMap<String, Histogram>>,
    /// Time spent waiting for the registry, per service.
    upstream_durations: Mutex<BTreeMap<String, Histogram>>,
}

impl Histogram {
    fn record(&mut self, took: Duration) {
        let seconds = took.as_secs_f64();
        for (count, bound) in self.counts.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *count += 1;
            }
        }
        self.sum += seconds;
        self.total += 1;
    }
}

fn render_histograms(
    out: &mut String,
    name: &str,
    help: &str,
    histograms: &Mutex<BTreeMap<String, Histogram>>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let Ok(histograms) = histograms.lock() else {
        return;
    };
    for (service, histogram) in histograms.iter() {
        let cumulative = histogram.counts.iter().zip(BUCKETS).map(|(c, b)| (b, *c));
        write_series(
            out,
            name,
            &format!("service=\"{service}\""),
            cumulative,
            histogram.sum,
            histogram.total,
        );
    }
}

/// Writes one Prometheus histogram (HELP, TYPE and one unlabelled series) from cumulative
/// `(upper bound in seconds, count)` buckets.
pub fn render_histogram(
    out: &mut String,
    name: &str,
    help: &str,
    cumulative: impl Iterator<Item = (f64, u64)>,
    sum_seconds: f64,
    count: u64,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    write_series(out, name, "", cumulative, sum_seconds, count);
}

/// The `_bucket`, `_sum` and `_count` lines of one series; `labels` is `k="v",…` or empty.
fn write_series(
    out: &mut String,
    name: &str,
    labels: &str,
    cumulative: impl Iterator<Item = (f64, u64)>,
    sum_seconds: f64,
    count: u64,
) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (bound, n) in cumulative {
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
    let braces = |l: &str| {
        if l.is_empty() {
            String::new()
        } else {
            format!("{{{l}}}")
        }
    };
    let _ = writeln!(out, "{name}_sum{} {sum_seconds}", braces(labels));
    let _ = writeln!(out, "{name}_count{} {count}", braces(labels));
}

impl Metrics {
    /// Counts one finished request.
    pub fn observe(&self, seen: &Observation<'_>) {
        let service = if seen.service.is_empty() {
            "none"
        } else {
            seen.service
        };
        if let Ok(mut requests) = self.requests.lock() {
            let key = (
                service.to_owned(),
                seen.consumer.unwrap_or("none").to_owned(),
                seen.decision.to_owned(),
                seen.reason.unwrap_or("none").to_owned(),
                seen.status,
            );
            *requests.entry(key).or_default() += 1;
        }
        let upstream = seen.upstream.unwrap_or_default();
        if let Ok(mut durations) = self.gateway_durations.lock() {
            durations
                .entry(service.to_owned())
                .or_default()
                .record(seen.total.saturating_sub(upstream));
        }
        if let Some(upstream) = seen.upstream
            && let Ok(mut durations) = self.upstream_durations.lock()
        {
            durations
                .entry(service.to_owned())
                .or_default()
                .record(upstream);
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
        render_histograms(
            out,
            "tollbu_gateway_duration_seconds",
            "Time a request spent in the gateway itself (token, policy, filter, audit), excluding the registry.",
            &self.gateway_durations,
        );
        render_histograms(
            out,
            "tollbu_upstream_duration_seconds",
            "Time waiting for the registry's answer.",
            &self.upstream_durations,
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn histograms_render_in_prometheus_text_format_with_and_without_labels() {
        let metrics = Metrics::default();
        metrics.observe(&Observation {
            service: "population",
            consumer: None,
            decision: "allow",
            reason: None,
            status: 200,
            total: Duration::from_millis(3),
            upstream: Some(Duration::from_millis(1)),
        });
        let mut out = String::new();
        metrics.render(&mut out);
        for line in [
            "tollbu_gateway_duration_seconds_bucket{service=\"population\",le=\"0.001\"} 0",
            "tollbu_gateway_duration_seconds_bucket{service=\"population\",le=\"0.0025\"} 1",
            "tollbu_gateway_duration_seconds_bucket{service=\"population\",le=\"+Inf\"} 1",
            "tollbu_gateway_duration_seconds_count{service=\"population\"} 1",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing from\n{out}");
        }

        let mut out = String::new();
        render_histogram(
            &mut out,
            "x_seconds",
            "X.",
            [(0.5, 1), (1.0, 2)].into_iter(),
            1.25,
            3,
        );
        assert_eq!(
            out,
            "# HELP x_seconds X.\n# TYPE x_seconds histogram\nx_seconds_bucket{le=\"0.5\"} 1\n\
             x_seconds_bucket{le=\"1\"} 2\nx_seconds_bucket{le=\"+Inf\"} 3\nx_seconds_sum 1.25\n\
             x_seconds_count 3\n"
        );
    }
}
