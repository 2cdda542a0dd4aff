//! Prometheus metrics (text exposition format 0.0.4) without a metrics dependency: request
//! latency histograms by route and status, verification decisions by action, outcome and
//! reason, and store failures. Labels are fixed strings chosen by us (route
//! templates, reason codes), never request data, so the series stay few.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, slot) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if seconds <= *bound {
                *slot += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// The counters and histograms of one process.
#[derive(Debug, Default)]
pub struct Metrics {
    latency: Mutex<BTreeMap<(&'static str, &'static str, u16), Histogram>>,
    decisions: Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
    store_errors: AtomicU64,
}

impl Metrics {
    /// Records one request's latency under its route template and status.
    pub fn request(&self, method: &'static str, route: &'static str, status: u16, seconds: f64) {
        if let Ok(mut map) = self.latency.lock() {
            map.entry((method, route, status))
                .or_default()
                .observe(seconds);
        }
    }

    /// Counts one verification decision.
    pub fn decision(&self, action: &'static str, accepted: bool, reason: &'static str) {
        let outcome = if accepted { "success" } else { "refused" };
        if let Ok(mut map) = self.decisions.lock() {
            *map.entry((action, outcome, reason)).or_default() += 1;
        }
    }

    /// Counts one store failure (the request failed closed).
    pub fn store_error(&self) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP ap2_http_request_duration_seconds Request latency by route.\n");
        out.push_str("# TYPE ap2_http_request_duration_seconds histogram\n");
        if let Ok(map) = self.latency.lock() {
            for ((method, route, status), h) in map.iter() {
                let labels = format!("method=\"{method}\",route=\"{route}\",status=\"{status}\"");
                for (bound, count) in BUCKETS.iter().zip(h.counts.iter()) {
                    let _ = writeln!(
                        out,
                        "ap2_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}"
                    );
                }
                let _ = writeln!(
                    out,
                    "ap2_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "ap2_http_request_duration_seconds_sum{{{labels}}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "ap2_http_request_duration_seconds_count{{{labels}}} {}",
                    h.count
                );
            }
        }
        out.push_str("# HELP ap2_decisions_total Verification decisions by outcome and reason.\n");
        out.push_str("# TYPE ap2_decisions_total counter\n");
        if let Ok(map) = self.decisions.lock() {
            for ((action, outcome, reason), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "ap2_decisions_total{{action=\"{action}\",outcome=\"{outcome}\",reason=\"{reason}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP ap2_store_errors_total Store failures (requests failed closed).\n");
        out.push_str("# TYPE ap2_store_errors_total counter\n");
        let _ = writeln!(
            out,
            "ap2_store_errors_total {}",
            self.store_errors.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counters_add_up() {
        let m = Metrics::default();
        m.request("POST", "/v1/payments/verify", 200, 0.002);
        m.request("POST", "/v1/payments/verify", 200, 0.2);
        m.decision("payment.verify", true, "");
        m.decision("payment.verify", false, "replayed");
        m.decision("payment.verify", false, "replayed");
        m.store_error();
        let text = m.render();
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.starts_with(needle))
                .unwrap_or_else(|| panic!("{needle} missing:\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_owned()
        };
        let labels = "method=\"POST\",route=\"/v1/payments/verify\",status=\"200\"";
        assert_eq!(
            line(&format!(
                "ap2_http_request_duration_seconds_bucket{{{labels},le=\"0.001\"}}"
            )),
            "0"
        );
        assert_eq!(
            line(&format!(
                "ap2_http_request_duration_seconds_bucket{{{labels},le=\"0.0025\"}}"
            )),
            "1"
        );
        assert_eq!(
            line(&format!(
                "ap2_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}}"
            )),
            "2"
        );
        assert_eq!(
            line("ap2_decisions_total{action=\"payment.verify\",outcome=\"refused\",reason=\"replayed\"}"),
            "2"
        );
        assert_eq!(line("ap2_store_errors_total"), "1");
    }
}
