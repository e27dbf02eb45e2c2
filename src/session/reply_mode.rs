//! CLIENT REPLY ON / OFF / SKIP: which of a client's replies it gets. Invariant: a SKIP
//! silences exactly the next command, and a CLIENT REPLY command decides its own reply.

/// CLIENT REPLY: which replies the client gets.
#[derive(Default)]
pub(super) struct ReplyMode {
    /// OFF: no replies until ON.
    off: bool,
    /// SKIP: no reply for the next command.
    skip_next: bool,
    /// Set by the CLIENT REPLY being dispatched: `Some(true)` drops its own reply (OFF, SKIP),
    /// `Some(false)` sends it (ON).
    own: Option<bool>,
}

impl ReplyMode {
    /// Whether the request about to be dispatched is silenced by the current mode (a SKIP
    /// is used up by it).
    pub(super) fn take_turn(&mut self) -> bool {
        self.own = None;
        std::mem::take(&mut self.skip_next) || self.off
    }

    /// Whether the request just dispatched gets no reply; a CLIENT REPLY decides for itself.
    pub(super) fn own_reply_silent(&mut self, silent: bool) -> bool {
        self.own.take().unwrap_or(silent)
    }

    /// Whether CLIENT REPLY OFF is in force (it silences MONITOR lines too, as in Redis).
    pub(super) fn off(&self) -> bool {
        self.off
    }

    /// Applies `CLIENT REPLY ON|OFF|SKIP`; false for any other argument.
    pub(super) fn set(&mut self, arg: &[u8]) -> bool {
        if arg.eq_ignore_ascii_case(b"on") {
            self.off = false;
            self.own = Some(false);
        } else if arg.eq_ignore_ascii_case(b"off") {
            self.off = true;
            self.own = Some(true);
        } else if arg.eq_ignore_ascii_case(b"skip") {
            self.skip_next = !self.off;
            self.own = Some(true);
        } else {
            return false;
        }
        true
    }
}
