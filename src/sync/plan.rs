//! Pure decisions: given the local heads, the agreed source heads and a few hash lookups, what
//! the follower does next. The labels a forkchoice carries come from `forkchoice::labels`.

use alloy_primitives::B256;

use super::forkchoice::labels::labels;
use crate::chain::{BlockRef, Heads};
use crate::config::Follow;

/// Everything the planner looks at. Hash lookups are done by the caller beforehand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// The EL's heads.
    pub local: Heads,
    /// The heads the sources agree on.
    pub agreed: Heads,
    /// What the local head follows.
    pub follow: Follow,
    /// The highest block known to be final: the EL's finalized block, or the remembered floor
    /// when that is higher.
    pub checkpoint: BlockRef,
    /// The quorum's hash at the checkpoint's height (`None`: no agreed answer; not evidence).
    pub source_at_checkpoint: Option<B256>,
    /// The EL's hash at the height of the follow target (if at or below the local head).
    pub local_at_target: Option<B256>,
    /// The EL's hash at the height of the agreed safe block (if at or below the local head).
    pub local_at_safe: Option<B256>,
    /// The EL's hash at the height of the agreed finalized block (if at or below the head).
    pub local_at_finalized: Option<B256>,
    /// Whether the quorum holds the local head (asked only when it is above the target):
    /// `Some(false)` the quorum holds another block there, `None` it holds none (lagging).
    pub local_head_on_source: Option<bool>,
    /// Under `labels = "lockstep"`: safe and finalized may not move above this height (the
    /// lowest head among the other replicas that count). `None`: no such limit.
    pub label_cap: Option<u64>,
}

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// In sync; nothing to send.
    Idle,
    /// Fetch and feed blocks `from..=to` on top of the local head.
    Insert {
        /// First height (local head + 1).
        from: u64,
        /// Last height (the follow target).
        to: u64,
    },
    /// The blocks are local; move the forkchoice to these heads.
    Promote(Heads),
    /// The local chain and the sources' differ at or below `at`, above local finalized.
    Diverged {
        /// A height where they differ.
        at: u64,
    },
    /// The quorum holds another block at the checkpoint's height but does not call anything
    /// that high final: its chain conflicts with our finality without claiming finality
    /// itself (a stale replica, a branch that will be abandoned). Never followed; hold.
    Conflict {
        /// The checkpoint.
        local: BlockRef,
        /// The quorum's hash at its height.
        source: B256,
    },
    /// The sources disagree with the local finalized block: no engine writes (I2).
    FinalizedDivergence {
        /// Local finalized block.
        local: BlockRef,
        /// The sources' hash at that height.
        source: B256,
    },
}

impl View {
    /// The source label the head follows.
    pub fn target(&self) -> BlockRef {
        self.follow.target(&self.agreed)
    }
}

/// Decides the next step.
pub fn plan(v: &View) -> Step {
    // Halt only on positive evidence: the quorum holds another hash at the checkpoint and
    // calls a block at or above that height final.
    if let Some(source) = v.source_at_checkpoint
        && source != v.checkpoint.hash
    {
        if v.agreed.finalized.number >= v.checkpoint.number {
            return Step::FinalizedDivergence { local: v.checkpoint, source };
        }
        return Step::Conflict { local: v.checkpoint, source };
    }
    let target = v.target();
    if target.number > v.local.head.number {
        return Step::Insert { from: v.local.head.number + 1, to: target.number };
    }
    match v.local_at_target {
        Some(h) if h == target.hash && v.local_head_on_source == Some(false) => {
            // The quorum holds another block at our head's height (they reorged below it, or
            // it came from elsewhere): the divergence is between the target and our head.
            Step::Diverged { at: v.local.head.number }
        }
        Some(h) if h == target.hash && v.local_head_on_source.is_none() => {
            // The quorum holds nothing at our head's height yet (lagging replicas, or a head
            // from a branch of its own): no evidence either way, and no forkchoice may carry a
            // head the quorum has not agreed on. Wait.
            Step::Idle
        }
        Some(h) if h == target.hash => {
            // The target is on the local chain. The head stays where it is when it is already
            // beyond the target (following safe after latest): moving it back would rewind.
            // Labels move only to agreed blocks the local chain holds by hash (I1, I4).
            let head = if target.number < v.local.head.number { v.local.head } else { target };
            let on_chain = |b: &BlockRef| {
                let local = if *b == v.agreed.safe {
                    v.local_at_safe
                } else if *b == v.agreed.finalized {
                    v.local_at_finalized
                } else {
                    None
                };
                b.number <= target.number
                    && local == Some(b.hash)
                    && v.label_cap.is_none_or(|cap| b.number <= cap)
            };
            let next = labels(head, &v.local, &v.agreed, on_chain);
            if next == v.local { Step::Idle } else { Step::Promote(next) }
        }
        _ => Step::Diverged { at: target.number },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::forkchoice::labels::tests::{b, heads, other};

    fn view(local: Heads, agreed: Heads, follow: Follow) -> View {
        let target = follow.target(&agreed);
        let at = |n: u64| (n <= local.head.number).then(|| b(n).hash);
        View {
            local,
            agreed,
            follow,
            checkpoint: local.finalized,
            source_at_checkpoint: Some(local.finalized.hash),
            local_at_target: at(target.number),
            local_at_safe: at(agreed.safe.number),
            local_at_finalized: at(agreed.finalized.number),
            local_head_on_source: Some(true),
            label_cap: None,
        }
    }

    #[test]
    fn plan_table() {
        let cases: Vec<(&str, View, Step)> = vec![
            (
                "fresh EL, follow safe: insert up to safe",
                view(heads(0, 0, 0), heads(300, 250, 200), Follow::Safe),
                Step::Insert { from: 1, to: 250 },
            ),
            (
                "fresh EL, follow latest",
                view(heads(0, 0, 0), heads(300, 250, 200), Follow::Latest),
                Step::Insert { from: 1, to: 300 },
            ),
            (
                "at target, labels behind: promote",
                view(heads(250, 100, 50), heads(300, 250, 200), Follow::Safe),
                Step::Promote(heads(250, 250, 200)),
            ),
            ("in sync", view(heads(250, 250, 200), heads(300, 250, 200), Follow::Safe), Step::Idle),
            (
                "ahead of a safe target: head kept, labels move",
                view(heads(300, 100, 50), heads(300, 250, 200), Follow::Safe),
                Step::Promote(heads(300, 250, 200)),
            ),
            (
                "lockstep: another replica holds up to 220: finalized moves, safe waits",
                View {
                    label_cap: Some(220),
                    ..view(heads(300, 100, 50), heads(300, 250, 200), Follow::Latest)
                },
                Step::Promote(heads(300, 200, 200)),
            ),
            (
                "lockstep: another replica holds up to 120: the head moves, no label does",
                View {
                    label_cap: Some(120),
                    ..view(heads(280, 100, 50), heads(300, 250, 200), Follow::Latest)
                },
                Step::Insert { from: 281, to: 300 },
            ),
            (
                "lockstep: labels wait at the head too",
                View {
                    label_cap: Some(120),
                    ..view(heads(300, 100, 50), heads(300, 250, 200), Follow::Latest)
                },
                Step::Idle,
            ),
            (
                "target hash differs locally",
                View {
                    local_at_target: Some(other(250).hash),
                    ..view(heads(260, 0, 0), heads(300, 250, 0), Follow::Safe)
                },
                Step::Diverged { at: 250 },
            ),
            (
                "local head above the target, unknown to the sources",
                View {
                    local_head_on_source: Some(false),
                    ..view(heads(300, 100, 50), heads(300, 250, 200), Follow::Safe)
                },
                Step::Diverged { at: 300 },
            ),
            (
                "local head above the target, the quorum has no block there yet (lagging): \
                 not a divergence; nothing is sent until it can tell",
                View {
                    local_head_on_source: None,
                    ..view(heads(300, 100, 50), heads(300, 250, 200), Follow::Safe)
                },
                Step::Idle,
            ),
            (
                "agreed finalized has another hash locally: finalized not moved (by hash)",
                View {
                    local_at_finalized: Some(other(200).hash),
                    ..view(heads(250, 100, 50), heads(300, 250, 200), Follow::Safe)
                },
                Step::Promote(heads(250, 250, 50)),
            ),
            (
                "agreed safe has another hash locally: safe not moved",
                View {
                    local_at_safe: Some(other(250).hash),
                    ..view(heads(300, 100, 50), heads(300, 250, 200), Follow::Latest)
                },
                Step::Promote(heads(300, 200, 200)),
            ),
            (
                "quorum disagrees with the remembered floor above the EL's finalized: halt",
                View {
                    checkpoint: b(120),
                    source_at_checkpoint: Some(other(120).hash),
                    ..view(heads(100, 60, 50), heads(300, 250, 200), Follow::Safe)
                },
                Step::FinalizedDivergence { local: b(120), source: other(120).hash },
            ),
            (
                "quorum holds another block at the checkpoint but its finalized is lower: hold",
                View {
                    source_at_checkpoint: Some(other(50).hash),
                    ..view(heads(100, 60, 50), heads(300, 250, 40), Follow::Safe)
                },
                Step::Conflict { local: b(50), source: other(50).hash },
            ),
            (
                "no agreed answer at the checkpoint: no halt",
                View {
                    source_at_checkpoint: None,
                    ..view(heads(0, 0, 0), heads(300, 250, 200), Follow::Safe)
                },
                Step::Insert { from: 1, to: 250 },
            ),
            (
                "source disagrees with local finalized",
                View {
                    source_at_checkpoint: Some(other(50).hash),
                    ..view(heads(100, 60, 50), heads(300, 250, 200), Follow::Safe)
                },
                Step::FinalizedDivergence { local: b(50), source: other(50).hash },
            ),
        ];
        for (name, v, want) in cases {
            assert_eq!(plan(&v), want, "{name}");
        }
    }
}
