//! Which sets of replicas are a quorum of a range: the one place that answers it.
//!
//! A range's voters come from its descriptor's replica roles. Outside a membership
//! change they are its `Voter`s, and a quorum is a majority of them. In a joint
//! configuration (raft-rs `ConfChangeV2`, entered and left by two proposals) there are
//! two voter sets — the incoming one (`Voter`s and `IncomingVoter`s) and the outgoing one
//! (`Voter`s and `DemotingVoter`s) — and a quorum must be a majority of *both*, which is
//! what keeps two leaders (or two leases) from existing across the change. Learners count
//! for nothing.
//!
//! Everything that counts a majority — leases and their store-liveness support, drain,
//! leadership balance, the router's choice of replica — asks [`Voters`], never
//! `replicas.len()`.

use std::collections::BTreeSet;

use crate::metapb::{RangeDescriptor, ReplicaRole};

/// A range's voter sets, by replica id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Voters {
    incoming: BTreeSet<u64>,
    /// Empty unless the configuration is joint.
    outgoing: BTreeSet<u64>,
}

impl Voters {
    /// The voters of `desc`'s current configuration.
    pub fn of(desc: &RangeDescriptor) -> Voters {
        let joint = desc.replicas.iter().any(|r| {
            matches!(
                r.role(),
                ReplicaRole::IncomingVoter | ReplicaRole::DemotingVoter
            )
        });
        let mut v = Voters::default();
        for r in &desc.replicas {
            match r.role() {
                ReplicaRole::Voter => {
                    v.incoming.insert(r.replica_id);
                    if joint {
                        v.outgoing.insert(r.replica_id);
                    }
                }
                ReplicaRole::IncomingVoter => {
                    v.incoming.insert(r.replica_id);
                }
                ReplicaRole::DemotingVoter => {
                    v.outgoing.insert(r.replica_id);
                }
                ReplicaRole::Learner => {}
            }
        }
        v
    }

    /// True while the configuration is joint (two voter sets).
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// True when replica `id` votes in either set.
    pub fn contains(&self, id: u64) -> bool {
        self.incoming.contains(&id) || self.outgoing.contains(&id)
    }

    /// Every voting replica id, in either set.
    pub fn ids(&self) -> BTreeSet<u64> {
        self.incoming.union(&self.outgoing).copied().collect()
    }

    /// True when the replicas for which `yes` holds are a quorum: a majority of the
    /// incoming voters and, while joint, of the outgoing ones as well. A configuration
    /// without voters has no quorum.
    pub fn is_quorum(&self, yes: impl Fn(u64) -> bool) -> bool {
        let majority =
            |set: &BTreeSet<u64>| set.iter().filter(|id| yes(**id)).count() * 2 > set.len();
        !self.incoming.is_empty()
            && majority(&self.incoming)
            && (!self.is_joint() || majority(&self.outgoing))
    }
}

/// [`Voters::is_quorum`] for `desc`, without building the sets: for the lease check,
/// which runs on every leased read.
pub fn is_quorum(desc: &RangeDescriptor, yes: impl Fn(u64) -> bool) -> bool {
    // (members, of them yes) for plain voters, incoming-only and outgoing-only voters.
    let (mut voters, mut incoming, mut outgoing) = ((0, 0), (0, 0), (0, 0));
    for r in &desc.replicas {
        let slot = match r.role() {
            ReplicaRole::Voter => &mut voters,
            ReplicaRole::IncomingVoter => &mut incoming,
            ReplicaRole::DemotingVoter => &mut outgoing,
            ReplicaRole::Learner => continue,
        };
        slot.0 += 1;
        slot.1 += usize::from(yes(r.replica_id));
    }
    let majority = |(n, y): (usize, usize)| n > 0 && 2 * y > n;
    let joint = incoming.0 + outgoing.0 > 0;
    majority((voters.0 + incoming.0, voters.1 + incoming.1))
        && (!joint || majority((voters.0 + outgoing.0, voters.1 + outgoing.1)))
}

/// The raft-rs configuration `desc`'s roles stand for: `Voter`s and `IncomingVoter`s
/// vote in the incoming half; while joint, `Voter`s and `DemotingVoter`s in the outgoing
/// one, and a `DemotingVoter` becomes a learner when the joint configuration is left
/// (removing a voter goes through learner: `operation/conf_change.rs`). Never
/// `auto_leave`: the leave step is proposed explicitly.
pub fn conf_state(desc: &RangeDescriptor) -> raft::prelude::ConfState {
    let mut cs = raft::prelude::ConfState::default();
    let joint = Voters::of(desc).is_joint();
    for r in &desc.replicas {
        let id = r.replica_id;
        match r.role() {
            ReplicaRole::Voter => {
                cs.voters.push(id);
                if joint {
                    cs.voters_outgoing.push(id);
                }
            }
            ReplicaRole::IncomingVoter => cs.voters.push(id),
            ReplicaRole::DemotingVoter => {
                cs.voters_outgoing.push(id);
                cs.learners_next.push(id);
            }
            ReplicaRole::Learner => cs.learners.push(id),
        }
    }
    cs
}

/// True when two configurations have the same members in the same places.
pub fn same_conf(a: &raft::prelude::ConfState, b: &raft::prelude::ConfState) -> bool {
    let set = |v: &[u64]| v.iter().copied().collect::<BTreeSet<u64>>();
    set(&a.voters) == set(&b.voters)
        && set(&a.voters_outgoing) == set(&b.voters_outgoing)
        && set(&a.learners) == set(&b.learners)
        && set(&a.learners_next) == set(&b.learners_next)
        && a.auto_leave == b.auto_leave
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metapb::Replica;

    fn desc(replicas: &[(u64, ReplicaRole)]) -> RangeDescriptor {
        let replicas = replicas
            .iter()
            .map(|&(id, role)| Replica {
                node_id: id,
                replica_id: id,
                role: role as i32,
            })
            .collect();
        RangeDescriptor {
            range_id: 2,
            replicas,
            ..Default::default()
        }
    }

    #[test]
    fn a_simple_configuration_needs_a_majority_of_its_voters_and_learners_count_for_none() {
        use ReplicaRole::*;
        let v = Voters::of(&desc(&[(1, Voter), (2, Voter), (3, Voter), (4, Learner)]));
        assert!(!v.is_joint() && !v.contains(4));
        assert!(v.is_quorum(|id| id == 1 || id == 2));
        assert!(
            !v.is_quorum(|id| id == 1 || id == 4),
            "a learner does not make a majority"
        );
        assert!(
            !Voters::of(&desc(&[(4, Learner)])).is_quorum(|_| true),
            "no voters, no quorum"
        );
    }

    #[test]
    fn a_joint_configuration_needs_a_majority_of_both_halves() {
        use ReplicaRole::*;
        // Replacing 3 with 4: old {1,2,3}, new {1,2,4}.
        let v = Voters::of(&desc(&[
            (1, Voter),
            (2, Voter),
            (3, DemotingVoter),
            (4, IncomingVoter),
        ]));
        assert!(v.is_joint());
        assert_eq!(v.ids().len(), 4);
        assert!(
            v.is_quorum(|id| id == 1 || id == 2),
            "1,2 are a majority of both"
        );
        assert!(
            !v.is_quorum(|id| id == 1 || id == 4),
            "1,4: a majority of the new half only"
        );
        assert!(
            !v.is_quorum(|id| id == 1 || id == 3),
            "1,3: a majority of the old half only"
        );
        // Moving a range off three nodes at once: old {1,2,3}, new {4,5,6}.
        let far = desc(&[
            (1, DemotingVoter),
            (2, DemotingVoter),
            (3, DemotingVoter),
            (4, IncomingVoter),
            (5, IncomingVoter),
            (6, IncomingVoter),
        ]);
        let v = Voters::of(&far);
        assert!(!v.is_quorum(|id| id >= 4) && !v.is_quorum(|id| id <= 3));
        assert!(v.is_quorum(|id| [1, 2, 4, 5].contains(&id)));
    }

    #[test]
    fn the_counting_answer_agrees_with_the_sets_on_every_subset() {
        use ReplicaRole::*;
        let configs = [
            desc(&[(1, Voter), (2, Voter), (3, Voter), (4, Learner)]),
            desc(&[
                (1, Voter),
                (2, Voter),
                (3, DemotingVoter),
                (4, IncomingVoter),
            ]),
            desc(&[
                (1, DemotingVoter),
                (2, DemotingVoter),
                (3, IncomingVoter),
                (4, IncomingVoter),
                (5, Voter),
            ]),
            desc(&[(1, Learner)]),
        ];
        for d in &configs {
            let v = Voters::of(d);
            for mask in 0u32..64 {
                let yes = |id: u64| mask & (1 << id) != 0;
                assert_eq!(is_quorum(d, yes), v.is_quorum(yes), "{d:?} with {mask:b}");
            }
        }
    }
}
