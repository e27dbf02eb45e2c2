//! Replica health for reads from replicas: what the poller
//! ([`crate::cluster::replica_poll`]) publishes about which replicas may serve reads, and the
//! pure rules it applies to `INFO replication`.
//!
//! Lag is measured from replication offsets. Each poll records the master's
//! `master_repl_offset` with the instant the question was sent; a replica's lag is the time
//! since the most recent such sample whose offset the replica's `slave_repl_offset` has
//! reached (everything the master had written at that instant, the replica has). So the lag is
//! an upper bound, exact to within one poll interval, and a replica that is behind every
//! sample kept counts as lagging. A replica is usable when its `master_link_status` is `up`,
//! its lag is at most `max_replica_lag`, and it answered the last poll.
//!
//! Invariant: the snapshot ([`ReplicaHealth`]) is replaced whole, like the slot map; workers
//! read it without locks. The poller runs only while reads may go to replicas (`read_from` other
//! than `master`, or a client sent READONLY); otherwise it publishes an empty snapshot, in
//! which no replica is usable.

use crate::cluster::SlotMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One replica as the last poll saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaState {
    /// `ip:port`.
    pub addr: Arc<str>,
    /// Whether it may serve reads.
    pub usable: bool,
    /// Whether its host is in `prefer_hosts` (worked out once per poll, not per read).
    pub preferred: bool,
}

/// A master's replicas, in the order the slot map lists them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MasterHealth {
    /// The master's `ip:port`.
    pub addr: Arc<str>,
    /// Whether its host is in `prefer_hosts` (`read_from = any` then keeps it in the turn).
    pub preferred: bool,
    /// Its replicas.
    pub replicas: Vec<ReplicaState>,
}

/// The published health of every master's replicas.
#[derive(Clone, Debug, Default)]
pub struct ReplicaHealth {
    /// Polls done so far; a worker that saw a replica fail skips it until a later poll.
    pub round: u64,
    /// The version of the slot map the poll used: `masters` is indexed like its nodes.
    pub map_version: u64,
    /// One entry per node of that map.
    pub masters: Vec<MasterHealth>,
}

impl ReplicaHealth {
    /// The health of the replicas of `map`'s node `index`: by index when the snapshot was made
    /// from this map, by address otherwise (the map was patched since). `None` when the master
    /// was not polled.
    pub fn of(&self, map: &SlotMap, index: usize) -> Option<&MasterHealth> {
        if self.map_version == map.version {
            return self.masters.get(index);
        }
        let addr = &map.nodes.get(index)?.addr;
        self.masters.iter().find(|m| &m.addr == addr)
    }
}

/// What `INFO replication` says that the health needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicationInfo {
    /// `role:master`.
    pub master: bool,
    /// `master_repl_offset` (on a master: how much it has written).
    pub master_offset: Option<u64>,
    /// `slave_repl_offset` (on a replica: how much it has applied).
    pub replica_offset: Option<u64>,
    /// `master_link_status:up`.
    pub link_up: bool,
}

/// Reads the fields of an `INFO replication` reply.
pub fn parse_info(text: &str) -> ReplicationInfo {
    let mut info = ReplicationInfo::default();
    for line in text.lines() {
        let Some((k, v)) = line.trim_end().split_once(':') else {
            continue;
        };
        match k {
            "role" => info.master = v == "master",
            "master_repl_offset" => info.master_offset = v.parse().ok(),
            "slave_repl_offset" => info.replica_offset = v.parse().ok(),
            "master_link_status" => info.link_up = v == "up",
            _ => {}
        }
    }
    info
}

/// A master's recent offsets: (the instant the question was sent, the offset it answered),
/// oldest first.
pub type History = VecDeque<(Instant, u64)>;

/// How far behind a replica at `offset` is at `now`, given its master's `history`: the time
/// since the latest sample it has reached; `None` when it has reached none.
pub fn lag(history: &History, offset: u64, now: Instant) -> Option<Duration> {
    history
        .iter()
        .rev()
        .find(|(_, m)| *m <= offset)
        .map(|(at, _)| now.saturating_duration_since(*at))
}

/// Whether a replica may serve reads.
pub fn usable(info: &ReplicationInfo, lag: Option<Duration>, max_lag: Duration) -> bool {
    !info.master && info.link_up && lag.is_some_and(|l| l <= max_lag)
}

/// Whether the node at `addr` (`host:port`, `[v6]:port` or `v6:port`) is on one of `hosts`
/// (the `prefer_hosts` setting; host names compare without regard to case).
pub fn on_hosts(addr: &str, hosts: &[String]) -> bool {
    if hosts.is_empty() {
        return false;
    }
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    hosts.iter().any(|h| {
        h.trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .eq_ignore_ascii_case(host)
    })
}

/// Time between polls: a quarter of `max_replica_lag` (the lag is known to within one poll),
/// at least 50 ms and at most 1 s.
pub fn poll_interval(max_lag: Duration) -> Duration {
    (max_lag / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Drops samples older than the longest lag worth telling apart (plus two polls), keeping the
/// newest always.
pub fn trim(history: &mut History, now: Instant, max_lag: Duration) {
    let keep = max_lag * 2 + poll_interval(max_lag) * 2;
    while history.len() > 1
        && history
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > keep)
    {
        history.pop_front();
    }
    while history.len() > 1024 {
        history.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_replication_is_read_on_both_roles() {
        let master = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\nslave0:ip=127.0.0.1,port=7001,state=online,offset=98,lag=0\r\nmaster_repl_offset:112\r\n";
        let m = parse_info(master);
        assert!(m.master);
        assert_eq!(m.master_offset, Some(112));
        let replica = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_link_status:up\r\nslave_repl_offset:98\r\nmaster_repl_offset:98\r\n";
        let r = parse_info(replica);
        assert!(!r.master && r.link_up);
        assert_eq!(r.replica_offset, Some(98));
        assert!(!parse_info("role:slave\r\nmaster_link_status:down\r\n").link_up);
    }

    #[test]
    fn lag_is_the_time_since_the_latest_master_offset_the_replica_reached() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let h: History = [(t0, 100), (t0 + ms(250), 200), (t0 + ms(500), 300)]
            .into_iter()
            .collect();
        let now = t0 + ms(600);
        assert_eq!(lag(&h, 300, now), Some(ms(100)));
        assert_eq!(lag(&h, 250, now), Some(ms(350)));
        assert_eq!(lag(&h, 100, now), Some(ms(600)));
        // Behind everything kept: not known to be within any bound.
        assert_eq!(lag(&h, 99, now), None);
        assert_eq!(lag(&History::new(), 5, now), None);
    }

    #[test]
    fn only_a_linked_replica_within_the_bound_is_usable() {
        let s = Duration::from_secs;
        let up = ReplicationInfo {
            link_up: true,
            replica_offset: Some(1),
            ..Default::default()
        };
        assert!(usable(&up, Some(s(0)), s(1)));
        assert!(usable(&up, Some(s(1)), s(1)));
        assert!(!usable(&up, Some(s(2)), s(1)));
        assert!(!usable(&up, None, s(1)));
        let down = ReplicationInfo {
            link_up: false,
            ..up.clone()
        };
        assert!(!usable(&down, Some(s(0)), s(1)));
        // A node that says it is a master (promoted) is no replica to read from.
        let promoted = ReplicationInfo { master: true, ..up };
        assert!(!usable(&promoted, Some(s(0)), s(1)));
    }

    #[test]
    fn preferred_hosts_match_the_host_part_of_an_address() {
        let hosts = vec!["127.0.0.2".to_string(), "Redis-B.example".to_string()];
        assert!(on_hosts("127.0.0.2:7000", &hosts));
        assert!(!on_hosts("127.0.0.20:7000", &hosts));
        assert!(!on_hosts("127.0.0.1:7000", &hosts));
        assert!(on_hosts("redis-b.example:6379", &hosts));
        assert!(!on_hosts("127.0.0.2:7000", &[]));
        let v6 = vec!["::1".to_string()];
        assert!(on_hosts("[::1]:7000", &v6));
        assert!(on_hosts("::1:7000", &v6));
        assert!(on_hosts("::1:7000", &["[::1]".to_string()]));
    }

    #[test]
    fn polls_are_a_quarter_of_the_bound_within_limits() {
        let ms = Duration::from_millis;
        assert_eq!(poll_interval(ms(1000)), ms(250));
        assert_eq!(poll_interval(ms(10)), ms(50));
        assert_eq!(poll_interval(ms(60_000)), ms(1000));
    }

    #[test]
    fn history_keeps_recent_samples_and_always_the_newest() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut h: History = [(t0, 1), (t0 + s(10), 2)].into_iter().collect();
        trim(&mut h, t0 + s(11), s(1));
        assert_eq!(h.len(), 1);
        trim(&mut h, t0 + s(100), s(1));
        assert_eq!(h.into_iter().map(|x| x.1).collect::<Vec<_>>(), [2]);
    }
}
