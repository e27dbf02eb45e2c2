//! The `/metrics` HTTP endpoint, and the Prometheus text of the proxy's latency histograms.
//!
//! Counters, gauges and the (rare) topology-refresh histogram live in the
//! `metrics-exporter-prometheus` registry. The per-command and per-node latency histograms, and
//! the per-node counters (whose label values must leave with a node that leaves the topology,
//! which the exporter's registry cannot do), are rendered here, straight from the workers' bucket counts: the exporter takes histogram
//! samples one at a time, and replaying every request of a second into it cost more CPU than
//! the rest of the proxy's bookkeeping together (and buffered a value per request until its
//! upkeep ran). Invariants: a scrape returns the registry's text and the histogram text written
//! by the same flush ([`crate::metrics::prom::FLUSH_EVERY`]), so `_count` agrees with
//! `slotproxy_commands_total`; buckets are cumulative and end with `+Inf` = `_count`, as the
//! exposition format requires; label values come from the command table and the node
//! registry, never from client input.

use crate::metrics::stats::{HistSnap, BUCKETS_US};
use metrics_exporter_prometheus::PrometheusHandle;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

static REGISTRY: OnceLock<PrometheusHandle> = OnceLock::new();
static HISTOGRAMS: Mutex<String> = Mutex::new(String::new());

/// Keeps the exporter's handle for rendering (first call wins).
pub fn set_registry(handle: PrometheusHandle) {
    let _ = REGISTRY.set(handle);
}

/// Replaces the histogram text served from now on.
pub fn set_histograms(text: String) {
    *HISTOGRAMS.lock().unwrap_or_else(|e| e.into_inner()) = text;
}

/// Runs the exporter's periodic maintenance (draining its own histogram samples).
pub fn upkeep() {
    if let Some(r) = REGISTRY.get() {
        r.run_upkeep();
    }
}

/// The whole exposition text: the registry's families, then the latency histograms.
pub fn text() -> String {
    let mut out = REGISTRY.get().map(|r| r.render()).unwrap_or_default();
    out.push_str(&HISTOGRAMS.lock().unwrap_or_else(|e| e.into_inner()));
    out
}

/// One counter or gauge family (`kind`) in the text format: `series` are (labels without
/// braces, value). Nothing is written for a family without series.
pub fn render_values(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    series: &[(String, u64)],
) {
    if series.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in series {
        let _ = writeln!(out, "{name}{{{labels}}} {v}");
    }
}

/// One histogram family in the text format: `series` are (labels without braces, buckets).
/// Nothing is written for a family without series.
pub fn render_histogram(out: &mut String, name: &str, help: &str, series: &[(String, HistSnap)]) {
    if series.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (labels, h) in series {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, &bound_us) in BUCKETS_US.iter().enumerate() {
            cumulative += h.counts[i];
            let le = bound_us as f64 / 1e6;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let count: u64 = h.counts.iter().sum();
        let sum_us: u64 = h.sums_us.iter().sum();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = |l: &str| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{{{l}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), sum_us as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{} {count}", braces(labels));
    }
}

/// Longest request head the endpoint reads.
const MAX_HEAD: usize = 8 * 1024;
/// A scrape connection that has not been answered in this time is dropped.
const SCRAPE_DEADLINE: Duration = Duration::from_secs(10);

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) {
    loop {
        let mut stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let _ = tokio::time::timeout(SCRAPE_DEADLINE, answer(&mut stream)).await;
        });
    }
}

/// What the endpoint answers to a request line: status and body.
fn respond(request_line: &str) -> (&'static str, String) {
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => ("200 OK", text()),
        ("GET", _) => (
            "404 Not Found",
            "not found: the metrics are at /metrics\n".into(),
        ),
        _ => ("405 Method Not Allowed", "only GET /metrics\n".into()),
    }
}

async fn answer(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
        if head.len() > MAX_HEAD {
            let reply = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            stream.write_all(reply.as_bytes()).await?;
            return stream.shutdown().await;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let (status, body) = respond(text.lines().next().unwrap_or_default());
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::stats::NB;

    #[test]
    fn histograms_are_cumulative_and_end_with_inf_equal_to_count() {
        let mut h = HistSnap::default();
        h.counts[0] = 2; // <= 100us
        h.sums_us[0] = 150;
        h.counts[3] = 1; // <= 1ms
        h.sums_us[3] = 800;
        h.counts[NB - 1] = 1; // above the last bound
        h.sums_us[NB - 1] = 20_000_000;
        let mut out = String::new();
        render_histogram(
            &mut out,
            "x_seconds",
            "Help.",
            &[("command=\"get\"".into(), h)],
        );
        assert!(out.starts_with("# HELP x_seconds Help.\n# TYPE x_seconds histogram\n"));
        assert!(out.contains("x_seconds_bucket{command=\"get\",le=\"0.0001\"} 2\n"));
        assert!(out.contains("x_seconds_bucket{command=\"get\",le=\"0.0005\"} 2\n"));
        assert!(out.contains("x_seconds_bucket{command=\"get\",le=\"0.001\"} 3\n"));
        assert!(out.contains("x_seconds_bucket{command=\"get\",le=\"10\"} 3\n"));
        assert!(out.contains("x_seconds_bucket{command=\"get\",le=\"+Inf\"} 4\n"));
        assert!(out.contains("x_seconds_count{command=\"get\"} 4\n"));
        assert!(out.contains("x_seconds_sum{command=\"get\"} 20.00095\n"));
        let mut none = String::new();
        render_histogram(&mut none, "x_seconds", "Help.", &[]);
        assert!(none.is_empty());
        let mut plain = String::new();
        render_histogram(&mut plain, "y", "H.", &[(String::new(), h)]);
        assert!(plain.contains("y_bucket{le=\"+Inf\"} 4\ny_sum 20.00095\ny_count 4\n"));
    }

    #[test]
    fn only_get_metrics_is_served() {
        assert_eq!(respond("GET /metrics HTTP/1.1").0, "200 OK");
        assert_eq!(respond("GET /metrics?x=1 HTTP/1.0").0, "200 OK");
        assert_eq!(respond("GET / HTTP/1.1").0, "404 Not Found");
        assert_eq!(
            respond("POST /metrics HTTP/1.1").0,
            "405 Method Not Allowed"
        );
        assert_eq!(respond("").0, "405 Method Not Allowed");
    }
}
