//! What an admin engine hands back: one [`Report`], rendered as the lines reply (and the job's
//! stored report) by [`Report::lines_reply`], and as one JSON document by [`Json::render`]
//! when the command asked for `JSON`. An engine builds its report once; choosing between the
//! two forms, and writing either, happens only here and in [`crate::admin::jobs::run`], so a
//! new engine (slot moves next) produces a report and gets both forms and `PROXY JOB` for free.

use bytes::Bytes;
use std::fmt::Write;

/// A JSON value. Objects keep their keys in the order the engine gave them (clients and tests
/// read the documents as written), and numbers are the counts the engines report, never
/// negative.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Json {
    /// A string, escaped on rendering.
    Str(String),
    /// A count.
    Num(u64),
    /// `true` / `false`.
    Bool(bool),
    /// An array.
    List(Vec<Json>),
    /// An object, keys in order.
    Object(Vec<(&'static str, Json)>),
}

impl Json {
    /// A string value.
    pub fn str(s: impl Into<String>) -> Json {
        Json::Str(s.into())
    }

    /// A count (`usize` everywhere in the engines).
    pub fn num(n: usize) -> Json {
        Json::Num(n as u64)
    }

    /// An array of strings.
    pub fn strs<S: AsRef<str>>(v: &[S]) -> Json {
        Json::List(v.iter().map(|s| Json::str(s.as_ref())).collect())
    }

    /// An array of counts.
    pub fn nums(v: &[usize]) -> Json {
        Json::List(v.iter().map(|&n| Json::num(n)).collect())
    }

    /// The compact text (no spaces), as every `JSON` reply is written.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Json::Str(s) => out.push_str(&json_str(s)),
            Json::Num(n) => {
                let _ = write!(out, "{n}");
            }
            Json::Bool(b) => {
                let _ = write!(out, "{b}");
            }
            Json::List(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Json::Object(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&json_str(k));
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// A JSON string literal (the admin engines' JSON reports are small and flat, so they are
/// written by [`Json::render`] rather than through a serializer crate).
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One engine run's result. Invariant: `lines` is never empty, and its first line is the
/// verdict (`OK ...`, `ERRORS n WARNINGS m`, `NOTHING TO DO ...`), which `PROXY JOBS` shows;
/// `json`, when the engine has a JSON form, holds the same content as one document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    lines: Vec<String>,
    json: Option<Json>,
}

impl Report {
    /// A report of lines only; an empty list becomes `OK`, so the verdict is always there.
    pub fn lines(lines: Vec<String>) -> Report {
        let lines = if lines.is_empty() {
            vec!["OK".to_string()]
        } else {
            lines
        };
        Report { lines, json: None }
    }

    /// The same report with its JSON form.
    pub fn with_json(mut self, json: Json) -> Report {
        self.json = Some(json);
        self
    }

    /// The verdict line.
    pub fn verdict(&self) -> &str {
        self.lines.first().map_or("OK", String::as_str)
    }

    /// The lines, verdict first.
    pub fn text(&self) -> &[String] {
        &self.lines
    }

    /// The JSON document, if the engine has a JSON form.
    pub fn json(&self) -> Option<&Json> {
        self.json.as_ref()
    }

    /// The reply: the JSON document as one bulk string when `json` was asked for and the
    /// engine has a JSON form, else the lines.
    pub fn reply(&self, json: bool) -> Bytes {
        match (&self.json, json) {
            (Some(doc), true) => crate::route::resp::bulk(doc.render().as_bytes()),
            _ => self.lines_reply(),
        }
    }

    /// The lines reply (an array of status lines, as redis-cli prints them).
    pub fn lines_reply(&self) -> Bytes {
        crate::route::resp::lines_reply(&self.lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_compact_json_in_key_order() {
        let doc = Json::Object(vec![
            ("z", Json::num(1)),
            ("a", Json::strs(&["x\"y"])),
            ("b", Json::Bool(false)),
            ("c", Json::List(Vec::new())),
            ("d", Json::Object(Vec::new())),
        ]);
        assert_eq!(
            doc.render(),
            r#"{"z":1,"a":["x\"y"],"b":false,"c":[],"d":{}}"#
        );
        let r = Report::lines(Vec::new());
        assert_eq!(r.verdict(), "OK");
        assert_eq!(r.reply(true), r.lines_reply());
        let r = Report::lines(vec!["OK".into()]).with_json(doc);
        assert_eq!(&r.reply(true)[..1], b"$");
    }
}
