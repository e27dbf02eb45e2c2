//! The cluster-wide admin lease ([`Lease`]): one topology-changing engine run (master
//! rebalance, slot moves, adding or removing nodes) at a time across every proxy and client,
//! held in a key of the cluster itself.

use crate::admin::jobs::Job;
use crate::backend::node_client::NodeClient;
use crate::cluster::NodeLine;
use crate::net::dialer::Dialer;
use crate::route::resp::Value;
use anyhow::{anyhow, bail, Context};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The cluster key that serialises topology-changing engine runs across proxies (design
/// decision 11). Its name predates the engines other than REBALANCE MASTERS and is kept so that
/// proxies of different versions still exclude each other.
pub const LEASE_KEY: &str = "slotproxy:lease:rebalance";

/// The move note: the slot range a slot-moving job is moving now (`<from-id> <to-id> <first>
/// <last>`), kept while the job runs and deleted when it ends well, so a run that was killed
/// can tell the slots it left open from those another tool left. Its hash tag puts it in the
/// lease key's slot, on the same node.
pub const MOVE_NOTE_KEY: &str = "{slotproxy:lease:rebalance}:moving";

/// How long the lease lives without renewal; engines renew it every third of this.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

/// Renews the lease only if this proxy's job still holds it.
const RENEW_SCRIPT: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
     return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
/// Deletes the lease only if this proxy's job still holds it.
const RELEASE_SCRIPT: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
     return redis.call('del', KEYS[1]) else return 0 end";

/// The rebalance lease: [`LEASE_KEY`] set with `NX PX` on the master owning its slot, holding a
/// description of the job (`slotproxy <listen> pid <pid> job <id>`), renewed by a compare-and-
/// expire script while the job runs and deleted at the end. Two proxies (or two clients of one
/// proxy) cannot both hold it; the loser's error names the holder. If the owner of the key's
/// slot changes (this very rebalance may fail it over, or move the slot), `MOVED` and `ASK`
/// are followed to the nodes the cluster listed.
pub struct Lease {
    holder: String,
    addr: String,
    /// How the proxy reaches nodes (its credentials and TLS), for every call on the lease.
    dialer: Arc<Dialer>,
    timeout: Duration,
    renewed: Instant,
    next_try: Instant,
    /// Every node address the cluster listed when the lease was taken: the only ones a
    /// `MOVED` or `ASK` reply may send the lease's calls to.
    known: Vec<String>,
}

/// The address of a `MOVED <slot> <addr>` or `ASK <slot> <addr>` error, if `e` is that kind.
fn redirect<'a>(e: &'a str, kind: &str) -> Option<&'a str> {
    e.strip_prefix(kind)?
        .strip_prefix(' ')?
        .split_whitespace()
        .nth(1)
}

impl Lease {
    /// One call on the lease key. `MOVED` (the key's slot has a new owner) is followed for
    /// good; `ASK` (the slot is being moved, possibly by this very job, and the key is already
    /// on the importing node) is followed for this call only, with `ASKING` first. Redirects
    /// go only to nodes the cluster listed when the lease was taken.
    async fn call(&mut self, args: &[&str]) -> anyhow::Result<Value> {
        let mut ask: Option<String> = None;
        for _ in 0..5 {
            let to = ask.clone().unwrap_or_else(|| self.addr.clone());
            let mut c = NodeClient::connect(&self.dialer, &to, self.timeout).await?;
            if ask.is_some() {
                match c.call(&["ASKING"]).await? {
                    Value::Simple(_) => {}
                    other => bail!("ASKING to {to}: unexpected reply {other:?}"),
                }
            }
            let v = c.call(args).await?;
            if let Value::Error(e) = &v {
                let moved = redirect(e, "MOVED");
                let asked = redirect(e, "ASK");
                if let Some(addr) = moved.or(asked) {
                    if !self.known.iter().any(|k| k == addr) {
                        bail!("{to} redirected the lease {LEASE_KEY} to {addr}, a node the cluster did not list");
                    }
                    if moved.is_some() {
                        self.addr = addr.to_string();
                        ask = None;
                    } else {
                        ask = Some(addr.to_string());
                    }
                    continue;
                }
            }
            return Ok(v);
        }
        bail!("too many MOVED/ASK redirects for {LEASE_KEY}")
    }

    /// Takes the lease, or fails naming who holds it; `dialer` is how every call on it
    /// connects.
    pub async fn acquire(
        dialer: Arc<Dialer>,
        lines: &[NodeLine],
        holder: String,
        timeout: Duration,
    ) -> anyhow::Result<Lease> {
        let mut lease = Lease::unheld(dialer, lines, holder, timeout)?;
        let ttl = LEASE_TTL.as_millis().to_string();
        let holder = lease.holder.clone();
        let v = lease
            .call(&["SET", LEASE_KEY, &holder, "NX", "PX", &ttl])
            .await
            .context("taking the rebalance lease")?;
        match v {
            Value::Simple(s) if s == "OK" => {
                lease.renewed = Instant::now();
                lease.next_try = lease.renewed + LEASE_TTL / 3;
                Ok(lease)
            }
            Value::Bulk(None) | Value::Array(None) => {
                let who = lease
                    .call(&["GET", LEASE_KEY])
                    .await
                    .ok()
                    .and_then(|v| v.text().ok())
                    .unwrap_or_default();
                let left = match lease.call(&["PTTL", LEASE_KEY]).await {
                    Ok(Value::Int(ms)) if ms >= 0 => format!(" for another {ms} ms"),
                    _ => String::new(),
                };
                bail!("another rebalance holds the lease {LEASE_KEY}: {who:?}{left}")
            }
            other => bail!("taking the lease {LEASE_KEY}: unexpected reply {other:?}"),
        }
    }

    /// A handle on the lease key's node that does not hold the lease (yet).
    fn unheld(
        dialer: Arc<Dialer>,
        lines: &[NodeLine],
        holder: String,
        timeout: Duration,
    ) -> anyhow::Result<Lease> {
        let slot = crate::cluster::slots::key_slot(LEASE_KEY.as_bytes());
        let owner = lines
            .iter()
            .find(|l| l.is_master() && l.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .ok_or_else(|| anyhow!("no master owns slot {slot} of the lease key {LEASE_KEY}"))?;
        Ok(Lease {
            holder,
            addr: owner.addr(),
            dialer,
            timeout,
            renewed: Instant::now(),
            next_try: Instant::now(),
            known: lines
                .iter()
                .filter(|l| l.is_usable())
                .map(NodeLine::addr)
                .collect(),
        })
    }

    /// Reads the move note ([`MOVE_NOTE_KEY`]) without taking the lease (for a `DRYRUN`, and
    /// to decide whether open slots are an interrupted run's before taking it).
    pub async fn peek_note(
        dialer: Arc<Dialer>,
        lines: &[NodeLine],
        timeout: Duration,
    ) -> anyhow::Result<Option<String>> {
        Lease::unheld(dialer, lines, String::new(), timeout)?
            .read_note()
            .await
    }

    /// The move note: what a slot-moving job is moving now (`None` when no note is kept).
    pub async fn read_note(&mut self) -> anyhow::Result<Option<String>> {
        match self.call(&["GET", MOVE_NOTE_KEY]).await? {
            Value::Bulk(Some(b)) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Value::Bulk(None) => Ok(None),
            other => bail!("GET {MOVE_NOTE_KEY}: unexpected reply {other:?}"),
        }
    }

    /// Keeps `note` as the move note, or deletes it (`None`).
    pub async fn set_note(&mut self, note: Option<&str>) -> anyhow::Result<()> {
        let v = match note {
            Some(n) => self.call(&["SET", MOVE_NOTE_KEY, n]).await?,
            None => self.call(&["DEL", MOVE_NOTE_KEY]).await?,
        };
        match v {
            Value::Error(e) => bail!("writing {MOVE_NOTE_KEY}: {e}"),
            _ => Ok(()),
        }
    }

    /// Renews the lease when a third of its life has passed. A failed attempt is retried a
    /// second later; it is an error only once the lease may have expired, or if another job
    /// holds it.
    pub async fn renew_if_due(&mut self, job: &Job) -> anyhow::Result<()> {
        if Instant::now() < self.next_try {
            return Ok(());
        }
        let ttl = LEASE_TTL.as_millis().to_string();
        let holder = self.holder.clone();
        match self
            .call(&["EVAL", RENEW_SCRIPT, "1", LEASE_KEY, &holder, &ttl])
            .await
        {
            Ok(Value::Int(1)) => {
                self.renewed = Instant::now();
                self.next_try = self.renewed + LEASE_TTL / 3;
                return Ok(());
            }
            Ok(Value::Int(_)) => {
                bail!("lost the rebalance lease {LEASE_KEY}: another job holds it")
            }
            Ok(other) => job.log(format!("renewing the lease: {other:?}; retrying")),
            Err(e) => job.log(format!("renewing the lease: {e:#}; retrying")),
        }
        if self.renewed.elapsed() + Duration::from_secs(2) >= LEASE_TTL {
            bail!("could not renew the rebalance lease {LEASE_KEY} before it expired");
        }
        self.next_try = Instant::now() + Duration::from_secs(1);
        Ok(())
    }

    /// Deletes the lease if this job still holds it.
    pub async fn release(&mut self) -> anyhow::Result<()> {
        let holder = self.holder.clone();
        match self
            .call(&["EVAL", RELEASE_SCRIPT, "1", LEASE_KEY, &holder])
            .await?
        {
            Value::Error(e) => bail!("releasing the lease: {e}"),
            _ => Ok(()),
        }
    }

    /// The node the lease key lives on (as last seen).
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

#[cfg(test)]
mod tests {
    use super::redirect;

    #[test]
    fn the_note_lives_beside_the_lease() {
        use crate::cluster::slots::key_slot;
        assert_eq!(
            key_slot(super::MOVE_NOTE_KEY.as_bytes()),
            key_slot(super::LEASE_KEY.as_bytes())
        );
    }

    #[test]
    fn redirects_are_read_exactly() {
        assert_eq!(
            redirect("MOVED 12 127.0.0.1:7000", "MOVED"),
            Some("127.0.0.1:7000")
        );
        assert_eq!(
            redirect("ASK 12 127.0.0.2:7001", "ASK"),
            Some("127.0.0.2:7001")
        );
        assert_eq!(redirect("ASKING is odd", "ASK"), None);
        assert_eq!(redirect("MOVED 12", "MOVED"), None);
        assert_eq!(redirect("ERR wrong", "MOVED"), None);
    }
}
