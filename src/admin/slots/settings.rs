//! The mover's terms: which masters (by ID and address, from the survey), how keys travel
//! (batch size, pipeline depth, MIGRATE's timeout, the slot's deadline) and with which login.

use bytes::Bytes;
use std::time::Duration;

/// Default keys per `MIGRATE`.
pub const DEFAULT_BATCH: usize = 100;
/// Default `MIGRATE` commands in flight on the source.
pub const DEFAULT_PIPELINE: usize = 4;
/// Default `MIGRATE` timeout (ms): the node's own I/O timeout for each step of the transfer.
pub const DEFAULT_MIGRATE_TIMEOUT_MS: u64 = 10_000;
/// Default slots moved at once. A slot with few keys costs a few round trips that wait on
/// each other; moving several slots at once overlaps those waits (each on its own
/// connections; a slot is only ever moved by one of them).
pub const DEFAULT_PARALLEL: usize = 8;
/// Default deadline for one slot's move.
pub const DEFAULT_SLOT_TIMEOUT: Duration = Duration::from_secs(300);

/// A master by ID and address (both from the survey, never from a reply).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRef {
    /// Node ID.
    pub id: String,
    /// `ip:port`.
    pub addr: String,
}

/// The credentials `MIGRATE` passes on to the target: the proxy's own backend login.
#[derive(Clone, PartialEq, Eq)]
pub enum MigrateAuth {
    /// No password configured.
    None,
    /// `AUTH <password>` (no `backend_user`).
    Password(String),
    /// `AUTH2 <user> <password>`.
    User(String, String),
}

impl std::fmt::Debug for MigrateAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        match self {
            MigrateAuth::None => f.write_str("None"),
            MigrateAuth::Password(_) => f.write_str("Password(..)"),
            MigrateAuth::User(u, _) => write!(f, "User({u:?}, ..)"),
        }
    }
}

impl MigrateAuth {
    /// From the settings `backend_user` / `backend_password`.
    pub fn from_settings(user: &str, password: &str) -> MigrateAuth {
        match (user.is_empty(), password.is_empty()) {
            (_, true) => MigrateAuth::None,
            (true, false) => MigrateAuth::Password(password.to_string()),
            (false, false) => MigrateAuth::User(user.to_string(), password.to_string()),
        }
    }

    /// The words MIGRATE carries for this login (none, `AUTH pw` or `AUTH2 user pw`).
    pub fn args(&self) -> Vec<Bytes> {
        match self {
            MigrateAuth::None => Vec::new(),
            MigrateAuth::Password(p) => vec![Bytes::from_static(b"AUTH"), Bytes::from(p.clone())],
            MigrateAuth::User(u, p) => vec![
                Bytes::from_static(b"AUTH2"),
                Bytes::from(u.clone()),
                Bytes::from(p.clone()),
            ],
        }
    }
}

/// How keys are moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoveSettings {
    /// Keys per `MIGRATE`.
    pub batch: usize,
    /// `MIGRATE` commands sent at once.
    pub pipeline: usize,
    /// `MIGRATE`'s timeout argument (ms).
    pub migrate_timeout_ms: u64,
    /// Deadline of one slot's move.
    pub slot_timeout: Duration,
    /// Slots moved at once.
    pub parallel: usize,
    /// Credentials for the target.
    pub auth: MigrateAuth,
}

impl Default for MoveSettings {
    fn default() -> Self {
        MoveSettings {
            batch: DEFAULT_BATCH,
            pipeline: DEFAULT_PIPELINE,
            migrate_timeout_ms: DEFAULT_MIGRATE_TIMEOUT_MS,
            slot_timeout: DEFAULT_SLOT_TIMEOUT,
            parallel: DEFAULT_PARALLEL,
            auth: MigrateAuth::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_words_and_printing() {
        assert!(MigrateAuth::from_settings("", "").args().is_empty());
        assert_eq!(
            MigrateAuth::from_settings("", "pw").args(),
            vec![Bytes::from("AUTH"), Bytes::from("pw")]
        );
        assert_eq!(
            MigrateAuth::from_settings("proxy", "pw").args(),
            vec![
                Bytes::from("AUTH2"),
                Bytes::from("proxy"),
                Bytes::from("pw")
            ]
        );
        assert!(
            !format!("{:?}", MigrateAuth::User("u".into(), "secret".into())).contains("secret")
        );
    }
}
