//! What the proxy tells about itself: counters and histograms (kept by the data path), the
//! Prometheus export and its endpoint, INFO and the slow log, the sums over workers and the
//! point INFO counts from since CONFIG RESETSTAT.

pub mod cross_slot;
pub mod info;
pub mod prom;
pub mod scrape;
pub mod slowlog;
pub mod stats;
pub mod totals;
