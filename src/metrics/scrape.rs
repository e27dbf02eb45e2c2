//! The `/metrics` HTTP endpoint, and the Prometheus text format the proxy writes its metrics in.
//!
//! The proxy renders its whole exposition itself, with no metrics library and no process-wide
//! registry: [`crate::metrics::prom`]'s flush reads the proxy's own counters and bucket counts
//! once per [`crate::metrics::prom::FLUSH_EVERY`] and stores the text in the proxy's
//! [`Exposition`] (owned by its [`crate::shared::Shared`]), which its endpoint serves. Two
//! reasons: latency histograms come from the workers' bucket counts (an exporter that takes
//! samples one at a time cost more CPU, replaying each second's requests, than the rest of the
//! bookkeeping together), and two proxies in one process (tests, embedders) must not share or
//! overwrite each other's counters.
//!
//! Invariants: one exposition per running proxy, replaced whole by each flush, so a scrape
//! sees counters and histogram `_count`s written by the same flush (`_count` agrees with
//! `slotproxy_commands_total`); buckets are cumulative and end with `+Inf` = `_count`, as the
//! exposition format requires; label values come from the command table, the node registry
//! and fixed word lists, never from client input.

use crate::metrics::stats::{HistSnap, BUCKETS_US};
use std::fmt::{Display, Write as _};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One proxy's Prometheus text, as its last flush wrote it. Empty until the first flush (and
/// for good when metrics are off).
#[derive(Debug, Default)]
pub struct Exposition {
    text: Mutex<String>,
}

impl Exposition {
    /// Replaces the text served from now on.
    pub fn set(&self, text: String) {
        // A panic while holding the lock leaves a whole string behind; keep serving it.
        *self.text.lock().unwrap_or_else(|e| e.into_inner()) = text;
    }

    /// The text a scrape returns now.
    pub fn text(&self) -> String {
        self.text.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// `{labels}`, or nothing for a series without labels (`labels` is written without braces).
fn braces(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

/// One counter or gauge family (`kind`) in the text format: `series` are (labels without
/// braces, `""` for none; value). Nothing is written for a family without series.
pub fn render_values<V: Display>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    series: &[(String, V)],
) {
    if series.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in series {
        let _ = writeln!(out, "{name}{} {v}", braces(labels));
    }
}

/// A family with one series and no labels.
pub fn render_value<V: Display>(out: &mut String, name: &str, kind: &str, help: &str, v: V) {
    render_values(out, name, kind, help, &[(String::new(), v)]);
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
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), sum_us as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{} {count}", braces(labels));
    }
}

/// Longest request head the endpoint reads.
const MAX_HEAD: usize = 8 * 1024;
/// A scrape connection that has not been answered in this time is dropped.
const SCRAPE_DEADLINE: Duration = Duration::from_secs(10);

/// Serves `GET /metrics` on `listener` from `exposition` (the proxy's own) until the task is
/// dropped.
pub async fn serve(listener: TcpListener, exposition: Arc<Exposition>) {
    loop {
        let mut stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let exposition = Arc::clone(&exposition);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(SCRAPE_DEADLINE, answer(&mut stream, &exposition)).await;
        });
    }
}

/// What the endpoint answers to a request line: status line and body.
fn respond(request_line: &str, exposition: &Exposition) -> (String, String) {
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    let (status, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", exposition.text()),
        ("GET", _) => (
            "404 Not Found",
            "not found: the metrics are at /metrics\n".into(),
        ),
        _ => ("405 Method Not Allowed", "only GET /metrics\n".into()),
    };
    (status.to_string(), body)
}

async fn answer(stream: &mut TcpStream, exposition: &Exposition) -> std::io::Result<()> {
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
    let (status, body) = respond(text.lines().next().unwrap_or_default(), exposition);
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
    fn only_get_metrics_is_served_and_from_this_exposition() {
        let e = Exposition::default();
        e.set("x_total 1\n".into());
        assert_eq!(
            respond("GET /metrics HTTP/1.1", &e),
            ("200 OK".to_string(), "x_total 1\n".to_string())
        );
        assert_eq!(respond("GET /metrics?x=1 HTTP/1.0", &e).0, "200 OK");
        assert_eq!(respond("GET / HTTP/1.1", &e).0, "404 Not Found");
        assert_eq!(
            respond("POST /metrics HTTP/1.1", &e).0,
            "405 Method Not Allowed"
        );
        assert_eq!(respond("", &e).0, "405 Method Not Allowed");
        // Another proxy's exposition is another value.
        assert_eq!(
            respond("GET /metrics HTTP/1.1", &Exposition::default()).1,
            ""
        );
    }

    #[test]
    fn values_with_and_without_labels() {
        let mut out = String::new();
        render_value(&mut out, "up_seconds", "gauge", "Up.", 1.5);
        render_values(
            &mut out,
            "n_total",
            "counter",
            "N.",
            &[("kind=\"a\"".to_string(), 2u64)],
        );
        render_values::<u64>(&mut out, "none_total", "counter", "None.", &[]);
        assert_eq!(
            out,
            "# HELP up_seconds Up.\n# TYPE up_seconds gauge\nup_seconds 1.5\n\
             # HELP n_total N.\n# TYPE n_total counter\nn_total{kind=\"a\"} 2\n"
        );
    }
}
