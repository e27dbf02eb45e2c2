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

/// The remove note: the IDs (space-separated) of the masters a `PROXY REMOVE NODES` run is
/// draining, kept from before the drain until the run ends well. Redis makes a master that gave
/// away its last slot a replica of the node that took it, so a re-run after an interruption
/// would otherwise take a drained master for some master's last replica.
pub const REMOVE_NOTE_KEY: &str = "{slotproxy:lease:rebalance}:removing";

/// How long the lease lives without renewal; engines renew it every third of this.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

/// Renews the lease only if this proxy's job still holds it.
const RENEW_SCRIPT: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
     return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
/// Replaces the lease's holder only if it is still the one that was found gone.
const TAKEOVER_SCRIPT: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
     return redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3]) else return 0 end";
/// Deletes the lease only if this proxy's job still holds it.
const RELEASE_SCRIPT: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
     return redis.call('del', KEYS[1]) else return 0 end";

/// The lease's holder text for job `job` of this proxy: `slotproxy <listen> pid <pid> host
/// <machine> job <id>`, where `<machine>` names this kernel boot and PID namespace (see
/// [`machine`]), so that another proxy on the same machine can tell that the holder process is
/// gone ([`holder_is_gone`]).
pub fn holder_text(listen: &str, job: u64) -> String {
    format!(
        "slotproxy {listen} pid {} host {} job {job}",
        std::process::id(),
        machine().unwrap_or_else(|| "unknown".into())
    )
}

/// Logs in `job` where the lease was taken, and from whom if its proxy was gone.
pub fn log_taken(job: &Job, lease: &Lease) {
    match lease.took_over() {
        Some(who) => job.log(format!(
            "took over the lease {LEASE_KEY} on {} from {who:?}, whose process is gone",
            lease.addr()
        )),
        None => job.log(format!("took the lease {LEASE_KEY} on {}", lease.addr())),
    }
}

/// This process's boot and PID namespace (`<boot id>/<pid namespace inode>`): two processes
/// with the same value see the same process table, so a PID one of them wrote means the same
/// process to the other. `None` where Linux's `/proc` does not tell.
fn machine() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let ns = ns
        .to_str()?
        .strip_prefix("pid:[")?
        .strip_suffix(']')?
        .to_string();
    Some(format!("{}/{ns}", boot.trim()))
}

/// Whether process `pid` is running (a zombie, killed but not yet reaped, is not).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Whether the lease holder `text` (a [`holder_text`]) is a proxy process that is gone: one on
/// this machine (`me`, from [`machine`]), other than this process (`my_pid`), that `alive`
/// says is not running. A holder on another machine, or one whose text does not say, is never
/// gone: its lease only expires.
pub fn holder_is_gone(
    text: &str,
    me: Option<&str>,
    my_pid: u32,
    alive: impl Fn(u32) -> bool,
) -> bool {
    let words: Vec<&str> = text.split_whitespace().collect();
    let after = |name: &str| words.windows(2).find(|w| w[0] == name).map(|w| w[1]);
    let (Some(me), Some(host), Some(pid)) = (me, after("host"), after("pid")) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    words.first() == Some(&"slotproxy") && host == me && pid != my_pid && !alive(pid)
}

/// The rebalance lease: [`LEASE_KEY`] set with `NX PX` on the master owning its slot, holding a
/// description of the job ([`holder_text`]), renewed by a compare-and-
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
    /// The holder text of a proxy that was gone when this lease was taken over from it.
    took_over: Option<String>,
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
    /// connects. A lease whose holder is a proxy on this machine that is gone (SIGKILLed in
    /// the middle of a run) is taken over at once rather than after its TTL, so that re-running
    /// the command finishes the run without waiting.
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
                let me = machine();
                if holder_is_gone(&who, me.as_deref(), std::process::id(), process_alive) {
                    let taken = lease
                        .call(&["EVAL", TAKEOVER_SCRIPT, "1", LEASE_KEY, &who, &holder, &ttl])
                        .await
                        .context("taking over the rebalance lease")?;
                    if matches!(&taken, Value::Simple(s) if s == "OK") {
                        lease.renewed = Instant::now();
                        lease.next_try = lease.renewed + LEASE_TTL / 3;
                        lease.took_over = Some(who);
                        return Ok(lease);
                    }
                }
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
            took_over: None,
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

    /// Reads the remove note ([`REMOVE_NOTE_KEY`]) without taking the lease.
    pub async fn peek_remove_note(
        dialer: Arc<Dialer>,
        lines: &[NodeLine],
        timeout: Duration,
    ) -> anyhow::Result<Option<String>> {
        Lease::unheld(dialer, lines, String::new(), timeout)?
            .read_key(REMOVE_NOTE_KEY)
            .await
    }

    /// The move note: what a slot-moving job is moving now (`None` when no note is kept).
    pub async fn read_note(&mut self) -> anyhow::Result<Option<String>> {
        self.read_key(MOVE_NOTE_KEY).await
    }

    /// Keeps `note` as the move note, or deletes it (`None`).
    pub async fn set_note(&mut self, note: Option<&str>) -> anyhow::Result<()> {
        self.set_key(MOVE_NOTE_KEY, note).await
    }

    /// Keeps `note` as the remove note ([`REMOVE_NOTE_KEY`]), or deletes it (`None`).
    pub async fn set_remove_note(&mut self, note: Option<&str>) -> anyhow::Result<()> {
        self.set_key(REMOVE_NOTE_KEY, note).await
    }

    async fn read_key(&mut self, key: &str) -> anyhow::Result<Option<String>> {
        match self.call(&["GET", key]).await? {
            Value::Bulk(Some(b)) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Value::Bulk(None) => Ok(None),
            other => bail!("GET {key}: unexpected reply {other:?}"),
        }
    }

    async fn set_key(&mut self, key: &str, note: Option<&str>) -> anyhow::Result<()> {
        let v = match note {
            Some(n) => self.call(&["SET", key, n]).await?,
            None => self.call(&["DEL", key]).await?,
        };
        match v {
            Value::Error(e) => bail!("writing {key}: {e}"),
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

    /// The holder the lease was taken over from, if its proxy was gone.
    pub fn took_over(&self) -> Option<&str> {
        self.took_over.as_deref()
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
        assert_eq!(
            key_slot(super::REMOVE_NOTE_KEY.as_bytes()),
            key_slot(super::LEASE_KEY.as_bytes())
        );
    }

    #[test]
    fn only_a_gone_proxy_on_this_machine_loses_its_lease() {
        use super::holder_is_gone;
        let text = "slotproxy 127.0.0.1:7000 pid 42 host b00t/4026531836 job 3";
        let me = Some("b00t/4026531836");
        assert!(holder_is_gone(text, me, 7, |_| false));
        // Running, this very process, another machine or namespace, or no way to tell: wait.
        assert!(!holder_is_gone(text, me, 7, |p| p == 42));
        assert!(!holder_is_gone(text, me, 42, |_| false));
        assert!(!holder_is_gone(text, Some("b00t/4026531999"), 7, |_| false));
        assert!(!holder_is_gone(text, None, 7, |_| false));
        let old = "slotproxy 127.0.0.1:7000 pid 42 job 3";
        assert!(!holder_is_gone(old, me, 7, |_| false));
        assert!(!holder_is_gone("another proxy", me, 7, |_| false));
        let bad = "slotproxy 127.0.0.1:7000 pid x host b00t/4026531836 job 3";
        assert!(!holder_is_gone(bad, me, 7, |_| false));
    }

    #[test]
    fn this_process_is_alive_and_its_machine_is_known() {
        assert!(super::process_alive(std::process::id()));
        assert!(!super::process_alive(u32::MAX));
        let text = super::holder_text("127.0.0.1:1", 9);
        assert!(text.starts_with(&format!(
            "slotproxy 127.0.0.1:1 pid {} host ",
            std::process::id()
        )));
        assert!(text.ends_with(" job 9"), "{text}");
        if cfg!(target_os = "linux") {
            assert!(super::machine().is_some());
        }
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
