//! What travels between a client session and the backends: calls, the reply slots they fill,
//! the merge state of split commands, and the reading of redirect errors.
//!
//! Invariant: every [`Call`] delivers exactly one frame to its [`Target`] — the backend's reply,
//! a merged reply, or an error the proxy composed — so a client's reply queue never stalls on a
//! request that was lost.

use crate::cluster::SlotMap;
use crate::local_notify::LocalNotify;
use crate::route::merge::{self, MergeKind};
use crate::route::resp;
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

/// The place in a client's in-order reply queue that one request's reply goes to, with what
/// the stats and the slow log need to know about the request once it is answered.
pub struct ReplySlot {
    value: RefCell<Option<Bytes>>,
    /// The session it belongs to; changes only while the slot is unused ([`ReplySlot::rebind`]).
    owner: RefCell<Owner>,
    meta: RefCell<SlotMeta>,
    /// The client asked not to get this reply (CLIENT REPLY OFF / SKIP).
    discard: Cell<bool>,
}

/// Whom a slot wakes and where it counts what it holds.
struct Owner {
    signal: Rc<LocalNotify>,
    /// Where the bytes of a reply that is held here (arrived, not yet taken) are counted: the
    /// session's tally of replies queued behind an unanswered request, which count toward its
    /// output limits. Invariant: it includes exactly the held value's length. `None`: not
    /// counted.
    tally: Option<Rc<Cell<usize>>>,
}

/// What is known about a request besides its reply (see `ReplySlot::meta`).
#[derive(Clone, Debug)]
pub struct SlotMeta {
    /// When the request arrived (the read that brought it), a [`crate::clock::now_us`]
    /// stamp; `None` for slots not timed.
    pub started: Option<u64>,
    /// Its command label ([`crate::metrics::stats::command_index`]).
    pub cmd: u16,
    /// The request's bytes, kept for the slow log.
    pub wire: Bytes,
    /// Microseconds spent waiting on backends (summed over redirects; for a split command,
    /// the slowest part).
    pub backend_us: u32,
    /// The node that answered last (the slowest part's, for a split command), as an index of
    /// [`crate::metrics::stats::NodeRegistry`]; `u32::MAX` when none did.
    pub node: u32,
    /// For split and fanned-out commands: the slowest part and the number of parts.
    pub part: Option<(u32, u32)>,
}

impl Default for SlotMeta {
    fn default() -> Self {
        SlotMeta {
            started: None,
            cmd: 0,
            wire: Bytes::new(),
            backend_us: 0,
            node: u32::MAX,
            part: None,
        }
    }
}

impl ReplySlot {
    /// An empty slot that wakes `signal` when filled.
    pub fn new(signal: &Rc<LocalNotify>) -> Rc<ReplySlot> {
        Rc::new(ReplySlot {
            value: RefCell::new(None),
            owner: RefCell::new(Owner {
                signal: Rc::clone(signal),
                tally: None,
            }),
            meta: RefCell::new(SlotMeta::default()),
            discard: Cell::new(false),
        })
    }

    /// An empty slot whose reply, while held here, is counted in `tally`.
    pub fn counted(signal: &Rc<LocalNotify>, tally: &Rc<Cell<usize>>) -> Rc<ReplySlot> {
        Rc::new(ReplySlot {
            value: RefCell::new(None),
            owner: RefCell::new(Owner {
                signal: Rc::clone(signal),
                tally: Some(Rc::clone(tally)),
            }),
            meta: RefCell::new(SlotMeta::default()),
            discard: Cell::new(false),
        })
    }

    /// A slot that already holds its reply (a reply the proxy composed itself).
    pub fn ready(signal: &Rc<LocalNotify>, value: Bytes) -> Rc<ReplySlot> {
        Rc::new(ReplySlot {
            value: RefCell::new(Some(value)),
            owner: RefCell::new(Owner {
                signal: Rc::clone(signal),
                tally: None,
            }),
            meta: RefCell::new(SlotMeta::default()),
            discard: Cell::new(false),
        })
    }

    /// A slot that already holds its reply, counted in `tally` until taken.
    pub fn ready_counted(
        signal: &Rc<LocalNotify>,
        value: Bytes,
        tally: &Rc<Cell<usize>>,
    ) -> Rc<ReplySlot> {
        tally.set(tally.get() + value.len());
        Rc::new(ReplySlot {
            value: RefCell::new(Some(value)),
            owner: RefCell::new(Owner {
                signal: Rc::clone(signal),
                tally: Some(Rc::clone(tally)),
            }),
            meta: RefCell::new(SlotMeta::default()),
            discard: Cell::new(false),
        })
    }

    /// Makes a slot whose request is done (its reply and details taken) ready to carry
    /// another request of the same session, if nothing else still holds it (a split or
    /// redirected call that has not let go): returns whether it may be reused. Reusing slots
    /// saves an allocation per request.
    pub fn recycle(slot: &Rc<ReplySlot>) -> bool {
        if Rc::strong_count(slot) != 1 || Rc::weak_count(slot) != 0 {
            return false;
        }
        if let Some(v) = slot.value.borrow_mut().take() {
            if let Some(t) = &slot.owner.borrow().tally {
                t.set(t.get().saturating_sub(v.len()));
            }
        }
        *slot.meta.borrow_mut() = SlotMeta::default();
        slot.discard.set(false);
        true
    }

    /// Marks the reply as one the client does not want (it is dropped when it arrives).
    pub fn set_discard(&self) {
        self.discard.set(true);
    }

    /// Whether the reply is dropped instead of written.
    pub fn discarded(&self) -> bool {
        self.discard.get()
    }

    /// Stamps the request's arrival, command label and bytes.
    pub fn begin(&self, started: u64, cmd: u16, wire: Bytes) {
        let mut m = self.meta.borrow_mut();
        m.started = Some(started);
        m.cmd = cmd;
        m.wire = wire;
    }

    /// Adds one backend round trip of `us` microseconds, answered by node `node`.
    pub fn add_backend(&self, us: u32, node: u32) {
        let mut m = self.meta.borrow_mut();
        m.backend_us = m.backend_us.saturating_add(us);
        m.node = node;
    }

    /// The request's details (taken: the slot is done with once its reply is taken).
    pub fn take_meta(&self) -> SlotMeta {
        std::mem::take(&mut *self.meta.borrow_mut())
    }

    /// Stores the reply and wakes the session.
    pub fn fill(&self, value: Bytes) {
        let owner = self.owner.borrow();
        if let Some(t) = &owner.tally {
            let replaced = self.value.borrow().as_ref().map_or(0, Bytes::len);
            t.set((t.get() + value.len()).saturating_sub(replaced));
        }
        *self.value.borrow_mut() = Some(value);
        owner.signal.notify_one();
    }

    /// Hands a recycled slot (see [`ReplySlot::recycle`]) to another session of the same
    /// worker, whose spare slots are lent between clients: it will wake `signal` and count in
    /// `tally`. Only for a slot no request uses.
    pub fn rebind(&self, signal: &Rc<LocalNotify>, tally: &Rc<Cell<usize>>) {
        let mut owner = self.owner.borrow_mut();
        if !Rc::ptr_eq(&owner.signal, signal) {
            owner.signal = Rc::clone(signal);
            owner.tally = Some(Rc::clone(tally));
        }
    }

    /// Whether the reply has arrived (and was not taken yet).
    pub fn is_filled(&self) -> bool {
        self.value.borrow().is_some()
    }

    /// Takes the reply if it has arrived.
    pub fn take(&self) -> Option<Bytes> {
        let value = self.value.borrow_mut().take();
        if let (Some(t), Some(v)) = (&self.owner.borrow().tally, &value) {
            t.set(t.get().saturating_sub(v.len()));
        }
        value
    }
}

/// Collects the parts of a command split per slot and fills the client's slot when the last
/// part arrives.
pub struct Merge {
    kind: MergeKind,
    order: Vec<u32>,
    /// The parts' replies, kept until the last arrives; empty for kinds folded as they
    /// arrive ([`merge::Fold`]), which need none of them kept.
    parts: RefCell<Vec<Bytes>>,
    fold: RefCell<merge::Fold>,
    /// How many parts there are, and how many have not answered yet.
    total: usize,
    remaining: Cell<usize>,
    slot: Rc<ReplySlot>,
    /// The node each part went to, when the merge names failed nodes (fan-out commands).
    labels: Vec<Arc<str>>,
    /// The slowest backend trip so far: microseconds, node index, part.
    slowest: Cell<(u32, u32, u32)>,
    /// The client speaks RESP3: the merged reply's nulls (parts come over RESP2) become `_`.
    resp3: Cell<bool>,
}

impl Merge {
    /// A merge of `parts` replies into `slot`; `order` maps each client key to its part.
    pub fn new(kind: MergeKind, order: Vec<u32>, parts: usize, slot: Rc<ReplySlot>) -> Rc<Merge> {
        Rc::new(Merge {
            kind,
            order,
            parts: RefCell::new(match merge::Fold::suits(kind) {
                true => Vec::new(),
                false => vec![Bytes::new(); parts],
            }),
            fold: RefCell::default(),
            total: parts,
            remaining: Cell::new(parts),
            slot,
            labels: Vec::new(),
            slowest: Cell::new((0, u32::MAX, 0)),
            resp3: Cell::new(false),
        })
    }

    /// A merge of one reply from each node of `nodes` (a command fanned out to several
    /// nodes), in that order; errors can name the nodes.
    pub fn fan_out(kind: MergeKind, nodes: Vec<Arc<str>>, slot: Rc<ReplySlot>) -> Rc<Merge> {
        Rc::new(Merge {
            kind,
            order: Vec::new(),
            parts: RefCell::new(vec![Bytes::new(); nodes.len()]),
            fold: RefCell::default(),
            total: nodes.len(),
            remaining: Cell::new(nodes.len()),
            slot,
            labels: nodes,
            slowest: Cell::new((0, u32::MAX, 0)),
            resp3: Cell::new(false),
        })
    }

    fn remaining_total(&self) -> u32 {
        self.total as u32
    }

    fn note(&self, index: usize, us: u32, node: u32) {
        if us >= self.slowest.get().0 {
            self.slowest.set((us, node, index as u32));
        }
    }

    /// Marks the merge as answering a RESP3 client.
    pub fn set_resp3(&self) {
        self.resp3.set(true);
    }

    fn deliver(&self, index: usize, frame: Bytes) {
        let folded = self.parts.borrow().is_empty();
        if folded {
            self.fold.borrow_mut().add(self.kind, index, frame);
        } else if let Some(p) = self.parts.borrow_mut().get_mut(index) {
            *p = frame;
        }
        let left = self.remaining.get().saturating_sub(1);
        self.remaining.set(left);
        if left == 0 {
            let (us, node, part) = self.slowest.get();
            {
                let mut m = self.slot.meta.borrow_mut();
                m.backend_us = us;
                m.node = node;
                m.part = Some((part, self.remaining_total()));
            }
            let merged = match folded {
                true => self.fold.take().finish(self.kind),
                false => {
                    merge::merge_labeled(self.kind, &self.order, &self.parts.borrow(), &self.labels)
                }
            };
            let merged = if self.resp3.get() {
                merge::to_resp3(self.kind, merged)
            } else {
                merged
            };
            self.slot.fill(merged);
        }
    }
}

/// Where a backend reply goes.
pub enum Target {
    /// The whole reply of a client request.
    Whole(Rc<ReplySlot>),
    /// One part of a split request.
    Part(Rc<Merge>, usize),
}

impl Target {
    /// Records one backend round trip of `us` microseconds to node `node` (a
    /// [`crate::metrics::stats::NodeRegistry`] index) for the request this target belongs to.
    pub fn note_backend(&self, us: u32, node: u32) {
        match self {
            Target::Whole(slot) => slot.add_backend(us, node),
            Target::Part(m, i) => m.note(*i, us, node),
        }
    }

    /// Hands the reply frame over.
    pub fn deliver(&self, frame: Bytes) {
        match self {
            Target::Whole(slot) => slot.fill(frame),
            Target::Part(m, i) => m.deliver(*i, frame),
        }
    }
}

/// Which node a call must reach.
#[derive(Clone, Debug)]
pub enum Dest {
    /// The owner of this slot in the current map.
    Slot(u16),
    /// A specific node (after ASK, or a keyless command sent to any node).
    Node(Arc<str>),
    /// A read of this slot that a replica of its owner may serve, as the mode says
    /// ([`crate::route::replica_choice`]); while a replica has it. Sent to the master, it
    /// becomes `Slot`.
    Read(u16, crate::route::replica_choice::ReadFrom),
}

/// One command on its way to one backend.
pub struct Call {
    /// The request as sent on the wire.
    pub wire: Bytes,
    /// Where it goes.
    pub dest: Dest,
    /// Redirects (MOVED, ASK) followed so far.
    pub redirects: u8,
    /// ASK redirects and TRYAGAIN retries so far.
    pub retries: u8,
    /// When the first ASK or TRYAGAIN came back; further retries stop at `born +
    /// request_timeout`. Set then, not at creation: reading the clock for every request
    /// would cost more than all the requests that ever retry.
    pub born: Option<std::time::Instant>,
    /// Where its reply goes.
    pub target: Target,
    /// Send on the node's RESP3 connections (the client said HELLO 3): replies pass through
    /// unchanged.
    pub resp3: bool,
}

impl Call {
    /// Completes the call with an error the proxy composed.
    pub fn fail(self, msg: &str) {
        self.target.deliver(resp::error(msg));
    }
}

/// Most redirects followed for one call before the client gets an error.
pub const MAX_REDIRECTS: u8 = 5;

/// Most ASK redirects plus TRYAGAIN retries for one call. During a migration a multi-key
/// request can bounce between ASK (source) and TRYAGAIN (target) until the slot's keys have
/// moved, so these are bounded by the request deadline, with this count as a backstop.
pub const MAX_RETRIES: u8 = 200;

impl Call {
    /// A call that has not been redirected yet.
    pub fn new(wire: Bytes, dest: Dest, target: Target) -> Call {
        Call {
            wire,
            dest,
            redirects: 0,
            retries: 0,
            born: None,
            target,
            resp3: false,
        }
    }
}

/// A redirect or retry demanded by a backend's error reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Redirect {
    /// `MOVED <slot> <addr>`: the slot lives elsewhere for good.
    Moved(u16, String),
    /// `ASK <slot> <addr>`: this one request goes to the importing node.
    Ask(u16, String),
    /// `TRYAGAIN`: a multi-key request during resharding; retry shortly.
    TryAgain,
    /// `CLUSTERDOWN`: the reply is passed on, but the map should be refreshed.
    ClusterDown,
}

/// Reads a redirect from an error frame. An address with an empty host (`:7001`, sent by a node
/// that does not know its own IP) takes the host of `from`, the node that sent the redirect.
/// A slot outside 0..16383 or an address that is not `host:port` is no redirect: the frame is
/// an ordinary error then (a script can return any text).
pub fn parse_redirect(frame: &[u8], from: &str) -> Option<Redirect> {
    if frame.first() != Some(&b'-') {
        return None;
    }
    let text = std::str::from_utf8(frame.get(1..)?).ok()?.trim_end();
    let mut it = text.split(' ');
    let code = it.next()?;
    let mut target = || -> Option<(u16, String)> {
        let slot: u16 = it.next()?.parse().ok()?;
        if slot as usize >= crate::cluster::slots::SLOT_COUNT {
            return None;
        }
        let addr = it.next()?;
        if it.next().is_some() {
            return None;
        }
        let addr = match addr.strip_prefix(':') {
            Some(port) => format!("{}:{port}", from.rsplit_once(':').map_or(from, |x| x.0)),
            None => addr.to_string(),
        };
        let (host, port) = addr.rsplit_once(':')?;
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return None;
        }
        Some((slot, addr))
    };
    match code {
        "MOVED" => target().map(|(s, a)| Redirect::Moved(s, a)),
        "ASK" => target().map(|(s, a)| Redirect::Ask(s, a)),
        "TRYAGAIN" => Some(Redirect::TryAgain),
        "CLUSTERDOWN" => Some(Redirect::ClusterDown),
        _ => None,
    }
}

/// Whether a request runs a script or a function (EVAL, EVALSHA, EVAL_RO, EVALSHA_RO, FCALL,
/// FCALL_RO): their error replies can carry any text the script chose, so a redirect in one
/// is a claim, not a fact. Reads the command name from the request's wire form; only called
/// for error replies, never on the hot path.
pub fn is_script(wire: &[u8]) -> bool {
    let name = (|| {
        let rest = wire.strip_prefix(b"*")?;
        let nl = rest.iter().position(|&b| b == b'\n')?;
        let rest = rest.get(nl + 1..)?.strip_prefix(b"$")?;
        let cr = rest.iter().position(|&b| b == b'\r')?;
        let len: usize = std::str::from_utf8(&rest[..cr]).ok()?.parse().ok()?;
        rest.get(cr + 2..cr + 2 + len)
    })();
    let Some(name) = name else { return false };
    const SCRIPTS: [&[u8]; 6] = [
        b"EVAL",
        b"EVALSHA",
        b"EVAL_RO",
        b"EVALSHA_RO",
        b"FCALL",
        b"FCALL_RO",
    ];
    SCRIPTS.iter().any(|s| s.eq_ignore_ascii_case(name))
}

/// What the proxy does with a redirect a node sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Vetted {
    /// Act on it: the trusted topology backs it (or it is a TRYAGAIN / CLUSTERDOWN from a
    /// command that cannot forge one).
    Follow,
    /// Refresh from trusted nodes first, and follow only if the new map backs the redirect:
    /// lists its address, or, when `owner` is set, has the address serving the slot.
    Confirm {
        /// The redirect must name the slot's owner in the refreshed map, not just a node.
        owner: bool,
    },
    /// Not acted on: the client gets the error as it came.
    PassOn,
}

/// Decides whether a redirect in the reply to `call` may be acted on. Rules:
/// - any MOVED/ASK to an address the map does not list waits for a refresh to list it;
/// - a script's or function's ([`is_script`]) error text is its own choice, so its TRYAGAIN
///   and CLUSTERDOWN are passed on (re-running it would run its writes again), its MOVED/ASK
///   count only for the slot of its declared keys and only once per call, and its MOVED only
///   when the map (refreshed if need be) has the address serving that slot.
pub fn vet_redirect(r: &Redirect, map: &SlotMap, call: &Call) -> Vetted {
    let script = is_script(&call.wire);
    match r {
        Redirect::TryAgain | Redirect::ClusterDown if script => Vetted::PassOn,
        Redirect::TryAgain | Redirect::ClusterDown => Vetted::Follow,
        Redirect::Moved(slot, addr) | Redirect::Ask(slot, addr) => {
            if script {
                let first = call.redirects == 0 && call.retries == 0;
                let dest = match call.dest {
                    Dest::Slot(s) | Dest::Read(s, _) => Some(s),
                    Dest::Node(_) => None,
                };
                if !first || dest != Some(*slot) {
                    return Vetted::PassOn;
                }
                if matches!(r, Redirect::Moved(..)) {
                    return if map.owner(*slot).is_some_and(|n| &*n.addr == addr) {
                        Vetted::Follow
                    } else {
                        Vetted::Confirm { owner: true }
                    };
                }
            }
            if map.knows(addr) {
                Vetted::Follow
            } else {
                Vetted::Confirm { owner: false }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects() {
        assert_eq!(
            parse_redirect(b"-MOVED 3999 127.0.0.1:6381\r\n", "x:1"),
            Some(Redirect::Moved(3999, "127.0.0.1:6381".into()))
        );
        assert_eq!(
            parse_redirect(b"-ASK 3999 :6381\r\n", "127.0.0.3:7000"),
            Some(Redirect::Ask(3999, "127.0.0.3:6381".into()))
        );
        assert_eq!(
            parse_redirect(
                b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
                ""
            ),
            Some(Redirect::TryAgain)
        );
        assert_eq!(parse_redirect(b"-ERR nope\r\n", ""), None);
        // Not redirects: slots out of range, addresses that are not host:port, extra words.
        for bad in [
            &b"-MOVED 16384 127.0.0.1:6381\r\n"[..],
            b"-MOVED 65535 127.0.0.1:6381\r\n",
            b"-MOVED -1 127.0.0.1:6381\r\n",
            b"-ASK 1 127.0.0.1\r\n",
            b"-ASK 1 127.0.0.1:0\r\n",
            b"-ASK 1 127.0.0.1:99999\r\n",
            b"-MOVED 1 :\r\n",
            b"-MOVED 1 127.0.0.1:6381 extra\r\n",
        ] {
            assert_eq!(parse_redirect(bad, "127.0.0.1:7000"), None, "{bad:?}");
        }
        assert_eq!(parse_redirect(b"+MOVED 1 a:1\r\n", ""), None);
    }

    #[test]
    fn scripts_are_recognised_from_the_wire() {
        for name in [
            "EVAL",
            "evalsha",
            "Eval_Ro",
            "EVALSHA_RO",
            "fcall",
            "FCALL_RO",
        ] {
            let wire = resp::encode_command(&[name, "return 1", "0"]);
            assert!(is_script(&wire), "{name}");
        }
        for name in ["GET", "EVALX", "SCRIPT", "FUNCTION"] {
            assert!(!is_script(&resp::encode_command(&[name, "k"])), "{name}");
        }
        assert!(!is_script(b"*1\r\n$100\r\nEVAL\r\n"));
        assert!(!is_script(b""));
    }

    #[test]
    fn redirects_are_vetted_against_the_map() {
        let text = "\
aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-8191
bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb 127.0.0.1:7001@17001 master - 0 0 2 connected 8192-16383
cccccccccccccccccccccccccccccccccccccccc 127.0.0.1:7002@17002 slave aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 0 0 1 connected
dddddddddddddddddddddddddddddddddddddddd 127.0.0.1:7003@17003 master - 0 0 0 connected
";
        let lines = crate::cluster::parse_cluster_nodes(text, "127.0.0.1").unwrap();
        let map = SlotMap::from_nodes(&lines, 1, "t");
        let signal = Rc::new(LocalNotify::new());
        let call = |args: &[&str], dest: Dest| {
            let wire = resp::encode_command(args).freeze();
            Call::new(wire, dest, Target::Whole(ReplySlot::new(&signal)))
        };
        let get = call(&["GET", "k"], Dest::Slot(5));
        let moved = |a: &str| Redirect::Moved(5, a.into());
        // Known masters, a replica and a master without slots are followed at once.
        for a in ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"] {
            assert_eq!(vet_redirect(&moved(a), &map, &get), Vetted::Follow);
        }
        // An address no trusted node listed waits for a refresh to list it.
        let evil = moved("10.6.6.6:6379");
        assert_eq!(
            vet_redirect(&evil, &map, &get),
            Vetted::Confirm { owner: false }
        );
        let ask = Redirect::Ask(5, "10.6.6.6:6379".into());
        assert_eq!(
            vet_redirect(&ask, &map, &get),
            Vetted::Confirm { owner: false }
        );
        for r in [Redirect::TryAgain, Redirect::ClusterDown] {
            assert_eq!(vet_redirect(&r, &map, &get), Vetted::Follow);
        }

        // Scripts: with keys in slot 5, a MOVED must name the slot's owner (after a refresh if
        // need be), an ASK a known node; once per call only.
        let eval = call(&["EVAL", "return 1", "1", "k"], Dest::Slot(5));
        assert_eq!(
            vet_redirect(&evil, &map, &eval),
            Vetted::Confirm { owner: true }
        );
        let other_master = moved("127.0.0.1:7001");
        assert_eq!(
            vet_redirect(&other_master, &map, &eval),
            Vetted::Confirm { owner: true }
        );
        assert_eq!(
            vet_redirect(&moved("127.0.0.1:7000"), &map, &eval),
            Vetted::Follow
        );
        let ask_known = Redirect::Ask(5, "127.0.0.1:7001".into());
        assert_eq!(vet_redirect(&ask_known, &map, &eval), Vetted::Follow);
        let mut again = call(&["EVAL", "return 1", "1", "k"], Dest::Slot(5));
        again.retries = 1;
        assert_eq!(vet_redirect(&ask_known, &map, &again), Vetted::PassOn);
        // ... for another slot than its keys', or with no keys, they are passed on.
        let fcall = call(&["FCALL", "f", "1", "k"], Dest::Slot(6));
        assert_eq!(vet_redirect(&ask_known, &map, &fcall), Vetted::PassOn);
        let keyless = call(
            &["EVAL_RO", "return 1", "0"],
            Dest::Node("127.0.0.1:7000".into()),
        );
        assert_eq!(vet_redirect(&ask_known, &map, &keyless), Vetted::PassOn);
        assert_eq!(vet_redirect(&evil, &map, &keyless), Vetted::PassOn);
        // A script's TRYAGAIN / CLUSTERDOWN are its own text.
        for r in [Redirect::TryAgain, Redirect::ClusterDown] {
            assert_eq!(vet_redirect(&r, &map, &eval), Vetted::PassOn);
        }
    }

    #[test]
    fn merge_fills_slot_once_all_parts_arrive() {
        let signal = Rc::new(LocalNotify::new());
        let slot = ReplySlot::new(&signal);
        let m = Merge::new(MergeKind::Sum, vec![], 2, Rc::clone(&slot));
        Target::Part(Rc::clone(&m), 0).deliver(Bytes::from_static(b":1\r\n"));
        assert!(slot.take().is_none());
        Target::Part(m, 1).deliver(Bytes::from_static(b":2\r\n"));
        assert_eq!(&slot.take().unwrap()[..], b":3\r\n");
    }
}
