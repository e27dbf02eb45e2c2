//! Where one connection's reads go: the `read_from` setting (live), or its user's `read_from`
//! (`[[users]]`), overridden for the connection by READONLY (`prefer-replica`, as a cluster
//! client expects of it) until READWRITE or RESET.
//!
//! Invariant: with the mode `master` the data path is untouched — the session checks one field
//! per request, and `read_now` stays `Master`, so every request goes out as `Dest::Slot`. Only
//! a command Redis flags `readonly` that does not block, outside a transaction (WATCH or
//! MULTI) and from a client that does not track keys (CLIENT TRACKING), becomes a `Dest::Read`
//! for the worker to place
//! ([`crate::route::replica_choice`]).

use super::Session;
use crate::config::Config;
use crate::route::command::CommandSpec;
use crate::route::replica_choice::{self, ReadFrom};
use crate::route::resp;
use std::sync::atomic::Ordering::Relaxed;

/// A connection's read mode and where it comes from.
pub(super) struct Reads {
    /// The `read_from` setting in force.
    setting: ReadFrom,
    /// READONLY's override, until READWRITE or RESET.
    conn: Option<ReadFrom>,
    /// The logged-in user's `read_from`.
    user: Option<ReadFrom>,
    /// The mode in force: the connection's override, else the user's, else the setting.
    mode: ReadFrom,
}

impl Reads {
    /// The mode of a new connection under `cfg`.
    pub(super) fn new(cfg: &Config) -> Reads {
        let setting = ReadFrom::parse(&cfg.read_from).unwrap_or_default();
        Reads {
            setting,
            conn: None,
            user: None,
            mode: setting,
        }
    }

    /// Picks up a changed `read_from`.
    pub(super) fn reload(&mut self, cfg: &Config) {
        self.setting = ReadFrom::parse(&cfg.read_from).unwrap_or_default();
        self.update();
    }

    fn update(&mut self) {
        self.mode = self.conn.or(self.user).unwrap_or(self.setting);
    }

    /// The mode in force.
    #[inline]
    pub(super) fn mode(&self) -> ReadFrom {
        self.mode
    }

    /// Where a request of `spec` may be read from; `masters_only`: the connection's state
    /// keeps its reads on masters now (a transaction, WATCH or MULTI, is under way; it
    /// tracks keys for client-side caching).
    pub(super) fn for_request(&self, spec: Option<&CommandSpec>, masters_only: bool) -> ReadFrom {
        if !masters_only && replica_choice::readable(spec) {
            self.mode
        } else {
            ReadFrom::Master
        }
    }

    fn set_conn(&mut self, conn: Option<ReadFrom>) {
        self.conn = conn;
        self.update();
    }

    fn set_user(&mut self, user: Option<ReadFrom>) {
        self.user = user;
        self.update();
    }
}

impl Session {
    /// READONLY: this connection's reads prefer replicas.
    pub(super) fn read_only(&mut self) {
        self.reads.set_conn(Some(ReadFrom::PreferReplica));
        // Replica health is polled from now on, whatever `read_from` says.
        self.worker
            .shared
            .topology
            .replica_reads_wanted
            .store(true, Relaxed);
        self.push_ready(resp::simple("OK"));
    }

    /// READWRITE (and RESET): this connection's reads follow `read_from` (or its user's)
    /// again.
    pub(super) fn read_write(&mut self) {
        self.reads.set_conn(None);
        self.read_now = ReadFrom::Master;
    }

    /// Takes the logged-in user's `read_from` (after a login, AUTH, HELLO AUTH or RESET).
    pub(super) fn sync_read_user(&mut self) {
        let user = self.client.user.as_ref().and_then(|s| s.user.read_from);
        if user.is_some_and(|m| m != ReadFrom::Master) {
            self.worker
                .shared
                .topology
                .replica_reads_wanted
                .store(true, Relaxed);
        }
        self.reads.set_user(user);
        self.read_now = ReadFrom::Master;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> Option<&'static CommandSpec> {
        crate::route::command::lookup(&[bytes::Bytes::copy_from_slice(name.as_bytes())])
    }

    #[test]
    fn readonly_overrides_the_setting_until_readwrite() {
        let mut cfg = Config::default();
        let mut r = Reads::new(&cfg);
        assert_eq!(r.mode(), ReadFrom::Master);
        assert_eq!(r.for_request(spec("get"), false), ReadFrom::Master);
        r.set_conn(Some(ReadFrom::PreferReplica));
        assert_eq!(r.for_request(spec("get"), false), ReadFrom::PreferReplica);
        // Writes and reads inside a transaction stay on the master.
        assert_eq!(r.for_request(spec("set"), false), ReadFrom::Master);
        assert_eq!(r.for_request(spec("get"), true), ReadFrom::Master);
        // The setting changes under the override without undoing it.
        cfg.read_from = "any".into();
        r.reload(&cfg);
        assert_eq!(r.mode(), ReadFrom::PreferReplica);
        r.set_conn(None);
        assert_eq!(r.mode(), ReadFrom::Any);
        cfg.read_from = "master".into();
        r.reload(&cfg);
        assert_eq!(r.mode(), ReadFrom::Master);
        // A user's own mode sits between the setting and READONLY.
        r.set_user(Some(ReadFrom::Replica));
        assert_eq!(r.mode(), ReadFrom::Replica);
        r.set_conn(Some(ReadFrom::PreferReplica));
        assert_eq!(r.mode(), ReadFrom::PreferReplica);
        r.set_conn(None);
        r.set_user(None);
        assert_eq!(r.mode(), ReadFrom::Master);
    }
}
