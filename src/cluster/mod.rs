//! The cluster as the proxy sees it: `CLUSTER NODES` parsing and the slot map.
//!
//! A [`SlotMap`] is an immutable snapshot: workers read it through an `ArcSwap` without locks,
//! and every change (a refresh, a MOVED patch) builds a new map with a higher version. Whether a
//! freshly read map may replace the current one is decided by the pure [`judge`], so that a
//! stale or partial view from one lagging node never replaces a better map.

pub mod replica_health;
pub mod replica_poll;
pub mod slots;
pub mod topology;

use crate::cluster::slots::SLOT_COUNT;
use std::sync::Arc;

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLine {
    /// 40-character node ID.
    pub id: String,
    /// IP (or host) the node is reached at; filled in from the asked address for `myself`
    /// when the node does not know its own address yet.
    pub ip: String,
    /// Client port.
    pub port: u16,
    /// Cluster bus port.
    pub cport: u16,
    /// The flags as reported (`myself`, `master`, `slave`, `fail?`, ...).
    pub flags: Vec<String>,
    /// The master's ID when this node is a replica.
    pub master_id: Option<String>,
    /// Last ping sent (ms since epoch, 0 when none is pending).
    pub ping_sent: u64,
    /// Last pong received (ms since epoch).
    pub pong_recv: u64,
    /// The node's config epoch.
    pub config_epoch: u64,
    /// Whether the node-to-node link is connected.
    pub connected: bool,
    /// Owned slot ranges, inclusive.
    pub slots: Vec<(u16, u16)>,
    /// Slots this node is migrating away: (slot, destination node ID).
    pub migrating: Vec<(u16, String)>,
    /// Slots this node is importing: (slot, source node ID).
    pub importing: Vec<(u16, String)>,
}

impl NodeLine {
    /// `ip:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
    /// Whether the node carries `flag`.
    pub fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
    /// Whether the node is a master.
    pub fn is_master(&self) -> bool {
        self.has("master")
    }
    /// Whether the node is (believed) failing by the node that reported it.
    pub fn is_failing(&self) -> bool {
        self.has("fail") || self.has("fail?")
    }
    /// Whether the line describes a node whose address can be used.
    pub fn is_usable(&self) -> bool {
        !self.has("handshake") && !self.has("noaddr") && !self.ip.is_empty() && self.port != 0
    }
}

/// Why a `CLUSTER NODES` line could not be read. `Display` is the text the survey, the
/// refresher and the admin engines report (every text of this parser, in one place); each
/// variant carries the line or field it is about, so the report names what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Fewer than the eight fixed fields.
    Short {
        /// The whole line.
        line: String,
    },
    /// The address field has no `:port`.
    Address {
        /// The address field as given.
        field: String,
    },
    /// The client port is not a number.
    Port {
        /// The address field as given.
        field: String,
    },
    /// A ping, pong or epoch field is not a number.
    Number {
        /// The field as given.
        field: String,
        /// The whole line.
        line: String,
    },
    /// A slot is not a number below 16384.
    Slot {
        /// The slot as given.
        field: String,
    },
    /// A slot range whose start is past its end.
    Range {
        /// The range as given.
        field: String,
    },
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Short { line } => write!(f, "short CLUSTER NODES line: {line:?}"),
            ParseError::Address { field } => write!(f, "bad address {field:?}"),
            ParseError::Port { field } => write!(f, "bad port in {field:?}"),
            ParseError::Number { field, line } => write!(f, "bad number {field:?} in {line:?}"),
            ParseError::Slot { field } => write!(f, "bad slot {field:?}"),
            ParseError::Range { field } => write!(f, "bad slot range {field:?}"),
        }
    }
}

impl std::error::Error for ParseError {}

fn parse_slot(s: &str) -> Result<u16, ParseError> {
    s.parse::<u16>()
        .ok()
        .filter(|&n| (n as usize) < SLOT_COUNT)
        .ok_or_else(|| ParseError::Slot { field: s.into() })
}

/// Parses one `CLUSTER NODES` line. `asked_ip` replaces an empty IP on the `myself` line.
pub fn parse_node_line(line: &str, asked_ip: &str) -> Result<NodeLine, ParseError> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 8 {
        return Err(ParseError::Short { line: line.into() });
    }
    // ip:port@cport[,hostname]
    let addr = f[1].split(',').next().unwrap_or_default();
    let (hostport, cport) = addr.split_once('@').unwrap_or((addr, "0"));
    let (ip, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| ParseError::Address { field: f[1].into() })?;
    let flags: Vec<String> = f[2].split(',').map(str::to_string).collect();
    let mut ip = ip.to_string();
    if ip.is_empty() && flags.iter().any(|x| x == "myself") {
        ip = asked_ip.to_string();
    }
    let num = |s: &str| {
        s.parse::<u64>().map_err(|_| ParseError::Number {
            field: s.into(),
            line: line.into(),
        })
    };
    let mut node = NodeLine {
        id: f[0].to_string(),
        ip,
        port: port
            .parse()
            .map_err(|_| ParseError::Port { field: f[1].into() })?,
        cport: cport.parse().unwrap_or(0),
        flags,
        master_id: (f[3] != "-").then(|| f[3].to_string()),
        ping_sent: num(f[4])?,
        pong_recv: num(f[5])?,
        config_epoch: num(f[6])?,
        connected: f[7] == "connected",
        slots: Vec::new(),
        migrating: Vec::new(),
        importing: Vec::new(),
    };
    for s in &f[8..] {
        if let Some(inner) = s.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
            if let Some((slot, dst)) = inner.split_once("->-") {
                node.migrating.push((parse_slot(slot)?, dst.to_string()));
            } else if let Some((slot, src)) = inner.split_once("-<-") {
                node.importing.push((parse_slot(slot)?, src.to_string()));
            }
        } else if let Some((a, b)) = s.split_once('-') {
            let (a, b) = (parse_slot(a)?, parse_slot(b)?);
            if a > b {
                return Err(ParseError::Range { field: (*s).into() });
            }
            node.slots.push((a, b));
        } else {
            let a = parse_slot(s)?;
            node.slots.push((a, a));
        }
    }
    Ok(node)
}

/// Parses a whole `CLUSTER NODES` reply.
pub fn parse_cluster_nodes(text: &str, asked_ip: &str) -> Result<Vec<NodeLine>, ParseError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_node_line(l, asked_ip))
        .collect()
}

/// A node that owns slots in a [`SlotMap`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapNode {
    /// `ip:port`, the key workers use for their backend connections.
    pub addr: Arc<str>,
    /// Node ID; empty for a node learned only from a MOVED redirect.
    pub id: String,
    /// Config epoch as reported; 0 when unknown.
    pub epoch: u64,
    /// Replicas' addresses.
    pub replicas: Vec<Arc<str>>,
    /// Whether the reporting node flagged it as failing.
    pub failing: bool,
}

/// Slot index value for a slot no node serves.
const UNOWNED: u16 = u16::MAX;

/// An immutable snapshot of slot ownership.
#[derive(Clone, Debug)]
pub struct SlotMap {
    /// Increases with every map the proxy installs.
    pub version: u64,
    /// Nodes that own slots (masters), indexed by `slots`.
    pub nodes: Vec<MapNode>,
    /// For each slot, an index into `nodes`, or `UNOWNED`.
    slots: Box<[u16]>,
    /// Where the map came from (`ip:port` of the answering node, or `moved`).
    pub source: String,
    /// Every usable address the trusted `CLUSTER NODES` listed (masters with or without slots,
    /// replicas), sorted. Only these (and the configured seeds) are ever connected to: a
    /// redirect to anything else is a claim to be confirmed by a refresh, since a script can
    /// return any error text.
    known: Arc<[Arc<str>]>,
}

impl SlotMap {
    /// A map in which no slot is served: the proxy's state before any node answered.
    pub fn empty() -> Self {
        SlotMap {
            version: 0,
            nodes: Vec::new(),
            slots: vec![UNOWNED; SLOT_COUNT].into_boxed_slice(),
            source: String::new(),
            known: Arc::from(Vec::new()),
        }
    }

    /// Whether the trusted topology this map came from lists `addr` (as a master or a
    /// replica). See [`SlotMap::known`].
    pub fn knows(&self, addr: &str) -> bool {
        self.known.binary_search_by(|a| (**a).cmp(addr)).is_ok()
    }

    /// Every address the map's topology lists, sorted.
    pub fn known(&self) -> &[Arc<str>] {
        &self.known
    }

    /// Builds a map from parsed `CLUSTER NODES` lines. Masters without a usable address are
    /// left out, so their slots read as unserved.
    pub fn from_nodes(lines: &[NodeLine], version: u64, source: &str) -> SlotMap {
        let mut map = SlotMap::empty();
        map.version = version;
        map.source = source.to_string();
        let mut known: Vec<Arc<str>> = lines
            .iter()
            .filter(|n| n.is_usable())
            .map(|n| Arc::from(n.addr()))
            .collect();
        known.sort();
        known.dedup();
        map.known = Arc::from(known);
        for n in lines.iter().filter(|n| n.is_master() && n.is_usable()) {
            if n.slots.is_empty() {
                continue;
            }
            let idx = map.nodes.len() as u16;
            let replicas = lines
                .iter()
                .filter(|r| r.master_id.as_deref() == Some(&n.id) && r.is_usable())
                .map(|r| Arc::from(r.addr()))
                .collect();
            map.nodes.push(MapNode {
                addr: Arc::from(n.addr()),
                id: n.id.clone(),
                epoch: n.config_epoch,
                replicas,
                failing: n.is_failing(),
            });
            for &(a, b) in &n.slots {
                for s in a..=b {
                    map.slots[s as usize] = idx;
                }
            }
        }
        map
    }

    /// The node serving `slot`, if any.
    #[inline]
    pub fn owner_index(&self, slot: u16) -> Option<usize> {
        match self.slots[slot as usize & (SLOT_COUNT - 1)] {
            UNOWNED => None,
            i => Some(i as usize),
        }
    }

    /// The node serving `slot`, if any.
    pub fn owner(&self, slot: u16) -> Option<&MapNode> {
        self.owner_index(slot).map(|i| &self.nodes[i])
    }

    /// The node where SUBSCRIBE/PSUBSCRIBE connections and PUBLISH go: the master serving
    /// slot 0, or, while it is flagged failing (or is `avoid`, a node whose connection just
    /// failed), the serving master of the lowest slot that is neither. Every proxy instance
    /// with the same map picks the same node, so a PUBLISH there counts every subscriber that
    /// subscribed through a proxy (cluster pub/sub delivers a message everywhere, but a node
    /// counts only its own subscribers). `None` when no slot is served.
    pub fn pubsub_node(&self, avoid: Option<&str>) -> Option<&MapNode> {
        let usable = |n: &&MapNode| !n.failing && Some(&*n.addr) != avoid;
        if let Some(n) = self.owner(0).filter(usable) {
            return Some(n);
        }
        let mut seen = vec![false; self.nodes.len()];
        for &i in self.slots.iter() {
            let Some(n) = self.nodes.get(i as usize) else {
                continue;
            };
            if !std::mem::replace(&mut seen[i as usize], true) && usable(&n) {
                return Some(n);
            }
        }
        self.owner(0)
    }

    /// How many slots are served.
    pub fn coverage(&self) -> usize {
        self.slots.iter().filter(|&&i| i != UNOWNED).count()
    }

    /// Whether every slot has the same owner address in both maps.
    pub fn same_assignment(&self, other: &SlotMap) -> bool {
        (0..SLOT_COUNT as u16)
            .all(|s| self.owner(s).map(|n| &n.addr) == other.owner(s).map(|n| &n.addr))
    }

    /// Whether both maps route alike: every slot has the same owner address, the masters are
    /// the same nodes (address, ID, epoch, failing flag, set of replicas) and the same
    /// addresses are known. The order in which the reporting node listed its lines does not
    /// count: nodes list them in different orders, so two readings of an unchanged cluster
    /// compare equal.
    pub fn same_routing(&self, other: &SlotMap) -> bool {
        let sorted = |v: &[Arc<str>]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        self.nodes.len() == other.nodes.len()
            && self.known == other.known
            && self.nodes.iter().all(|a| {
                other.nodes.iter().any(|b| {
                    a.addr == b.addr
                        && a.id == b.id
                        && a.epoch == b.epoch
                        && a.failing == b.failing
                        && sorted(&a.replicas) == sorted(&b.replicas)
                })
            })
            && self.same_assignment(other)
    }

    /// A copy of this map in which `slot` is served by `addr` (a MOVED redirect), with
    /// `version`. Other slots keep their owners. `addr` must be one the map
    /// [knows](SlotMap::knows) (a replica promoted by a failover, a master that took the
    /// slot); callers check, since a redirect's address is only a claim.
    pub fn with_moved(&self, slot: u16, addr: &str, version: u64) -> SlotMap {
        let mut map = self.clone();
        map.version = version;
        map.source = "moved".into();
        let idx = match map.nodes.iter().position(|n| &*n.addr == addr) {
            Some(i) => i,
            None => {
                map.nodes.push(MapNode {
                    addr: Arc::from(addr),
                    id: String::new(),
                    epoch: 0,
                    replicas: Vec::new(),
                    failing: false,
                });
                map.nodes.len() - 1
            }
        };
        map.slots[slot as usize & (SLOT_COUNT - 1)] = idx as u16;
        map
    }

    /// Contiguous slot ranges with their owner's address, in slot order.
    pub fn ranges(&self) -> Vec<(u16, u16, Arc<str>)> {
        let mut out: Vec<(u16, u16, Arc<str>)> = Vec::new();
        for s in 0..SLOT_COUNT as u16 {
            let Some(n) = self.owner(s) else { continue };
            match out.last_mut() {
                Some(last) if last.1 + 1 == s && last.2 == n.addr => last.1 = s,
                _ => out.push((s, s, n.addr.clone())),
            }
        }
        out
    }
}

/// What to do with a freshly read map.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Same ownership and nodes: nothing to install.
    Unchanged,
    /// Better or equal in every respect: install it.
    Accept,
    /// Looks worse than the current map; install only if another node reports the same.
    NeedsConfirmation(String),
}

/// Decides whether `candidate` may replace `current`: [`Verdict::Unchanged`] when they route
/// alike ([`SlotMap::same_routing`]), so an idle cluster keeps its map and version. A
/// candidate that serves fewer slots, or
/// hands a slot to a node with an older config epoch than its current owner's, could come from
/// a node that has not caught up yet, so it needs a second opinion.
pub fn judge(current: &SlotMap, candidate: &SlotMap) -> Verdict {
    if current.same_routing(candidate) {
        return Verdict::Unchanged;
    }
    let (cur_cov, new_cov) = (current.coverage(), candidate.coverage());
    if new_cov < cur_cov {
        return Verdict::NeedsConfirmation(format!(
            "serves {new_cov} slots where the current map serves {cur_cov}"
        ));
    }
    for s in 0..SLOT_COUNT as u16 {
        if let (Some(old), Some(new)) = (current.owner(s), candidate.owner(s)) {
            if old.addr != new.addr && new.epoch < old.epoch {
                return Verdict::NeedsConfirmation(format!(
                    "moves slot {s} from {} (epoch {}) to {} with older epoch {}",
                    old.addr, old.epoch, new.addr, new.epoch
                ));
            }
        }
    }
    Verdict::Accept
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001,host-a myself,master - 0 0 1 connected 0-5460 [5461-<-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1] [93->-292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f]
";

    #[test]
    fn parses_cluster_nodes() {
        let lines = parse_cluster_nodes(NODES, "127.0.0.1").unwrap();
        assert_eq!(lines.len(), 4);
        let me = &lines[3];
        assert!(me.has("myself") && me.is_master());
        assert_eq!(me.slots, vec![(0, 5460)]);
        assert_eq!(me.importing[0].0, 5461);
        assert_eq!(me.migrating[0].0, 93);
        assert_eq!(lines[0].master_id.as_deref(), Some(&*me.id));
        let map = SlotMap::from_nodes(&lines, 1, "x");
        assert_eq!(map.coverage(), 16384);
        assert_eq!(&*map.owner(0).unwrap().addr, "127.0.0.1:30001");
        assert_eq!(&*map.owner(16383).unwrap().addr, "127.0.0.1:30003");
        assert_eq!(map.owner(0).unwrap().replicas.len(), 1);
        assert_eq!(map.ranges().len(), 3);
    }

    #[test]
    fn the_pubsub_node_is_slot_0_s_master_unless_it_fails() {
        let lines = parse_cluster_nodes(NODES, "127.0.0.1").unwrap();
        let mut map = SlotMap::from_nodes(&lines, 1, "x");
        let node = |m: &SlotMap, avoid| m.pubsub_node(avoid).map(|n| n.addr.to_string());
        assert_eq!(node(&map, None).as_deref(), Some("127.0.0.1:30001"));
        // Avoided (its connection failed) or flagged failing: the next slots' master.
        assert_eq!(
            node(&map, Some("127.0.0.1:30001")).as_deref(),
            Some("127.0.0.1:30002")
        );
        for n in map.nodes.iter_mut() {
            n.failing = &*n.addr != "127.0.0.1:30003";
        }
        assert_eq!(node(&map, None).as_deref(), Some("127.0.0.1:30003"));
        // Every node failing: still slot 0's master (a node flagged failing may be back).
        for n in map.nodes.iter_mut() {
            n.failing = true;
        }
        assert_eq!(node(&map, None).as_deref(), Some("127.0.0.1:30001"));
        assert!(SlotMap::empty().pubsub_node(None).is_none());
    }

    #[test]
    fn empty_myself_address_uses_asked_ip() {
        let l = parse_node_line(
            "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca :7000@17000 myself,master - 0 0 0 connected",
            "127.0.0.5",
        )
        .unwrap();
        assert_eq!(l.addr(), "127.0.0.5:7000");
    }

    #[test]
    fn judge_refuses_partial_and_older_maps() {
        let lines = parse_cluster_nodes(NODES, "127.0.0.1").unwrap();
        let full = SlotMap::from_nodes(&lines, 1, "a");
        assert_eq!(judge(&full, &full.clone()), Verdict::Unchanged);
        assert_eq!(judge(&SlotMap::empty(), &full), Verdict::Accept);
        let partial = SlotMap::from_nodes(&lines[..3], 2, "b");
        assert!(matches!(
            judge(&full, &partial),
            Verdict::NeedsConfirmation(_)
        ));
        // A failover: the replica takes over with a higher epoch.
        let mut promoted = lines.clone();
        promoted[0].flags = vec!["master".into()];
        promoted[0].master_id = None;
        promoted[0].config_epoch = 7;
        promoted[0].slots = vec![(0, 5460)];
        promoted[3].flags = vec!["master".into(), "fail".into()];
        promoted[3].slots.clear();
        let after = SlotMap::from_nodes(&promoted, 3, "c");
        assert_eq!(judge(&full, &after), Verdict::Accept);
        // And the old view, read from a lagging node afterwards, is not taken back.
        assert!(matches!(
            judge(&after, &full),
            Verdict::NeedsConfirmation(_)
        ));
    }

    #[test]
    fn the_order_nodes_list_their_lines_in_does_not_change_the_map() {
        let lines = parse_cluster_nodes(NODES, "127.0.0.1").unwrap();
        let map = SlotMap::from_nodes(&lines, 1, "a");
        let mut reordered = lines.clone();
        reordered.reverse();
        let again = SlotMap::from_nodes(&reordered, 2, "b");
        assert_ne!(map.nodes, again.nodes, "listed in another order");
        assert!(map.same_routing(&again));
        assert_eq!(judge(&map, &again), Verdict::Unchanged);
        // A second replica, listed before or after the first: the same set either way.
        let replica = |id: &str, port: u16| {
            parse_node_line(
                &format!("{id} 127.0.0.1:{port}@1{port} slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 0 1 connected"),
                "",
            )
            .unwrap()
        };
        let r1 = replica("a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1", 30007);
        let mut one = lines.clone();
        one.push(r1.clone());
        let mut other = vec![r1];
        other.extend(lines.iter().cloned());
        let (one, other) = (
            SlotMap::from_nodes(&one, 3, "c"),
            SlotMap::from_nodes(&other, 4, "d"),
        );
        assert!(one.same_routing(&other));
        assert!(!one.same_routing(&map), "a replica joined");
        // What routing reads does count: a failing flag, an epoch, an owner.
        let mut failing = lines.clone();
        failing[1].flags.push("fail?".into());
        assert!(!map.same_routing(&SlotMap::from_nodes(&failing, 5, "e")));
        let mut epoch = lines.clone();
        epoch[2].config_epoch = 9;
        assert!(!map.same_routing(&SlotMap::from_nodes(&epoch, 6, "f")));
        assert!(!map.same_routing(&map.with_moved(7, "127.0.0.1:30002", 7)));
    }

    #[test]
    fn a_new_node_without_slots_changes_the_map() {
        // A master that owns nothing yet (a resharding's target) must reach the map's known
        // addresses, or the ASK redirects to it could never be confirmed.
        let lines = parse_cluster_nodes(NODES, "127.0.0.1").unwrap();
        let map = SlotMap::from_nodes(&lines, 1, "a");
        assert!(map.knows("127.0.0.1:30004") && map.knows("127.0.0.1:30001"));
        assert!(!map.knows("127.0.0.1:30005"));
        let mut joined = lines.clone();
        joined.push(
            parse_node_line(
                "f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0 127.0.0.1:30005@31005 master - 0 0 0 connected",
                "",
            )
            .unwrap(),
        );
        let bigger = SlotMap::from_nodes(&joined, 2, "b");
        assert!(bigger.knows("127.0.0.1:30005"));
        assert_eq!(judge(&map, &bigger), Verdict::Accept);
        // A node in handshake has no trustworthy address yet.
        joined[4].flags.push("handshake".into());
        assert!(!SlotMap::from_nodes(&joined, 3, "c").knows("127.0.0.1:30005"));
    }

    #[test]
    fn parse_errors_name_the_field() {
        let id = "f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0";
        let err = |rest: &str| {
            parse_node_line(&format!("{id} {rest}"), "")
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            parse_node_line("a b c", "").unwrap_err().to_string(),
            r#"short CLUSTER NODES line: "a b c""#
        );
        assert_eq!(
            err("nowhere master - 0 0 0 connected"),
            r#"bad address "nowhere""#
        );
        assert_eq!(
            err("1.2.3.4:x@1 master - 0 0 0 connected"),
            r#"bad port in "1.2.3.4:x@1""#
        );
        assert!(err("1.2.3.4:1@2 master - 0 x 0 connected").starts_with(r#"bad number "x" in ""#));
        assert_eq!(
            err("1.2.3.4:1@2 master - 0 0 0 connected 16384"),
            r#"bad slot "16384""#
        );
        assert_eq!(
            err("1.2.3.4:1@2 master - 0 0 0 connected 9-3"),
            r#"bad slot range "9-3""#
        );
    }

    #[test]
    fn moved_patches_one_slot() {
        let lines = parse_cluster_nodes(NODES, "127.0.0.1").unwrap();
        let map = SlotMap::from_nodes(&lines, 1, "a");
        let m2 = map.with_moved(5, "127.0.0.1:30009", 2);
        assert_eq!(&*m2.owner(5).unwrap().addr, "127.0.0.1:30009");
        assert_eq!(&*m2.owner(6).unwrap().addr, "127.0.0.1:30001");
        assert_eq!(m2.version, 2);
    }
}
