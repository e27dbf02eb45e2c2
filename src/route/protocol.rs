//! Client request parser: RESP2 multibulk and inline requests, resumable and non-recursive.
//!
//! The parser never copies a multibulk argument: a complete request is cut from the read
//! buffer as one frozen `Bytes` and every argument is a slice of it, so forwarding a
//! single-slot command to a backend is a reference-count increment. Parsing is resumable:
//! a request that arrives in many reads is scanned once, not from the start on every read.
//! Errors carry Redis's own protocol-error texts, and the session closes the connection after
//! sending one, as Redis does.

use crate::route::resp::{digits_line, line_end, parse_int};
use bytes::{Bytes, BytesMut};
use std::fmt;

/// Longest inline request or multibulk/bulk header line, as Redis's PROTO_INLINE_MAX_SIZE.
pub const MAX_INLINE: usize = 64 * 1024;

/// Most arguments a client that has not authenticated may send in one request (Redis's own
/// limit for such clients), so that a stranger cannot make the proxy hold much.
pub const UNAUTH_MAX_ARGS: usize = 10;

/// Longest argument a client that has not authenticated may send (Redis's own limit).
pub const UNAUTH_MAX_BULK: usize = 16 * 1024;

/// Most room [`RequestParser::needed`] asks the reader to reserve beyond the bytes already
/// buffered: a declared bulk length is a claim, not bytes, so buffers grow with what arrives.
const MAX_RESERVE_HINT: usize = 64 * 1024;

/// Limits that protect the proxy from a client's request.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Most arguments in one request.
    pub max_args: usize,
    /// Longest single argument (Redis's proto-max-bulk-len, 512 MB by default).
    pub max_bulk: usize,
    /// Most bytes one incomplete request may occupy in the read buffer.
    pub max_query_buffer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_args: 1024 * 1024,
            max_bulk: 512 * 1024 * 1024,
            max_query_buffer: 1024 * 1024 * 1024,
        }
    }
}

/// One parsed client request.
#[derive(Clone, Debug)]
pub struct Request {
    /// The request exactly as it arrived when it was a multibulk (forwardable as is);
    /// `None` for an inline request, which must be re-encoded before forwarding.
    pub raw: Option<Bytes>,
    /// The arguments, the command name first. Never empty.
    pub args: Vec<Bytes>,
}

impl Request {
    /// The bytes to send to a backend: the original frame, or a multibulk encoding of the args.
    pub fn wire(&self) -> Bytes {
        match &self.raw {
            Some(raw) => raw.clone(),
            None => crate::route::resp::encode_command(&self.args).freeze(),
        }
    }
}

/// A malformed request. Its `Display` is the text Redis sends (without the leading `-`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ERR Protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

fn perr(msg: impl Into<String>) -> ProtocolError {
    ProtocolError(msg.into())
}

/// Where the parser stands inside a multibulk request that has not fully arrived.
#[derive(Debug, Default)]
struct Partial {
    /// Arguments still expected.
    remaining: usize,
    /// Offset (from the request's first byte) of the next unread byte.
    pos: usize,
    /// Length of the bulk whose header was read, if its payload has not arrived yet.
    bulk: Option<usize>,
}

/// Resumable request parser; one per client connection.
#[derive(Debug, Default)]
pub struct RequestParser {
    limits: Limits,
    partial: Option<Partial>,
    /// (start, end) of each argument of the request being read; reused across requests so a
    /// request costs no allocation here.
    ranges: Vec<(usize, usize)>,
    /// The client has not authenticated (users are configured): Redis's limits for
    /// unauthenticated clients apply ([`UNAUTH_MAX_ARGS`], [`UNAUTH_MAX_BULK`]).
    unauthenticated: bool,
}

impl RequestParser {
    /// Replaces the limits (a live configuration change); a request being parsed is checked
    /// against the new limits from here on.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Exchanges the parser's vector of argument positions with `other`, unless a request is
    /// half parsed (its positions are in the vector). Between requests the vector holds
    /// nothing, so sessions of one thread can share one instead of keeping one each.
    pub fn swap_ranges(&mut self, other: &mut Vec<(usize, usize)>) {
        if self.partial.is_none() {
            std::mem::swap(&mut self.ranges, other);
        }
    }

    /// A parser enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        RequestParser {
            limits,
            partial: None,
            ranges: Vec::new(),
            unauthenticated: false,
        }
    }

    /// Marks whether the client is unauthenticated; headers read from here on are checked
    /// against Redis's limits for unauthenticated clients while it is.
    pub fn set_unauthenticated(&mut self, unauthenticated: bool) {
        self.unauthenticated = unauthenticated;
    }

    /// Room worth reserving for the incomplete request at the head of the buffer: what it
    /// still needs, but never more than `MAX_RESERVE_HINT` or the bytes already buffered
    /// (whichever is larger). A header alone therefore cannot make the proxy reserve its
    /// declared size, while a large argument that really arrives still grows the buffer
    /// geometrically (few copies).
    pub fn needed(&self, buf_len: usize) -> usize {
        match &self.partial {
            Some(Partial {
                bulk: Some(len),
                pos,
                ..
            }) => (pos + len + 2)
                .saturating_sub(buf_len)
                .min(MAX_RESERVE_HINT.max(buf_len)),
            _ => 0,
        }
    }

    /// Parses the next complete request from the front of `buf`, removing its bytes. Returns
    /// `Ok(None)` when more bytes are needed. After an error the connection must be closed.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        let mut args = Vec::new();
        Ok(self
            .parse_into(buf, &mut args)?
            .map(|raw| Request { raw, args }))
    }

    /// Like [`RequestParser::parse`], but fills `args` (cleared first) instead of allocating a
    /// vector per request: the session reuses one. Returns `Some(raw)` when a request is
    /// complete, `raw` being the frame as it arrived (`None` for an inline request).
    pub fn parse_into(
        &mut self,
        buf: &mut BytesMut,
        args: &mut Vec<Bytes>,
    ) -> Result<Option<Option<Bytes>>, ProtocolError> {
        args.clear();
        loop {
            if self.partial.is_none() {
                match buf.first() {
                    None => return Ok(None),
                    Some(b'*') => {}
                    Some(_) => match self.parse_inline(buf)? {
                        Inline::Incomplete => return Ok(None),
                        Inline::Empty => continue,
                        Inline::Request(r) => {
                            *args = r.args;
                            return Ok(Some(None));
                        }
                    },
                }
                let (count, cr) = match digits_line(buf, 1) {
                    Some(line) => line,
                    None => {
                        let Some(cr) = line_end(buf, 1) else {
                            if buf.len() > MAX_INLINE {
                                return Err(perr("too big mbulk count string"));
                            }
                            return Ok(None);
                        };
                        (
                            parse_int(&buf[1..cr])
                                .ok_or_else(|| perr("invalid multibulk length"))?,
                            cr,
                        )
                    }
                };
                if count > i32::MAX as i64 {
                    return Err(perr("invalid multibulk length"));
                }
                if count <= 0 {
                    // Redis silently skips an empty multibulk.
                    let _ = buf.split_to(cr + 2);
                    continue;
                }
                let count = count as usize;
                if self.unauthenticated && count > UNAUTH_MAX_ARGS {
                    return Err(perr("unauthenticated multibulk length"));
                }
                if count > self.limits.max_args {
                    return Err(perr(format!(
                        "too many arguments in request ({count} > max_request_args {})",
                        self.limits.max_args
                    )));
                }
                self.ranges.clear();
                self.partial = Some(Partial {
                    remaining: count,
                    pos: cr + 2,
                    bulk: None,
                });
            }
            return self.resume_multibulk(buf, args);
        }
    }

    fn resume_multibulk(
        &mut self,
        buf: &mut BytesMut,
        args: &mut Vec<Bytes>,
    ) -> Result<Option<Option<Bytes>>, ProtocolError> {
        let limits = &self.limits;
        let unauthenticated = self.unauthenticated;
        let Some(p) = self.partial.as_mut() else {
            return Ok(None);
        };
        while p.remaining > 0 {
            let len = match p.bulk {
                Some(len) => len,
                None => {
                    if p.pos >= buf.len() {
                        break;
                    }
                    if buf[p.pos] != b'$' {
                        return Err(perr(format!(
                            "expected '$', got '{}'",
                            char::from(buf[p.pos])
                        )));
                    }
                    let (len, cr) = match digits_line(buf, p.pos + 1) {
                        Some(line) => line,
                        None => {
                            let Some(cr) = line_end(buf, p.pos + 1) else {
                                if buf.len() - p.pos > MAX_INLINE {
                                    return Err(perr("too big bulk count string"));
                                }
                                break;
                            };
                            let len = parse_int(&buf[p.pos + 1..cr])
                                .ok_or_else(|| perr("invalid bulk length"))?;
                            (len, cr)
                        }
                    };
                    if len < 0 || len as u64 > limits.max_bulk as u64 {
                        return Err(perr("invalid bulk length"));
                    }
                    let len = len as usize;
                    if unauthenticated && len > UNAUTH_MAX_BULK {
                        return Err(perr("unauthenticated bulk length"));
                    }
                    p.pos = cr + 2;
                    p.bulk = Some(len);
                    len
                }
            };
            if buf.len() < p.pos + len + 2 {
                break;
            }
            self.ranges.push((p.pos, p.pos + len));
            // Like Redis, the two bytes after the payload are skipped, not checked.
            p.pos += len + 2;
            p.bulk = None;
            p.remaining -= 1;
        }
        if p.remaining > 0 {
            if buf.len() > limits.max_query_buffer {
                return Err(perr(format!(
                    "request exceeds the query buffer limit ({} bytes)",
                    limits.max_query_buffer
                )));
            }
            return Ok(None);
        }
        let p = self.partial.take().unwrap_or_default();
        let frame = buf.split_to(p.pos).freeze();
        args.extend(self.ranges.iter().map(|&(s, e)| frame.slice(s..e)));
        Ok(Some(Some(frame)))
    }

    fn parse_inline(&mut self, buf: &mut BytesMut) -> Result<Inline, ProtocolError> {
        let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
            if buf.len() > MAX_INLINE {
                return Err(perr("too big inline request"));
            }
            return Ok(Inline::Incomplete);
        };
        let line = buf.split_to(nl + 1);
        let mut end = nl;
        if end > 0 && line[end - 1] == b'\r' {
            end -= 1;
        }
        let args = split_inline(&line[..end])?;
        if args.is_empty() {
            return Ok(Inline::Empty);
        }
        if args.len() > self.limits.max_args {
            return Err(perr("too many arguments in inline request"));
        }
        Ok(Inline::Request(Request { raw: None, args }))
    }
}

enum Inline {
    Incomplete,
    Empty,
    Request(Request),
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Splits an inline request into arguments with redis-cli's quoting rules (as sdssplitargs):
/// double quotes with `\n \r \t \b \a \\ \" \xHH` escapes, single quotes with `\'`.
fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let unbalanced = || perr("unbalanced quotes in request");
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line.len() {
            return Ok(args);
        }
        let mut cur = Vec::new();
        let (mut in_dq, mut in_sq) = (false, false);
        loop {
            if in_dq {
                let c = *line.get(i).ok_or_else(unbalanced)?;
                if c == b'\\' && i + 3 < line.len() && line[i + 1] == b'x' {
                    if let (Some(h), Some(l)) = (hex(line[i + 2]), hex(line[i + 3])) {
                        cur.push(h * 16 + l);
                        i += 4;
                        continue;
                    }
                }
                if c == b'\\' && i + 1 < line.len() {
                    cur.push(match line[i + 1] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                    i += 2;
                    continue;
                }
                if c == b'"' {
                    if line.get(i + 1).is_some_and(|b| !b.is_ascii_whitespace()) {
                        return Err(unbalanced());
                    }
                    i += 1;
                    break;
                }
                cur.push(c);
                i += 1;
            } else if in_sq {
                let c = *line.get(i).ok_or_else(unbalanced)?;
                if c == b'\\' && line.get(i + 1) == Some(&b'\'') {
                    cur.push(b'\'');
                    i += 2;
                    continue;
                }
                if c == b'\'' {
                    if line.get(i + 1).is_some_and(|b| !b.is_ascii_whitespace()) {
                        return Err(unbalanced());
                    }
                    i += 1;
                    break;
                }
                cur.push(c);
                i += 1;
            } else {
                match line.get(i) {
                    None => break,
                    Some(c) if c.is_ascii_whitespace() => break,
                    Some(b'"') => in_dq = true,
                    Some(b'\'') => in_sq = true,
                    Some(&c) => cur.push(c),
                }
                i += 1;
            }
        }
        args.push(Bytes::from(cur));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_one_pass_length_line_agrees_with_the_general_reading() {
        let lines: [&[u8]; 14] = [
            b"3\r\n",
            b"0\r\n",
            b"16\r\n",
            b"007\r\n",
            b"-1\r\n",
            b"\r\n",
            b"1x\r\n",
            b"+1\r\n",
            b"12\r",
            b"12",
            b"999999999999999999\r\n",
            b"9999999999999999999\r\n",
            b"99999999999999999999\r\n",
            b"4\n\r\n",
        ];
        for line in lines {
            let mut buf = b"$".to_vec();
            buf.extend_from_slice(line);
            let general = line_end(&buf, 1).map(|cr| (parse_int(&buf[1..cr]), cr));
            match digits_line(&buf, 1) {
                Some((n, cr)) => assert_eq!(general, Some((Some(n), cr)), "{line:?}"),
                // Declined: only lines other than 1-18 digits and a complete `\r\n`, which
                // the general reading then answers.
                None => {
                    let digits = line.strip_suffix(b"\r\n").unwrap_or(b"x");
                    let plain =
                        (1..=18).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit);
                    assert!(!plain, "{line:?} declined");
                }
            }
        }
    }

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut p = RequestParser::default();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(r) = p.parse(&mut buf)? {
            out.push(r.args.iter().map(|a| a.to_vec()).collect());
        }
        Ok(out)
    }

    fn encode(args: &[&[u8]]) -> Vec<u8> {
        let mut v = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            v.extend_from_slice(a);
            v.extend_from_slice(b"\r\n");
        }
        v
    }

    #[test]
    fn multibulk_and_raw_frame() {
        let input = encode(&[b"SET", b"k", b"v\r\nx"]);
        let mut p = RequestParser::default();
        let mut buf = BytesMut::from(&input[..]);
        let r = p.parse(&mut buf).unwrap().unwrap();
        assert_eq!(r.args, vec![&b"SET"[..], b"k", b"v\r\nx"]);
        assert_eq!(r.raw.unwrap(), &input[..]);
        assert!(buf.is_empty());
    }

    #[test]
    fn inline_requests_with_quotes() {
        let got = parse_all(b"set \"a b\" 'c\\'d' \"\\x41\\n\"\r\nPING\n\r\n").unwrap();
        assert_eq!(
            got,
            vec![
                vec![
                    b"set".to_vec(),
                    b"a b".to_vec(),
                    b"c'd".to_vec(),
                    b"A\n".to_vec()
                ],
                vec![b"PING".to_vec()]
            ]
        );
    }

    #[test]
    fn redis_error_texts() {
        let e = |i: &[u8]| parse_all(i).unwrap_err().to_string();
        assert_eq!(e(b"*x\r\n"), "ERR Protocol error: invalid multibulk length");
        assert_eq!(
            e(b"*1\r\n+a\r\n"),
            "ERR Protocol error: expected '$', got '+'"
        );
        assert_eq!(
            e(b"*1\r\n$-3\r\n"),
            "ERR Protocol error: invalid bulk length"
        );
        assert_eq!(
            e(b"*1\r\n$536870913\r\n"),
            "ERR Protocol error: invalid bulk length"
        );
        assert_eq!(
            e(b"set \"a\r\n"),
            "ERR Protocol error: unbalanced quotes in request"
        );
        assert_eq!(
            e(b"set \"a\"b\r\n"),
            "ERR Protocol error: unbalanced quotes in request"
        );
        assert_eq!(
            e(&vec![b'a'; MAX_INLINE + 1]),
            "ERR Protocol error: too big inline request"
        );
        let mut big = b"*".to_vec();
        big.extend(vec![b'1'; MAX_INLINE + 1]);
        assert_eq!(e(&big), "ERR Protocol error: too big mbulk count string");
        assert!(e(b"*2000000\r\n").contains("too many arguments"));
    }

    #[test]
    fn empty_multibulk_and_blank_lines_are_skipped() {
        let got = parse_all(b"*0\r\n\r\n*-1\r\n*1\r\n$4\r\nPING\r\n").unwrap();
        assert_eq!(got, vec![vec![b"PING".to_vec()]]);
    }

    #[test]
    fn needed_reports_missing_payload() {
        let mut p = RequestParser::default();
        let mut buf = BytesMut::from(&b"*1\r\n$100\r\nabc"[..]);
        assert!(p.parse(&mut buf).unwrap().is_none());
        assert_eq!(p.needed(buf.len()), 100 + 2 - 3);
    }

    #[test]
    fn a_bulk_header_alone_reserves_little() {
        let mut p = RequestParser::default();
        let mut buf = BytesMut::from(&b"*1\r\n$536870000\r\nabc"[..]);
        assert!(p.parse(&mut buf).unwrap().is_none());
        assert_eq!(p.needed(buf.len()), MAX_RESERVE_HINT);
        // With 1 MB buffered, the hint follows the bytes present (geometric growth).
        buf.extend_from_slice(&vec![b'x'; 1 << 20]);
        assert!(p.parse(&mut buf).unwrap().is_none());
        assert_eq!(p.needed(buf.len()), buf.len());
    }

    #[test]
    fn unauthenticated_limits_are_redis_s() {
        let e = |i: &[u8]| {
            let mut p = RequestParser::default();
            p.set_unauthenticated(true);
            let mut buf = BytesMut::from(i);
            p.parse(&mut buf).map(|r| r.is_some())
        };
        assert_eq!(
            e(b"*11\r\n").unwrap_err().to_string(),
            "ERR Protocol error: unauthenticated multibulk length"
        );
        assert_eq!(
            e(b"*2\r\n$16385\r\n").unwrap_err().to_string(),
            "ERR Protocol error: unauthenticated bulk length"
        );
        assert_eq!(e(b"*10\r\n$16384\r\n"), Ok(false));
        // Redis checks the length is valid before the authentication limit.
        assert_eq!(
            e(b"*1\r\n$536870913\r\n").unwrap_err().to_string(),
            "ERR Protocol error: invalid bulk length"
        );
    }

    #[test]
    fn query_buffer_limit() {
        let mut p = RequestParser::new(Limits {
            max_query_buffer: 64,
            ..Limits::default()
        });
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1000\r\n"[..]);
        buf.extend_from_slice(&[b'x'; 100]);
        assert!(p
            .parse(&mut buf)
            .unwrap_err()
            .0
            .contains("query buffer limit"));
    }

    proptest! {
        /// Any split of a valid stream into reads yields the same requests as one read.
        #[test]
        fn random_splits_parse_identically(
            reqs in prop::collection::vec(prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6), 1..8),
            cuts in prop::collection::vec(1usize..30, 0..40),
        ) {
            let mut stream = Vec::new();
            for r in &reqs {
                let refs: Vec<&[u8]> = r.iter().map(|a| &a[..]).collect();
                stream.extend(encode(&refs));
            }
            let mut p = RequestParser::default();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut rest = &stream[..];
            let mut cuts = cuts.into_iter();
            while !rest.is_empty() {
                let n = cuts.next().unwrap_or(rest.len()).min(rest.len());
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                while let Some(r) = p.parse(&mut buf).unwrap() {
                    got.push(r.args.iter().map(|a| a.to_vec()).collect::<Vec<_>>());
                }
            }
            prop_assert_eq!(got, reqs);
            prop_assert!(buf.is_empty());
        }
    }
}
