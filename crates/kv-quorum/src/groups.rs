//! `GroupQuorum`: several quorums over one set of replicas. While a ring changes, a write
//! must reach W replicas in the preference list of every live ring version; a replica in
//! several lists counts in each. One group of every replica is the plain quorum.

use crate::{Progress, QuorumError, QuorumTracker};

/// Quorums over groups of replicas (indices `0..replicas`).
#[derive(Debug, Clone)]
pub struct GroupQuorum {
    groups: Vec<QuorumTracker>,
    /// For each replica, the groups it belongs to.
    membership: Vec<Vec<usize>>,
    /// Whether each replica answered.
    answered: Vec<bool>,
    successes: usize,
}

impl GroupQuorum {
    /// One quorum of `required` among all `replicas`.
    pub fn single(required: usize, replicas: usize) -> Result<Self, QuorumError> {
        Self::new(vec![((0..replicas).collect(), required)], replicas)
    }

    /// One quorum per group: `required` successes among its replica indices (each below
    /// `replicas`; a replica may be in several groups, and must be in at least one).
    pub fn new(groups: Vec<(Vec<usize>, usize)>, replicas: usize) -> Result<Self, QuorumError> {
        let mut membership = vec![Vec::new(); replicas];
        let mut trackers = Vec::with_capacity(groups.len());
        for (index, (members, required)) in groups.into_iter().enumerate() {
            trackers.push(QuorumTracker::new(required, members.len())?);
            for member in members {
                let groups = membership
                    .get_mut(member)
                    .ok_or(QuorumError::UnknownReplica {
                        replica: member,
                        replicas,
                    })?;
                groups.push(index);
            }
        }
        if trackers.is_empty() || membership.iter().any(Vec::is_empty) {
            return Err(QuorumError::UngroupedReplica);
        }
        Ok(Self {
            groups: trackers,
            membership,
            answered: vec![false; replicas],
            successes: 0,
        })
    }

    /// Records replica `replica`'s answer (later answers of the same replica are ignored).
    pub fn record(&mut self, replica: usize, success: bool) -> Progress {
        if replica < self.answered.len() && !self.answered[replica] {
            self.answered[replica] = true;
            self.successes += usize::from(success);
            for &group in &self.membership[replica] {
                let tracker = &mut self.groups[group];
                if success {
                    tracker.record_success();
                } else {
                    tracker.record_failure();
                }
            }
        }
        self.progress()
    }

    /// Reached when every group is; impossible as soon as one group is.
    pub fn progress(&self) -> Progress {
        let mut all_reached = true;
        for group in &self.groups {
            match group.progress() {
                Progress::Impossible => return Progress::Impossible,
                Progress::Pending => all_reached = false,
                Progress::Reached => {}
            }
        }
        if all_reached {
            Progress::Reached
        } else {
            Progress::Pending
        }
    }

    /// Replicas that succeeded.
    pub fn successes(&self) -> usize {
        self.successes
    }

    /// Replicas asked.
    pub fn replicas(&self) -> usize {
        self.answered.len()
    }

    /// Each group's tracker, in the order given.
    pub fn groups(&self) -> &[QuorumTracker] {
        &self.groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_must_reach_its_quorum() {
        // Replicas 0,1,2 are the old list, 1,2,3 the new one (2 of each).
        let groups = vec![(vec![0, 1, 2], 2), (vec![1, 2, 3], 2)];
        let mut quorum = GroupQuorum::new(groups.clone(), 4).unwrap();
        assert_eq!(quorum.record(0, true), Progress::Pending);
        assert_eq!(quorum.record(3, true), Progress::Pending);
        assert_eq!(quorum.record(1, true), Progress::Reached);
        let mut quorum = GroupQuorum::new(groups, 4).unwrap();
        quorum.record(1, false);
        assert_eq!(
            quorum.record(2, false),
            Progress::Impossible,
            "both groups lost 2 of 3"
        );
        assert_eq!(quorum.successes(), 0);
    }

    #[test]
    fn malformed_groups_are_refused() {
        assert!(GroupQuorum::new(vec![(vec![0, 5], 1)], 2).is_err());
        assert!(
            GroupQuorum::new(vec![(vec![0], 1)], 2).is_err(),
            "replica 1 in no group"
        );
        assert!(GroupQuorum::new(vec![(vec![0, 1], 3)], 2).is_err());
        assert_eq!(GroupQuorum::single(2, 3).unwrap().groups().len(), 1);
    }
}
