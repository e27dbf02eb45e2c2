//! Which user a connection is logged in as when it starts, and again after RESET (which
//! returns a connection to the state of a fresh one, as in Redis).

use super::Session;
use std::sync::atomic::Ordering::Relaxed;

impl Session {
    /// The login a fresh connection gets: the user a verified client certificate names, or
    /// else the `default` user if it has an empty password (Redis's `nopass` default), or
    /// none (every request but AUTH/HELLO AUTH gets NOAUTH). Only with users configured.
    pub(super) fn initial_login(&self) -> Option<crate::access::Session> {
        let users = &self.worker.shared.users;
        let by_cert = if self.stream.is_tls() && users.use_certificates() {
            users.by_certificate(&self.stream.peer_certificate_names())
        } else {
            None
        };
        match by_cert {
            Some(u) => match u.open_session() {
                Ok(session) => Some(session),
                Err(e) => {
                    self.worker
                        .shared
                        .auth_guard
                        .user_limited
                        .fetch_add(1, Relaxed);
                    tracing::info!(client = self.client.id, user = %u.name, "certificate login refused: {e}");
                    None
                }
            },
            None => users
                .authenticate(b"default", b"")
                .and_then(|u| u.open_session().ok()),
        }
    }

    /// RESET's part in access control: back to a fresh connection's login (the current
    /// one is released first, so it does not count against the user's max_connections).
    pub(super) fn reset_login(&mut self) {
        if self.acl {
            self.client.user = None;
            self.client.user = self.initial_login();
        }
    }
}
