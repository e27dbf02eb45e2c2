//! The proxy's client registry: what CLIENT LIST, CLIENT INFO and CLIENT KILL see.
//!
//! Through a proxy, "the clients" a user means are the proxy's own connections, not the
//! proxy's connections to the nodes, so these commands are answered here. Invariants: an entry
//! exists exactly while its session runs (added before the first request is read, removed
//! when the session ends); the hot path touches its own entry only through relaxed atomics
//! (last activity, once per read), never the registry's lock; the KILL filters are pure
//! functions over entries, tested without sockets.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::Instant;

/// What a session shares with the registry; the session updates it, others read it.
#[derive(Debug)]
pub struct Live {
    /// Milliseconds since the proxy started, at the client's last read.
    pub last_active_ms: AtomicU64,
    /// What other clients asked of this one ([`KILLED`], [`UNBLOCK`], [`MONITOR`] bits), set
    /// from any thread; the session looks at it in every wait (one atomic load for all).
    pub attention: AtomicU8,
    /// The session task's waker, registered once when it starts ([`Live::register_waker`]):
    /// CLIENT KILL and CLIENT UNBLOCK, which may run on another worker's thread, wake it after
    /// setting `attention`. Registered once rather than at every wait because the session
    /// checks `attention` in every wait (an atomic load), and a lock per wait would cost every
    /// request.
    waker: Mutex<Option<Waker>>,
    /// This client's commands that are blocked now: blocking commands and WAITs waiting for
    /// their reply, and a request CLIENT PAUSE holds. Above 0 the client counts in INFO's
    /// `blocked_clients` and shows flag `b`. Only [`BlockedMark`]s change it, so no exit path
    /// leaks a count.
    pub blocked: AtomicU32,
    /// What other clients hand this one (CLIENT UNBLOCK requests, invalidation messages),
    /// until its session takes it; allocated only once something was handed over, so most
    /// connections carry 8 bytes for it.
    mail: Mutex<Option<Box<Mail>>>,
    /// Channel subscriptions.
    pub sub: AtomicU64,
    /// Pattern subscriptions.
    pub psub: AtomicU64,
    /// Shard-channel subscriptions.
    pub ssub: AtomicU64,
    /// 2 or 3.
    pub resp: AtomicU8,
    /// Inside MULTI.
    pub multi: AtomicBool,
    /// A MONITOR client (CLIENT LIST's `O`).
    pub monitor: AtomicBool,
}

/// What other clients handed a client (see [`Live::request_unblock`], [`Live::deliver`]).
#[derive(Debug, Default)]
struct Mail {
    /// CLIENT UNBLOCK requests, in arrival order (the session is woken with [`UNBLOCK`] set).
    unblocks: Vec<UnblockRequest>,
    /// Invalidation messages (its own tracking, or clients redirecting to it; the session is
    /// woken with [`INVALIDATE`] set).
    inbox: Vec<Invalidation>,
}

/// One client-side-caching message on its way to the session that writes it
/// ([`crate::session::tracking`] composes the frame in the receiver's protocol).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// These keys changed; `None`: forget everything (a flush).
    Keys(Option<Vec<Bytes>>),
    /// The client this one redirects to is gone (Redis's `tracking-redir-broken`).
    RedirectBroken(u64),
}

impl Live {
    /// Keeps the waker of the session's task. A tokio task's waker wakes that task for its
    /// whole life, whichever of its futures is pending, so once is enough.
    pub fn register_waker(&self, waker: &Waker) {
        *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(waker.clone());
    }

    /// Whether CLIENT KILL ended this client.
    pub fn killed(&self) -> bool {
        self.attention.load(Relaxed) & KILLED != 0
    }

    /// Hands a CLIENT UNBLOCK request to this client's session (on whatever thread it runs)
    /// and wakes it.
    pub fn request_unblock(&self, r: UnblockRequest) {
        self.with_mail(|m| m.unblocks.push(r));
        // Release: the session that sees the bit (Acquire) then finds the request.
        self.attention.fetch_or(UNBLOCK, Ordering::Release);
        self.wake();
    }

    /// The CLIENT UNBLOCK requests that arrived since the last call, oldest first (clears
    /// [`UNBLOCK`] first, so a request pushed meanwhile sets it again and is not missed).
    pub fn take_unblocks(&self) -> Vec<UnblockRequest> {
        self.attention.fetch_and(!UNBLOCK, Ordering::Acquire);
        self.take_mail(|m| std::mem::take(&mut m.unblocks))
    }

    /// Hands invalidation messages to this client's session (on whatever thread it runs) and
    /// wakes it.
    pub fn deliver(&self, msgs: impl IntoIterator<Item = Invalidation>) {
        self.with_mail(|m| m.inbox.extend(msgs));
        self.attention.fetch_or(INVALIDATE, Ordering::Release);
        self.wake();
    }

    /// The invalidation messages that arrived since the last call, oldest first (clears
    /// [`INVALIDATE`] first, so a message delivered meanwhile sets it again).
    pub fn take_invalidations(&self) -> Vec<Invalidation> {
        if self.attention.fetch_and(!INVALIDATE, Ordering::Acquire) & INVALIDATE == 0 {
            return Vec::new();
        }
        self.take_mail(|m| std::mem::take(&mut m.inbox))
    }

    /// Adds to this client's mail, allocating it on first use.
    fn with_mail(&self, f: impl FnOnce(&mut Mail)) {
        let mut mail = self.mail.lock().unwrap_or_else(|e| e.into_inner());
        f(mail.get_or_insert_with(Box::default));
    }

    /// Takes part of this client's mail; the mail itself goes once nothing is left in it.
    fn take_mail<T: Default>(&self, f: impl FnOnce(&mut Mail) -> T) -> T {
        let mut mail = self.mail.lock().unwrap_or_else(|e| e.into_inner());
        let Some(m) = mail.as_mut() else {
            return T::default();
        };
        let taken = f(m);
        if m.unblocks.is_empty() && m.inbox.is_empty() {
            *mail = None;
        }
        taken
    }

    /// Sets `bit` in `attention` and wakes the session, from any thread; when the bit was set
    /// already, the session is due to look anyway and is not woken again.
    pub fn alert(&self, bit: u8) {
        // Release: the session that sees the bit (Acquire) then finds what it is about.
        if self.attention.fetch_or(bit, Ordering::Release) & bit == 0 {
            self.wake();
        }
    }

    /// Wakes the session (after `attention` was set), from any thread.
    fn wake(&self) {
        if let Some(w) = &*self.waker.lock().unwrap_or_else(|e| e.into_inner()) {
            w.wake_by_ref();
        }
    }
}

/// How CLIENT UNBLOCK ends a blocked command: as if its timeout passed, or with Redis's
/// `-UNBLOCKED` error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnblockMode {
    /// `TIMEOUT` (the default): the command's own timeout reply.
    Timeout,
    /// `ERROR`: `-UNBLOCKED client unblocked via CLIENT UNBLOCK`.
    Error,
}

/// What CLIENT UNBLOCK's asker is told: whether the client was blocked and got unblocked
/// (`:1` / `:0`), or an error saying why the proxy could not tell.
pub type UnblockOutcome = Result<bool, String>;

/// One CLIENT UNBLOCK on its way from the asking client's session to the blocked client's
/// (they may run on different threads). Dropping it unanswered answers `:0`: the client was
/// no longer blocked.
#[derive(Debug)]
pub struct UnblockRequest {
    /// How to end the wait.
    pub mode: UnblockMode,
    /// Where the outcome goes.
    pub done: tokio::sync::oneshot::Sender<UnblockOutcome>,
}

/// Counts one blocked command of a client in [`Live::blocked`] for as long as it exists:
/// created when the command starts waiting, dropped when its reply is in (or its task is
/// aborted because the client left or was killed), whichever way it ends.
#[derive(Debug)]
pub struct BlockedMark(Arc<Live>);

impl BlockedMark {
    /// Marks one more blocked command of the client `live` belongs to.
    pub fn new(live: &Arc<Live>) -> BlockedMark {
        live.blocked.fetch_add(1, Relaxed);
        BlockedMark(Arc::clone(live))
    }
}

impl Drop for BlockedMark {
    fn drop(&mut self) {
        self.0.blocked.fetch_sub(1, Relaxed);
    }
}

/// [`Live::attention`] bit: CLIENT KILL ended the client; its session closes.
pub const KILLED: u8 = 1;
/// [`Live::attention`] bit: CLIENT UNBLOCK requests wait in [`Live::take_unblocks`].
pub const UNBLOCK: u8 = 2;
/// [`Live::attention`] bit: invalidation messages wait in [`Live::take_invalidations`].
pub const INVALIDATE: u8 = 4;
/// [`Live::attention`] bit: lines wait in the client's MONITOR queue.
pub const MONITOR: u8 = 8;

/// One client connection.
#[derive(Debug, Clone)]
pub struct Entry {
    /// `CLIENT ID`.
    pub id: u64,
    /// The client's address.
    pub addr: String,
    /// The proxy's address it connected to.
    pub laddr: String,
    /// The socket's file descriptor.
    pub fd: i64,
    /// `CLIENT SETNAME`.
    pub name: String,
    /// The user it is logged in as (`default` when not logged in or with no users, as Redis
    /// shows it). Borrowed for `default`, so most clients' entries allocate nothing for it.
    pub user: std::borrow::Cow<'static, str>,
    /// When it connected.
    pub since: Instant,
    /// Shared with the session.
    pub live: Arc<Live>,
}

/// All clients, by ID.
#[derive(Default)]
pub struct Registry {
    clients: Mutex<BTreeMap<u64, Entry>>,
}

impl Registry {
    /// Adds a client; returns what its session updates.
    pub fn add(&self, id: u64, addr: String, laddr: String, fd: i64) -> Arc<Live> {
        let live = Arc::new(Live {
            last_active_ms: AtomicU64::new(0),
            attention: AtomicU8::new(0),
            waker: Mutex::new(None),
            blocked: AtomicU32::new(0),
            mail: Mutex::new(None),
            sub: AtomicU64::new(0),
            psub: AtomicU64::new(0),
            ssub: AtomicU64::new(0),
            resp: AtomicU8::new(2),
            multi: AtomicBool::new(false),
            monitor: AtomicBool::new(false),
        });
        let entry = Entry {
            id,
            addr,
            laddr,
            fd,
            name: String::new(),
            user: std::borrow::Cow::Borrowed("default"),
            since: Instant::now(),
            live: Arc::clone(&live),
        };
        if let Ok(mut m) = self.clients.lock() {
            m.insert(id, entry);
        }
        live
    }

    /// Removes a client whose session ended.
    pub fn remove(&self, id: u64) {
        if let Ok(mut m) = self.clients.lock() {
            m.remove(&id);
        }
    }

    /// Records a client's new name.
    pub fn set_name(&self, id: u64, name: Option<&Bytes>) {
        if let Ok(mut m) = self.clients.lock() {
            if let Some(e) = m.get_mut(&id) {
                e.name = name
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .unwrap_or_default();
            }
        }
    }

    /// Records the user a client is now logged in as (after AUTH, HELLO AUTH, RESET).
    pub fn set_user(&self, id: u64, user: &str) {
        if let Ok(mut m) = self.clients.lock() {
            if let Some(e) = m.get_mut(&id) {
                if e.user != user {
                    e.user = std::borrow::Cow::Owned(user.to_string());
                }
            }
        }
    }

    /// A copy of every entry, by ID.
    pub fn snapshot(&self) -> Vec<Entry> {
        self.clients
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Marks the clients `filter` selects as killed and wakes them; returns how many.
    pub fn kill(&self, filter: &KillFilter, me: u64) -> usize {
        let victims: Vec<Arc<Live>> = self
            .snapshot()
            .into_iter()
            .filter(|e| filter.matches(e, me))
            .map(|e| e.live)
            .collect();
        for v in &victims {
            v.attention.fetch_or(KILLED, Relaxed);
            v.wake();
        }
        victims.len()
    }

    /// The entry of client `id`, if it is connected.
    pub fn live(&self, id: u64) -> Option<Arc<Live>> {
        self.clients
            .lock()
            .ok()
            .and_then(|m| m.get(&id).map(|e| Arc::clone(&e.live)))
    }

    /// How many clients are blocked now (INFO's `blocked_clients`); counted over the entries,
    /// so a client that is gone can never be counted.
    pub fn blocked(&self) -> usize {
        self.clients
            .lock()
            .map(|m| {
                m.values()
                    .filter(|e| e.live.blocked.load(Relaxed) > 0)
                    .count()
            })
            .unwrap_or(0)
    }
}

/// One line of CLIENT LIST / the reply of CLIENT INFO, in Redis's `key=value` format, with the
/// fields the proxy tracks.
pub fn line(e: &Entry, now_ms: u64) -> String {
    let l = &e.live;
    let idle = now_ms.saturating_sub(l.last_active_ms.load(Relaxed)) / 1000;
    let (sub, psub, ssub) = (
        l.sub.load(Relaxed),
        l.psub.load(Relaxed),
        l.ssub.load(Relaxed),
    );
    let multi = l.multi.load(Relaxed);
    let flags = flags(
        l.monitor.load(Relaxed),
        sub + psub + ssub > 0,
        multi,
        l.blocked.load(Relaxed) > 0,
    );
    let mut out = String::new();
    let _ = write!(
        out,
        "id={} addr={} laddr={} fd={} name={} age={} idle={idle} flags={flags} db=0 sub={sub} psub={psub} ssub={ssub} multi={} user={} resp={}",
        e.id,
        e.addr,
        e.laddr,
        e.fd,
        e.name,
        e.since.elapsed().as_secs(),
        if multi { 0 } else { -1 },
        e.user,
        l.resp.load(Relaxed),
    );
    out
}

/// Redis's reply to a CLIENT subcommand given the wrong number of arguments, naming it as
/// the client typed it (at most 128 characters), as Redis does.
pub fn syntax_error(sub: &[u8]) -> String {
    let sub: String = String::from_utf8_lossy(sub).chars().take(128).collect();
    format!("ERR unknown subcommand or wrong number of arguments for '{sub}'. Try CLIENT HELP.")
}

/// CLIENT LIST's `flags` field: Redis's letters for the states the proxy has, in Redis's
/// order (`O` monitor, `P` subscribed, `x` in MULTI, `b` blocked), or `N` for none.
fn flags(monitor: bool, subscribed: bool, multi: bool, blocked: bool) -> String {
    let mut f: String = [
        (monitor, 'O'),
        (subscribed, 'P'),
        (multi, 'x'),
        (blocked, 'b'),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, c)| *c)
    .collect();
    if f.is_empty() {
        f.push('N');
    }
    f
}

/// Which clients CLIENT KILL ends.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KillFilter {
    /// `ID id`
    pub id: Option<u64>,
    /// `ADDR ip:port` (or the old one-argument form)
    pub addr: Option<String>,
    /// `LADDR ip:port`
    pub laddr: Option<String>,
    /// `TYPE normal|pubsub` (`master`/`replica` never match: the proxy has none).
    pub kind: Option<String>,
    /// `USER name`: every client is `default` while access control is off.
    pub user: Option<String>,
    /// `SKIPME yes|no` (default yes).
    pub skip_me: bool,
    /// The old `CLIENT KILL addr` form, answered `+OK` or an error instead of a count.
    pub old_form: bool,
}

/// Why CLIENT KILL's arguments were refused. `Display` is the client's reply, Redis's exact
/// text (every refusal of CLIENT KILL, in one place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillError {
    /// An odd number of arguments, an unknown filter, or `SKIPME` neither `yes` nor `no`.
    Syntax,
    /// `ID` is not a number.
    BadId,
    /// `TYPE` names no client type (the value as given).
    UnknownType(String),
}

impl std::fmt::Display for KillError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KillError::Syntax => f.write_str("ERR syntax error"),
            KillError::BadId => f.write_str("ERR client-id should be greater than 0"),
            KillError::UnknownType(t) => write!(f, "ERR Unknown client type '{t}'"),
        }
    }
}

impl std::error::Error for KillError {}

impl KillFilter {
    /// Parses CLIENT KILL's arguments (after `CLIENT KILL`), with Redis's error texts.
    pub fn parse(args: &[Bytes]) -> Result<KillFilter, KillError> {
        let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
        if args.len() == 1 {
            return Ok(KillFilter {
                addr: Some(text(&args[0])),
                skip_me: false,
                old_form: true,
                ..Default::default()
            });
        }
        if args.is_empty() || !args.len().is_multiple_of(2) {
            return Err(KillError::Syntax);
        }
        let mut f = KillFilter {
            skip_me: true,
            ..Default::default()
        };
        for pair in args.chunks(2) {
            let (k, v) = (text(&pair[0]).to_ascii_lowercase(), text(&pair[1]));
            match k.as_str() {
                "id" => f.id = Some(v.parse().map_err(|_| KillError::BadId)?),
                "addr" => f.addr = Some(v),
                "laddr" => f.laddr = Some(v),
                "user" => f.user = Some(v),
                "type" => {
                    let t = v.to_ascii_lowercase();
                    if !matches!(
                        t.as_str(),
                        "normal" | "pubsub" | "master" | "replica" | "slave"
                    ) {
                        return Err(KillError::UnknownType(v));
                    }
                    f.kind = Some(t);
                }
                "skipme" => match v.to_ascii_lowercase().as_str() {
                    "yes" => f.skip_me = true,
                    "no" => f.skip_me = false,
                    _ => return Err(KillError::Syntax),
                },
                _ => return Err(KillError::Syntax),
            }
        }
        Ok(f)
    }

    /// Whether the filter selects `e`; `me` is the ID of the client asking.
    pub fn matches(&self, e: &Entry, me: u64) -> bool {
        if self.skip_me && e.id == me {
            return false;
        }
        let subscribed =
            e.live.sub.load(Relaxed) + e.live.psub.load(Relaxed) + e.live.ssub.load(Relaxed) > 0;
        self.id.is_none_or(|id| id == e.id)
            && self.addr.as_ref().is_none_or(|a| *a == e.addr)
            && self.laddr.as_ref().is_none_or(|a| *a == e.laddr)
            && self.user.as_ref().is_none_or(|u| *u == e.user)
            && self.kind.as_deref().is_none_or(|t| match t {
                "normal" => !subscribed,
                "pubsub" => subscribed,
                _ => false,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::route::resp::test_args as args;

    #[test]
    fn kill_filters() {
        let r = Registry::default();
        r.add(1, "127.0.0.1:5000".into(), "127.0.0.1:7617".into(), 9);
        let live = r.add(2, "127.0.0.1:5001".into(), "127.0.0.1:7617".into(), 10);
        live.sub.store(1, Relaxed);
        let all = r.snapshot();
        let f = KillFilter::parse(&args(&["127.0.0.1:5000"])).unwrap();
        assert!(f.old_form && f.matches(&all[0], 1) && !f.matches(&all[1], 1));
        let f = KillFilter::parse(&args(&["TYPE", "pubsub"])).unwrap();
        assert!(!f.matches(&all[0], 9) && f.matches(&all[1], 9));
        let f = KillFilter::parse(&args(&["ID", "2", "SKIPME", "yes"])).unwrap();
        assert!(!f.matches(&all[1], 2));
        let f = KillFilter::parse(&args(&["LADDR", "127.0.0.1:7617"])).unwrap();
        assert_eq!(r.kill(&f, 1), 1);
        assert!(live.killed());
        let refused = |a: &[&str]| KillFilter::parse(&args(a)).unwrap_err().to_string();
        assert_eq!(
            refused(&["ID", "x"]),
            "ERR client-id should be greater than 0"
        );
        assert_eq!(refused(&["ID", "1", "TYPE"]), "ERR syntax error");
        assert_eq!(refused(&["SKIPME", "maybe"]), "ERR syntax error");
        assert_eq!(
            KillFilter::parse(&args(&["TYPE", "x"]))
                .unwrap_err()
                .to_string(),
            "ERR Unknown client type 'x'"
        );
        let l = line(&all[1], 0);
        assert!(l.starts_with("id=2 addr=127.0.0.1:5001 laddr=127.0.0.1:7617 fd=10 name= "));
        assert!(l.contains(" flags=P ") && l.contains(" sub=1 "), "{l}");
        // USER matches the user each client is logged in as, which LIST shows.
        r.set_user(1, "app");
        let all = r.snapshot();
        let f = KillFilter::parse(&args(&["USER", "app"])).unwrap();
        assert!(f.matches(&all[0], 9) && !f.matches(&all[1], 9));
        let f = KillFilter::parse(&args(&["USER", "default"])).unwrap();
        assert!(!f.matches(&all[0], 9) && f.matches(&all[1], 9));
        assert!(line(&all[0], 0).contains(" user=app "));
        assert!(line(&all[1], 0).contains(" user=default "));
        // A blocked client counts and shows `b` after its other letters.
        assert_eq!(r.blocked(), 0);
        live.blocked.store(1, Relaxed);
        assert_eq!(r.blocked(), 1);
        assert!(line(&r.snapshot()[1], 0).contains(" flags=Pb "));
        assert_eq!(flags(false, false, false, false), "N");
        assert_eq!(flags(false, false, true, true), "xb");
        assert_eq!(flags(true, true, false, false), "OP");
        assert!(r.live(2).is_some() && r.live(3).is_none());
        let mark = BlockedMark::new(&live);
        assert_eq!(live.blocked.load(Relaxed), 2);
        drop(mark);
        assert_eq!(live.blocked.load(Relaxed), 1);
    }
}
