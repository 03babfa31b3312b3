//! The history checker: given what clients saw, every version coordinators minted, and
//! the replicas' final states after convergence, lists every broken promise.
//!
//! - **No lost acknowledged write**: an acknowledged put or delete is among the final
//!   versions, or a write whose context covered it superseded it.
//! - **Sibling precision**: every final version is one a client wrote (same dot, same
//!   value), and none of them was superseded by a write the final state itself contains.
//! - **Read-your-writes**: a successful read that starts after a strict write was
//!   acknowledged, with R + W > N, sees that write or a successor (its context covers the
//!   write's dot); skipped once a node lost its memory after the write. Sloppy writes do
//!   not promise it (their acknowledgements may be hints on fallbacks): for them the
//!   promise is eventual delivery, which the convergence and no-lost-write checks cover
//!   once the hints drained.
//! - **Convergence**: after repair every replica of a key holds the same versions; and
//!   before any final read ([`check_converged_without_reads`]), once anti-entropy had
//!   its rounds, the replicas already hold the same versions: anti-entropy alone brought
//!   every replica up to date, even one that lost its memory.
//! - **No phantom reads**: a read returns only values some client wrote to that key.
//! - **Unique dots**: no two writes of a key were minted with the same dot.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use kv_clock::{Dot, VersionVector};
use kv_storage::Siblings;

use crate::history::{Op, OpKind, Outcome};
use crate::store::Mint;

/// Everything the checker looks at for one key.
#[derive(Debug)]
pub struct KeyEvidence {
    /// The key.
    pub key: Bytes,
    /// Every mint of the key.
    pub mints: Vec<Mint>,
    /// Each replica's final state: (replica id, versions).
    pub replicas: Vec<(String, Option<Siblings>)>,
}

/// Inputs that are not per key.
#[derive(Debug)]
pub struct CheckInput<'a> {
    /// The client history.
    pub history: &'a [Op],
    /// Per-key evidence.
    pub keys: &'a [KeyEvidence],
    /// Replication factor.
    pub replicas: usize,
    /// When a node crashed and lost its memory.
    pub amnesia_at: &'a [Duration],
}

/// Checks every property; returns one message per violation.
pub fn check(input: &CheckInput<'_>) -> Vec<String> {
    let mut violations = Vec::new();
    for evidence in input.keys {
        let ops: Vec<&Op> = input
            .history
            .iter()
            .filter(|op| op.key == evidence.key)
            .collect();
        KeyCheck::new(evidence, &ops, &mut violations).run(input);
    }
    violations
}

/// Every replica of every key holds the same versions. Run on evidence collected after the
/// faults healed and anti-entropy ran, before any read could repair anything.
pub fn check_converged_without_reads(keys: &[KeyEvidence]) -> Vec<String> {
    keys.iter()
        .filter_map(|evidence| {
            let merged = merge_replicas(evidence);
            divergence(evidence, &merged).map(|message| {
                let key = String::from_utf8_lossy(&evidence.key);
                format!("key {key}: without reads, after anti-entropy, {message}")
            })
        })
        .collect()
}

/// Every replica's versions synced together.
fn merge_replicas(evidence: &KeyEvidence) -> Siblings {
    let mut merged = Siblings::new();
    for versions in evidence.replicas.iter().filter_map(|(_, v)| v.as_ref()) {
        merged.sync(versions);
    }
    merged
}

/// Which replicas hold something other than `merged`, if any.
fn divergence(evidence: &KeyEvidence, merged: &Siblings) -> Option<String> {
    let diverged: Vec<String> = evidence
        .replicas
        .iter()
        .filter(|(_, state)| state.as_ref() != Some(merged) && !merged.is_empty())
        .map(|(id, state)| format!("replica {id} holds {state:?}"))
        .collect();
    (!diverged.is_empty()).then(|| {
        format!(
            "replicas did not converge to {merged:?}: {}",
            diverged.join("; ")
        )
    })
}

struct KeyCheck<'a> {
    evidence: &'a KeyEvidence,
    ops: &'a [&'a Op],
    violations: &'a mut Vec<String>,
    final_state: Siblings,
    final_clock: VersionVector,
    mint_by_value: BTreeMap<Bytes, &'a Mint>,
}

impl<'a> KeyCheck<'a> {
    fn new(evidence: &'a KeyEvidence, ops: &'a [&'a Op], violations: &'a mut Vec<String>) -> Self {
        let final_state = merge_replicas(evidence);
        let final_clock = final_state.join();
        let mint_by_value = evidence
            .mints
            .iter()
            .filter_map(|m| m.value.clone().map(|v| (v, m)))
            .collect();
        Self {
            evidence,
            ops,
            violations,
            final_state,
            final_clock,
            mint_by_value,
        }
    }

    fn report(&mut self, message: &str) {
        let key = String::from_utf8_lossy(&self.evidence.key);
        self.violations.push(format!("key {key}: {message}"));
    }

    fn run(mut self, input: &CheckInput<'_>) {
        self.unique_dots();
        self.converged();
        self.precise_siblings();
        for op in self.ops {
            if op.is_acknowledged_write() {
                self.acknowledged_write_kept(op);
            }
            if let Outcome::Read { values, .. } = &op.outcome {
                self.no_phantoms(op, values);
            }
        }
        self.read_your_writes(input);
    }

    fn unique_dots(&mut self) {
        let mut seen: BTreeMap<&Dot, usize> = BTreeMap::new();
        for mint in &self.evidence.mints {
            *seen.entry(&mint.dot).or_default() += 1;
        }
        let reused: Vec<String> = seen
            .into_iter()
            .filter(|(_, count)| *count > 1)
            .map(|(dot, count)| format!("dot {}:{} minted {count} times", dot.actor, dot.counter))
            .collect();
        for message in reused {
            self.report(&message);
        }
    }

    fn converged(&mut self) {
        if let Some(message) = divergence(self.evidence, &self.final_state) {
            self.report(&message);
        }
    }

    /// The mint with this dot, if any.
    fn mint_of(&self, dot: &Dot) -> Option<&'a Mint> {
        self.evidence.mints.iter().find(|m| m.dot == *dot)
    }

    /// Whether some minted write that the final state contains (its dot is covered by
    /// the final clock) was written with a context covering `dot`.
    fn superseded_in_final(&self, dot: &Dot) -> Option<&'a Mint> {
        self.evidence
            .mints
            .iter()
            .find(|m| m.context.contains(dot) && self.final_clock.contains(&m.dot))
    }

    fn precise_siblings(&mut self) {
        let mut problems = Vec::new();
        for (dot, value) in self.final_state.siblings() {
            match self.mint_of(&dot) {
                None => problems.push(format!(
                    "final version {}:{} = {value:?} was never written by a client",
                    dot.actor, dot.counter
                )),
                Some(mint) if mint.value != *value => problems.push(format!(
                    "final version {}:{} holds {value:?} but was written as {:?}",
                    dot.actor, dot.counter, mint.value
                )),
                Some(_) => {}
            }
            if let Some(successor) = self.superseded_in_final(&dot) {
                problems.push(format!(
                    "final sibling {}:{} = {value:?} survives although {}:{} superseded it",
                    dot.actor, dot.counter, successor.dot.actor, successor.dot.counter
                ));
            }
        }
        for problem in problems {
            self.report(&problem);
        }
    }

    /// The mint an acknowledged write created: by its unique value for a put; for a
    /// delete, a tombstone minted during the request with the request's context whose dot
    /// the returned context covers.
    fn mint_of_op(&self, op: &Op) -> Option<&'a Mint> {
        if let Some(value) = &op.value {
            return self.mint_by_value.get(value).copied();
        }
        let Outcome::Written { context: returned } = &op.outcome else {
            return None;
        };
        let sent = op.context.clone().unwrap_or_default();
        self.evidence.mints.iter().find(|m| {
            m.value.is_none()
                && m.context == sent
                && returned.contains(&m.dot)
                && (op.start..=op.end).contains(&m.at)
        })
    }

    fn acknowledged_write_kept(&mut self, op: &Op) {
        let Some(mint) = self.mint_of_op(op) else {
            let message = format!("acknowledged {op:?} has no minted version");
            self.report(&message);
            return;
        };
        let present = self.final_state.siblings().any(|(dot, _)| dot == mint.dot);
        if present {
            return;
        }
        if !self.final_clock.contains(&mint.dot) {
            let message = format!(
                "LOST acknowledged {:?} of {:?} (dot {}:{}, acknowledged at {:.3}s): the final state {:?} never saw it",
                op.kind,
                op.value,
                mint.dot.actor,
                mint.dot.counter,
                op.end.as_secs_f64(),
                self.final_state
            );
            self.report(&message);
            return;
        }
        let has_successor = self
            .evidence
            .mints
            .iter()
            .any(|m| m.context.contains(&mint.dot));
        if !has_successor {
            let message = format!(
                "acknowledged {:?} of {:?} (dot {}:{}) vanished: no later write's context covers it",
                op.kind, op.value, mint.dot.actor, mint.dot.counter
            );
            self.report(&message);
        }
    }

    fn no_phantoms(&mut self, op: &Op, values: &[Bytes]) {
        let phantoms: Vec<&Bytes> = values
            .iter()
            .filter(|v| !self.mint_by_value.contains_key(*v))
            .collect();
        if !phantoms.is_empty() {
            let message = format!(
                "read at {:.3}s returned {phantoms:?}, never written to this key",
                op.start.as_secs_f64()
            );
            self.report(&message);
        }
    }

    fn read_your_writes(&mut self, input: &CheckInput<'_>) {
        let n = input.replicas as u32;
        let mut problems = Vec::new();
        for write in self
            .ops
            .iter()
            .filter(|op| op.is_acknowledged_write() && !op.sloppy)
        {
            let Some(mint) = self.mint_of_op(write) else {
                continue;
            };
            for read in self.ops.iter().filter(|op| op.kind == OpKind::Get) {
                let Outcome::Read { context, .. } = &read.outcome else {
                    continue;
                };
                let overlaps = read.start <= write.end || write.quorum + read.quorum <= n;
                let amnesia = input
                    .amnesia_at
                    .iter()
                    .any(|at| *at >= write.start && *at <= read.end);
                if overlaps || amnesia || context.contains(&mint.dot) {
                    continue;
                }
                problems.push(format!(
                    "read-your-writes: {:?} W={} acknowledged at {:.3}s (dot {}:{}), but a read \
                     R={} at node {} from {:.3}s returned context {context:?}",
                    write.kind,
                    write.quorum,
                    write.end.as_secs_f64(),
                    mint.dot.actor,
                    mint.dot.counter,
                    read.quorum,
                    read.node,
                    read.start.as_secs_f64()
                ));
            }
        }
        for problem in problems {
            self.report(&problem);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_clock::ActorId;

    fn actor(id: &str) -> ActorId {
        ActorId::new(id).unwrap()
    }

    fn dot(id: &str, counter: u64) -> Dot {
        Dot {
            actor: actor(id),
            counter,
        }
    }

    fn vv(entries: &[(&str, u64)]) -> VersionVector {
        VersionVector::from_entries(entries.iter().copied()).unwrap()
    }

    fn mint(id: &str, counter: u64, value: &str, context: &[(&str, u64)]) -> Mint {
        Mint {
            dot: dot(id, counter),
            value: Some(Bytes::from(value.to_owned())),
            context: vv(context),
            at: Duration::from_millis(counter * 10),
        }
    }

    fn put(value: &str, start_ms: u64, end_ms: u64, quorum: u32) -> Op {
        Op {
            client: 0,
            kind: OpKind::Put,
            key: Bytes::from_static(b"k"),
            node: 0,
            value: Some(Bytes::from(value.to_owned())),
            context: None,
            quorum,
            sloppy: false,
            start: Duration::from_millis(start_ms),
            end: Duration::from_millis(end_ms),
            outcome: Outcome::Written {
                context: VersionVector::new(),
            },
        }
    }

    fn get(context: VersionVector, start_ms: u64, quorum: u32) -> Op {
        Op {
            kind: OpKind::Get,
            value: None,
            quorum,
            start: Duration::from_millis(start_ms),
            end: Duration::from_millis(start_ms + 1),
            outcome: Outcome::Read {
                values: Vec::new(),
                context,
            },
            ..put("", 0, 0, 0)
        }
    }

    /// (actor, value, context entries) of one write.
    type TestWrite<'a> = (&'a str, &'a str, &'a [(&'a str, u64)]);

    /// A replica state holding `writes` applied in order.
    fn state(writes: &[TestWrite<'_>]) -> Siblings {
        let mut siblings = Siblings::new();
        for (id, value, context) in writes {
            siblings.update(
                &vv(context),
                Some(Bytes::from((*value).to_owned())),
                &actor(id),
            );
        }
        siblings
    }

    fn check_one(history: &[Op], mints: Vec<Mint>, replicas: Vec<Siblings>) -> Vec<String> {
        let evidence = KeyEvidence {
            key: Bytes::from_static(b"k"),
            mints,
            replicas: replicas
                .into_iter()
                .enumerate()
                .map(|(i, s)| (format!("n{}", i + 1), Some(s)))
                .collect(),
        };
        check(&CheckInput {
            history,
            keys: &[evidence],
            replicas: 3,
            amnesia_at: &[],
        })
    }

    #[test]
    fn a_clean_history_passes() {
        let final_state = state(&[("n1", "a", &[]), ("n1", "b", &[("n1", 1)])]);
        let mints = vec![mint("n1", 1, "a", &[]), mint("n1", 2, "b", &[("n1", 1)])];
        let history = [put("a", 0, 10, 2), put("b", 20, 30, 2)];
        let violations = check_one(&history, mints, vec![final_state.clone(), final_state]);
        assert!(violations.is_empty(), "{violations:?}");
    }

    #[test]
    fn a_lost_acknowledged_write_is_reported() {
        let final_state = state(&[("n1", "a", &[])]);
        let mints = vec![mint("n1", 1, "a", &[]), mint("n2", 1, "b", &[])];
        let history = [put("a", 0, 10, 2), put("b", 0, 10, 2)];
        let violations = check_one(&history, mints, vec![final_state]);
        assert!(
            violations.iter().any(|v| v.contains("LOST")),
            "{violations:?}"
        );
    }

    #[test]
    fn a_value_no_client_wrote_is_reported() {
        let final_state = state(&[("n1", "ghost", &[])]);
        let violations = check_one(&[], vec![mint("n1", 1, "a", &[])], vec![final_state]);
        assert!(
            violations.iter().any(|v| v.contains("holds")),
            "{violations:?}"
        );
    }

    #[test]
    fn a_superseded_sibling_that_survives_is_reported() {
        // Both values survive although "b" was written with a context covering "a".
        let mut final_state = state(&[("n1", "a", &[])]);
        final_state.sync(&state(&[("n2", "b", &[])]));
        let mints = vec![mint("n1", 1, "a", &[]), mint("n2", 1, "b", &[("n1", 1)])];
        let violations = check_one(&[], mints, vec![final_state]);
        assert!(
            violations.iter().any(|v| v.contains("superseded")),
            "{violations:?}"
        );
    }

    #[test]
    fn diverged_replicas_are_reported() {
        let mints = vec![mint("n1", 1, "a", &[])];
        let violations = check_one(
            &[],
            mints,
            vec![state(&[("n1", "a", &[])]), Siblings::new()],
        );
        assert!(
            violations.iter().any(|v| v.contains("converge")),
            "{violations:?}"
        );
    }

    #[test]
    fn a_stale_quorum_read_breaks_read_your_writes_but_a_weak_one_does_not() {
        let final_state = state(&[("n1", "a", &[])]);
        let mints = vec![mint("n1", 1, "a", &[])];
        let stale = VersionVector::new();
        let strong = [put("a", 0, 10, 2), get(stale.clone(), 20, 2)];
        let violations = check_one(&strong, mints.clone(), vec![final_state.clone()]);
        assert!(
            violations.iter().any(|v| v.contains("read-your-writes")),
            "{violations:?}"
        );
        // R + W = N: no promise; a read that overlaps the write: no promise either.
        let weak = [
            put("a", 0, 10, 2),
            get(stale.clone(), 20, 1),
            get(stale, 5, 3),
        ];
        let violations = check_one(&weak, mints.clone(), vec![final_state.clone()]);
        assert!(violations.is_empty(), "{violations:?}");
        // A sloppy write promises eventual delivery, not read-your-writes.
        let sloppy = [
            Op {
                sloppy: true,
                ..put("a", 0, 10, 2)
            },
            get(VersionVector::new(), 20, 2),
        ];
        let violations = check_one(&sloppy, mints, vec![final_state]);
        assert!(violations.is_empty(), "{violations:?}");
    }

    #[test]
    fn a_dot_minted_twice_is_reported() {
        let final_state = state(&[("n1", "b", &[])]);
        let mints = vec![mint("n1", 1, "a", &[]), mint("n1", 1, "b", &[])];
        let violations = check_one(&[], mints, vec![final_state]);
        assert!(
            violations.iter().any(|v| v.contains("minted 2 times")),
            "{violations:?}"
        );
    }
}
