//! SORT and SORT_RO with BY or GET patterns, done by the proxy.
//!
//! A cluster node refuses every GET pattern and every BY pattern with a `*` (Redis 7.0:
//! "BY option of SORT denied in Cluster mode."), because the keys a pattern names live
//! anywhere. In `emulate` the proxy reads the elements to sort, fetches the keys the patterns
//! name (wherever they live), sorts and answers (or stores) itself. This module holds the
//! decisions, without I/O: the arguments as Redis parses them, the key a pattern names for an
//! element, which elements are sorted and in what order, and the reply; [`run`] does the calls.
//!
//! Invariant: given the same elements and pattern values, the result is the one Redis's own
//! `sortCommandGeneric` gives (same errors in the same order, same LIMIT clamping, same
//! `nosort` shortcuts for lists and sorted sets, numeric ties broken by the elements' bytes,
//! `strtod`'s notion of a number), except the order of elements whose ALPHA sort values
//! are equal, which Redis leaves to its qsort and the proxy keeps in source order.

pub mod run;

use crate::route::resp::{self, Value};
use bytes::{Bytes, BytesMut};
use std::cmp::Ordering;

/// Redis's reply when a BY value (or an element, without BY) is not a number.
pub const NOT_A_DOUBLE: &str = "ERR One or more scores can't be converted into double";

const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";

/// The arguments of a SORT / SORT_RO, as Redis reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortArgs {
    /// The key to sort.
    pub key: Bytes,
    /// DESC (the last of ASC / DESC wins).
    pub desc: bool,
    /// ALPHA.
    pub alpha: bool,
    /// LIMIT offset count (Redis's defaults: 0, -1).
    pub limit: (i64, i64),
    /// The last BY argument; used only when `dontsort` is false (then it contains a `*`).
    pub by: Option<Bytes>,
    /// Some BY argument had no `*` (`BY nosort`): keep the source's order.
    pub dontsort: bool,
    /// GET patterns, in order.
    pub gets: Vec<Bytes>,
    /// STORE destination (SORT only; the last one wins).
    pub store: Option<Bytes>,
}

/// The bytes of `b` up to its first NUL: what C's string functions see of an argument.
fn c_str(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(n) => &b[..n],
        None => b,
    }
}

/// `strcasecmp(arg, word) == 0`, with C's view of `arg`.
fn is(arg: &[u8], word: &str) -> bool {
    c_str(arg).eq_ignore_ascii_case(word.as_bytes())
}

/// Redis's `string2ll`: optional `-`, digits without leading zeros, within i64.
fn string2ll(s: &[u8]) -> Option<i64> {
    if s == b"0" {
        return Some(0);
    }
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if neg {
        0i64.checked_sub_unsigned(n)
    } else {
        i64::try_from(n).ok()
    }
}

/// Reads a SORT (`readonly`: SORT_RO, which has no STORE) as Redis's parser does: the first
/// bad option gives Redis's error.
pub fn parse(args: &[Bytes], readonly: bool) -> Result<SortArgs, Bytes> {
    let Some(key) = args.get(1) else {
        return Err(resp::error(
            "ERR wrong number of arguments for 'sort' command",
        ));
    };
    let mut s = SortArgs {
        key: key.clone(),
        desc: false,
        alpha: false,
        limit: (0, -1),
        by: None,
        dontsort: false,
        gets: Vec::new(),
        store: None,
    };
    let mut j = 2;
    while j < args.len() {
        let left = args.len() - j - 1;
        let a = &args[j];
        if is(a, "asc") {
            s.desc = false;
        } else if is(a, "desc") {
            s.desc = true;
        } else if is(a, "alpha") {
            s.alpha = true;
        } else if is(a, "limit") && left >= 2 {
            let (Some(start), Some(count)) = (string2ll(&args[j + 1]), string2ll(&args[j + 2]))
            else {
                return Err(resp::error(NOT_AN_INTEGER));
            };
            s.limit = (start, count);
            j += 2;
        } else if !readonly && is(a, "store") && left >= 1 {
            s.store = Some(args[j + 1].clone());
            j += 1;
        } else if is(a, "by") && left >= 1 {
            let p = &args[j + 1];
            if !c_str(p).contains(&b'*') {
                s.dontsort = true;
            }
            s.by = Some(p.clone());
            j += 1;
        } else if is(a, "get") && left >= 1 {
            s.gets.push(args[j + 1].clone());
            j += 1;
        } else {
            return Err(resp::error("ERR syntax error"));
        }
        j += 1;
    }
    Ok(s)
}

/// What a pattern names for one element (Redis's `lookupKeyByPattern`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// `#`: the element itself.
    Itself,
    /// No `*` in the pattern: nothing (a GET of it is nil).
    Nothing,
    /// A string key, or with `field` a hash key's field.
    Key {
        /// The key: the pattern with its first `*` replaced by the element.
        key: Bytes,
        /// The hash field after `->`, when the pattern has one.
        field: Option<Bytes>,
    },
}

/// The key (and hash field) `pattern` names for `element`, as Redis works it out: `#` alone is
/// the element; the first `*` is replaced by the element; a `->` after the `*` followed by at
/// least one character splits off a hash field. Like Redis, the search for `*` and `->` stops
/// at a NUL byte, while the key and field keep the pattern's bytes.
pub fn lookup(pattern: &[u8], element: &[u8]) -> Lookup {
    let visible = c_str(pattern);
    if visible == b"#" {
        return Lookup::Itself;
    }
    let Some(star) = visible.iter().position(|&c| c == b'*') else {
        return Lookup::Nothing;
    };
    let after = &visible[star + 1..];
    let arrow = after
        .windows(2)
        .position(|w| w == b"->")
        .map(|i| star + 1 + i)
        .filter(|&f| f + 2 < visible.len());
    let key_end = arrow.unwrap_or(pattern.len());
    let mut key = BytesMut::with_capacity(key_end + element.len());
    key.extend_from_slice(&pattern[..star]);
    key.extend_from_slice(element);
    key.extend_from_slice(&pattern[star + 1..key_end]);
    Lookup::Key {
        key: key.freeze(),
        field: arrow.map(|f| Bytes::copy_from_slice(&pattern[f + 2..])),
    }
}

/// The kind of value being sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A list (or a missing key: Redis sorts an empty list then).
    List,
    /// A set.
    Set,
    /// A sorted set.
    Zset,
}

/// The kind TYPE named, or WRONGTYPE for a value SORT does not take.
pub fn kind(type_name: &str) -> Result<Kind, Bytes> {
    match type_name {
        "list" | "none" => Ok(Kind::List),
        "set" => Ok(Kind::Set),
        "zset" => Ok(Kind::Zset),
        _ => Err(resp::error(
            "WRONGTYPE Operation against a key holding the wrong kind of value",
        )),
    }
}

/// The elements to sort and the output range, after Redis's LIMIT clamping and `nosort`
/// shortcuts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The sorting vector.
    pub items: Vec<Bytes>,
    start: i64,
    end: i64,
    /// The elements are put in order (else they stay as loaded).
    pub sort: bool,
    alpha: bool,
    /// The BY pattern the order uses, if any.
    pub by: Option<Bytes>,
    desc: bool,
    /// STORE given: ALPHA compares bytes instead of collating.
    store: bool,
}

/// Loads the sorting vector from the source's elements in their own order (`native`: a
/// list's order, a sorted set's rank order, a set's iteration order), as Redis does.
pub fn load(a: &SortArgs, kind: Kind, native: Vec<Bytes>) -> Loaded {
    let mut dontsort = a.dontsort;
    let mut alpha = a.alpha;
    let mut by = if dontsort { None } else { a.by.clone() };
    // A set's own order is not stable across nodes, so a stored result is sorted (ALPHA).
    if dontsort && kind == Kind::Set && a.store.is_some() {
        dontsort = false;
        alpha = true;
        by = None;
    }
    let len = native.len() as i64;
    let (limit_start, limit_count) = a.limit;
    let mut start = limit_start.max(0);
    let mut end = if limit_count < 0 {
        len - 1
    } else {
        start.saturating_add(limit_count) - 1
    };
    if start >= len {
        start = len - 1;
        end = len - 2;
    }
    if end >= len {
        end = len - 1;
    }
    let mut items = native;
    if dontsort && kind != Kind::Set {
        if a.desc {
            items.reverse();
        }
        if end >= start {
            items = items
                .into_iter()
                .skip(start as usize)
                .take((end - start + 1) as usize)
                .collect();
            end -= start;
            start = 0;
        } else {
            items.clear();
        }
    }
    Loaded {
        items,
        start,
        end,
        sort: !dontsort,
        alpha,
        by,
        desc: a.desc,
        store: a.store.is_some(),
    }
}

/// A number as Redis reads a sort weight: C's `strtod` on the bytes before any NUL, the whole
/// of them, no overflow or underflow, not NaN.
pub fn score(b: &[u8]) -> Option<f64> {
    let text = std::ffi::CString::new(c_str(b)).ok()?;
    let mut end: *mut libc::c_char = std::ptr::null_mut();
    // SAFETY: `text` is a NUL-terminated string that outlives the call; strtod only reads
    // it and writes `end` (a pointer into it) and errno. The proxy never changes LC_NUMERIC,
    // so the "C" locale's number syntax applies, as in Redis.
    let (v, rest, range) = unsafe {
        *libc::__errno_location() = 0;
        let v = libc::strtod(text.as_ptr(), &mut end);
        let range = *libc::__errno_location() == libc::ERANGE;
        (v, *end, range)
    };
    (rest == 0 && !range && !v.is_nan()).then_some(v)
}

/// One element's sort value.
#[derive(Debug, Clone)]
enum Key {
    Score(f64),
    Text(Option<Bytes>),
    Itself,
}

impl Loaded {
    /// Puts the vector in order, by `by_values` (one per item, aligned: the BY pattern's
    /// values, `None` where the key or field is missing) when the order uses a pattern; the
    /// elements of the output range, or Redis's error when a value is not a number.
    pub fn order(mut self, by_values: Option<Vec<Option<Bytes>>>) -> Result<Vec<Bytes>, Bytes> {
        if self.sort {
            let mut bad = false;
            let by_values = by_values.filter(|_| self.by.is_some());
            let mut keyed: Vec<(Key, Bytes)> = Vec::with_capacity(self.items.len());
            for (j, item) in self.items.drain(..).enumerate() {
                let by = match &by_values {
                    Some(v) => match v.get(j).cloned().flatten() {
                        Some(b) => Some(b),
                        None => {
                            let k = if self.alpha {
                                Key::Text(None)
                            } else {
                                Key::Score(0.0)
                            };
                            keyed.push((k, item));
                            continue;
                        }
                    },
                    None => None,
                };
                let k = match (self.alpha, by) {
                    (true, Some(b)) => Key::Text(Some(b)),
                    (true, None) => Key::Itself,
                    (false, b) => match score(b.as_deref().unwrap_or(&item)) {
                        Some(s) => Key::Score(s),
                        None => {
                            bad = true;
                            Key::Score(0.0)
                        }
                    },
                };
                keyed.push((k, item));
            }
            if bad {
                return Err(resp::error(NOT_A_DOUBLE));
            }
            let (store, desc) = (self.store, self.desc);
            let text = |a: &[u8], b: &[u8]| {
                if store {
                    a.cmp(b)
                } else {
                    // strcoll in the C locale: the bytes before a NUL.
                    c_str(a).cmp(c_str(b))
                }
            };
            keyed.sort_by(|(ka, a), (kb, b)| {
                let c = match (ka, kb) {
                    (Key::Score(x), Key::Score(y)) => {
                        x.partial_cmp(y).filter(|c| c.is_ne()).unwrap_or(a.cmp(b))
                    }
                    (Key::Text(x), Key::Text(y)) => match (x, y) {
                        (Some(x), Some(y)) => text(x, y),
                        (None, None) => Ordering::Equal,
                        (None, Some(_)) => Ordering::Less,
                        (Some(_), None) => Ordering::Greater,
                    },
                    _ => text(a, b),
                };
                if desc {
                    c.reverse()
                } else {
                    c
                }
            });
            self.items = keyed.into_iter().map(|(_, e)| e).collect();
        }
        if self.end < self.start {
            return Ok(Vec::new());
        }
        Ok(self
            .items
            .into_iter()
            .skip(self.start as usize)
            .take((self.end - self.start + 1) as usize)
            .collect())
    }
}

/// The output values: without GET patterns the elements; with them, for each element the
/// value each pattern names (`values`, element-major, `None` for a missing one).
pub fn output(elements: Vec<Bytes>, gets: usize, values: Vec<Option<Bytes>>) -> Vec<Option<Bytes>> {
    if gets == 0 {
        elements.into_iter().map(Some).collect()
    } else {
        values
    }
}

/// The reply of a SORT without STORE: an array of bulk strings and nils (RESP2).
pub fn array_reply(out: &[Option<Bytes>]) -> Bytes {
    let mut b = BytesMut::new();
    resp::put_array_header(&mut b, out.len());
    for v in out {
        match v {
            Some(v) => resp::put_bulk(&mut b, v),
            None => b.extend_from_slice(resp::NULL_BULK),
        }
    }
    b.freeze()
}

/// The text of an error frame, without the leading `-` and the line end.
fn error_text(frame: &[u8]) -> String {
    String::from_utf8_lossy(frame.get(1..).unwrap_or_default())
        .trim_end()
        .to_string()
}

/// The source's kind and elements, from the node's replies to `TYPE key` and `SORT_RO key BY
/// nosort` (its elements in their own order); WRONGTYPE as Redis gives it, or a clear error
/// when a reply is not what those commands answer (`cmd`: the client's command, for the text).
pub fn source(
    cmd: &str,
    type_frame: &Bytes,
    elements: &Bytes,
) -> Result<(Kind, Vec<Bytes>), Bytes> {
    let failed = |frame: &Bytes| {
        let why = if resp::is_error(frame) {
            error_text(frame)
        } else {
            "unexpected reply".to_string()
        };
        resp::error(&format!(
            "ERR slotproxy: {cmd} across slots could not read the key to sort: {why}"
        ))
    };
    let kind = match Value::decode(type_frame) {
        Ok(Value::Simple(t)) => kind(&t)?,
        _ => return Err(failed(type_frame)),
    };
    let Ok(Value::Array(Some(items))) = Value::decode(elements) else {
        return Err(failed(elements));
    };
    let mut out = Vec::with_capacity(items.len());
    for v in items {
        match v {
            Value::Bulk(Some(e)) => out.push(e),
            _ => return Err(failed(elements)),
        }
    }
    Ok((kind, out))
}

/// A pattern's value from the node's reply to `GET key` or `HGET key field`: the string, or
/// `None` for a missing key or field or a key of another type (Redis then sees nothing);
/// any other reply is an error for the client.
pub fn value_of(cmd: &str, frame: &Bytes) -> Result<Option<Bytes>, Bytes> {
    match Value::decode(frame) {
        Ok(Value::Bulk(v)) => Ok(v),
        Ok(Value::Error(e)) if e.starts_with("WRONGTYPE") => Ok(None),
        _ => {
            let why = if resp::is_error(frame) {
                error_text(frame)
            } else {
                "unexpected reply".to_string()
            };
            Err(resp::error(&format!(
                "ERR slotproxy: {cmd} across slots could not read a key a pattern names: {why}"
            )))
        }
    }
}

#[cfg(test)]
mod tests;
