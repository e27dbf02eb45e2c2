//! RESP encoding and backend reply framing.
//!
//! On the hot path the proxy does not decode backend replies: [`ReplyScanner`] only finds where
//! each reply frame ends so the frame can be passed to the client as an untouched `Bytes` slice.
//! It is resumable and non-recursive, so a huge reply (KEYS over millions of keys) arriving in
//! many reads is scanned once. [`Value`] is a full decoder for the control plane (topology
//! refresh, admin engines), where convenience matters more than copies.

use bytes::{Bytes, BytesMut};

/// Encodes a command as a RESP multibulk.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> BytesMut {
    let len: usize = args.iter().map(|a| a.as_ref().len() + 16).sum();
    let mut out = BytesMut::with_capacity(len + 16);
    put_array_header(&mut out, args.len());
    for a in args {
        put_bulk(&mut out, a.as_ref());
    }
    out
}

/// Appends `*<n>\r\n`.
pub fn put_array_header(out: &mut BytesMut, n: usize) {
    put_line(out, b'*', n as i64);
}

/// Appends a bulk string.
pub fn put_bulk(out: &mut BytesMut, data: &[u8]) {
    put_line(out, b'$', data.len() as i64);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends an integer reply.
pub fn put_int(out: &mut BytesMut, n: i64) {
    put_line(out, b':', n);
}

/// Appends `<prefix><n>\r\n`, composed on the stack and appended at once: each append to a
/// `BytesMut` checks its capacity, and headers are written for every argument of every
/// request the proxy encodes.
fn put_line(out: &mut BytesMut, prefix: u8, n: i64) {
    // prefix, sign, up to 20 digits, CRLF.
    let mut line = [0u8; 24];
    line[22] = b'\r';
    line[23] = b'\n';
    let mut at = digits_before(&mut line, 22, n.unsigned_abs());
    if n < 0 {
        at -= 1;
        line[at] = b'-';
    }
    at -= 1;
    line[at] = prefix;
    out.extend_from_slice(&line[at..]);
}

/// The decimal digits of `v`, written into the end of `buf` (20 bytes hold any `u64`)
/// without allocating.
pub fn decimal_digits(v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let at = digits_before(buf, 20, v);
    &buf[at..]
}

/// Writes `v`'s decimal digits into `buf` ending just before `end` (which leaves room for
/// them: up to 20); returns where they start.
fn digits_before(buf: &mut [u8], end: usize, mut v: u64) -> usize {
    let mut at = end;
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return at;
        }
    }
}

/// A simple-string reply such as `+OK\r\n`.
pub fn simple(s: &str) -> Bytes {
    Bytes::from(format!("+{s}\r\n"))
}

/// An error reply; `msg` starts with the error code (`ERR ...`, `CROSSSLOT ...`). Line breaks in
/// the message are replaced so the frame stays valid.
pub fn error(msg: &str) -> Bytes {
    let clean: String = msg
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    Bytes::from(format!("-{clean}\r\n"))
}

/// A bulk-string reply.
pub fn bulk(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 16);
    put_bulk(&mut out, data);
    out.freeze()
}

/// An integer reply.
pub fn int(n: i64) -> Bytes {
    let mut out = BytesMut::with_capacity(24);
    put_int(&mut out, n);
    out.freeze()
}

/// The null bulk reply.
pub const NULL_BULK: &[u8] = b"$-1\r\n";

/// A reply frame that is not valid RESP; the backend connection must be dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadReply(pub String);

impl std::error::Error for BadReply {}

impl std::fmt::Display for BadReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed reply from backend: {}", self.0)
    }
}

/// Resumable reply-frame scanner. Feed it the same growing buffer until it reports a frame
/// length; [`ReplyScanner::next_frame`] then cuts the frame and resets the scanner.
#[derive(Debug, Default)]
pub struct ReplyScanner {
    /// Bytes of the current frame already scanned.
    pos: usize,
    /// Elements still to read (1 for the frame itself, plus array members).
    pending: u64,
}

/// The position of the `\r` ending the line that starts at `from`, once the byte after it has
/// arrived too; `None` until then.
pub fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    let cr = buf.get(from..)?.iter().position(|&b| b == b'\r')? + from;
    (cr + 1 < buf.len()).then_some(cr)
}

/// The usual length line, read in one pass: one to eighteen digits from `from`, then `\r`
/// with a byte after it. Returns the number and the position of the `\r`; `None` for
/// anything else (a sign, a stray byte, a line not complete yet), which the caller then reads
/// with [`line_end`] and [`parse_int`] for their exact answers.
pub fn digits_line(buf: &[u8], from: usize) -> Option<(i64, usize)> {
    let mut n: i64 = 0;
    for (i, &b) in buf.get(from..)?.iter().enumerate().take(19) {
        match b {
            b'0'..=b'9' => n = n * 10 + i64::from(b - b'0'),
            b'\r' if i > 0 && from + i + 1 < buf.len() => return Some((n, from + i)),
            _ => return None,
        }
    }
    None
}

/// The length of a bulk string or nil reply that lies whole at the front of `buf`, when its
/// length line is plain digits (or `-1`); `None` for anything else, which the general scan
/// then reads. Most replies to the data path are one of these.
fn whole_bulk(buf: &[u8]) -> Option<usize> {
    if buf.get(1..4) == Some(b"-1\r") && buf.len() >= 5 {
        return Some(5);
    }
    let (n, cr) = digits_line(buf, 1)?;
    let end = usize::try_from(n).ok()?.checked_add(cr + 4)?;
    (buf.len() >= end).then_some(end)
}

fn parse_len(s: &[u8]) -> Result<i64, BadReply> {
    parse_int(s).ok_or_else(|| BadReply(format!("bad length {:?}", String::from_utf8_lossy(s))))
}

impl ReplyScanner {
    /// If a complete frame starts at the front of `buf`, its length.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, BadReply> {
        if self.pending == 0 {
            if buf.first() == Some(&b'$') {
                if let Some(end) = whole_bulk(buf) {
                    self.pos = end;
                    return Ok(Some(end));
                }
            }
            self.pending = 1;
            self.pos = 0;
        }
        while self.pending > 0 {
            let Some(&kind) = buf.get(self.pos) else {
                return Ok(None);
            };
            let Some(cr) = line_end(buf, self.pos + 1) else {
                return Ok(None);
            };
            match kind {
                b'+' | b'-' | b':' | b',' | b'#' | b'_' | b'(' => {
                    self.pos = cr + 2;
                }
                b'$' | b'=' | b'!' => {
                    let n = parse_len(&buf[self.pos + 1..cr])?;
                    let end = if n < 0 {
                        cr + 2
                    } else {
                        usize::try_from(n)
                            .ok()
                            .and_then(|n| (cr + 4).checked_add(n))
                            .ok_or_else(|| BadReply(format!("bulk length {n} too large")))?
                    };
                    if buf.len() < end {
                        return Ok(None);
                    }
                    self.pos = end;
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let n = parse_len(&buf[self.pos + 1..cr])?;
                    // Maps and attributes count two frames per entry. Lengths are the node's
                    // to choose; saturating keeps a nonsense one from wrapping the count.
                    let frames = if kind == b'%' || kind == b'|' {
                        n.max(0).unsigned_abs().saturating_mul(2)
                    } else {
                        n.max(0).unsigned_abs()
                    };
                    self.pos = cr + 2;
                    self.pending = self.pending.saturating_add(frames);
                    if kind == b'|' {
                        // An attribute annotates the value that follows it and is not one
                        // itself: that value still has to be read as part of this frame, so
                        // the attribute travels with the reply it belongs to.
                        continue;
                    }
                }
                other => {
                    return Err(BadReply(format!(
                        "unexpected type byte {:?}",
                        char::from(other)
                    )))
                }
            }
            self.pending -= 1;
        }
        Ok(Some(self.pos))
    }

    /// Cuts the next complete frame off the front of `buf`.
    pub fn next_frame(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, BadReply> {
        match self.scan(buf)? {
            Some(n) => {
                self.pending = 0;
                Ok(Some(buf.split_to(n).freeze()))
            }
            None => Ok(None),
        }
    }
}

/// Request arguments from strings, for unit tests that build requests by hand.
/// `HELLO 3`, sent first on the connections of RESP3 clients.
pub const HELLO3: &[u8] = b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n";

/// Parses a decimal integer as Redis's string2ll does: optional '-', then digits only.
pub fn parse_int(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if neg { -n } else { n })
}

/// Encodes report lines as a RESP array of bulk strings (how redis-cli shows them best).
pub fn lines_reply(lines: &[String]) -> Bytes {
    let mut out = BytesMut::new();
    put_array_header(&mut out, lines.len());
    for l in lines {
        put_bulk(&mut out, l.as_bytes());
    }
    out.freeze()
}

#[cfg(test)]
pub(crate) fn test_args(a: &[&str]) -> Vec<Bytes> {
    a.iter()
        .map(|s| Bytes::copy_from_slice(s.as_bytes()))
        .collect()
}

/// RESP3's null.
pub const NULL3: &[u8] = b"_\r\n";

/// Rewrites a RESP2 reply the proxy merged for a RESP3 client: a null bulk string, alone or
/// as an element of a top-level array, becomes RESP3's `_`. Every other type the merges
/// produce (arrays, integers, bulk and simple strings, errors) reads the same in both.
pub fn resp3_nulls(frame: Bytes) -> Bytes {
    if &frame[..] == NULL_BULK {
        return Bytes::from_static(NULL3);
    }
    let Some(elements) = array_elements(&frame) else {
        return frame;
    };
    if !elements.iter().any(|e| &e[..] == NULL_BULK) {
        return frame;
    }
    let mut out = BytesMut::with_capacity(frame.len());
    put_array_header(&mut out, elements.len());
    for e in elements {
        if &e[..] == NULL_BULK {
            out.extend_from_slice(NULL3);
        } else {
            out.extend_from_slice(&e);
        }
    }
    out.freeze()
}

/// Whether a reply frame is an error reply.
pub fn is_error(frame: &[u8]) -> bool {
    frame.first() == Some(&b'-')
}

/// Splits a complete array frame into its element frames (each a zero-copy slice). Returns
/// `None` for a non-array frame or a null array.
pub fn array_elements(frame: &Bytes) -> Option<Vec<Bytes>> {
    if frame.first() != Some(&b'*') {
        return None;
    }
    let cr = line_end(frame, 1)?;
    let n = parse_len(&frame[1..cr]).ok()?;
    if n < 0 {
        return None;
    }
    // The count is the node's claim; the frame's size bounds the real one.
    let mut out = Vec::with_capacity((n as usize).min(frame.len() / 4));
    let mut pos = cr + 2;
    for _ in 0..n {
        let mut sc = ReplyScanner::default();
        let len = sc.scan(&frame[pos..]).ok()??;
        out.push(frame.slice(pos..pos + len));
        pos += len;
    }
    Some(out)
}

/// A fully decoded reply, for the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+...`
    Simple(String),
    /// `-...`
    Error(String),
    /// `:...`
    Int(i64),
    /// `$...`; `None` is the null bulk.
    Bulk(Option<Bytes>),
    /// `*...`; `None` is the null array.
    Array(Option<Vec<Value>>),
}

/// Deepest nesting [`Value::decode`] accepts. The control plane's replies nest a few levels
/// (CLUSTER SHARDS: four); a script can return far deeper ones, and decoding recurses, so the
/// bound keeps a hostile reply from exhausting the stack.
pub const MAX_DEPTH: usize = 64;

impl Value {
    /// Decodes one complete frame (as cut by [`ReplyScanner`]); nesting deeper than
    /// [`MAX_DEPTH`] is an error.
    pub fn decode(frame: &Bytes) -> Result<Value, BadReply> {
        let (v, _) = decode_at(frame, 0, 0)?;
        Ok(v)
    }

    /// The value as text: bulk and simple strings (and integers); errors become `Err`.
    pub fn text(&self) -> Result<String, NotText> {
        match self {
            Value::Simple(s) => Ok(s.clone()),
            Value::Bulk(Some(b)) => Ok(String::from_utf8_lossy(b).into_owned()),
            Value::Bulk(None) => Ok(String::new()),
            Value::Int(n) => Ok(n.to_string()),
            Value::Error(e) => Err(NotText::Error(e.clone())),
            Value::Array(_) => Err(NotText::Array),
        }
    }
}

/// Why a control-plane reply is not the text [`Value::text`] wanted. `Display` is the text the
/// callers put after the node's address: the node's own error as it came, or what arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotText {
    /// The node answered with an error (its text, without the `-`).
    Error(String),
    /// The node answered with an array.
    Array,
}

impl std::fmt::Display for NotText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotText::Error(e) => f.write_str(e),
            NotText::Array => f.write_str("expected a string reply, got an array"),
        }
    }
}

impl std::error::Error for NotText {}

fn decode_at(buf: &Bytes, pos: usize, depth: usize) -> Result<(Value, usize), BadReply> {
    let short = || BadReply("truncated frame".into());
    if depth > MAX_DEPTH {
        return Err(BadReply(format!("nested deeper than {MAX_DEPTH} levels")));
    }
    let kind = *buf.get(pos).ok_or_else(short)?;
    let cr = line_end(buf, pos + 1).ok_or_else(short)?;
    let line = &buf[pos + 1..cr];
    let next = cr + 2;
    Ok(match kind {
        b'+' => (
            Value::Simple(String::from_utf8_lossy(line).into_owned()),
            next,
        ),
        b'-' => (
            Value::Error(String::from_utf8_lossy(line).into_owned()),
            next,
        ),
        b':' => (Value::Int(parse_len(line)?), next),
        b'$' => {
            let n = parse_len(line)?;
            if n < 0 {
                (Value::Bulk(None), next)
            } else {
                let end = usize::try_from(n)
                    .ok()
                    .and_then(|n| next.checked_add(n))
                    .filter(|end| end.checked_add(2).is_some_and(|e| e <= buf.len()))
                    .ok_or_else(short)?;
                (Value::Bulk(Some(buf.slice(next..end))), end + 2)
            }
        }
        b'*' => {
            let n = parse_len(line)?;
            if n < 0 {
                (Value::Array(None), next)
            } else {
                let mut items = Vec::with_capacity(n.min(1024) as usize);
                let mut p = next;
                for _ in 0..n {
                    let (v, np) = decode_at(buf, p, depth + 1)?;
                    items.push(v);
                    p = np;
                }
                (Value::Array(Some(items)), p)
            }
        }
        other => {
            return Err(BadReply(format!(
                "unexpected type byte {:?}",
                char::from(other)
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_integers_encode_every_width_and_sign() {
        for n in [0i64, 7, 10, 99, 100, 12345, -1, -10, i64::MAX, i64::MIN] {
            let mut out = BytesMut::new();
            put_int(&mut out, n);
            assert_eq!(&out[..], format!(":{n}\r\n").as_bytes());
        }
        let mut out = BytesMut::new();
        put_array_header(&mut out, 3);
        put_bulk(&mut out, b"");
        put_bulk(&mut out, &[b'x'; 10]);
        assert_eq!(&out[..], b"*3\r\n$0\r\n\r\n$10\r\nxxxxxxxxxx\r\n");
    }

    /// The frames of `stream` when it arrives in two reads, cut at `cut`.
    fn scan_cut_at(stream: &[u8], cut: usize) -> Vec<Bytes> {
        let mut buf = BytesMut::new();
        let mut sc = ReplyScanner::default();
        let mut frames = Vec::new();
        for chunk in [&stream[..cut], &stream[cut..]] {
            buf.extend_from_slice(chunk);
            while let Some(f) = sc.next_frame(&mut buf).unwrap() {
                frames.push(f);
            }
        }
        frames
    }

    #[test]
    fn scanner_finds_frames_across_splits() {
        let stream: &[u8] = b"+OK\r\n$3\r\nfoo\r\n*3\r\n:1\r\n$-1\r\n*1\r\n-ERR x\r\n$0\r\n\r\n";
        for cut in 0..stream.len() {
            let frames = scan_cut_at(stream, cut);
            assert_eq!(frames.len(), 4, "cut at {cut}");
            assert_eq!(&frames[2][..], b"*3\r\n:1\r\n$-1\r\n*1\r\n-ERR x\r\n");
        }
        // Bulk strings and nils, which the scanner reads at once when they are whole.
        let stream: &[u8] =
            b"$-1\r\n$3\r\nfoo\r\n$12\r\n$3\r\nfoo\r\n\r\nx\r\n$-1\r\n$0\r\n\r\n$-2\r\n";
        let want: [&[u8]; 6] = [
            b"$-1\r\n",
            b"$3\r\nfoo\r\n",
            b"$12\r\n$3\r\nfoo\r\n\r\nx\r\n",
            b"$-1\r\n",
            b"$0\r\n\r\n",
            b"$-2\r\n",
        ];
        for cut in 0..stream.len() {
            let frames = scan_cut_at(stream, cut);
            let got: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
            assert_eq!(got, want, "cut at {cut}");
        }
    }

    #[test]
    fn array_elements_and_decode() {
        let f = Bytes::from_static(b"*3\r\n$1\r\na\r\n$-1\r\n*2\r\n:1\r\n:2\r\n");
        let els = array_elements(&f).unwrap();
        assert_eq!(els.len(), 3);
        assert_eq!(&els[1][..], NULL_BULK);
        assert_eq!(
            Value::decode(&f).unwrap(),
            Value::Array(Some(vec![
                Value::Bulk(Some(Bytes::from_static(b"a"))),
                Value::Bulk(None),
                Value::Array(Some(vec![Value::Int(1), Value::Int(2)])),
            ]))
        );
    }

    #[test]
    fn attributes_travel_with_their_reply() {
        // RESP3 attribute frames annotate the next value: a top-level one, one inside an
        // array, and the same cut at every byte. Each stream is two replies.
        let stream: &[u8] = b"|1\r\n+key\r\n+val\r\n:42\r\n*2\r\n|1\r\n+a\r\n:1\r\n+x\r\n+y\r\n";
        for cut in 0..stream.len() {
            let frames = scan_cut_at(stream, cut);
            assert_eq!(frames.len(), 2, "cut at {cut}");
            assert_eq!(&frames[0][..], b"|1\r\n+key\r\n+val\r\n:42\r\n");
            assert_eq!(&frames[1][..], b"*2\r\n|1\r\n+a\r\n:1\r\n+x\r\n+y\r\n");
        }
    }

    #[test]
    fn hostile_lengths_and_depths_are_errors_not_panics() {
        let mut sc = ReplyScanner::default();
        assert!(sc.scan(b"$9223372036854775807\r\n").unwrap().is_none());
        let mut sc = ReplyScanner::default();
        assert!(sc.scan(b"%9223372036854775807\r\n").unwrap().is_none());
        // Lengths the one-pass reading of a whole bulk meets first: the largest it reads
        // waits for its bytes, longer ones and other negatives get the general scan's answer.
        let mut sc = ReplyScanner::default();
        assert!(sc.scan(b"$999999999999999999\r\nab\r\n").unwrap().is_none());
        let mut sc = ReplyScanner::default();
        assert!(sc.scan(b"$00000000000000000003\r\nabc\r\n").is_err());
        let mut sc = ReplyScanner::default();
        assert_eq!(sc.scan(b"$-10\r\n").unwrap(), Some(6));
        let mut sc = ReplyScanner::default();
        assert!(sc.scan(b"$-1\r").unwrap().is_none());
        // Deep nesting: the scanner is iterative and finds the frame; decoding refuses it.
        let depth = 100_000;
        let mut deep = b"*1\r\n".repeat(depth);
        deep.extend_from_slice(b":1\r\n");
        let mut sc = ReplyScanner::default();
        assert_eq!(sc.scan(&deep).unwrap(), Some(deep.len()));
        let err = Value::decode(&Bytes::from(deep)).unwrap_err();
        assert!(err.0.contains("nested deeper"), "{err}");
        let mut ok = b"*1\r\n".repeat(MAX_DEPTH);
        ok.extend_from_slice(b":1\r\n");
        assert!(Value::decode(&Bytes::from(ok)).is_ok());
        assert!(Value::decode(&Bytes::from_static(b"$9223372036854775807\r\nab\r\n")).is_err());
        assert!(array_elements(&Bytes::from_static(b"*9223372036854775807\r\n")).is_none());
    }

    #[test]
    fn bad_type_byte_is_an_error() {
        let mut sc = ReplyScanner::default();
        assert!(sc.scan(b"?x\r\n").is_err());
    }

    #[test]
    fn encoding() {
        assert_eq!(
            &encode_command(&["GET", "k"])[..],
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
        );
        assert_eq!(&error("ERR a\nb")[..], b"-ERR a b\r\n");
        assert_eq!(&int(-3)[..], b":-3\r\n");
    }
}
