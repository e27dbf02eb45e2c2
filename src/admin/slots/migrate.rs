//! Moving one slot between masters, the way that keeps clients correct at every instant, and
//! resumable from any state a previous run (ours or redis-cli's) was cut off in.
//!
//! A move of slot `s` from A to B:
//! 1. `CLUSTER SETSLOT s IMPORTING A` on B (B now accepts `ASKING` requests for `s`), then
//!    `CLUSTER SETSLOT s MIGRATING B` on A (A now answers `ASK B` for keys it no longer has and
//!    takes no new key of `s`), sent with step 2's first listing in one round trip. Both are
//!    idempotent; B answering that it already owns `s` means an earlier run got past step 3's
//!    first command, so the move resumes there.
//! 2. `CLUSTER GETKEYSINSLOT s n` on A and pipelined `MIGRATE B-host B-port "" 0 timeout
//!    [REPLACE] [AUTH pw | AUTH2 user pw] KEYS ...`, until a listing comes back empty, or
//!    shorter than `n` with every key of it moved (A takes no new key while migrating). Every
//!    key the node lists is checked to hash to `s` before it is named in a MIGRATE.
//! 3. `CLUSTER SETSLOT s NODE B` on B first (B owns `s` and bumps its epoch), then on A and
//!    every other master at once, so no node ever points clients at a node that would bounce
//!    them back. If A still holds keys then (an earlier tool stopped between its MIGRATEs and
//!    here), they are moved and A is told again.
//!
//! Errors a move meets on the way, and what happens:
//! - `BUSYKEY` (B already has a key A is sending): the copy on B came from an interrupted
//!   MIGRATE (while `s` is migrating, A keeps serving every key it still has, so A's copy is the
//!   live one). The round is re-sent with `REPLACE`, but only after checking that B is importing
//!   `s` from A; otherwise the move stops and names the slot ([`MoveError::Conflict`]).
//! - `IOERR` (MIGRATE could not write or read within its timeout): the keys of the failed batch
//!   are retried one by one; a key that fails alone is reported by name and size
//!   ([`MoveError::BigKey`]) and the move stops with the slot still open (clients are served
//!   through ASK) and a message saying what to do.
//! - The slot's deadline: the move stops with the slot open ([`MoveError::Timeout`]).

pub use super::error::{printable, MoveError};
use super::progress::Progress;
pub use super::settings::{
    MigrateAuth, MoveSettings, NodeRef, DEFAULT_BATCH, DEFAULT_MIGRATE_TIMEOUT_MS,
    DEFAULT_PIPELINE, DEFAULT_SLOT_TIMEOUT,
};
use crate::admin::jobs::Job;
use crate::admin::lease::Lease;
use crate::backend::node_client::NodeClient;
use crate::cluster::slots::key_slot;
use crate::net::dialer::Dialer;
use crate::route::resp::Value;
use anyhow::anyhow;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a move may do between rounds: renew the lease, show progress.
pub struct Ctx<'a> {
    /// The job, for its log and progress line.
    pub job: &'a Job,
    /// The cluster lease, renewed between rounds (`None` when the caller holds none).
    pub lease: Option<&'a mut Lease>,
    /// The run's counters.
    pub progress: Progress,
}

impl Ctx<'_> {
    async fn tick(&mut self) -> anyhow::Result<()> {
        if let Some(lease) = self.lease.as_deref_mut() {
            lease.renew_if_due(self.job).await?;
        }
        Ok(())
    }

    fn moved_keys(&mut self, n: u64) {
        self.progress.add_keys(n);
        self.job.set_detail(self.progress.line());
    }
}

/// Whether a reply is the error `needle` appears in.
fn is_err(v: &Value, needle: &str) -> bool {
    matches!(v, Value::Error(e) if e.contains(needle))
}

fn expect_ok(v: Value, what: &str, addr: &str) -> anyhow::Result<()> {
    match v {
        Value::Simple(s) if s == "OK" => Ok(()),
        Value::Error(e) => Err(anyhow!("{what} on {addr}: {e}")),
        other => Err(anyhow!("{what} on {addr}: unexpected reply {other:?}")),
    }
}

/// The keys of a `GETKEYSINSLOT <slot> <count>` reply from `addr`, each checked to belong to
/// `slot` (a key the node lists is named in a MIGRATE only if it does).
fn listed_keys(v: Value, addr: &str, slot: u16, count: usize) -> anyhow::Result<Vec<Bytes>> {
    match v {
        Value::Array(Some(items)) if items.len() <= count => items
            .into_iter()
            .map(|v| match v {
                Value::Bulk(Some(k)) if key_slot(&k) == slot => Ok(k),
                Value::Bulk(Some(k)) => Err(anyhow!(
                    "CLUSTER GETKEYSINSLOT {slot} on {addr} listed key '{}' of slot {}",
                    printable(&k),
                    key_slot(&k)
                )),
                other => Err(anyhow!(
                    "CLUSTER GETKEYSINSLOT {slot} on {addr}: unexpected item {other:?}"
                )),
            })
            .collect(),
        Value::Error(e) => Err(anyhow!("CLUSTER GETKEYSINSLOT {slot} on {addr}: {e}")),
        other => Err(anyhow!(
            "CLUSTER GETKEYSINSLOT {slot} on {addr}: unexpected reply {other:?}"
        )),
    }
}

/// Moves slots between masters over connections it keeps open (one for commands, one per
/// source for MIGRATE, whose deadline is the slot's).
pub struct Mover {
    dialer: Arc<Dialer>,
    timeout: Duration,
    /// How keys move.
    pub settings: MoveSettings,
    conns: HashMap<String, NodeClient>,
    migrate_conns: HashMap<String, NodeClient>,
    /// Nodes that answered they are no longer masters (Redis turns a master that gave away
    /// its last slot into a replica of the node that took it): not told again.
    demoted: std::collections::HashSet<String>,
}

impl Mover {
    /// A mover whose short commands have `timeout`.
    pub fn new(dialer: Arc<Dialer>, timeout: Duration, settings: MoveSettings) -> Mover {
        Mover {
            dialer,
            timeout,
            settings,
            conns: HashMap::new(),
            migrate_conns: HashMap::new(),
            demoted: Default::default(),
        }
    }

    /// One command on the node's kept connection; a broken connection is replaced once.
    pub async fn call<A: AsRef<[u8]>>(&mut self, addr: &str, args: &[A]) -> anyhow::Result<Value> {
        for attempt in 0..2 {
            if !self.conns.contains_key(addr) {
                let c = NodeClient::connect(&self.dialer, addr, self.timeout).await?;
                self.conns.insert(addr.to_string(), c);
            }
            let Some(c) = self.conns.get_mut(addr) else {
                continue;
            };
            match c.call(args).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    self.conns.remove(addr);
                    if attempt == 1 {
                        return Err(e);
                    }
                }
            }
        }
        Err(anyhow!("no connection to {addr}"))
    }

    /// Keys listed per `GETKEYSINSLOT`: one round of pipelined MIGRATEs.
    fn listing_size(&self) -> usize {
        self.settings.batch.max(1) * self.settings.pipeline.max(1)
    }

    /// `CLUSTER SETSLOT <slot> <args...>` on `addr`.
    async fn setslot(&mut self, addr: &str, slot: u16, args: &[&str]) -> anyhow::Result<Value> {
        let s = slot.to_string();
        let mut all = vec!["CLUSTER", "SETSLOT", s.as_str()];
        all.extend_from_slice(args);
        self.call(addr, &all).await
    }

    /// `CLUSTER COUNTKEYSINSLOT` for each of `slots` on `addr`, pipelined.
    pub async fn count_keys(&mut self, addr: &str, slots: &[u16]) -> anyhow::Result<Vec<u64>> {
        let mut out = Vec::with_capacity(slots.len());
        for chunk in slots.chunks(256) {
            let cmds: Vec<Vec<String>> = chunk
                .iter()
                .map(|s| {
                    vec![
                        "CLUSTER".to_string(),
                        "COUNTKEYSINSLOT".to_string(),
                        s.to_string(),
                    ]
                })
                .collect();
            if !self.conns.contains_key(addr) {
                let c = NodeClient::connect(&self.dialer, addr, self.timeout).await?;
                self.conns.insert(addr.to_string(), c);
            }
            let Some(c) = self.conns.get_mut(addr) else {
                return Err(anyhow!("no connection to {addr}"));
            };
            let replies = match c.call_many(&cmds).await {
                Ok(r) => r,
                Err(e) => {
                    self.conns.remove(addr);
                    return Err(e);
                }
            };
            for (s, v) in chunk.iter().zip(replies) {
                match v {
                    Value::Int(n) if n >= 0 => out.push(n as u64),
                    other => {
                        return Err(anyhow!(
                            "CLUSTER COUNTKEYSINSLOT {s} on {addr}: unexpected reply {other:?}"
                        ))
                    }
                }
            }
        }
        Ok(out)
    }

    /// Up to `count` keys of `slot` on `addr`, each checked to belong to `slot`.
    async fn keys_in_slot(
        &mut self,
        addr: &str,
        slot: u16,
        count: usize,
    ) -> anyhow::Result<Vec<Bytes>> {
        let (s, n) = (slot.to_string(), count.to_string());
        let v = self
            .call(addr, &["CLUSTER", "GETKEYSINSLOT", &s, &n])
            .await?;
        listed_keys(v, addr, slot, count)
    }

    /// `MIGRATING` and the first `GETKEYSINSLOT` in one round trip to the source (the node
    /// runs them in order, so the listing sees the slot open).
    async fn open_source(
        &mut self,
        from: &NodeRef,
        to: &NodeRef,
        slot: u16,
        count: usize,
    ) -> anyhow::Result<(Value, anyhow::Result<Vec<Bytes>>)> {
        let s = slot.to_string();
        let n = count.to_string();
        let cmds: Vec<Vec<&str>> = vec![
            vec!["CLUSTER", "SETSLOT", &s, "MIGRATING", &to.id],
            vec!["CLUSTER", "GETKEYSINSLOT", &s, &n],
        ];
        let addr = from.addr.as_str();
        if !self.conns.contains_key(addr) {
            let c = NodeClient::connect(&self.dialer, addr, self.timeout).await?;
            self.conns.insert(addr.to_string(), c);
        }
        let Some(c) = self.conns.get_mut(addr) else {
            return Err(anyhow!("no connection to {addr}"));
        };
        let mut replies = match c.call_many(&cmds).await {
            Ok(r) => r,
            Err(e) => {
                self.conns.remove(addr);
                return Err(e);
            }
        };
        let listing = replies
            .pop()
            .ok_or_else(|| anyhow!("no reply from {addr}"))?;
        let migrating = replies
            .pop()
            .ok_or_else(|| anyhow!("no reply from {addr}"))?;
        Ok((migrating, listed_keys(listing, addr, slot, count)))
    }

    /// Sends one command to each of several nodes at once (on their kept connections, a new
    /// one where none is kept); the replies by address, in the given order.
    async fn call_each(
        &mut self,
        calls: Vec<(String, Vec<String>)>,
    ) -> Vec<(String, anyhow::Result<Value>)> {
        let n = calls.len();
        let addrs: Vec<String> = calls.iter().map(|c| c.0.clone()).collect();
        let mut set = tokio::task::JoinSet::new();
        for (i, (addr, args)) in calls.into_iter().enumerate() {
            let kept = self.conns.remove(&addr);
            let (dialer, timeout) = (Arc::clone(&self.dialer), self.timeout);
            set.spawn(async move {
                let mut c = match kept {
                    Some(c) => c,
                    None => match NodeClient::connect(&dialer, &addr, timeout).await {
                        Ok(c) => c,
                        Err(e) => return (i, None, Err(e)),
                    },
                };
                let r = c.call(&args).await;
                let keep = r.is_ok().then_some(c);
                (i, keep, r)
            });
        }
        let mut out: Vec<Option<anyhow::Result<Value>>> = (0..n).map(|_| None).collect();
        while let Some(done) = set.join_next().await {
            if let Ok((i, keep, r)) = done {
                if let Some(c) = keep {
                    self.conns.insert(addrs[i].clone(), c);
                }
                out[i] = Some(r);
            }
        }
        addrs
            .into_iter()
            .zip(out)
            .map(|(a, r)| {
                let r = r.unwrap_or_else(|| Err(anyhow!("the call to {a} did not finish")));
                (a, r)
            })
            .collect()
    }

    fn migrate_cmd(
        &self,
        to: &NodeRef,
        keys: &[Bytes],
        replace: bool,
    ) -> anyhow::Result<Vec<Bytes>> {
        let (host, port) = to
            .addr
            .rsplit_once(':')
            .ok_or_else(|| anyhow!("bad target address {}", to.addr))?;
        let mut cmd: Vec<Bytes> = vec![
            Bytes::from_static(b"MIGRATE"),
            Bytes::from(host.to_string()),
            Bytes::from(port.to_string()),
            Bytes::new(),
            Bytes::from_static(b"0"),
            Bytes::from(self.settings.migrate_timeout_ms.to_string()),
        ];
        if replace {
            cmd.push(Bytes::from_static(b"REPLACE"));
        }
        cmd.extend(self.settings.auth.args());
        cmd.push(Bytes::from_static(b"KEYS"));
        cmd.extend(keys.iter().cloned());
        Ok(cmd)
    }

    /// Sends MIGRATE commands pipelined on the source's MIGRATE connection.
    async fn send_migrates(
        &mut self,
        from: &str,
        cmds: &[Vec<Bytes>],
    ) -> anyhow::Result<Vec<Value>> {
        if !self.migrate_conns.contains_key(from) {
            // The transfer of a batch of big keys takes many MIGRATE timeouts; the slot's own
            // deadline bounds the wait.
            let wait = self.settings.slot_timeout.max(self.timeout);
            let mut c = NodeClient::connect(&self.dialer, from, self.timeout).await?;
            c = c.with_timeout(wait);
            self.migrate_conns.insert(from.to_string(), c);
        }
        let Some(c) = self.migrate_conns.get_mut(from) else {
            return Err(anyhow!("no connection to {from}"));
        };
        match c.call_many(cmds).await {
            Ok(v) => Ok(v),
            Err(e) => {
                self.migrate_conns.remove(from);
                Err(e)
            }
        }
    }

    /// Whether `to` says it is importing `slot` from `from_id`.
    async fn importing_from(&mut self, to: &str, slot: u16, from_id: &str) -> anyhow::Result<bool> {
        let text = match self.call(to, &["CLUSTER", "NODES"]).await? {
            Value::Error(e) => return Err(anyhow!("CLUSTER NODES on {to}: {e}")),
            v => v
                .text()
                .map_err(|e| anyhow!("CLUSTER NODES on {to}: {e}"))?,
        };
        let ip = crate::admin::survey::ip_of(to);
        let lines = crate::cluster::parse_cluster_nodes(&text, ip)
            .map_err(|e| anyhow!("CLUSTER NODES on {to}: {e}"))?;
        Ok(lines.iter().find(|l| l.has("myself")).is_some_and(|me| {
            me.importing
                .iter()
                .any(|(s, id)| *s == slot && id == from_id)
        }))
    }

    /// Moves every key of `slot` from `from` to `to`; `REPLACE` on `BUSYKEY` only when
    /// `may_replace` and `to` is importing the slot from `from`. Returns the keys moved.
    #[allow(clippy::too_many_arguments)]
    pub async fn move_keys(
        &mut self,
        from: &NodeRef,
        to: &NodeRef,
        slot: u16,
        may_replace: bool,
        ctx: &mut Ctx<'_>,
        deadline: Instant,
        first: Option<Vec<Bytes>>,
    ) -> Result<u64, MoveError> {
        let batch = self.settings.batch.max(1);
        let count = self.listing_size();
        let mut replace = false;
        let mut idle_rounds = 0;
        let mut moved_total = 0u64;
        let mut first = first;
        loop {
            ctx.tick().await?;
            if Instant::now() >= deadline {
                return Err(MoveError::Timeout {
                    slot,
                    after: self.settings.slot_timeout,
                });
            }
            let keys = match first.take() {
                Some(k) => k,
                None => self.keys_in_slot(&from.addr, slot, count).await?,
            };
            if keys.is_empty() {
                return Ok(moved_total);
            }
            let chunks: Vec<&[Bytes]> = keys.chunks(batch).collect();
            let cmds = chunks
                .iter()
                .map(|c| self.migrate_cmd(to, c, replace))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let replies = self.send_migrates(&from.addr, &cmds).await?;
            let replaced = std::mem::take(&mut replace);
            let (mut moved, mut busy, mut had_nokey) = (0u64, false, false);
            let mut failed: Vec<&[Bytes]> = Vec::new();
            for (chunk, reply) in chunks.iter().zip(&replies) {
                match reply {
                    Value::Simple(s) if s == "OK" => moved += chunk.len() as u64,
                    Value::Simple(s) if s == "NOKEY" => had_nokey = true,
                    Value::Error(e) if e.contains("BUSYKEY") => busy = true,
                    Value::Error(e) if e.starts_with("IOERR") => failed.push(chunk),
                    Value::Error(e) => {
                        return Err(MoveError::Node(anyhow!(
                            "MIGRATE of slot {slot} from {} to {}: {e}; the slot is left open \
                             (clients are still served through ASK); fix the cause and re-run",
                            from.addr,
                            to.addr
                        )))
                    }
                    other => {
                        return Err(MoveError::Node(anyhow!(
                            "MIGRATE on {}: unexpected reply {other:?}",
                            from.addr
                        )))
                    }
                }
            }
            let had_failures = !failed.is_empty();
            for chunk in failed {
                let (ok, b) = self.one_by_one(from, to, slot, chunk, replaced).await?;
                moved += ok;
                busy |= b;
            }
            if busy {
                if !(may_replace && self.importing_from(&to.addr, slot, &from.id).await?) {
                    return Err(MoveError::Conflict {
                        slot,
                        from: from.addr.clone(),
                        to: to.addr.clone(),
                    });
                }
                ctx.job.log(format!(
                    "slot {slot}: {} already had keys from an interrupted MIGRATE; sending them \
                     again with REPLACE",
                    to.addr
                ));
                replace = true;
            }
            moved_total += moved;
            ctx.moved_keys(moved);
            if keys.len() < count && !busy && !had_failures && !had_nokey {
                // The listing held every key of the slot and each one moved; the source
                // takes no new key of a migrating slot (it answers ASK), so none is left.
                return Ok(moved_total);
            }
            if moved == 0 && !busy {
                // Keys that expire between the listing and the MIGRATE answer NOKEY and are
                // not listed again; a node that lists the same keys forever is not moving.
                idle_rounds += 1;
                if idle_rounds >= 5 {
                    return Err(MoveError::Node(anyhow!(
                        "slot {slot}: {} keeps listing keys that MIGRATE does not move",
                        from.addr
                    )));
                }
            } else {
                idle_rounds = 0;
            }
        }
    }

    /// Retries a failed batch key by key (with `REPLACE` if the batch had it) to find the one
    /// MIGRATE cannot move; returns the keys moved and whether one was busy on the target.
    async fn one_by_one(
        &mut self,
        from: &NodeRef,
        to: &NodeRef,
        slot: u16,
        keys: &[Bytes],
        replace: bool,
    ) -> Result<(u64, bool), MoveError> {
        let (mut moved, mut busy) = (0u64, false);
        for key in keys {
            let cmd = self.migrate_cmd(to, std::slice::from_ref(key), replace)?;
            let reply = self.send_migrates(&from.addr, &[cmd]).await?;
            match reply.first() {
                Some(Value::Simple(s)) if s == "OK" => moved += 1,
                Some(Value::Simple(s)) if s == "NOKEY" => {}
                Some(Value::Error(e)) if e.contains("BUSYKEY") => busy = true,
                Some(Value::Error(e)) if e.starts_with("IOERR") => {
                    let bytes = match self
                        .call(&from.addr, &[&b"MEMORY"[..], b"USAGE", key])
                        .await
                    {
                        Ok(Value::Int(n)) if n >= 0 => Some(n as u64),
                        _ => None,
                    };
                    return Err(MoveError::BigKey {
                        slot,
                        key: printable(key),
                        bytes,
                        from: from.addr.clone(),
                        to: to.addr.clone(),
                        timeout_ms: self.settings.migrate_timeout_ms,
                        reply: e.clone(),
                    });
                }
                Some(Value::Error(e)) => {
                    return Err(MoveError::Node(anyhow!(
                        "MIGRATE of key '{}' (slot {slot}) from {} to {}: {e}",
                        printable(key),
                        from.addr,
                        to.addr
                    )))
                }
                other => {
                    return Err(MoveError::Node(anyhow!(
                        "MIGRATE on {}: unexpected reply {other:?}",
                        from.addr
                    )))
                }
            }
        }
        Ok((moved, busy))
    }

    /// Moves `slot` from `from` to `to` and tells every master in `others`; resumes a move
    /// an earlier run left at any step. Returns the keys moved.
    pub async fn move_slot(
        &mut self,
        from: &NodeRef,
        to: &NodeRef,
        others: &[NodeRef],
        slot: u16,
        ctx: &mut Ctx<'_>,
    ) -> Result<u64, MoveError> {
        let deadline = Instant::now() + self.settings.slot_timeout;
        let v = self
            .setslot(&to.addr, slot, &["IMPORTING", &from.id])
            .await?;
        if is_err(&v, "already the owner") {
            // An earlier run got as far as SETSLOT NODE on the target.
            return self.finalize(from, to, others, slot, ctx, deadline).await;
        }
        expect_ok(v, &format!("CLUSTER SETSLOT {slot} IMPORTING"), &to.addr)?;
        let count = self.listing_size();
        let (v, listing) = self.open_source(from, to, slot, count).await?;
        if is_err(&v, "not the owner") {
            // Undo our IMPORTING if nothing arrived under it, so the slot is not left open.
            if self.count_keys(&to.addr, &[slot]).await?.first() == Some(&0) {
                let v = self.setslot(&to.addr, slot, &["STABLE"]).await?;
                expect_ok(v, &format!("CLUSTER SETSLOT {slot} STABLE"), &to.addr)?;
            }
            return Err(MoveError::Stale {
                slot,
                why: format!("{} no longer owns it", from.addr),
            });
        }
        expect_ok(v, &format!("CLUSTER SETSLOT {slot} MIGRATING"), &from.addr)?;
        let keys = self
            .move_keys(from, to, slot, true, ctx, deadline, Some(listing?))
            .await?;
        Ok(keys + self.finalize(from, to, others, slot, ctx, deadline).await?)
    }

    /// Step 3: `SETSLOT NODE` on the target first; once it owns the slot, on the source and
    /// every other master at once (each then sends clients to the target, which serves them).
    async fn finalize(
        &mut self,
        from: &NodeRef,
        to: &NodeRef,
        others: &[NodeRef],
        slot: u16,
        ctx: &mut Ctx<'_>,
        deadline: Instant,
    ) -> Result<u64, MoveError> {
        let what = format!("CLUSTER SETSLOT {slot} NODE");
        let v = self.setslot(&to.addr, slot, &["NODE", &to.id]).await?;
        expect_ok(v, &what, &to.addr)?;
        let node = |addr: &str| {
            let args = ["CLUSTER", "SETSLOT", &slot.to_string(), "NODE", &to.id]
                .map(str::to_string)
                .to_vec();
            (addr.to_string(), args)
        };
        let mut calls = vec![node(&from.addr)];
        let told: Vec<&NodeRef> = others
            .iter()
            .filter(|o| o.id != from.id && o.id != to.id && !self.demoted.contains(&o.id))
            .collect();
        calls.extend(told.iter().map(|o| node(&o.addr)));
        let mut replies = self.call_each(calls).await.into_iter();
        let mut keys = 0;
        let source = match replies.next() {
            Some((_, r)) => r?,
            None => return Err(MoveError::Node(anyhow!("no reply from {}", from.addr))),
        };
        if is_err(&source, "still hold keys") {
            // Keys left on the source (an earlier tool's run ended between the last MIGRATE
            // and here): move them, then tell the source again.
            keys = self
                .move_keys(from, to, slot, true, ctx, deadline, None)
                .await?;
            let v = self.setslot(&from.addr, slot, &["NODE", &to.id]).await?;
            expect_ok(v, &what, &from.addr)?;
        } else if is_err(&source, "only with masters") {
            // The source gave away its last slot and heard of it on the cluster bus before
            // this command came: Redis made it a replica of the target, which it only does
            // once it takes the target for the slot's owner.
            self.demoted.insert(from.id.clone());
            ctx.job.log(format!(
                "{} became a replica after giving away its last slot {slot}",
                from.addr
            ));
        } else {
            expect_ok(source, &what, &from.addr)?;
        }
        for (o, (_, r)) in told.iter().zip(replies) {
            if matches!(&r, Ok(v) if is_err(v, "only with masters")) {
                self.demoted.insert(o.id.clone());
                continue;
            }
            if let Err(e) = r.and_then(|v| expect_ok(v, &what, &o.addr)) {
                // The cluster bus carries the new owner there too (the target bumped its epoch).
                ctx.job.log(format!(
                    "{e:#}; it will learn the owner from the cluster bus"
                ));
            }
        }
        Ok(keys)
    }

    /// Moves the keys of `slot` held by `from`, a master that does not own it, to its owner
    /// `to`, then closes the slot on `from`. A key both hold is never replaced (the owner's copy
    /// is the one clients used): the run stops with [`MoveError::Conflict`].
    pub async fn evacuate(
        &mut self,
        from: &NodeRef,
        to: &NodeRef,
        slot: u16,
        ctx: &mut Ctx<'_>,
    ) -> Result<u64, MoveError> {
        let deadline = Instant::now() + self.settings.slot_timeout;
        // IMPORTING lets a node that does not own the slot run MIGRATE on its keys.
        let v = self
            .setslot(&from.addr, slot, &["IMPORTING", &to.id])
            .await?;
        if is_err(&v, "already the owner") {
            return Err(MoveError::Stale {
                slot,
                why: format!("{} owns it now", from.addr),
            });
        }
        expect_ok(v, &format!("CLUSTER SETSLOT {slot} IMPORTING"), &from.addr)?;
        let keys = self
            .move_keys(from, to, slot, false, ctx, deadline, None)
            .await?;
        self.close(&from.addr, slot).await?;
        Ok(keys)
    }

    /// `CLUSTER SETSLOT <slot> STABLE` on `addr`.
    pub async fn close(&mut self, addr: &str, slot: u16) -> anyhow::Result<()> {
        let v = self.setslot(addr, slot, &["STABLE"]).await?;
        expect_ok(v, &format!("CLUSTER SETSLOT {slot} STABLE"), addr)
    }

    /// Gives an uncovered `slot` to `to` (`ADDSLOTS`, or `SETSLOT NODE` where the node still
    /// remembers a former owner) and tells every master in `others`.
    pub async fn assign(
        &mut self,
        to: &NodeRef,
        others: &[NodeRef],
        slot: u16,
        job: &Job,
    ) -> anyhow::Result<()> {
        let s = slot.to_string();
        let v = self.call(&to.addr, &["CLUSTER", "ADDSLOTS", &s]).await?;
        if is_err(&v, "busy") {
            let v = self.setslot(&to.addr, slot, &["NODE", &to.id]).await?;
            expect_ok(v, &format!("CLUSTER SETSLOT {slot} NODE"), &to.addr)?;
        } else {
            expect_ok(v, &format!("CLUSTER ADDSLOTS {slot}"), &to.addr)?;
        }
        for o in others.iter().filter(|o| o.id != to.id) {
            let what = format!("CLUSTER SETSLOT {slot} NODE");
            let r = self.setslot(&o.addr, slot, &["NODE", &to.id]).await;
            if let Err(e) = r.and_then(|v| expect_ok(v, &what, &o.addr)) {
                job.log(format!(
                    "{e:#}; it will learn the owner from the cluster bus"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrate_command_shape() {
        let mut m = Mover::new(
            Arc::new(Dialer::plain()),
            Duration::from_secs(1),
            MoveSettings {
                migrate_timeout_ms: 1234,
                auth: MigrateAuth::User("u".into(), "p".into()),
                ..MoveSettings::default()
            },
        );
        let to = NodeRef {
            id: "b".into(),
            addr: "127.0.0.2:7001".into(),
        };
        let cmd = m
            .migrate_cmd(&to, &[Bytes::from("k1"), Bytes::from("k2")], true)
            .expect("cmd");
        let words: Vec<String> = cmd
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        assert_eq!(
            words,
            [
                "MIGRATE",
                "127.0.0.2",
                "7001",
                "",
                "0",
                "1234",
                "REPLACE",
                "AUTH2",
                "u",
                "p",
                "KEYS",
                "k1",
                "k2"
            ]
        );
        m.settings.auth = MigrateAuth::None;
        let cmd = m.migrate_cmd(&to, &[Bytes::from("k")], false).expect("cmd");
        assert_eq!(cmd.len(), 8);
    }
}
