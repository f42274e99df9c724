//! The verdict: is each key's history linearizable?
//!
//! Each register key is checked on its own (linearizability is compositional) by
//! `todc-utils`'s `WGLChecker`, a Wing–Gong–Lowe search with memoization, against
//! [`Register`], the sequential specification of get / put / delete / compare-and-swap.
//! The checker sees calls and responses in real-time order. Definitely failed operations
//! are left out (they did not happen). An unknown operation gets its response after
//! every other event of the history, with no constraint on what it returned, as
//! porcupine and Knossos treat pending operations: it may take effect at any point after
//! its call, and taking effect last is the same as never. The search runs on its own
//! thread within a time budget.

use std::collections::BTreeMap;
use std::time::Duration;

use todc_utils::{Action, History as TodcHistory, Specification, WGLChecker};

use super::history::{Entry, Op, Outcome, Ret};

/// One operation as the specification sees it: what was asked and, when the client
/// learnt it, what came back (`None`: the outcome is unknown, any answer fits).
#[derive(Clone, Debug)]
pub struct Step {
    pub op: Op,
    pub ret: Option<Ret>,
}

/// The sequential specification: one register that may be absent.
pub struct Register;

impl Register {
    /// Applies `op` to `state`: what it returns and the state after it.
    pub fn step(op: &Op, state: Option<u64>) -> (Ret, Option<u64>) {
        match op {
            Op::Get => (Ret::Value(state), state),
            Op::Put(v) => (Ret::Done, Some(*v)),
            Op::Delete => (Ret::Done, None),
            Op::Cas { expected, new } => {
                let succeeded = state == *expected;
                (Ret::Cas { succeeded, previous: state }, if succeeded { Some(*new) } else { state })
            }
        }
    }
}

impl Specification for Register {
    type State = Option<u64>;
    type Operation = Step;

    fn init() -> Option<u64> {
        None
    }

    fn apply(step: &Step, state: &Option<u64>) -> (bool, Option<u64>) {
        let (ret, next) = Register::step(&step.op, *state);
        (step.ret.as_ref().is_none_or(|r| *r == ret), next)
    }
}

/// The verdict on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    NotLinearizable,
    /// The search did not finish within its budget.
    Undecided,
}

/// Checks every key's history; returns the verdict per key.
pub fn check(entries: &[Entry], budget: Duration) -> BTreeMap<usize, Verdict> {
    let mut by_key: BTreeMap<usize, Vec<Entry>> = BTreeMap::new();
    for e in entries.iter().filter(|e| !matches!(e.outcome, Outcome::Fail(_))) {
        by_key.entry(e.key).or_default().push(e.clone());
    }
    by_key.into_iter().map(|(key, ops)| (key, check_key(ops, budget))).collect()
}

/// Checks one key's operations (none of them definitely failed).
fn check_key(ops: Vec<Entry>, budget: Duration) -> Verdict {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name("linearizability".into()).spawn(move || {
        let _ = tx.send(WGLChecker::<Register>::is_linearizable(history_of(&ops)));
    });
    if spawned.is_err() {
        return Verdict::Undecided;
    }
    // A search past its budget is abandoned (its thread ends with the test process).
    match rx.recv_timeout(budget) {
        Ok(true) => Verdict::Linearizable,
        Ok(false) => Verdict::NotLinearizable,
        Err(_) => Verdict::Undecided,
    }
}

/// The checker's history: calls and responses in time order (calls first on a tie: the
/// more lenient reading), the responses of unknown operations after everything else.
/// Process ids are renumbered densely (the checker sizes a table by the largest).
fn history_of(ops: &[Entry]) -> TodcHistory<Step> {
    let mut dense: BTreeMap<u64, usize> = BTreeMap::new();
    let mut events: Vec<(Duration, bool, usize)> = Vec::with_capacity(2 * ops.len());
    for (i, e) in ops.iter().enumerate() {
        let next = dense.len();
        dense.entry(e.process).or_insert(next);
        events.push((e.invoke, false, i));
        let done = if matches!(e.outcome, Outcome::Ok(_)) { e.complete } else { Duration::MAX };
        events.push((done, true, i));
    }
    events.sort_by_key(|(t, is_response, i)| (*t, *is_response, *i));
    let actions = events
        .into_iter()
        .map(|(_, is_response, i)| {
            let e = &ops[i];
            let ret = match &e.outcome {
                Outcome::Ok(r) => Some(r.clone()),
                _ => None,
            };
            let step = Step { op: e.op.clone(), ret };
            (dense[&e.process], if is_response { Action::Response(step) } else { Action::Call(step) })
        })
        .collect();
    TodcHistory::from_actions(actions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(process: u64, op: Op, invoke: u64, complete: u64, outcome: Outcome) -> Entry {
        let ms = Duration::from_millis;
        Entry { process, node: 1, key: 0, op, invoke: ms(invoke), complete: ms(complete), outcome }
    }

    fn verdict(ops: Vec<Entry>) -> Verdict {
        check(&ops, Duration::from_secs(10)).remove(&0).unwrap()
    }

    #[test]
    fn a_read_after_an_acknowledged_write_must_see_it() {
        let write = entry(1, Op::Put(7), 0, 10, Outcome::Ok(Ret::Done));
        let fresh = entry(2, Op::Get, 20, 30, Outcome::Ok(Ret::Value(Some(7))));
        let stale = entry(2, Op::Get, 20, 30, Outcome::Ok(Ret::Value(None)));
        assert_eq!(verdict(vec![write.clone(), fresh]), Verdict::Linearizable);
        assert_eq!(verdict(vec![write, stale]), Verdict::NotLinearizable);
    }

    #[test]
    fn an_unknown_write_may_apply_late_or_never_but_a_failed_one_never() {
        let unknown = entry(1, Op::Put(7), 0, 10, Outcome::Unknown("timeout".into()));
        let seen = entry(2, Op::Get, 50, 60, Outcome::Ok(Ret::Value(Some(7))));
        let unseen = entry(3, Op::Get, 20, 30, Outcome::Ok(Ret::Value(None)));
        assert_eq!(verdict(vec![unknown.clone(), unseen.clone(), seen.clone()]), Verdict::Linearizable);
        let failed = entry(1, Op::Put(7), 0, 10, Outcome::Fail("unavailable".into()));
        assert_eq!(verdict(vec![failed, unseen, seen]), Verdict::NotLinearizable, "a success after a definite failure");
    }

    #[test]
    fn compare_and_swap_answers_must_agree_with_the_order() {
        let put = entry(1, Op::Put(1), 0, 10, Outcome::Ok(Ret::Done));
        let won = Outcome::Ok(Ret::Cas { succeeded: true, previous: Some(1) });
        let a = entry(2, Op::Cas { expected: Some(1), new: 2 }, 20, 30, won.clone());
        let b = entry(3, Op::Cas { expected: Some(1), new: 3 }, 20, 30, won);
        assert_eq!(verdict(vec![put.clone(), a.clone()]), Verdict::Linearizable);
        assert_eq!(verdict(vec![put, a, b]), Verdict::NotLinearizable, "two swaps from the same value both won");
    }
}
