//! The option words the admin engines share: `JSON`, `DRYRUN`, `ASYNC`, `TIMEOUT <seconds>` and
//! `HOST <addr> <label>`.
//!
//! One parser reads them for every engine, so they mean the same everywhere; each engine says
//! which of them it takes ([`Accepts`]) and keeps its own words (`REPLICAS`, `TOLERANCE`, ...)
//! and its own wording of errors. The engine walks its argument list and offers each word to
//! [`CommonOptions::take`] first: a shared word is consumed with its values, any other word is
//! left to the engine. Words are read in order, so the first bad word is the one reported,
//! whichever parser it belongs to.

use super::survey::HostLabels;
use std::time::Duration;

/// The shared options of one command, as parsed so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommonOptions {
    /// `JSON`: reply with one JSON document instead of lines.
    pub json: bool,
    /// `DRYRUN`: print the plan, change nothing.
    pub dryrun: bool,
    /// `ASYNC`: reply `OK job <id>` at once and run in the background.
    pub detach: bool,
    /// `TIMEOUT <seconds>`, if given (each engine has its own default and meaning).
    pub timeout: Option<Duration>,
    /// `HOST <addr> <label>` pairs: the operator's failure-domain labels.
    pub hosts: HostLabels,
}

/// The form of the address in `HOST <addr> <label>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostAddr {
    /// Only `ip:port` (a label for one node).
    IpPort,
    /// `ip` (every node on that IP) or `ip:port`; no check is made.
    IpOrIpPort,
}

/// Which shared words an engine takes; a word it does not take is left to the engine's own
/// parser (usually to be refused as unknown there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepts {
    /// `JSON`.
    pub json: bool,
    /// `DRYRUN`.
    pub dryrun: bool,
    /// `ASYNC`.
    pub detach: bool,
    /// `TIMEOUT <seconds>`, with the smallest value allowed; `None` if not taken.
    pub timeout_min_secs: Option<u64>,
    /// `HOST <addr> <label>`, with the address form; `None` if not taken.
    pub host: Option<HostAddr>,
}

/// Why a shared word could not be read. The engine turns it into its own error text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptionError {
    /// The word (upper-cased) needs more values than the list has left.
    Missing(String),
    /// `TIMEOUT`'s value is not a whole, non-negative number of seconds.
    NotSeconds,
    /// `TIMEOUT`'s value is below the engine's minimum (given).
    TooShort(u64),
    /// `HOST`'s address (given) has no port, and the engine wants `ip:port`.
    HostWithoutPort(String),
}

impl CommonOptions {
    /// If `words[i]` (any case) is a shared word that `accepts` takes, records it and its
    /// values and returns how many words it used; `Ok(None)` leaves the word to the engine.
    /// Nothing is recorded when an error is returned.
    pub fn take(
        &mut self,
        accepts: &Accepts,
        words: &[String],
        i: usize,
    ) -> Result<Option<usize>, OptionError> {
        let Some(word) = words.get(i) else {
            return Ok(None);
        };
        let word = word.to_ascii_uppercase();
        match word.as_str() {
            "JSON" if accepts.json => {
                self.json = true;
                Ok(Some(1))
            }
            "DRYRUN" if accepts.dryrun => {
                self.dryrun = true;
                Ok(Some(1))
            }
            "ASYNC" if accepts.detach => {
                self.detach = true;
                Ok(Some(1))
            }
            "TIMEOUT" => {
                let Some(min) = accepts.timeout_min_secs else {
                    return Ok(None);
                };
                let value = words.get(i + 1).ok_or(OptionError::Missing(word))?;
                let secs: u64 = value.parse().map_err(|_| OptionError::NotSeconds)?;
                if secs < min {
                    return Err(OptionError::TooShort(min));
                }
                self.timeout = Some(Duration::from_secs(secs));
                Ok(Some(2))
            }
            "HOST" => {
                let Some(form) = accepts.host else {
                    return Ok(None);
                };
                let (Some(addr), Some(label)) = (words.get(i + 1), words.get(i + 2)) else {
                    return Err(OptionError::Missing(word));
                };
                if form == HostAddr::IpPort && !addr.contains(':') {
                    return Err(OptionError::HostWithoutPort(addr.clone()));
                }
                self.hosts.labels.insert(addr.clone(), label.clone());
                Ok(Some(3))
            }
            _ => Ok(None),
        }
    }
}

/// The arguments as text (lossy UTF-8), as every engine's parser reads them.
pub fn words(args: &[bytes::Bytes]) -> Vec<String> {
    args.iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Accepts = Accepts {
        json: true,
        dryrun: true,
        detach: true,
        timeout_min_secs: Some(1),
        host: Some(HostAddr::IpPort),
    };

    fn w(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    /// Offers every word in turn; returns the options and the words left to the engine.
    fn parse(accepts: &Accepts, s: &str) -> Result<(CommonOptions, Vec<String>), OptionError> {
        let words = w(s);
        let mut o = CommonOptions::default();
        let (mut i, mut rest) = (0, Vec::new());
        while i < words.len() {
            match o.take(accepts, &words, i)? {
                Some(n) => i += n,
                None => {
                    rest.push(words[i].clone());
                    i += 1;
                }
            }
        }
        Ok((o, rest))
    }

    #[test]
    fn shared_words_are_taken_and_the_rest_left() {
        let (o, rest) = parse(
            &ALL,
            "json X dryrun async TIMEOUT 5 host 10.0.0.1:7000 rack Y",
        )
        .expect("ok");
        assert!(o.json && o.dryrun && o.detach);
        assert_eq!(o.timeout, Some(Duration::from_secs(5)));
        assert_eq!(o.hosts.host_of("10.0.0.1:7000"), "rack");
        assert_eq!(rest, w("X Y"));
        let none = Accepts {
            json: false,
            dryrun: false,
            detach: false,
            timeout_min_secs: None,
            host: None,
        };
        let (o, rest) = parse(&none, "JSON DRYRUN ASYNC TIMEOUT HOST").expect("ok");
        assert_eq!(o, CommonOptions::default());
        assert_eq!(rest.len(), 5);
    }

    #[test]
    fn bad_values_are_reported() {
        assert_eq!(
            parse(&ALL, "TIMEOUT"),
            Err(OptionError::Missing("TIMEOUT".into()))
        );
        assert_eq!(parse(&ALL, "TIMEOUT x"), Err(OptionError::NotSeconds));
        assert_eq!(parse(&ALL, "TIMEOUT 0"), Err(OptionError::TooShort(1)));
        assert_eq!(
            parse(&ALL, "HOST 10.0.0.1:7000"),
            Err(OptionError::Missing("HOST".into()))
        );
        assert_eq!(
            parse(&ALL, "HOST 10.0.0.1 rack"),
            Err(OptionError::HostWithoutPort("10.0.0.1".into()))
        );
        let ip = Accepts {
            host: Some(HostAddr::IpOrIpPort),
            timeout_min_secs: Some(0),
            ..ALL
        };
        let (o, _) = parse(&ip, "HOST 10.0.0.1 rack TIMEOUT 0").expect("ok");
        assert_eq!(
            o.hosts.labels.get("10.0.0.1").map(String::as_str),
            Some("rack")
        );
        assert_eq!(o.timeout, Some(Duration::ZERO));
    }
}
