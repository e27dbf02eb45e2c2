//! Which user a connection is logged in as when it starts, and again after RESET (which
//! returns a connection to the state of a fresh one, as in Redis), and what a logged-in user
//! may run: every request is checked here before it is dispatched.

use super::Session;
use crate::route::resp;
use crate::route::router::{Local, Route};
use bytes::Bytes;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

impl Session {
    /// The login a fresh connection gets: the user a verified client certificate names, or
    /// else the `default` user if it has an empty password (Redis's `nopass` default), or
    /// none (every request but AUTH/HELLO AUTH gets NOAUTH). Only with users configured.
    pub(super) fn initial_login(&self) -> Option<crate::access::Session> {
        let users = &self.worker.shared.registries.users;
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
                        .registries
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

    /// Access control: the route, or an error reply in its place when the client is not
    /// authenticated or its user may not run this request (level, or a key outside its
    /// namespaces; every key is checked, before any split).
    pub(super) fn authorize(
        &mut self,
        route: Route,
        spec: Option<&'static crate::route::command::CommandSpec>,
        args: &[Bytes],
        keys: &mut Vec<usize>,
    ) -> Route {
        match route {
            Route::Reply(_)
            | Route::Local(Local::Auth)
            | Route::Local(Local::Hello)
            | Route::Local(Local::Quit)
            | Route::Local(Local::Reset) => return route,
            // Refused before any check, as before `cross_slot` existed; an emulated command's
            // keys are all checked below, like any command's.
            Route::CrossSlot if !self.cross_slot_emulates() => {
                return Route::Reply(resp::error(crate::route::router::CROSSSLOT))
            }
            _ => {}
        }
        let Some(user) = self.client.user.as_ref().map(|s| Arc::clone(&s.user)) else {
            return Route::Reply(resp::error(crate::access::NOAUTH));
        };
        if let Route::Local(Local::Proxy) = route {
            if user.level < crate::access::Level::Admin {
                return Route::Reply(resp::error(
                    "NOPERM this user has no permissions to run the 'proxy' command",
                ));
            }
            return route;
        }
        let Some(spec) = spec else {
            return route;
        };
        // `keys`: the thread's scratch vector, so a checked request allocates nothing.
        match crate::route::command::key_positions(spec, args, keys) {
            Err(_) => route,
            Ok(()) => match user.check(spec, args, keys) {
                // The keys an emulated SORT's patterns name are read too.
                Ok(())
                    if matches!(route, Route::SortPatterns(_) | Route::CrossSlot)
                        && matches!(spec.name, "sort" | "sort_ro")
                        && self.cross_slot_emulates() =>
                {
                    match user.check_sort_patterns(spec, args) {
                        Ok(()) => route,
                        Err(e) => Route::Reply(resp::error(&e.to_string())),
                    }
                }
                Ok(()) => route,
                Err(e) => Route::Reply(resp::error(&e.to_string())),
            },
        }
    }
}
