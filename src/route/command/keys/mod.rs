//! Key extraction: which arguments of a request are keys.
//!
//! The generic path walks the command's key specs exactly as Redis 7.0's
//! `getKeysUsingKeySpecs` (db.c) does. Redis falls back to a per-command "getkeys"
//! procedure when a spec is incomplete, unknown or fails on the arguments; those commands
//! are handled explicitly here, in the way their procedure (and the command itself) parses
//! the arguments, so that the proxy sees every key and rejects what Redis would reject.
//!
//! Invariant: on `Ok`, `out` holds in-bounds indices into `args`, in ascending argument
//! order; on `Err`, `out` is empty and the string is a Redis-style error line (without the
//! leading `-`).

use bytes::Bytes;

use super::{BeginSearch, CommandSpec, FindKeys, KeySpec, KS_INCOMPLETE, KS_NOT_KEY};

/// Which getkeys behaviour a command needs beyond its key specs.
#[derive(Clone, Copy)]
enum Special {
    /// Plain key specs are enough.
    None,
    /// SORT (`store: true`) and SORT_RO: the key, and for SORT the STORE destination found
    /// by parsing the options. Both have `unknown` specs for the keys that BY/GET patterns
    /// name through the data, which no one can know before running the command.
    Sort { store: bool },
    /// MIGRATE: one key at index 3, or every argument after KEYS (its spec is incomplete).
    Migrate,
    /// GEORADIUS/GEORADIUSBYMEMBER: the key, plus STORE/STOREDIST destinations found by
    /// parsing the options from this index (so a member or key named "store" is no keyword).
    GeoStore(usize),
    /// XREAD/XREADGROUP: the keys after the STREAMS option, found by parsing the options.
    XRead { group: bool },
    /// A `numkeys` command, with the error texts its implementation gives.
    NumKeys(NumKeysErrors),
}

/// The error texts a `numkeys` command answers, which differ between families in Redis.
#[derive(Clone, Copy)]
enum NumKeysErrors {
    /// EVAL, EVALSHA, EVAL_RO, EVALSHA_RO, FCALL, FCALL_RO: zero keys allowed.
    Script,
    /// ZUNION, ZINTER, ZDIFF and their STORE forms, ZINTERCARD.
    SortedSet,
    /// LMPOP, BLMPOP, ZMPOP, BZMPOP.
    MultiPop,
    /// SINTERCARD.
    SInterCard,
}

fn special(name: &str) -> Special {
    match name {
        "sort" => Special::Sort { store: true },
        "sort_ro" => Special::Sort { store: false },
        "migrate" => Special::Migrate,
        "georadius" => Special::GeoStore(6),
        "georadiusbymember" => Special::GeoStore(5),
        "xread" => Special::XRead { group: false },
        "xreadgroup" => Special::XRead { group: true },
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" => {
            Special::NumKeys(NumKeysErrors::Script)
        }
        "zunionstore" | "zinterstore" | "zdiffstore" | "zunion" | "zinter" | "zdiff"
        | "zintercard" => Special::NumKeys(NumKeysErrors::SortedSet),
        "lmpop" | "blmpop" | "zmpop" | "bzmpop" => Special::NumKeys(NumKeysErrors::MultiPop),
        "sintercard" => Special::NumKeys(NumKeysErrors::SInterCard),
        _ => Special::None,
    }
}

/// Why the keys of a request could not be found: the request is malformed the way Redis would
/// refuse it, or the proxy does not know the command's key layout. `Display` is the client's
/// reply, Redis 7.0's text where Redis has one; every text of this module is here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// `ERR syntax error`.
    Syntax,
    /// A numeric argument that is not an integer.
    NotInteger,
    /// numkeys larger than the arguments that follow.
    NumKeysAboveArgs,
    /// A negative numkeys (scripts).
    NumKeysNegative,
    /// numkeys below 1 for the sorted-set commands that need a key.
    AtLeastOneKey(&'static str),
    /// numkeys below 1 (LMPOP, ZMPOP, SINTERCARD, ...).
    NumKeysNotPositive,
    /// Too few arguments for the command.
    Arity(&'static str),
    /// A command whose key layout the proxy cannot follow.
    Unsupported(&'static str),
    /// MIGRATE ... KEYS with a non-empty key argument.
    MigrateKeyNotEmpty,
    /// An XREADGROUP-only option (`GROUP`, `NOACK`) given to XREAD.
    XReadGroupOnly(&'static str),
    /// STREAMS followed by an odd number of arguments.
    XReadUnbalanced,
    /// XREADGROUP without GROUP.
    XReadGroupMissing,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Syntax => f.write_str("ERR syntax error"),
            KeyError::NotInteger => f.write_str("ERR value is not an integer or out of range"),
            KeyError::NumKeysAboveArgs => {
                f.write_str("ERR Number of keys can't be greater than number of args")
            }
            KeyError::NumKeysNegative => f.write_str("ERR Number of keys can't be negative"),
            KeyError::AtLeastOneKey(name) => {
                write!(f, "ERR at least 1 input key is needed for '{name}' command")
            }
            KeyError::NumKeysNotPositive => f.write_str("ERR numkeys should be greater than 0"),
            KeyError::Arity(name) => {
                write!(f, "ERR wrong number of arguments for '{name}' command")
            }
            KeyError::Unsupported(name) => {
                write!(f, "ERR the proxy cannot find the keys of '{name}' commands")
            }
            KeyError::MigrateKeyNotEmpty => f.write_str(
                "ERR When using MIGRATE KEYS option, the key argument must be set to the empty string",
            ),
            KeyError::XReadGroupOnly(option) => write!(
                f,
                "ERR The {option} option is only supported by XREADGROUP. You called XREAD instead."
            ),
            KeyError::XReadUnbalanced => f.write_str(
                "ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified.",
            ),
            KeyError::XReadGroupMissing => f.write_str("ERR Missing GROUP option for XREADGROUP"),
        }
    }
}

impl std::error::Error for KeyError {}

/// Fills `out` (cleared first) with the argument indices of the keys of this request, in
/// ascending argument order. `args[0]` is the command name, and for a subcommand `args[1]`
/// is the subcommand name; `spec` is what [`super::lookup`] returned for `args`. The caller
/// should have checked [`super::check_arity`]; without it this still never panics, but a
/// short request may get `Err`.
///
/// Returns `Err` with Redis-like text when the request is malformed so the keys cannot be
/// found (for example "ERR Number of keys can't be greater than number of args" for EVAL,
/// "ERR at least 1 input key is needed for 'zunionstore' command", "ERR Unbalanced XREAD list
/// of streams: ..."). For the numkeys commands, XREAD/XREADGROUP and MIGRATE the text is the
/// one the command itself answers; for other malformed shapes it is a generic
/// "wrong number of arguments" error.
///
/// Shard channels (SSUBSCRIBE, SUNSUBSCRIBE, SPUBLISH) are `not_key` in Redis's key specs and
/// are skipped here, as `COMMAND GETKEYS` skips them; use [`slot_positions`] for routing.
pub fn key_positions(
    spec: &CommandSpec,
    args: &[Bytes],
    out: &mut Vec<usize>,
) -> Result<(), KeyError> {
    fill(spec, args, out, false)
}

/// Like [`key_positions`], but also includes the arguments of `not_key` specs: the shard
/// channels of SSUBSCRIBE, SUNSUBSCRIBE and SPUBLISH, which Redis Cluster routes by hash slot
/// exactly like keys. This is the set of arguments whose slots a cluster proxy must agree on.
pub fn slot_positions(
    spec: &CommandSpec,
    args: &[Bytes],
    out: &mut Vec<usize>,
) -> Result<(), KeyError> {
    fill(spec, args, out, true)
}

fn fill(
    spec: &CommandSpec,
    args: &[Bytes],
    out: &mut Vec<usize>,
    include_not_keys: bool,
) -> Result<(), KeyError> {
    out.clear();
    if is_one_key_at_first_argument(spec) {
        // GET, SET, INCR, HGET ... : most requests. Their one key is argument 1, and the
        // generic walk below (a name match, then the spec interpreter, then a sort) cost a
        // few hundred instructions per request to find that out.
        if args.len() < 2 {
            return Err(arity_error(spec));
        }
        out.push(1);
        return Ok(());
    }
    let result = match special(spec.name) {
        Special::None => from_specs(spec, args, out, include_not_keys, None),
        Special::NumKeys(errors) => from_specs(spec, args, out, include_not_keys, Some(errors)),
        Special::Sort { store } => sort_keys(spec, args, out, store),
        Special::Migrate => migrate_keys(spec, args, out),
        Special::GeoStore(options_from) => geo_keys(spec, args, out, options_from),
        Special::XRead { group } => xread_keys(spec, args, out, group),
    };
    match result {
        Ok(()) => {
            // Specs are listed in argument order for every built-in command except where a
            // later spec can match earlier arguments; sorting keeps the invariant cheaply.
            out.sort_unstable();
            Ok(())
        }
        Err(e) => {
            out.clear();
            Err(e)
        }
    }
}

/// Whether the command's only key is argument 1, exactly what its single key spec says
/// (`index 1`, range `0`, a real and complete key), with nothing [`special`] would override:
/// SORT_RO shares that spec but also reads BY/GET patterns. Shard channels (`not_key`) take
/// the generic path, which includes or skips them as asked.
fn is_one_key_at_first_argument(spec: &CommandSpec) -> bool {
    matches!(
        spec.key_specs,
        [KeySpec {
            begin: BeginSearch::Index(1),
            find: FindKeys::Range { last_key: 0, .. },
            flags,
        }] if flags & (KS_NOT_KEY | KS_INCOMPLETE) == 0
    ) && spec.name != "sort_ro"
}

fn eq_ignore_case(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

fn arity_error(spec: &CommandSpec) -> KeyError {
    KeyError::Arity(spec.name)
}

/// Parses an integer the way Redis's `string2ll` does: optional `-`, no `+`, no leading
/// zeros, no spaces, no overflow. Redis parses `numkeys` with it, so "01" is not 1 there.
fn parse_ll(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits {
        [] => return None,
        [b'0'] if !negative => return Some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(d - b'0');
        value = if negative {
            value.checked_mul(10)?.checked_sub(digit)?
        } else {
            value.checked_mul(10)?.checked_add(digit)?
        };
    }
    Some(value)
}

/// Validates `numkeys` (at `args[idx]`, with `remaining` arguments from the first key on) the
/// way the command's implementation does, returning the number of keys.
fn check_numkeys(
    spec: &CommandSpec,
    args: &[Bytes],
    idx: usize,
    remaining: usize,
    errors: NumKeysErrors,
) -> Result<usize, KeyError> {
    let parsed = args.get(idx).and_then(|a| parse_ll(a));
    let remaining = i64::try_from(remaining).unwrap_or(i64::MAX);
    let n = match errors {
        NumKeysErrors::Script => {
            let n = parsed.ok_or(KeyError::NotInteger)?;
            if n > remaining {
                return Err(KeyError::NumKeysAboveArgs);
            }
            if n < 0 {
                return Err(KeyError::NumKeysNegative);
            }
            n
        }
        NumKeysErrors::SortedSet => {
            let n = parsed.ok_or(KeyError::NotInteger)?;
            if n < 1 {
                return Err(KeyError::AtLeastOneKey(spec.name));
            }
            if n > remaining {
                return Err(KeyError::Syntax);
            }
            n
        }
        NumKeysErrors::MultiPop | NumKeysErrors::SInterCard => {
            let n = match parsed {
                Some(n) if n >= 1 => n,
                _ => return Err(KeyError::NumKeysNotPositive),
            };
            if n > remaining {
                return Err(match errors {
                    NumKeysErrors::SInterCard => KeyError::NumKeysAboveArgs,
                    _ => KeyError::Syntax,
                });
            }
            n
        }
    };
    usize::try_from(n).map_err(|_| KeyError::NotInteger)
}

/// Redis 7.0's `getKeysUsingKeySpecs`, returning `Err` where Redis would give up on the
/// specs. `numkeys` selects command-specific validation for keynum specs.
fn from_specs(
    spec: &CommandSpec,
    args: &[Bytes],
    out: &mut Vec<usize>,
    include_not_keys: bool,
    numkeys: Option<NumKeysErrors>,
) -> Result<(), KeyError> {
    // Signed arithmetic as in db.c: relative and negative indices are common here.
    let argc = i64::try_from(args.len()).unwrap_or(i64::MAX);
    for ks in spec.key_specs {
        if ks.has_flag(KS_NOT_KEY) && !include_not_keys {
            continue;
        }
        let first: i64 = match ks.begin {
            BeginSearch::Index(i) => i64::from(i),
            BeginSearch::Keyword {
                keyword,
                start_from,
            } => match find_keyword(args, keyword, start_from) {
                Some(i) => i + 1,
                // No keyword: this optional run of keys is absent.
                None => continue,
            },
            BeginSearch::Unknown => return Err(unsupported(spec)),
        };
        let (first, last, step) = match ks.find {
            FindKeys::Range {
                last_key,
                key_step,
                limit,
            } => {
                let last_key = i64::from(last_key);
                let last = if last_key >= 0 {
                    first + last_key
                } else if limit <= 0 {
                    argc + last_key
                } else {
                    // Integer division truncating toward zero, as in C.
                    first + ((argc - first) / i64::from(limit) + last_key)
                };
                (first, last, i64::from(key_step))
            }
            FindKeys::KeyNum {
                key_num_idx,
                first_key,
                key_step,
            } => {
                let idx = first + i64::from(key_num_idx);
                let keys_start = first + i64::from(first_key);
                let idx_u = usize::try_from(idx).map_err(|_| arity_error(spec))?;
                if idx >= argc {
                    return Err(arity_error(spec));
                }
                let n = match numkeys {
                    Some(errors) => {
                        let remaining = usize::try_from(argc - keys_start).unwrap_or(0);
                        let n = check_numkeys(spec, args, idx_u, remaining, errors)?;
                        if n == 0 {
                            // Only scripts accept zero keys: nothing to add from this spec.
                            continue;
                        }
                        i64::try_from(n).unwrap_or(i64::MAX)
                    }
                    None => match args.get(idx_u).and_then(|a| parse_ll(a)) {
                        Some(n) if n >= 0 => n,
                        _ => return Err(KeyError::NotInteger),
                    },
                };
                (keys_start, keys_start + n - 1, i64::from(key_step))
            }
            FindKeys::Unknown => return Err(unsupported(spec)),
        };
        if last < first && matches!(ks.find, FindKeys::Range { last_key, .. } if last_key < 0) {
            // An open-ended run with nothing in it, such as SUNSUBSCRIBE without channels
            // (arity -1). Redis's spec walk calls this invalid and then finds no keys; for
            // routing it simply means no keys.
            continue;
        }
        if last >= argc || last < first || first >= argc || first < 1 {
            return Err(arity_error(spec));
        }
        let step = usize::try_from(step.max(1)).unwrap_or(1);
        let (first, last) = match (usize::try_from(first), usize::try_from(last)) {
            (Ok(f), Ok(l)) => (f, l),
            _ => return Err(arity_error(spec)),
        };
        out.extend((first..=last).step_by(step));
        if ks.has_flag(KS_INCOMPLETE) {
            // Only MIGRATE has an incomplete spec in 7.0 and it is handled explicitly;
            // for anything else, partial keys would misroute the request.
            return Err(unsupported(spec));
        }
    }
    Ok(())
}

fn unsupported(spec: &CommandSpec) -> KeyError {
    KeyError::Unsupported(spec.name)
}

/// The keyword search of a `keyword` begin_search, as in db.c: from `start_from` forwards to
/// the second-to-last argument, or for a negative `start_from` from `argc + start_from`
/// backwards to index 1. Returns the keyword's index.
fn find_keyword(args: &[Bytes], keyword: &str, start_from: i32) -> Option<i64> {
    let argc = i64::try_from(args.len()).ok()?;
    let start_from = i64::from(start_from);
    let (start, end) = if start_from > 0 {
        (start_from, argc - 1)
    } else {
        (argc + start_from, 0)
    };
    let mut i = start;
    while i != end {
        if i >= argc || i < 1 {
            break;
        }
        let arg = args.get(usize::try_from(i).ok()?)?;
        if eq_ignore_case(arg, keyword) {
            return Some(i);
        }
        i = if start <= end { i + 1 } else { i - 1 };
    }
    None
}

/// SORT key [BY pattern] [LIMIT offset count] [GET pattern ...] [ASC|DESC] [ALPHA]
/// [STORE destination]: the key, plus the last STORE destination (as `sortGetKeys` and the
/// command itself use the last one). BY/GET patterns name other keys only through the data,
/// so like Redis we do not report them. SORT_RO has no STORE: only its key.
fn sort_keys(
    spec: &CommandSpec,
    args: &[Bytes],
    out: &mut Vec<usize>,
    with_store: bool,
) -> Result<(), KeyError> {
    if args.len() < 2 {
        return Err(arity_error(spec));
    }
    out.push(1);
    if !with_store {
        return Ok(());
    }
    let mut store = None;
    let mut i = 2;
    while i < args.len() {
        let arg = &args[i];
        if eq_ignore_case(arg, "limit") {
            i += 2;
        } else if eq_ignore_case(arg, "get") || eq_ignore_case(arg, "by") {
            i += 1;
        } else if eq_ignore_case(arg, "store") && i + 1 < args.len() {
            store = Some(i + 1);
        }
        i += 1;
    }
    out.extend(store);
    Ok(())
}

/// MIGRATE host port key|"" destination-db timeout [COPY] [REPLACE] [AUTH password]
/// [AUTH2 username password] [KEYS key ...]: index 3, or with KEYS every argument after it
/// (then index 3 must be empty, as the command requires).
fn migrate_keys(spec: &CommandSpec, args: &[Bytes], out: &mut Vec<usize>) -> Result<(), KeyError> {
    if args.len() < 6 {
        return Err(arity_error(spec));
    }
    let mut i = 6;
    while i < args.len() {
        let arg = &args[i];
        if eq_ignore_case(arg, "auth") {
            i += 1;
        } else if eq_ignore_case(arg, "auth2") {
            i += 2;
        } else if eq_ignore_case(arg, "keys") {
            if !args[3].is_empty() {
                return Err(KeyError::MigrateKeyNotEmpty);
            }
            out.extend(i + 1..args.len());
            return Ok(());
        }
        i += 1;
    }
    out.push(3);
    Ok(())
}

/// GEORADIUS key lon lat radius unit [...] / GEORADIUSBYMEMBER key member radius unit [...]:
/// the key, plus every STORE / STOREDIST destination among the options (the key specs report
/// both when both are given, and Redis Cluster then requires both in one slot). COUNT's
/// argument is skipped so a destination named "store" is not taken for the keyword.
fn geo_keys(
    spec: &CommandSpec,
    args: &[Bytes],
    out: &mut Vec<usize>,
    options_from: usize,
) -> Result<(), KeyError> {
    if args.len() < options_from {
        return Err(arity_error(spec));
    }
    out.push(1);
    let mut i = options_from;
    while i < args.len() {
        let arg = &args[i];
        if (eq_ignore_case(arg, "store") || eq_ignore_case(arg, "storedist")) && i + 1 < args.len()
        {
            out.push(i + 1);
            i += 1;
        } else if eq_ignore_case(arg, "count") {
            i += 1;
        }
        i += 1;
    }
    Ok(())
}

/// What the options of an XREAD/XREADGROUP say, parsed like `xreadCommand` does.
struct XReadOptions {
    /// Index of the STREAMS keyword, if it was reached.
    streams: Option<usize>,
    /// A GROUP option was given.
    has_group: bool,
    /// A BLOCK option was given.
    block: bool,
}

/// Walks the options before STREAMS as Redis does: each option takes its values with it, so a
/// group, consumer or count that reads "streams" or "block" is a value, never a keyword.
fn xread_options(args: &[Bytes], group: bool) -> Result<XReadOptions, KeyError> {
    let argc = args.len();
    let mut o = XReadOptions {
        streams: None,
        has_group: false,
        block: false,
    };
    let mut i = 1;
    while i < argc {
        let arg = &args[i];
        let more = argc - i - 1;
        if (eq_ignore_case(arg, "block") || eq_ignore_case(arg, "count")) && more >= 1 {
            o.block |= eq_ignore_case(arg, "block");
            i += 1;
        } else if eq_ignore_case(arg, "group") && more >= 2 {
            if !group {
                return Err(KeyError::XReadGroupOnly("GROUP"));
            }
            o.has_group = true;
            i += 2;
        } else if eq_ignore_case(arg, "noack") {
            if !group {
                return Err(KeyError::XReadGroupOnly("NOACK"));
            }
        } else if eq_ignore_case(arg, "streams") {
            o.streams = Some(i);
            break;
        } else {
            return Err(KeyError::Syntax);
        }
        i += 1;
    }
    Ok(o)
}

/// Whether an XREAD (`group: false`) or XREADGROUP (`group: true`) request has a BLOCK
/// option, and so may block; false for requests whose options do not parse (they fail
/// without blocking).
pub fn xread_blocks(args: &[Bytes], group: bool) -> bool {
    xread_options(args, group).is_ok_and(|o| o.block)
}

/// XREAD [COUNT n] [BLOCK ms] STREAMS key ... id ... and XREADGROUP GROUP g c [COUNT n]
/// [BLOCK ms] [NOACK] STREAMS key ... id ...: options are parsed like `xreadCommand` does,
/// because "streams" may also be a group, consumer or key name; the keys are the first half
/// of the arguments after STREAMS.
fn xread_keys(
    spec: &CommandSpec,
    args: &[Bytes],
    out: &mut Vec<usize>,
    group: bool,
) -> Result<(), KeyError> {
    let argc = args.len();
    let XReadOptions {
        streams, has_group, ..
    } = xread_options(args, group)?;
    let Some(streams) = streams else {
        return Err(KeyError::Syntax);
    };
    let rest = argc - streams - 1;
    if rest == 0 || !rest.is_multiple_of(2) {
        return Err(KeyError::XReadUnbalanced);
    }
    if group && !has_group {
        return Err(KeyError::XReadGroupMissing);
    }
    if argc < spec.arity.unsigned_abs() as usize {
        return Err(arity_error(spec));
    }
    out.extend(streams + 1..streams + 1 + rest / 2);
    Ok(())
}

#[cfg(test)]
mod tests;

/// The bytes of `b` up to its first NUL: what C's string functions see of an argument.
fn c_str(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(n) => &b[..n],
        None => b,
    }
}

/// Whether a SORT / SORT_RO (`args`) names other keys through patterns: a GET, or a BY whose
/// pattern has a `*` (a cluster node refuses both). Reads the options as Redis does, up to the
/// first it would reject: a request with a bad option before any pattern is left to the node,
/// which gives the error a single Redis gives.
pub fn sort_uses_patterns(args: &[Bytes]) -> bool {
    let is = |a: &[u8], word: &str| c_str(a).eq_ignore_ascii_case(word.as_bytes());
    let mut j = 2;
    while j < args.len() {
        let left = args.len() - j - 1;
        let a = &args[j];
        if is(a, "asc") || is(a, "desc") || is(a, "alpha") {
            // No argument.
        } else if is(a, "limit") && left >= 2 {
            j += 2;
        } else if is(a, "by") && left >= 1 {
            if c_str(&args[j + 1]).contains(&b'*') {
                return true;
            }
            j += 1;
        } else if is(a, "get") && left >= 1 {
            return true;
        } else if is(a, "store") && left >= 1 {
            j += 1;
        } else {
            return false;
        }
        j += 1;
    }
    false
}
