//! Node settings the proxy answers for itself: `slowlog-log-slower-than` and `slowlog-max-len`
//! shape the slow log, and SLOWLOG is the proxy's own. `CONFIG SET` of them changes the proxy's
//! `slowlog_threshold` / `slowlog_max_len` as well as every node's, and `CONFIG GET` shows the
//! proxy's values for them.
//!
//! Pure: from a request's arguments to the proxy settings it changes ([`proxy_pairs`]), and
//! from a node's `CONFIG GET` reply to the one the client gets ([`overlay`]). Invariants: a
//! value the proxy cannot take is refused with Redis's own error text where Redis has one,
//! before anything is sent; the values CONFIG GET shows read back through CONFIG SET as the
//! same settings.

use crate::config::Config;
use crate::route::resp;
use bytes::{Bytes, BytesMut};

/// A node setting with a counterpart in the proxy's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owned {
    /// `slowlog-log-slower-than` (microseconds; negative: log nothing) and `slowlog_threshold`.
    SlowerThan,
    /// `slowlog-max-len` and `slowlog_max_len`.
    MaxLen,
}

/// Longest threshold the proxy takes, in microseconds (its settings' one-week bound).
const MAX_THRESHOLD_US: i64 = 7 * 24 * 3600 * 1_000_000;

impl Owned {
    /// The setting Redis calls `name` (any case), if the proxy owns a counterpart.
    pub fn from_name(name: &[u8]) -> Option<Owned> {
        if name.eq_ignore_ascii_case(b"slowlog-log-slower-than") {
            Some(Owned::SlowerThan)
        } else if name.eq_ignore_ascii_case(b"slowlog-max-len") {
            Some(Owned::MaxLen)
        } else {
            None
        }
    }

    /// Redis's name.
    pub fn redis_name(self) -> &'static str {
        match self {
            Owned::SlowerThan => "slowlog-log-slower-than",
            Owned::MaxLen => "slowlog-max-len",
        }
    }

    /// The proxy's setting.
    pub fn proxy_name(self) -> &'static str {
        match self {
            Owned::SlowerThan => "slowlog_threshold",
            Owned::MaxLen => "slowlog_max_len",
        }
    }

    /// The proxy setting's text (as `PROXY CONFIG SET` takes it) for the Redis value `value`,
    /// or the error the client gets.
    pub fn to_proxy(self, value: &[u8]) -> Result<String, String> {
        let name = self.redis_name();
        let failed = |why: &str| {
            format!("ERR CONFIG SET failed (possibly related to argument '{name}') - {why}")
        };
        let n = resp::parse_int(value)
            .ok_or_else(|| failed("argument couldn't be parsed into an integer"))?;
        match self {
            Owned::SlowerThan if n < -1 => Err(failed(
                "argument must be between -1 and 9223372036854775807 inclusive",
            )),
            Owned::SlowerThan if n < 0 => Ok(crate::config::THRESHOLD_OFF.to_string()),
            Owned::SlowerThan if n > MAX_THRESHOLD_US => Err(failed(&format!(
                "slotproxy's slow log takes at most {MAX_THRESHOLD_US} microseconds (one week); -1 turns it off"
            ))),
            Owned::SlowerThan => Ok(format!("{n}us")),
            Owned::MaxLen if n < 0 => Err(failed(
                "argument must be between 0 and 9223372036854775807 inclusive",
            )),
            Owned::MaxLen => Ok(n.to_string()),
        }
    }

    /// The value Redis would show for the proxy's settings in `cfg`.
    pub fn shown(self, cfg: &Config) -> String {
        match self {
            Owned::SlowerThan => cfg
                .slowlog_threshold
                .map_or_else(|| "-1".to_string(), |d| d.as_micros().to_string()),
            Owned::MaxLen => cfg.slowlog_max_len.to_string(),
        }
    }
}

/// The proxy settings a `CONFIG SET name value [name value ...]` request changes, as (proxy
/// setting, value) pairs; empty when it names none of them. An odd argument count is left to
/// the nodes to refuse (nothing is applied to the proxy then). `args` is the whole request.
pub fn proxy_pairs(args: &[Bytes]) -> Result<Vec<(&'static str, String)>, String> {
    let mut out = Vec::new();
    if args.len() < 4 || !args.len().is_multiple_of(2) {
        return Ok(out);
    }
    for pair in args[2..].chunks(2) {
        if let Some(owned) = Owned::from_name(&pair[0]) {
            out.push((owned.proxy_name(), owned.to_proxy(&pair[1])?));
        }
    }
    Ok(out)
}

/// The client's `CONFIG GET` reply from a node's (RESP2, `[name, value, ...]`): the values of
/// the settings the proxy owns are the proxy's; a RESP3 client gets a map, as from Redis. A
/// reply that is not such an array (an error) is passed on unchanged.
pub fn overlay(reply: &Bytes, cfg: &Config, resp3: bool) -> Bytes {
    let Some(items) = resp::array_elements(reply) else {
        return reply.clone();
    };
    if !items.len().is_multiple_of(2) {
        return reply.clone();
    }
    let mut out = BytesMut::with_capacity(reply.len() + 32);
    if resp3 {
        out.extend_from_slice(format!("%{}\r\n", items.len() / 2).as_bytes());
    } else {
        resp::put_array_header(&mut out, items.len());
    }
    for pair in items.chunks(2) {
        out.extend_from_slice(&pair[0]);
        let owned = match resp::Value::decode(&pair[0]) {
            Ok(resp::Value::Bulk(Some(name))) => Owned::from_name(&name),
            _ => None,
        };
        match owned {
            Some(o) => resp::put_bulk(&mut out, o.shown(cfg).as_bytes()),
            None => out.extend_from_slice(&pair[1]),
        }
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::resp::test_args as args;
    use std::time::Duration;

    #[test]
    fn redis_values_become_proxy_settings() {
        let t = Owned::SlowerThan;
        assert_eq!(t.to_proxy(b"0").as_deref(), Ok("0us"));
        assert_eq!(t.to_proxy(b"2500").as_deref(), Ok("2500us"));
        assert_eq!(t.to_proxy(b"-1").as_deref(), Ok("off"));
        assert_eq!(
            t.to_proxy(b"-2").unwrap_err(),
            "ERR CONFIG SET failed (possibly related to argument 'slowlog-log-slower-than') - argument must be between -1 and 9223372036854775807 inclusive"
        );
        assert_eq!(
            t.to_proxy(b"+5").unwrap_err(),
            "ERR CONFIG SET failed (possibly related to argument 'slowlog-log-slower-than') - argument couldn't be parsed into an integer"
        );
        assert!(t
            .to_proxy(b"604800000001")
            .unwrap_err()
            .contains("at most 604800000000 microseconds"));
        assert_eq!(t.to_proxy(b"604800000000").as_deref(), Ok("604800000000us"));
        let m = Owned::MaxLen;
        assert_eq!(m.to_proxy(b"0").as_deref(), Ok("0"));
        assert_eq!(m.to_proxy(b"7").as_deref(), Ok("7"));
        assert_eq!(
            m.to_proxy(b"-1").unwrap_err(),
            "ERR CONFIG SET failed (possibly related to argument 'slowlog-max-len') - argument must be between 0 and 9223372036854775807 inclusive"
        );
        assert!(m.to_proxy(b"abc").unwrap_err().contains("parsed"));
    }

    #[test]
    fn the_values_shown_read_back_as_the_same_settings() {
        for v in ["0", "-1", "10000", "604800000000"] {
            let text = Owned::SlowerThan.to_proxy(v.as_bytes()).unwrap();
            let cfg = Config::default().with("slowlog_threshold", &text).unwrap();
            assert_eq!(Owned::SlowerThan.shown(&cfg), v);
        }
        let cfg = Config::default();
        assert_eq!(Owned::SlowerThan.shown(&cfg), "10000");
        assert_eq!(Owned::MaxLen.shown(&cfg), "128");
        let cfg = Config {
            slowlog_threshold: Some(Duration::from_millis(3)),
            ..Config::default()
        };
        assert_eq!(Owned::SlowerThan.shown(&cfg), "3000");
    }

    #[test]
    fn a_config_set_names_the_proxy_settings_it_changes() {
        assert_eq!(
            proxy_pairs(&args(&["CONFIG", "SET", "maxmemory", "0"])),
            Ok(vec![])
        );
        assert_eq!(
            proxy_pairs(&args(&[
                "config",
                "set",
                "SLOWLOG-LOG-SLOWER-THAN",
                "0",
                "hz",
                "10",
                "slowlog-max-len",
                "5"
            ])),
            Ok(vec![
                ("slowlog_threshold", "0us".to_string()),
                ("slowlog_max_len", "5".to_string())
            ])
        );
        assert!(proxy_pairs(&args(&["CONFIG", "SET", "slowlog-max-len", "x"])).is_err());
        // An odd count is the nodes' syntax error; the proxy changes nothing.
        assert_eq!(
            proxy_pairs(&args(&["CONFIG", "SET", "slowlog-max-len", "1", "hz"])),
            Ok(vec![])
        );
    }

    #[test]
    fn config_get_shows_the_proxy_s_values() {
        let cfg = Config {
            slowlog_threshold: None,
            slowlog_max_len: 7,
            ..Config::default()
        };
        let node = resp::encode_command(&[
            "slowlog-max-len",
            "128",
            "maxmemory",
            "0",
            "slowlog-log-slower-than",
            "10000",
        ])
        .freeze();
        let want = resp::encode_command(&[
            "slowlog-max-len",
            "7",
            "maxmemory",
            "0",
            "slowlog-log-slower-than",
            "-1",
        ]);
        assert_eq!(overlay(&node, &cfg, false), want.freeze());
        let map = overlay(&node, &cfg, true);
        assert!(map.starts_with(b"%3\r\n$15\r\nslowlog-max-len\r\n$1\r\n7\r\n"));
        let empty = Bytes::from_static(b"*0\r\n");
        assert_eq!(overlay(&empty, &cfg, false), empty);
        assert_eq!(&overlay(&empty, &cfg, true)[..], b"%0\r\n");
        let err = resp::error("ERR nope");
        assert_eq!(overlay(&err, &cfg, true), err);
    }
}
