//! The labels of every forkchoice lightcl sends, one pure function per origin (see
//! [`super::Origin`]): which head, safe and finalized blocks the EL is told. The gate checks the
//! result against the floor whatever these say; these decide what is asked for.
//!
//! - [`labels`]: a head whose blocks the EL holds (promote, and under [`for_fed_head`]): safe and
//!   finalized advance to the agreed ones known to be on the head's chain; finalized never moves
//!   back; finalized <= safe <= head (I1, I2, I4).
//! - [`for_fed_head`]: a head the feed just gave the EL (catch-up and replay).
//! - [`for_reset`]: recovery's courtesy reset to the common ancestor.
//! - [`handed`]: the head handed to an EL that syncs from its peers.
//! - A re-assert after an EL restart sends the EL's own heads, unchanged.

use crate::chain::{BlockRef, Heads, Proven};

/// The forkchoice for `head`: safe and finalized advance to the agreed ones when those are known
/// to be on the local chain (`on_chain`), finalized never moves back, and
/// finalized <= safe <= head always holds (I1, I2, I4).
pub fn labels(
    head: BlockRef,
    local: &Heads,
    agreed: &Heads,
    on_chain: impl Fn(&BlockRef) -> bool,
) -> Heads {
    let usable = |b: &BlockRef| b.number <= head.number && on_chain(b);
    let mut finalized = local.finalized;
    if agreed.finalized.number >= local.finalized.number && usable(&agreed.finalized) {
        finalized = agreed.finalized;
    }
    let mut safe = if usable(&agreed.safe) {
        agreed.safe
    } else if local.safe.number <= head.number {
        local.safe
    } else {
        finalized
    };
    if safe.number < finalized.number {
        safe = finalized;
    }
    if finalized.number > head.number {
        // Cannot happen for a head that descends from finalized; keep I1 regardless.
        finalized = head;
        safe = head;
    }
    Heads { head, safe, finalized }
}

/// The forkchoice for a fed `head` on the branch `known` (proven from the EL's head `base.head`
/// up by parent hash): safe and finalized move to the agreed ones where the branch holds them by
/// hash, and to the `floor` where the branch reaches it (an EL refilled after losing blocks);
/// never above the lockstep `cap` of a fleet.
pub fn for_fed_head(
    head: BlockRef,
    base: &Heads,
    agreed: &Heads,
    known: &Proven,
    floor: Option<BlockRef>,
    cap: Option<u64>,
) -> Heads {
    let mut below = *base;
    if let Some(f) = floor
        && f.number > below.finalized.number
        && head.number >= f.number
        && (known.get(f.number) == Some(f.hash) || f.number <= base.head.number)
    {
        below.finalized = f;
        if below.safe.number < f.number {
            below.safe = f;
        }
    }
    let on_branch = |b: &BlockRef| {
        (known.get(b.number) == Some(b.hash)
            || (b.number <= base.head.number && base_labels_hold(base, b)))
            && cap.is_none_or(|c| b.number <= c)
    };
    labels(head, &below, agreed, on_branch)
}

/// Whether `b` is one of the base's own labels (known to be on its chain).
fn base_labels_hold(base: &Heads, b: &BlockRef) -> bool {
    *b == base.head || *b == base.safe || *b == base.finalized
}

/// The courtesy reset to the common `ancestor` of the EL's chain and the sources': head at the
/// ancestor, safe no higher, finalized unchanged (the ancestor is at or above it).
pub fn for_reset(local: &Heads, ancestor: BlockRef) -> Heads {
    let safe = if local.safe.number > ancestor.number { ancestor } else { local.safe };
    Heads { head: ancestor, safe, finalized: local.finalized }
}

/// The forkchoice handed to the EL: the follow target with the agreed labels (the agreed
/// finalized block as all three when the target is below it), within the lockstep `cap` of a
/// fleet: labels above it stay at `checkpoint` (lightcl's finalized block), and `None` when
/// even that is above the cap (or there is none): nothing is handed this round.
pub fn handed(
    target: BlockRef,
    agreed: &Heads,
    checkpoint: BlockRef,
    cap: Option<u64>,
) -> Option<Heads> {
    let f = agreed.finalized;
    let heads = if target.number < f.number {
        Heads { head: f, safe: f, finalized: f }
    } else {
        let safe = if agreed.safe.number <= target.number { agreed.safe } else { target };
        Heads { head: target, safe, finalized: f }
    };
    let Some(cap) = cap else { return Some(heads) };
    if heads.finalized.number <= cap {
        let safe = if heads.safe.number <= cap { heads.safe } else { heads.finalized };
        return Some(Heads { safe, ..heads });
    }
    (checkpoint.number > 0 && checkpoint.number <= cap).then_some(Heads {
        head: heads.head,
        safe: checkpoint,
        finalized: checkpoint,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use alloy_primitives::B256;

    use super::*;

    /// Block `n` of the chain the tests follow.
    pub(crate) fn b(n: u64) -> BlockRef {
        BlockRef::new(n, B256::with_last_byte(n as u8))
    }

    /// A block at height `n` of another branch.
    pub(crate) fn other(n: u64) -> BlockRef {
        BlockRef::new(n, B256::repeat_byte(0xee))
    }

    /// Heads at heights `h`, `s`, `f` of the chain the tests follow.
    pub(crate) fn heads(h: u64, s: u64, f: u64) -> Heads {
        Heads { head: b(h), safe: b(s), finalized: b(f) }
    }

    /// A chain of `b(n)` blocks from `low` to `high`, linked by construction.
    fn chain(low: u64, high: u64) -> Proven {
        let mut c = Proven::at(b(low));
        for n in low + 1..=high {
            assert!(c.push(b(n), b(n - 1).hash));
        }
        c
    }

    #[test]
    fn labels_keep_invariants() {
        let all = |_: &BlockRef| true;
        // Agreed finalized below local finalized: finalized never moves back.
        assert_eq!(
            labels(b(100), &heads(90, 80, 70), &heads(120, 60, 40), all),
            heads(100, 70, 70)
        );
        // Agreed labels above the head: keep local ones.
        assert_eq!(labels(b(10), &heads(9, 5, 3), &heads(300, 250, 200), all), heads(10, 5, 3));
        // Agreed labels not known to be on the local chain: not used.
        assert_eq!(
            labels(b(100), &heads(90, 50, 40), &heads(100, 90, 80), |_| false),
            heads(100, 50, 40)
        );
    }

    /// Exhaustive small check: for every combination the result satisfies I1 and I2.
    #[test]
    fn labels_property() {
        for h in 0..12u64 {
            for (ls, lf) in (0..12u64).flat_map(|s| (0..=s).map(move |f| (s, f))) {
                for (s, f) in (0..15u64).flat_map(|s| (0..=s).map(move |f| (s, f))) {
                    if lf > h {
                        continue;
                    }
                    let local = heads(h.max(ls), ls, lf);
                    let out = labels(b(h), &local, &heads(14, s, f), |_| true);
                    assert!(out.finalized.number <= out.safe.number, "{out:?}");
                    assert!(out.safe.number <= out.head.number, "{out:?}");
                    assert!(out.finalized.number >= lf, "finalized moved back: {out:?}");
                }
            }
        }
    }

    /// Feed heads: labels follow the fed branch, the floor, and the lockstep cap.
    #[test]
    fn for_fed_head_table() {
        let base = heads(100, 90, 80);
        let agreed = heads(200, 150, 120);
        type Case = (&'static str, u64, Proven, Option<BlockRef>, Option<u64>, Heads);
        let cases: Vec<Case> = vec![
            (
                "agreed labels on the fed branch",
                160,
                chain(100, 160),
                None,
                None,
                heads(160, 150, 120),
            ),
            (
                "head below agreed safe: safe no lower than finalized",
                130,
                chain(100, 130),
                None,
                None,
                heads(130, 120, 120),
            ),
            ("head below both labels", 110, chain(100, 110), None, None, heads(110, 90, 80)),
            (
                "lockstep cap below safe",
                160,
                chain(100, 160),
                None,
                Some(130),
                heads(160, 120, 120),
            ),
            ("lockstep cap below both", 160, chain(100, 160), None, Some(100), heads(160, 90, 80)),
            (
                "floor on the branch above finalized",
                160,
                chain(100, 160),
                Some(b(140)),
                Some(130),
                heads(160, 140, 140),
            ),
            (
                "floor not yet reached",
                120,
                chain(100, 120),
                Some(b(140)),
                None,
                heads(120, 120, 120),
            ),
            (
                "floor of another branch",
                160,
                chain(100, 160),
                Some(other(140)),
                Some(100),
                heads(160, 90, 80),
            ),
        ];
        for (what, head, known, floor, cap, want) in cases {
            let got = for_fed_head(b(head), &base, &agreed, &known, floor, cap);
            assert_eq!(got, want, "{what}");
        }
        // A label of another branch at an agreed height is never taken.
        let forked = Heads { head: b(200), safe: other(150), finalized: other(120) };
        let got = for_fed_head(b(160), &base, &forked, &chain(100, 160), None, None);
        assert_eq!(got, heads(160, 90, 80), "labels off the fed branch");
    }

    #[test]
    fn for_reset_table() {
        let cases = [
            ("ancestor above safe", heads(100, 60, 50), 80, heads(80, 60, 50)),
            ("ancestor below safe", heads(100, 90, 50), 70, heads(70, 70, 50)),
            ("ancestor at finalized", heads(100, 90, 50), 50, heads(50, 50, 50)),
        ];
        for (what, local, ancestor, want) in cases {
            assert_eq!(for_reset(&local, b(ancestor)), want, "{what}");
        }
    }

    #[test]
    fn handed_table() {
        let agreed = Heads { head: b(200), safe: b(190), finalized: b(150) };
        let none = BlockRef::new(0, B256::ZERO);
        let h = |head, safe, finalized| Some(Heads { head, safe, finalized });
        let cases = [
            ("safe target", b(190), agreed, none, None, h(b(190), b(190), b(150))),
            ("latest target", b(200), agreed, none, None, Some(agreed)),
            // However far above finalized: the head is the target (the walk is resumable).
            (
                "far",
                b(4_000),
                Heads { head: b(5_000), safe: b(4_000), finalized: b(100) },
                none,
                None,
                h(b(4_000), b(4_000), b(100)),
            ),
            ("target below finalized", b(100), agreed, none, None, h(b(150), b(150), b(150))),
            ("cap above the labels", b(200), agreed, b(40), Some(195), Some(agreed)),
            ("cap between", b(200), agreed, b(40), Some(170), h(b(200), b(150), b(150))),
            ("cap below finalized", b(200), agreed, b(40), Some(64), h(b(200), b(40), b(40))),
            ("cap below the checkpoint", b(200), agreed, b(40), Some(30), None),
            ("cap, no checkpoint", b(200), agreed, none, Some(64), None),
        ];
        for (what, target, agreed, checkpoint, cap, want) in cases {
            assert_eq!(handed(target, &agreed, checkpoint, cap), want, "{what}");
        }
    }
}
