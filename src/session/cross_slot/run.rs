//! Carrying out an emulated cross-slot command: the calls to the nodes, in an order that
//! never loses a value, and the client's one reply.
//!
//! The calls go over the worker's shared connections, addressed by slot (so redirects are
//! followed as for any request), from a task of the client's session; the session holds the
//! client's later requests until the reply is in (see [`super`]). Invariants: a move writes
//! the destination before it deletes the source, so a failure part-way leaves the value in
//! the source, or in both, and the error says which; temporaries are deleted once the command
//! ran, and expire on their own ([`super::plan::TEMP_TTL_MS`]) if the proxy cannot.

use super::plan::{Plan, Source, TEMP_TTL_MS};
use super::replies::{self, Ttl};
use crate::backend::worker::Worker;
use crate::cluster::slots::key_slot;
use crate::route::dispatch::{Dest, ReplySlot};
use crate::route::resp;
use bytes::Bytes;

/// One call of the emulation: a command for the owner of a slot.
pub(super) struct Ask {
    pub(super) slot: u16,
    pub(super) args: Vec<Bytes>,
    pub(super) resp3: bool,
}

/// A RESP2 call of `args` for the owner of `slot`.
pub(super) fn ask(slot: u16, args: &[&[u8]]) -> Ask {
    Ask {
        slot,
        args: args.iter().map(|a| Bytes::copy_from_slice(a)).collect(),
        resp3: false,
    }
}

/// Sends every call at once and waits for all the replies (in `calls` order); their backend
/// time is added to the client's `slot`.
pub(super) async fn send(worker: &Worker, calls: Vec<Ask>, slot: &ReplySlot) -> Vec<Bytes> {
    let calls = calls.into_iter().map(|c| crate::session::gather::Ask {
        wire: resp::encode_command(&c.args).freeze(),
        dest: Dest::Slot(c.slot),
        resp3: c.resp3,
    });
    crate::session::gather::gather(worker, calls, slot).await
}

/// One call, its reply.
pub(super) async fn one(worker: &Worker, call: Ask, slot: &ReplySlot) -> Bytes {
    send(worker, vec![call], slot)
        .await
        .into_iter()
        .next()
        .unwrap_or_else(|| resp::error("ERR slotproxy: no reply"))
}

/// The text of an error frame, without the leading `-` and the line end.
pub(super) fn error_text(frame: &[u8]) -> String {
    String::from_utf8_lossy(frame.get(1..).unwrap_or_default())
        .trim_end()
        .to_string()
}

/// Carries out `plan` (for the command called `name`); the reply for the client, in RESP3
/// when `resp3`.
pub async fn run(worker: &Worker, name: &str, plan: Plan, resp3: bool, slot: &ReplySlot) -> Bytes {
    let upper = name.to_uppercase();
    let reply = match plan {
        Plan::Algebra {
            args,
            target,
            sources,
        } => return algebra(worker, &upper, args, target, sources, resp3, slot).await,
        Plan::Rename { src, dst, nx } => rename(worker, &upper, src, dst, nx, slot).await,
        Plan::Sort(a) => super::sort::run::sort(worker, &upper, a, slot).await,
        Plan::Copy { src, dst, replace } => copy(worker, &upper, src, dst, replace, slot).await,
        Plan::Smove { src, dst, member } => smove(worker, &upper, src, dst, member, slot).await,
        Plan::Lmove {
            src,
            dst,
            from_left,
            to_left,
            blocking,
        } => {
            lmove(
                worker,
                &upper,
                (src, dst),
                from_left,
                to_left,
                blocking,
                slot,
            )
            .await
        }
    };
    if resp3 {
        resp::resp3_nulls(reply)
    } else {
        reply
    }
}

/// A failure before anything changed.
fn failed_before(cmd: &str, step: &str, frame: &[u8]) -> Bytes {
    resp::error(&format!(
        "ERR slotproxy: {cmd} across slots failed at {step}; nothing was changed, the value is still in the source key: {}",
        replies::why(frame)
    ))
}

/// The destination's write failed: nothing changed, unless the node may have run it after
/// all (a lost reply), and then the destination may hold a copy too.
fn write_failed(cmd: &str, frame: &[u8]) -> Bytes {
    if !replies::outcome_unknown(frame) {
        return failed_before(cmd, "writing the destination", frame);
    }
    resp::error(&format!(
        "ERR slotproxy: {cmd} across slots could not confirm writing the destination; the value is still in the source key, and the destination may hold a copy: {}",
        replies::why(frame)
    ))
}

/// The source's delete (or pop, or remove) failed after the destination was written: the
/// value is in both, or, if the node may have run it after all, in the destination.
fn delete_failed(cmd: &str, done: &str, undone: &str, frame: &[u8]) -> Bytes {
    let where_ = if replies::outcome_unknown(frame) {
        "the value is in the destination, and may still be in the source too"
    } else {
        "the value is in both keys"
    };
    resp::error(&format!(
        "ERR slotproxy: {cmd} across slots {done} but could not {undone}; {where_}: {}",
        replies::why(frame)
    ))
}

async fn algebra(
    worker: &Worker,
    cmd: &str,
    args: Vec<Bytes>,
    target: u16,
    sources: Vec<Source>,
    resp3: bool,
    slot: &ReplySlot,
) -> Bytes {
    let dumps = send(
        worker,
        sources
            .iter()
            .map(|s| ask(s.slot, &[b"DUMP", &s.key]))
            .collect(),
        slot,
    )
    .await;
    let ttl = TEMP_TTL_MS.to_string();
    let mut restores = Vec::new();
    if dumps.len() != sources.len() {
        return resp::error("ERR slotproxy: no reply");
    }
    for (s, frame) in sources.iter().zip(&dumps) {
        match replies::dump(frame) {
            // A missing source stays missing: its temporary name names no key.
            Some(None) => {}
            Some(Some(payload)) => restores.push(ask(
                target,
                &[b"RESTORE", &s.temp, ttl.as_bytes(), &payload],
            )),
            None => {
                return resp::error(&format!(
                    "ERR slotproxy: {cmd} across slots could not read a source key: {}",
                    replies::why(frame)
                ))
            }
        }
    }
    let temps: Vec<Bytes> = restores.iter().map(|r| r.args[1].clone()).collect();
    let restored = send(worker, restores, slot).await;
    let copied = restored.len() == temps.len() && restored.iter().all(|f| replies::is_ok(f));
    let reply = match restored.iter().find(|f| !replies::is_ok(f)) {
        _ if copied => None,
        Some(f) => Some(resp::error(&format!(
            "ERR slotproxy: {cmd} across slots could not copy a source key to the target slot: {}",
            replies::why(f)
        ))),
        None => Some(resp::error("ERR slotproxy: no reply")),
    };
    let reply = match reply {
        Some(e) => e,
        None => {
            let call = Ask {
                slot: target,
                args,
                resp3,
            };
            one(worker, call, slot).await
        }
    };
    if !temps.is_empty() {
        let mut del: Vec<&[u8]> = vec![b"DEL"];
        del.extend(temps.iter().map(|t| &t[..]));
        // A failure here leaves the temporaries to their TTL.
        let _ = one(worker, ask(target, &del), slot).await;
    }
    reply
}

/// DUMP and PTTL of `key`: the payload (`None`: no such key) and the TTL RESTORE takes (0:
/// none), or the error frame.
async fn dump_with_ttl(
    worker: &Worker,
    key: &Bytes,
    slot: &ReplySlot,
) -> Result<Option<(Bytes, i64)>, Bytes> {
    let s = key_slot(key);
    let frames = send(
        worker,
        vec![ask(s, &[b"DUMP", key]), ask(s, &[b"PTTL", key])],
        slot,
    )
    .await;
    let (Some(dump), Some(pttl)) = (frames.first(), frames.get(1)) else {
        return Err(resp::error("ERR slotproxy: no reply"));
    };
    let payload = match replies::dump(dump) {
        Some(None) => return Ok(None),
        Some(Some(p)) => p,
        None => return Err(dump.clone()),
    };
    // A TTL that cannot be read must not become "no expiry" in the copy.
    let ttl = match replies::pttl(pttl) {
        Some(Ttl::Persistent) => 0,
        Some(Ttl::Ms(n)) => n,
        Some(Ttl::Gone) => return Ok(None),
        None => return Err(pttl.clone()),
    };
    Ok(Some((payload, ttl)))
}

async fn rename(
    worker: &Worker,
    cmd: &str,
    src: Bytes,
    dst: Bytes,
    nx: bool,
    slot: &ReplySlot,
) -> Bytes {
    let (payload, ttl) = match dump_with_ttl(worker, &src, slot).await {
        Ok(Some(v)) => v,
        Ok(None) => return resp::error("ERR no such key"),
        Err(e) => return failed_before(cmd, "reading the source", &e),
    };
    let ttl = ttl.to_string();
    let mut restore: Vec<&[u8]> = vec![b"RESTORE", &dst, ttl.as_bytes(), &payload];
    if !nx {
        restore.push(b"REPLACE");
    }
    let r = one(worker, ask(key_slot(&dst), &restore), slot).await;
    if nx && r.starts_with(b"-BUSYKEY") {
        return resp::int(0);
    }
    if !replies::is_ok(&r) {
        return write_failed(cmd, &r);
    }
    let d = one(worker, ask(key_slot(&src), &[b"DEL", &src]), slot).await;
    if !replies::is_int(&d) {
        return delete_failed(cmd, "wrote the destination", "delete the source", &d);
    }
    if nx {
        resp::int(1)
    } else {
        resp::simple("OK")
    }
}

async fn copy(
    worker: &Worker,
    cmd: &str,
    src: Bytes,
    dst: Bytes,
    replace: bool,
    slot: &ReplySlot,
) -> Bytes {
    let (payload, ttl) = match dump_with_ttl(worker, &src, slot).await {
        Ok(Some(v)) => v,
        Ok(None) => return resp::int(0),
        Err(e) => return failed_before(cmd, "reading the source", &e),
    };
    let ttl = ttl.to_string();
    let mut restore: Vec<&[u8]> = vec![b"RESTORE", &dst, ttl.as_bytes(), &payload];
    if replace {
        restore.push(b"REPLACE");
    }
    let r = one(worker, ask(key_slot(&dst), &restore), slot).await;
    if r.starts_with(b"-BUSYKEY") {
        return resp::int(0);
    }
    if !replies::is_ok(&r) {
        return write_failed(cmd, &r);
    }
    resp::int(1)
}

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// The type name TYPE answered, or its frame.
fn type_of(frame: &Bytes) -> Result<String, Bytes> {
    replies::type_name(frame).ok_or_else(|| frame.clone())
}

async fn smove(
    worker: &Worker,
    cmd: &str,
    src: Bytes,
    dst: Bytes,
    member: Bytes,
    slot: &ReplySlot,
) -> Bytes {
    let (s, d) = (key_slot(&src), key_slot(&dst));
    let types = send(
        worker,
        vec![ask(s, &[b"TYPE", &src]), ask(d, &[b"TYPE", &dst])],
        slot,
    )
    .await;
    let (Some(ts), Some(td)) = (types.first(), types.get(1)) else {
        return resp::error("ERR slotproxy: no reply");
    };
    // As Redis: a missing source answers 0 before any type is checked.
    match (type_of(ts), type_of(td)) {
        (Err(e), _) | (_, Err(e)) => return failed_before(cmd, "reading the key types", &e),
        (Ok(ts), _) if ts == "none" => return resp::int(0),
        (Ok(ts), Ok(td)) if ts != "set" || (td != "set" && td != "none") => {
            return resp::error(WRONGTYPE)
        }
        _ => {}
    }
    let is = one(worker, ask(s, &[b"SISMEMBER", &src, &member]), slot).await;
    match replies::is_member(&is) {
        Some(true) => {}
        Some(false) => return resp::int(0),
        None => return failed_before(cmd, "reading the source", &is),
    }
    let add = one(worker, ask(d, &[b"SADD", &dst, &member]), slot).await;
    if !replies::is_int(&add) {
        return write_failed(cmd, &add);
    }
    let rem = one(worker, ask(s, &[b"SREM", &src, &member]), slot).await;
    if !replies::is_int(&rem) {
        return delete_failed(
            cmd,
            "added the member to the destination",
            "remove it from the source",
            &rem,
        );
    }
    resp::int(1)
}

async fn lmove(
    worker: &Worker,
    cmd: &str,
    (src, dst): (Bytes, Bytes),
    from_left: bool,
    to_left: bool,
    blocking: bool,
    slot: &ReplySlot,
) -> Bytes {
    let (s, d) = (key_slot(&src), key_slot(&dst));
    let index: &[u8] = if from_left { b"0" } else { b"-1" };
    let peek = one(worker, ask(s, &[b"LINDEX", &src, index]), slot).await;
    let element = match replies::element(&peek) {
        Some(Some(e)) => e,
        Some(None) if blocking => {
            return resp::error(&format!(
                "ERR slotproxy: {cmd} across slots is emulated only when the source list has an element (blocking on one node for a push to another is not supported); use the non-blocking form or keys of one slot"
            ))
        }
        Some(None) => return Bytes::from_static(resp::NULL_BULK),
        // WRONGTYPE as the node gave it: nothing changed.
        None if peek.starts_with(b"-WRONGTYPE") => return peek,
        None => return failed_before(cmd, "reading the source", &peek),
    };
    let push: &[u8] = if to_left { b"LPUSH" } else { b"RPUSH" };
    let pushed = one(worker, ask(d, &[push, &dst, &element]), slot).await;
    if pushed.starts_with(b"-WRONGTYPE") {
        return pushed;
    }
    if !replies::is_int(&pushed) {
        return write_failed(cmd, &pushed);
    }
    let pop: &[u8] = if from_left { b"LPOP" } else { b"RPOP" };
    let popped = one(worker, ask(s, &[pop, &src]), slot).await;
    if !matches!(replies::element(&popped), Some(Some(_))) {
        return delete_failed(
            cmd,
            "pushed the element to the destination",
            "pop it from the source",
            &popped,
        );
    }
    resp::bulk(&element)
}
