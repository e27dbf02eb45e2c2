//! Client-side caching for one client: CLIENT TRACKING, CACHING, GETREDIR, TRACKINGINFO, the
//! keys its reads make it track, and the invalidation messages it receives.
//!
//! The worker's [`crate::backend::invalidation::Hub`] hears every write in the cluster and
//! keeps the table; this module is the client's side of it. Invariants: a client that does
//! not track pays one branch per request (`Session::tracking` is `None`); a tracking client's
//! read-only commands record their keys at dispatch, before the node can answer, so a write
//! after the read is always heard; an invalidation message is written after every reply
//! already queued, in the receiver's protocol (RESP3 push, or a `__redis__:invalidate`
//! message for a RESP2 client in subscribed mode; a RESP2 client that is neither gets
//! nothing, as from Redis).

use super::Session;
use crate::backend::tracking_table::{check_prefixes, Mode};
use crate::route::command::{self, CommandSpec};
use crate::route::dispatch::ReplySlot;
use crate::route::resp;
use crate::session::clients::Invalidation;
use bytes::{Bytes, BytesMut};
use std::rc::Rc;

/// One client's tracking options (`CLIENT TRACKING ON ...`).
#[derive(Debug, Default)]
pub(super) struct Tracking {
    redirect: Option<u64>,
    bcast: bool,
    prefixes: Vec<Bytes>,
    optin: bool,
    optout: bool,
    noloop: bool,
    /// CLIENT CACHING given for the next command.
    caching: bool,
    /// The client it redirects to left.
    broken: bool,
}

/// The options of one `CLIENT TRACKING ON` request.
#[derive(Debug, Default, PartialEq, Eq)]
struct OnRequest {
    redirect: Option<u64>,
    bcast: bool,
    prefixes: Vec<Bytes>,
    optin: bool,
    optout: bool,
    noloop: bool,
}

/// Parses the options after `CLIENT TRACKING ON|OFF` (Redis's syntax and errors).
fn parse_options(opts: &[Bytes]) -> Result<OnRequest, String> {
    let mut r = OnRequest::default();
    let mut i = 0;
    while i < opts.len() {
        let more = i + 1 < opts.len();
        let o = &opts[i];
        if o.eq_ignore_ascii_case(b"redirect") && more {
            i += 1;
            if r.redirect.is_some() {
                return Err("ERR A client can only redirect to a single other client".into());
            }
            let id = std::str::from_utf8(&opts[i])
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
                .ok_or("ERR value is not an integer or out of range")?;
            r.redirect = Some(id.max(0) as u64);
        } else if o.eq_ignore_ascii_case(b"bcast") {
            r.bcast = true;
        } else if o.eq_ignore_ascii_case(b"optin") {
            r.optin = true;
        } else if o.eq_ignore_ascii_case(b"optout") {
            r.optout = true;
        } else if o.eq_ignore_ascii_case(b"noloop") {
            r.noloop = true;
        } else if o.eq_ignore_ascii_case(b"prefix") && more {
            i += 1;
            r.prefixes.push(opts[i].clone());
        } else {
            return Err("ERR syntax error".into());
        }
        i += 1;
    }
    Ok(r)
}

/// Redis's checks of `CLIENT TRACKING ON` against the client's current tracking.
fn check_on(now: Option<&Tracking>, r: &OnRequest) -> Result<(), String> {
    if !r.bcast && !r.prefixes.is_empty() {
        return Err("ERR PREFIX option requires BCAST mode to be enabled".into());
    }
    if let Some(t) = now {
        if t.bcast != r.bcast {
            return Err("ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.".into());
        }
    }
    if r.bcast && (r.optin || r.optout) {
        return Err("ERR OPTIN and OPTOUT are not compatible with BCAST".into());
    }
    if r.optin && r.optout {
        return Err("ERR You can't use both OPTIN and OPTOUT".into());
    }
    if let Some(t) = now {
        if (r.optin && t.optout) || (r.optout && t.optin) {
            return Err("ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.".into());
        }
    }
    if r.bcast {
        let existing = now.map_or(&[][..], |t| &t.prefixes[..]);
        check_prefixes(existing, &r.prefixes)?;
    }
    Ok(())
}

/// CLIENT TRACKINGINFO's reply (Redis's shape: a map in RESP3, a flat array in RESP2).
fn tracking_info(t: Option<&Tracking>, resp3: bool) -> Bytes {
    let mut flags: Vec<&str> = Vec::new();
    let mut prefixes: Vec<&Bytes> = Vec::new();
    let redirect = match t {
        None => {
            flags.push("off");
            -1
        }
        Some(t) => {
            flags.push("on");
            if t.bcast {
                flags.push("bcast");
            }
            if t.optin {
                flags.push("optin");
                if t.caching {
                    flags.push("caching-yes");
                }
            }
            if t.optout {
                flags.push("optout");
                if t.caching {
                    flags.push("caching-no");
                }
            }
            if t.noloop {
                flags.push("noloop");
            }
            if t.broken {
                flags.push("broken_redirect");
            }
            prefixes = t.prefixes.iter().collect();
            prefixes.sort();
            t.redirect.map_or(0, |r| r as i64)
        }
    };
    let mut out = BytesMut::new();
    out.extend_from_slice(if resp3 { b"%3\r\n" } else { b"*6\r\n" });
    resp::put_bulk(&mut out, b"flags");
    out.extend_from_slice(if resp3 { b"~" } else { b"*" });
    out.extend_from_slice(format!("{}\r\n", flags.len()).as_bytes());
    for f in flags {
        resp::put_bulk(&mut out, f.as_bytes());
    }
    resp::put_bulk(&mut out, b"redirect");
    resp::put_int(&mut out, redirect);
    resp::put_bulk(&mut out, b"prefixes");
    resp::put_array_header(&mut out, prefixes.len());
    for p in prefixes {
        resp::put_bulk(&mut out, p);
    }
    out.freeze()
}

/// An invalidation message in the receiver's protocol; `None` when it cannot receive one.
fn invalidation_frame(keys: &Option<Vec<Bytes>>, resp3: bool, subscribed: bool) -> Option<Bytes> {
    let mut out = BytesMut::new();
    if resp3 {
        out.extend_from_slice(b">2\r\n");
        resp::put_bulk(&mut out, b"invalidate");
    } else if subscribed {
        resp::put_array_header(&mut out, 3);
        resp::put_bulk(&mut out, b"message");
        resp::put_bulk(&mut out, b"__redis__:invalidate");
    } else {
        return None;
    }
    match keys {
        Some(keys) => {
            resp::put_array_header(&mut out, keys.len());
            for k in keys {
                resp::put_bulk(&mut out, k);
            }
        }
        None if resp3 => out.extend_from_slice(b"_\r\n"),
        None => out.extend_from_slice(resp::NULL_BULK),
    }
    Some(out.freeze())
}

impl Session {
    /// CLIENT TRACKING / CACHING / GETREDIR / TRACKINGINFO.
    pub(super) fn tracking_command(&mut self, args: &[Bytes]) {
        let sub = args[1].to_ascii_lowercase();
        let reply = match sub.as_slice() {
            b"tracking" => return self.client_tracking(args),
            b"caching" => self.client_caching(&args[2]),
            b"getredir" => resp::int(
                self.tracking
                    .as_ref()
                    .map_or(-1, |t| t.redirect.map_or(0, |r| r as i64)),
            ),
            _ => tracking_info(self.tracking.as_deref(), self.client.resp3),
        };
        self.push_ready(reply);
    }

    fn client_tracking(&mut self, args: &[Bytes]) {
        let on = if args[2].eq_ignore_ascii_case(b"on") {
            true
        } else if args[2].eq_ignore_ascii_case(b"off") {
            false
        } else {
            return self.push_ready(resp::error("ERR syntax error"));
        };
        let r = match parse_options(&args[3..]) {
            Ok(r) => r,
            Err(e) => return self.push_ready(resp::error(&e)),
        };
        if !on {
            self.tracking_off();
            return self.push_ready(resp::simple("OK"));
        }
        if let Some(id) = r.redirect {
            if self.worker.shared.registries.clients.live(id).is_none() {
                return self.push_ready(resp::error(
                    "ERR The client ID you want redirect to does not exist",
                ));
            }
        }
        if let Err(e) = check_on(self.tracking.as_deref(), &r) {
            return self.push_ready(resp::error(&e));
        }
        let t = self.tracking.get_or_insert_with(Box::default);
        t.redirect = r.redirect;
        t.bcast = r.bcast;
        for p in r.prefixes {
            if !t.prefixes.contains(&p) {
                t.prefixes.push(p);
            }
        }
        t.optin = r.optin;
        t.optout = r.optout;
        t.noloop = r.noloop;
        t.caching = false;
        t.broken = false;
        let mode = Mode {
            bcast: t.bcast,
            prefixes: t.prefixes.clone(),
        };
        let redirect = t.redirect;
        let slot = ReplySlot::new(&self.signal);
        self.queue.push_back(Rc::clone(&slot));
        self.worker
            .tracking
            .enable(self.client.id, &self.live, redirect, mode, slot);
    }

    fn client_caching(&mut self, arg: &[u8]) -> Bytes {
        let Some(t) = self.tracking.as_deref_mut() else {
            return resp::error("ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled");
        };
        if arg.eq_ignore_ascii_case(b"yes") {
            if !t.optin {
                return resp::error(
                    "ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.",
                );
            }
        } else if arg.eq_ignore_ascii_case(b"no") {
            if !t.optout {
                return resp::error(
                    "ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.",
                );
            }
        } else {
            return resp::error("ERR syntax error");
        }
        t.caching = true;
        resp::simple("OK")
    }

    /// Ends the client's tracking (CLIENT TRACKING OFF, RESET, the client leaving).
    pub(super) fn tracking_off(&mut self) {
        if self.tracking.take().is_some() {
            self.worker.tracking.disable(self.client.id);
        }
    }

    /// A tracking client's request: the keys its reads make it track, the keys its NOLOOP
    /// writes make it stop tracking; the CLIENT CACHING flag lasts one command.
    pub(super) fn track_request(&mut self, spec: Option<&'static CommandSpec>, args: &[Bytes]) {
        let (Some(t), Some(spec)) = (self.tracking.as_deref_mut(), spec) else {
            return;
        };
        // As in Redis, CLIENT CACHING's flag outlives CLIENT commands and lasts a whole
        // transaction.
        let caching = if spec.name.starts_with("client|") || self.tx.in_multi() {
            t.caching
        } else {
            std::mem::take(&mut t.caching)
        };
        if t.bcast {
            return;
        }
        let read = spec.has_flag(command::FLAG_READONLY)
            && if t.optin {
                caching
            } else {
                !(t.optout && caching)
            };
        let write = t.noloop && spec.has_flag(command::FLAG_WRITE);
        if !read && !write {
            return;
        }
        let mut at = Vec::new();
        if command::key_positions(spec, args, &mut at).is_err() {
            return;
        }
        let hub = &self.worker.tracking;
        for &i in &at {
            if read {
                hub.record(self.client.id, &args[i]);
            } else {
                hub.forget(self.client.id, &args[i]);
            }
        }
    }

    /// Writes the invalidation messages that arrived for this client.
    pub(super) fn take_invalidations(&mut self) {
        for msg in self.live.take_invalidations() {
            let frame = match msg {
                Invalidation::Keys(keys) => {
                    invalidation_frame(&keys, self.client.resp3, self.subscribed())
                }
                Invalidation::RedirectBroken(id) => {
                    if let Some(t) = self.tracking.as_deref_mut() {
                        t.broken = true;
                    }
                    self.client.resp3.then(|| {
                        let mut out = BytesMut::from(&b">2\r\n"[..]);
                        resp::put_bulk(&mut out, b"tracking-redir-broken");
                        resp::put_int(&mut out, id as i64);
                        out.freeze()
                    })
                }
            };
            if let Some(f) = frame {
                self.push_ready(f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::resp::test_args as args;

    #[test]
    fn options_parse_like_redis() {
        let r = parse_options(&args(&["REDIRECT", "7", "bcast", "PREFIX", "a", "noloop"]));
        assert_eq!(
            r,
            Ok(OnRequest {
                redirect: Some(7),
                bcast: true,
                prefixes: args(&["a"]),
                noloop: true,
                ..OnRequest::default()
            })
        );
        assert_eq!(
            parse_options(&args(&["redirect", "x"])),
            Err("ERR value is not an integer or out of range".into())
        );
        assert_eq!(
            parse_options(&args(&["prefix"])),
            Err("ERR syntax error".into())
        );
        assert!(parse_options(&args(&["redirect", "1", "redirect", "2"]))
            .unwrap_err()
            .contains("single other client"));
    }

    #[test]
    fn incompatible_modes_are_refused_with_redis_text() {
        let on = |a: &[&str]| parse_options(&args(a)).unwrap();
        assert!(check_on(None, &on(&["prefix", "a"]))
            .unwrap_err()
            .contains("requires BCAST"));
        assert!(check_on(None, &on(&["bcast", "optin"]))
            .unwrap_err()
            .contains("not compatible with BCAST"));
        assert!(check_on(None, &on(&["optin", "optout"]))
            .unwrap_err()
            .contains("both OPTIN and OPTOUT"));
        let now = Tracking {
            optin: true,
            ..Tracking::default()
        };
        assert!(check_on(Some(&now), &on(&["optout"]))
            .unwrap_err()
            .contains("switch OPTIN/OPTOUT"));
        assert!(check_on(Some(&now), &on(&["bcast"]))
            .unwrap_err()
            .contains("switch BCAST"));
        assert!(check_on(None, &on(&["bcast", "prefix", "a", "prefix", "ab"])).is_err());
    }

    #[test]
    fn messages_take_the_receivers_protocol() {
        let keys = Some(args(&["k"]));
        assert_eq!(
            invalidation_frame(&keys, true, false).unwrap(),
            &b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"[..]
        );
        assert_eq!(
            invalidation_frame(&None, true, false).unwrap(),
            &b">2\r\n$10\r\ninvalidate\r\n_\r\n"[..]
        );
        assert_eq!(
            invalidation_frame(&keys, false, true).unwrap(),
            &b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$1\r\nk\r\n"[..]
        );
        assert_eq!(invalidation_frame(&keys, false, false), None);
    }

    #[test]
    fn trackinginfo_has_redis_shape() {
        assert_eq!(
            tracking_info(None, false),
            &b"*6\r\n$5\r\nflags\r\n*1\r\n$3\r\noff\r\n$8\r\nredirect\r\n:-1\r\n$8\r\nprefixes\r\n*0\r\n"[..]
        );
        let t = Tracking {
            bcast: true,
            prefixes: args(&["b", "a"]),
            noloop: true,
            ..Tracking::default()
        };
        let text = String::from_utf8(tracking_info(Some(&t), true).to_vec()).unwrap();
        assert!(text.starts_with("%3\r\n$5\r\nflags\r\n~3\r\n$2\r\non\r\n$5\r\nbcast\r\n$6\r\nnoloop\r\n$8\r\nredirect\r\n:0\r\n"), "{text}");
        assert!(text.ends_with("*2\r\n$1\r\na\r\n$1\r\nb\r\n"), "{text}");
    }
}
