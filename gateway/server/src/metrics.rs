//! Prometheus metrics in text exposition format. Hand-rolled over atomics: a handful of counters
//! and fixed-bucket histograms do not justify a registry dependency on the hot path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.25, 1.0,
];

#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(self.buckets.iter()) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, bucket) in BUCKETS.iter().zip(self.buckets.iter()) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Response classes counted per route.
#[derive(Debug, Default)]
pub struct StatusCounters {
    pub ok: AtomicU64,
    pub client_error: AtomicU64,
    pub server_error: AtomicU64,
}

/// Pipeline stages whose latency is recorded.
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    Decode,
    Policy,
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: StatusCounters,
    pub decisions_allow: AtomicU64,
    pub decisions_deny: AtomicU64,
    pub decisions_refused: AtomicU64,
    pub decode_latency: Histogram,
    pub policy_latency: Histogram,
    pub request_latency: Histogram,
    pub policy_reloads_ok: AtomicU64,
    pub policy_reloads_failed: AtomicU64,
    pub rate_limited_ip: AtomicU64,
    pub rate_limited_app: AtomicU64,
    pub rate_limited_wallet: AtomicU64,
    pub rate_limited_user: AtomicU64,
}

impl Metrics {
    pub fn count_status(&self, status: u16) {
        let c = match status {
            500.. => &self.requests.server_error,
            400..=499 => &self.requests.client_error,
            _ => &self.requests.ok,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// One decision, by its verdict.
    pub fn count_decision(&self, verdict: crate::service::pipeline::Verdict) {
        let c = if verdict.is_allow() {
            &self.decisions_allow
        } else {
            &self.decisions_deny
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// One request refused by the named limiter (`ip`, `app`, `wallet`).
    pub fn count_rate_limited(&self, limiter: &str) {
        let c = match limiter {
            "ip" => &self.rate_limited_ip,
            "app" => &self.rate_limited_app,
            "user" => &self.rate_limited_user,
            _ => &self.rate_limited_wallet,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stage(&self, stage: Stage, d: Duration) {
        match stage {
            Stage::Decode => self.decode_latency.observe(d),
            Stage::Policy => self.policy_latency.observe(d),
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.push_str("# HELP parapet_http_requests_total HTTP requests by status class.\n# TYPE parapet_http_requests_total counter\n");
        let _ = writeln!(
            out,
            "parapet_http_requests_total{{class=\"2xx\"}} {}",
            r(&self.requests.ok)
        );
        let _ = writeln!(
            out,
            "parapet_http_requests_total{{class=\"4xx\"}} {}",
            r(&self.requests.client_error)
        );
        let _ = writeln!(
            out,
            "parapet_http_requests_total{{class=\"5xx\"}} {}",
            r(&self.requests.server_error)
        );
        out.push_str("# HELP parapet_decisions_total Decisions by outcome (refused = input rejected before Cedar).\n# TYPE parapet_decisions_total counter\n");
        let _ = writeln!(
            out,
            "parapet_decisions_total{{outcome=\"allow\"}} {}",
            r(&self.decisions_allow)
        );
        let _ = writeln!(
            out,
            "parapet_decisions_total{{outcome=\"deny\"}} {}",
            r(&self.decisions_deny)
        );
        let _ = writeln!(
            out,
            "parapet_decisions_total{{outcome=\"refused\"}} {}",
            r(&self.decisions_refused)
        );
        out.push_str("# HELP parapet_stage_seconds Pipeline stage latency.\n# TYPE parapet_stage_seconds histogram\n");
        self.decode_latency
            .render(&mut out, "parapet_stage_seconds", "stage=\"decode\"");
        self.policy_latency
            .render(&mut out, "parapet_stage_seconds", "stage=\"policy\"");
        out.push_str("# HELP parapet_request_seconds Latency of /v1 requests.\n# TYPE parapet_request_seconds histogram\n");
        self.request_latency
            .render(&mut out, "parapet_request_seconds", "");
        out.push_str("# HELP parapet_policy_reloads_total Policy reloads by result.\n# TYPE parapet_policy_reloads_total counter\n");
        let _ = writeln!(
            out,
            "parapet_policy_reloads_total{{result=\"ok\"}} {}",
            r(&self.policy_reloads_ok)
        );
        let _ = writeln!(
            out,
            "parapet_policy_reloads_total{{result=\"failed\"}} {}",
            r(&self.policy_reloads_failed)
        );
        out.push_str("# HELP parapet_rate_limited_total Requests refused by a rate limit, by limiter.\n# TYPE parapet_rate_limited_total counter\n");
        for (limiter, counter) in [
            ("ip", &self.rate_limited_ip),
            ("app", &self.rate_limited_app),
            ("wallet", &self.rate_limited_wallet),
            ("user", &self.rate_limited_user),
        ] {
            let _ = writeln!(
                out,
                "parapet_rate_limited_total{{limiter=\"{limiter}\"}} {}",
                r(counter)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.stage(Stage::Decode, Duration::from_micros(7));
        m.stage(Stage::Decode, Duration::from_millis(2));
        let text = m.render();
        assert!(text.contains("parapet_stage_seconds_bucket{stage=\"decode\",le=\"0.00001\"} 1"));
        assert!(text.contains("parapet_stage_seconds_bucket{stage=\"decode\",le=\"0.005\"} 2"));
        assert!(text.contains("parapet_stage_seconds_count{stage=\"decode\"} 2"));
    }
}
