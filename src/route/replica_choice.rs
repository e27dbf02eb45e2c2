//! Reads from replicas: which node serves one read, as a pure decision.
//!
//! The session decides *whether* a request may go to a replica ([`readable`]: a command Redis
//! flags `readonly`, outside transactions, with a `read_from` other than `master`); the worker
//! asks [`choose`] *which* node serves it, given the slot's replicas and what is known of their
//! health. Invariant: a replica is chosen only when it is usable (its link to the master up,
//! its lag under `max_replica_lag`, and it did not just fail a request); with no usable replica
//! the read goes to the master (`prefer-replica`, `any`) or is refused (`replica`), and the
//! reason is named so it can be counted.

use crate::route::command::{self, CommandSpec};

/// Where reads may go (the `read_from` setting, a user's override, a connection's READONLY).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReadFrom {
    /// Every request to the slot's master (the default; nothing changes on the data path).
    #[default]
    Master,
    /// A usable replica of the slot's master, else the master.
    PreferReplica,
    /// Usable replicas only; an error when the slot has none.
    Replica,
    /// Spread over the master and its usable replicas.
    Any,
}

impl ReadFrom {
    /// Every value, as the configuration spells it.
    pub const NAMES: &'static str = "master, prefer-replica, replica or any";

    /// Reads the setting's text (`master`, `prefer-replica`, `replica`, `any`; any case).
    pub fn parse(text: &str) -> Option<ReadFrom> {
        match text.trim().to_ascii_lowercase().as_str() {
            "master" => Some(ReadFrom::Master),
            "prefer-replica" => Some(ReadFrom::PreferReplica),
            "replica" => Some(ReadFrom::Replica),
            "any" => Some(ReadFrom::Any),
            _ => None,
        }
    }

    /// The setting's text.
    pub fn name(self) -> &'static str {
        match self {
            ReadFrom::Master => "master",
            ReadFrom::PreferReplica => "prefer-replica",
            ReadFrom::Replica => "replica",
            ReadFrom::Any => "any",
        }
    }
}

/// Whether a request of command `spec` may be served by a replica: Redis flags it `readonly`
/// (so no write, and of the scripts only EVAL_RO / EVALSHA_RO / FCALL_RO) and it does not
/// block. Transactions are the session's to exclude (they never reach this question).
pub fn readable(spec: Option<&CommandSpec>) -> bool {
    spec.is_some_and(|s| {
        s.flags & command::FLAG_READONLY != 0 && s.flags & command::FLAG_BLOCKING == 0
    })
}

/// Why a replica cannot serve a read now, or why a read fell back to the master.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The master has no replica in the topology.
    NoReplica,
    /// Its replicas' links are down, they lag more than `max_replica_lag`, or their health is
    /// not known yet.
    Lagging,
    /// Its replicas failed a request on this worker and have not answered a poll since.
    Failed,
}

impl Reason {
    /// Every reason, in the order of [`Reason::index`] (the metric's label values).
    pub const ALL: [Reason; 3] = [Reason::NoReplica, Reason::Lagging, Reason::Failed];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::NoReplica => "no-replica",
            Reason::Lagging => "lagging",
            Reason::Failed => "failed",
        }
    }

    /// Position in [`Reason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What is known of one replica when a read is routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usable {
    /// It may serve reads.
    Yes,
    /// It may serve reads, and its host is in `prefer_hosts`: it goes before the others.
    Preferred,
    /// It may not, for this reason ([`Reason::Lagging`] or [`Reason::Failed`]).
    No(Reason),
}

/// Which node serves a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The master (`master`, or `any`'s turn for the master).
    Master,
    /// The replica at this index of the master's replicas.
    Replica(usize),
    /// The master, because no replica is usable (counted by reason).
    Fallback(Reason),
    /// No node: `replica` and no usable replica.
    Refuse(Reason),
}

/// Chooses the node for one read of a slot whose master has `replicas` replicas, the i-th
/// being `usable(i)`. `turn` is the worker's round-robin counter: consecutive turns spread the
/// reads over the usable replicas (and the master, for `any`).
///
/// With `prefer_hosts`: when some usable replica is [`Usable::Preferred`], the turn goes over
/// those only. With `any`, when the master's host is listed (`master_preferred`) or a usable
/// replica is preferred, the turn goes over the preferred nodes only, master included when
/// listed. Otherwise (an empty list, or nothing usable on a listed host) as without it.
pub fn choose(
    mode: ReadFrom,
    replicas: usize,
    usable: impl Fn(usize) -> Usable,
    master_preferred: bool,
    turn: usize,
) -> Choice {
    if mode == ReadFrom::Master {
        return Choice::Master;
    }
    let mut count = 0;
    let mut near = 0;
    // The strongest reason among the unusable ones: a failure seen here outranks lag.
    let mut why = Reason::NoReplica;
    for i in 0..replicas {
        match usable(i) {
            Usable::Yes => count += 1,
            Usable::Preferred => {
                count += 1;
                near += 1;
            }
            Usable::No(r) => {
                if why != Reason::Failed {
                    why = r;
                }
            }
        }
    }
    let master_near = mode == ReadFrom::Any && master_preferred;
    let only_near = near > 0 || master_near;
    let pool = if only_near { near } else { count };
    let nth_usable = |n: usize| {
        (0..replicas)
            .filter(|&i| match usable(i) {
                Usable::Preferred => true,
                Usable::Yes => !only_near,
                Usable::No(_) => false,
            })
            .nth(n)
            .map_or(Choice::Master, Choice::Replica)
    };
    match mode {
        ReadFrom::Master => Choice::Master,
        _ if count == 0 && mode == ReadFrom::Replica => Choice::Refuse(why),
        _ if count == 0 => Choice::Fallback(why),
        ReadFrom::Any if only_near && !master_near => nth_usable(turn % pool),
        ReadFrom::Any => match turn % (pool + 1) {
            0 => Choice::Master,
            n => nth_usable(n - 1),
        },
        _ => nth_usable(turn % pool),
    }
}

/// The error a `replica` read gets when its slot has no usable replica.
pub fn refusal(slot: u16, why: Reason) -> String {
    format!(
        "CLUSTERDOWN slotproxy: no usable replica for slot {slot} ({}); read_from is replica",
        why.label()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRESH: Usable = Usable::Yes;
    const LAGGING: Usable = Usable::No(Reason::Lagging);
    const FAILED: Usable = Usable::No(Reason::Failed);

    fn pick(mode: ReadFrom, states: &[Usable], turn: usize) -> Choice {
        choose(mode, states.len(), |i| states[i], false, turn)
    }

    const NEAR: Usable = Usable::Preferred;

    fn picks(mode: ReadFrom, states: &[Usable], master_near: bool, turns: usize) -> Vec<Choice> {
        (0..turns)
            .map(|t| choose(mode, states.len(), |i| states[i], master_near, t))
            .collect()
    }

    #[test]
    fn replicas_on_preferred_hosts_take_the_reads_in_turn() {
        let states = [FRESH, NEAR, LAGGING, NEAR];
        let want = [Choice::Replica(1), Choice::Replica(3), Choice::Replica(1)];
        assert_eq!(picks(ReadFrom::PreferReplica, &states, false, 3), want);
        assert_eq!(picks(ReadFrom::Replica, &states, false, 3), want);
        // The master's host being listed changes nothing outside `any`.
        assert_eq!(picks(ReadFrom::PreferReplica, &states, true, 3), want);
    }

    #[test]
    fn without_a_usable_preferred_replica_the_others_serve_as_before() {
        let states = [FRESH, LAGGING, FRESH];
        assert_eq!(
            picks(ReadFrom::PreferReplica, &states, false, 2),
            [Choice::Replica(0), Choice::Replica(2)]
        );
        // A preferred replica that is not usable is just not usable.
        let states = [FRESH, Usable::No(Reason::Failed)];
        assert_eq!(
            picks(ReadFrom::PreferReplica, &states, false, 2),
            [Choice::Replica(0), Choice::Replica(0)]
        );
        assert_eq!(
            pick(ReadFrom::PreferReplica, &[LAGGING], 0),
            Choice::Fallback(Reason::Lagging)
        );
    }

    #[test]
    fn any_uses_the_preferred_nodes_master_included_when_listed() {
        let states = [FRESH, NEAR];
        // Master not listed: the preferred replica only.
        assert_eq!(
            picks(ReadFrom::Any, &states, false, 2),
            [Choice::Replica(1), Choice::Replica(1)]
        );
        // Master listed too: it and the preferred replica in turn.
        assert_eq!(
            picks(ReadFrom::Any, &states, true, 3),
            [Choice::Master, Choice::Replica(1), Choice::Master]
        );
        // Only the master listed: the master, while a replica is usable at all.
        assert_eq!(
            picks(ReadFrom::Any, &[FRESH, FRESH], true, 2),
            [Choice::Master, Choice::Master]
        );
        // Nothing listed: as without prefer_hosts.
        assert_eq!(
            picks(ReadFrom::Any, &[FRESH, FRESH], false, 3),
            [Choice::Master, Choice::Replica(0), Choice::Replica(1)]
        );
        assert_eq!(
            picks(ReadFrom::Any, &[LAGGING], true, 1),
            [Choice::Fallback(Reason::Lagging)]
        );
    }

    #[test]
    fn master_mode_never_looks_at_replicas() {
        assert_eq!(pick(ReadFrom::Master, &[FRESH, FRESH], 3), Choice::Master);
        assert_eq!(pick(ReadFrom::Master, &[], 0), Choice::Master);
    }

    #[test]
    fn prefer_replica_rotates_over_the_usable_replicas_only() {
        let states = [FRESH, LAGGING, FRESH, FAILED];
        let picks: Vec<Choice> = (0..4)
            .map(|t| pick(ReadFrom::PreferReplica, &states, t))
            .collect();
        assert_eq!(
            picks,
            [
                Choice::Replica(0),
                Choice::Replica(2),
                Choice::Replica(0),
                Choice::Replica(2)
            ]
        );
    }

    #[test]
    fn without_a_usable_replica_reads_fall_back_with_a_reason() {
        let p = ReadFrom::PreferReplica;
        assert_eq!(pick(p, &[], 0), Choice::Fallback(Reason::NoReplica));
        assert_eq!(pick(p, &[LAGGING], 0), Choice::Fallback(Reason::Lagging));
        assert_eq!(pick(p, &[FAILED], 0), Choice::Fallback(Reason::Failed));
        // A failure seen on this worker is named before lag, whatever the order.
        assert_eq!(
            pick(p, &[FAILED, LAGGING], 0),
            Choice::Fallback(Reason::Failed)
        );
        assert_eq!(
            pick(p, &[LAGGING, FAILED], 0),
            Choice::Fallback(Reason::Failed)
        );
        assert_eq!(
            pick(ReadFrom::Any, &[LAGGING], 1),
            Choice::Fallback(Reason::Lagging)
        );
    }

    #[test]
    fn replica_mode_refuses_instead_of_using_the_master() {
        assert_eq!(
            pick(ReadFrom::Replica, &[LAGGING], 0),
            Choice::Refuse(Reason::Lagging)
        );
        assert_eq!(
            pick(ReadFrom::Replica, &[], 0),
            Choice::Refuse(Reason::NoReplica)
        );
        assert_eq!(
            pick(ReadFrom::Replica, &[LAGGING, FRESH], 7),
            Choice::Replica(1)
        );
        assert!(refusal(5, Reason::Lagging).starts_with("CLUSTERDOWN "));
    }

    #[test]
    fn any_spreads_over_the_master_and_the_usable_replicas() {
        let states = [FRESH, LAGGING, FRESH];
        let picks: Vec<Choice> = (0..3).map(|t| pick(ReadFrom::Any, &states, t)).collect();
        assert_eq!(
            picks,
            [Choice::Master, Choice::Replica(0), Choice::Replica(2)]
        );
    }

    #[test]
    fn only_readonly_commands_that_do_not_block_are_readable() {
        let spec = |name: &str| {
            let args: Vec<bytes::Bytes> = name
                .split(' ')
                .map(|s| bytes::Bytes::copy_from_slice(s.as_bytes()))
                .collect();
            command::lookup(&args)
        };
        for yes in ["get", "mget", "hgetall", "eval_ro", "fcall_ro", "exists"] {
            assert!(readable(spec(yes)), "{yes}");
        }
        for no in [
            "set", "del", "eval", "evalsha", "fcall", "incr", "blpop", "multi", "exec", "watch",
        ] {
            assert!(!readable(spec(no)), "{no}");
        }
        assert!(!readable(None));
    }

    #[test]
    fn settings_text_round_trips() {
        for m in [
            ReadFrom::Master,
            ReadFrom::PreferReplica,
            ReadFrom::Replica,
            ReadFrom::Any,
        ] {
            assert_eq!(ReadFrom::parse(m.name()), Some(m));
        }
        assert_eq!(
            ReadFrom::parse(" Prefer-Replica "),
            Some(ReadFrom::PreferReplica)
        );
        assert_eq!(ReadFrom::parse("slave"), None);
        assert_eq!(
            Reason::ALL.map(Reason::label),
            ["no-replica", "lagging", "failed"]
        );
    }
}
