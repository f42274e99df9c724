//! Request metrics of the client service: a latency histogram and a count per method and
//! outcome (the gRPC code), kept for the life of the process and exported on `/metrics`
//! as `flotilla_kv_request_seconds` and `flotilla_kv_requests_total`.

use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

fn latency_histogram() -> Histogram {
    // 100 µs to about 13 s.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
}

/// Client request counters and latencies, shared by every call.
#[derive(Clone)]
pub struct RequestMetrics {
    latency: Family<Labels, Histogram, fn() -> Histogram>,
    outcomes: Family<Labels, Counter>,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            outcomes: Family::default(),
        }
    }
}

impl RequestMetrics {
    /// Records one call of `method` that started at `started` and ended with `code`.
    pub fn observe(&self, method: &str, code: tonic::Code, started: Instant) {
        let method = vec![("method".to_string(), method.to_string())];
        self.latency
            .get_or_create(&method)
            .observe(started.elapsed().as_secs_f64());
        let mut labels = method;
        labels.push(("code".to_string(), format!("{code:?}")));
        self.outcomes.get_or_create(&labels).inc();
    }

    /// Adds the metrics to a scrape's registry (they stay shared with this value).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kv_request_seconds",
            "Client request latency by method",
            self.latency.clone(),
        );
        registry.register(
            "kv_requests",
            "Client requests by method and gRPC code",
            self.outcomes.clone(),
        );
    }
}
