//! The calls of an emulated SORT with patterns: read the elements, fetch the values the
//! patterns name (wherever their keys live), and write a STORE destination.
//!
//! Invariants: nothing is written before every read succeeded, so a failed read leaves every
//! key as it was; the destination is replaced in one step (a script on its node), so no
//! client sees it half written; the keys a pattern names are read once each, in batches of
//! [`CHUNK`] calls, whatever the number of elements.

use super::super::run::{ask, error_text, one, send, Ask};
use super::{array_reply, load, lookup, output, source, value_of, Lookup, SortArgs};
use crate::backend::worker::Worker;
use crate::cluster::slots::key_slot;
use crate::route::dispatch::ReplySlot;
use crate::route::resp::{self, Value};
use bytes::Bytes;
use std::collections::HashMap;

/// Calls sent at once when fetching pattern values.
const CHUNK: usize = 1000;

/// Replaces KEYS[1] with a list of ARGV (pushed in batches: Lua's `unpack` has a limit).
const STORE_SCRIPT: &str = "redis.call('DEL', KEYS[1]) \
    for i = 1, #ARGV, 1000 do \
    redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV))) \
    end return #ARGV";

/// Carries out the SORT `a` (the client's command `cmd`, uppercase); the reply in RESP2.
pub async fn sort(worker: &Worker, cmd: &str, a: SortArgs, slot: &ReplySlot) -> Bytes {
    let s = key_slot(&a.key);
    let frames = send(
        worker,
        vec![
            ask(s, &[b"TYPE", &a.key]),
            ask(s, &[b"SORT_RO", &a.key, b"BY", b"nosort"]),
        ],
        slot,
    )
    .await;
    let (Some(t), Some(e)) = (frames.first(), frames.get(1)) else {
        return resp::error("ERR slotproxy: no reply");
    };
    let (kind, native) = match source(cmd, t, e) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let loaded = load(&a, kind, native);
    let by_values = match (loaded.sort, &loaded.by) {
        (true, Some(p)) => {
            let wanted = loaded.items.iter().map(|e| (lookup(p, e), e)).collect();
            match fetch(worker, cmd, wanted, slot).await {
                Ok(v) => Some(v),
                Err(e) => return e,
            }
        }
        _ => None,
    };
    let elements = match loaded.order(by_values) {
        Ok(e) => e,
        Err(e) => return e,
    };
    let values = if a.gets.is_empty() {
        Vec::new()
    } else {
        let wanted = elements
            .iter()
            .flat_map(|e| a.gets.iter().map(move |g| (lookup(g, e), e)))
            .collect();
        match fetch(worker, cmd, wanted, slot).await {
            Ok(v) => v,
            Err(e) => return e,
        }
    };
    let out = output(elements, a.gets.len(), values);
    match a.store {
        None => array_reply(&out),
        Some(dst) => store(worker, cmd, &dst, out, slot).await,
    }
}

/// The value each lookup names (`#`: the element), reading each key (and field) once.
async fn fetch(
    worker: &Worker,
    cmd: &str,
    wanted: Vec<(Lookup, &Bytes)>,
    slot: &ReplySlot,
) -> Result<Vec<Option<Bytes>>, Bytes> {
    let mut out: Vec<Option<Bytes>> = vec![None; wanted.len()];
    let mut seen: HashMap<(Bytes, Option<Bytes>), usize> = HashMap::new();
    let mut calls: Vec<(Bytes, Option<Bytes>)> = Vec::new();
    let mut refs: Vec<(usize, usize)> = Vec::new();
    for (i, (l, element)) in wanted.into_iter().enumerate() {
        match l {
            Lookup::Itself => out[i] = Some(element.clone()),
            Lookup::Nothing => {}
            Lookup::Key { key, field } => {
                let k = (key, field);
                let n = match seen.get(&k) {
                    Some(&n) => n,
                    None => {
                        calls.push(k.clone());
                        seen.insert(k, calls.len() - 1);
                        calls.len() - 1
                    }
                };
                refs.push((i, n));
            }
        }
    }
    let mut values = Vec::with_capacity(calls.len());
    for chunk in calls.chunks(CHUNK) {
        let asks = chunk
            .iter()
            .map(|(k, f)| match f {
                Some(f) => ask(key_slot(k), &[b"HGET", k, f]),
                None => ask(key_slot(k), &[b"GET", k]),
            })
            .collect();
        for frame in send(worker, asks, slot).await {
            values.push(value_of(cmd, &frame)?);
        }
    }
    for (i, n) in refs {
        out[i] = values.get(n).cloned().flatten();
    }
    Ok(out)
}

/// STORE: the destination becomes a list of `out` (a missing value is stored as an empty
/// string, as Redis does), or is deleted when `out` is empty; the reply is the list's length.
async fn store(
    worker: &Worker,
    cmd: &str,
    dst: &Bytes,
    out: Vec<Option<Bytes>>,
    slot: &ReplySlot,
) -> Bytes {
    let d = key_slot(dst);
    let call = if out.is_empty() {
        ask(d, &[b"DEL", dst])
    } else {
        let mut args = Vec::with_capacity(out.len() + 4);
        args.push(Bytes::from_static(b"EVAL"));
        args.push(Bytes::from_static(STORE_SCRIPT.as_bytes()));
        args.push(Bytes::from_static(b"1"));
        args.push(dst.clone());
        args.extend(out.iter().map(|v| v.clone().unwrap_or_default()));
        Ask {
            slot: d,
            args,
            resp3: false,
        }
    };
    let r = one(worker, call, slot).await;
    match Value::decode(&r) {
        Ok(Value::Int(_)) => resp::int(out.len() as i64),
        _ => resp::error(&format!(
            "ERR slotproxy: {cmd} across slots sorted, but could not store the result (the destination is unchanged): {}",
            if resp::is_error(&r) { error_text(&r) } else { "unexpected reply".to_string() }
        )),
    }
}
