//! The safety checks on every forkchoice update and every `debug_setHead` the simulated EL
//! receives: I1 (finalized <= safe <= head, on one chain), I2 (finalized never moves back or
//! changes hash), I3 (the head descends from finalized), I4 (only agreed blocks are labelled),
//! a head never on the honest chain, a needless rewind of an honest head, a roll-back below the
//! finalized block, and any write after lightcl halted.
//!
//! They are pure functions of the EL's chain just before the write ([`ElView`]), the write, and
//! what the honest sources ever agreed (the [`World`]), plus the little the checker remembers
//! ([`Context`]); the EL model records what they return and then applies the write.

use alloy_primitives::B256;
use lightcl::chain::{BlockRef, Heads};

use crate::sim::World;

/// The EL's chain just before a write, as the checks see it.
#[derive(Debug, Clone, Copy)]
pub struct ElView<'a> {
    /// Canonical hashes by height, from genesis.
    pub canonical: &'a [B256],
    /// Its safe label (`None`: unset).
    pub safe: Option<BlockRef>,
    /// Its finalized label (`None`: unset).
    pub finalized: Option<BlockRef>,
}

impl ElView<'_> {
    /// Its canonical head.
    pub fn head(&self) -> BlockRef {
        let n = self.canonical.len().saturating_sub(1);
        BlockRef::new(n as u64, self.canonical.get(n).copied().unwrap_or_default())
    }

    /// Whether its canonical chain holds `b`.
    pub fn holds(&self, b: BlockRef) -> bool {
        self.canonical.get(b.number as usize) == Some(&b.hash)
    }
}

/// What the checks know besides the EL's chain and the write: the checker's own memory (which
/// survives EL crashes) and what the history says.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context {
    /// The highest finalized block lightcl ever sent, or had finalized before the history.
    pub max_finalized: Option<BlockRef>,
    /// The honest sources alone make the quorum, so the agreed chain is the honest one and a
    /// rewind of an honest head is needless (with a lone flapping source it is what the quorum
    /// asked for).
    pub strict: bool,
    /// lightcl halted: it must stay quiet, so any write is a violation.
    pub halted: bool,
    /// The EL's own P2P sync moved its head since the last forkchoice (a rewind of that head is
    /// then a race with the sync, not lightcl's choice).
    pub p2p_moved: bool,
}

/// What the checks concluded about one forkchoice update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Violations, in the order they are recorded.
    pub violations: Vec<String>,
    /// A rewind of an honest head the EL had just reached by its own P2P sync, after lightcl
    /// read it (geth rewinds a few blocks, lightcl feeds them again): counted, not a violation.
    pub p2p_race: bool,
    /// The highest finalized block ever sent, this forkchoice included.
    pub max_finalized: Option<BlockRef>,
}

/// Whether a forkchoice leaves the labels unset (zero hashes, which the Engine API allows).
pub fn labels_unset(heads: &Heads) -> bool {
    heads.safe.hash.is_zero() && heads.finalized.hash.is_zero()
}

/// The checks on a forkchoice update `heads` sent to an EL whose chain was `el`.
pub fn update(w: &World, el: &ElView<'_>, heads: &Heads, cx: &Context) -> Verdict {
    let current_head = el.head();
    let mut bad = Vec::new();
    if cx.halted {
        bad.push("forkchoice after lightcl halted".to_string());
    }
    let Heads { head, safe, finalized } = *heads;
    // Zero-hash labels mean "unset" (the Engine API allows it): only the head is checked.
    let unset = labels_unset(heads);
    // Re-sending the EL's own forkchoice decides nothing new.
    let noop = head == current_head && Some(safe) == el.safe && Some(finalized) == el.finalized;
    if unset {
        if let Some(max) = cx.max_finalized
            && !(head.number <= max.number && w.descends(max, head))
        {
            bad.push(format!(
                "I3: head {head} with unset labels is not on the way to finalized {max}"
            ));
        }
    } else if !(finalized.number <= safe.number && safe.number <= head.number) {
        bad.push(format!("I1: labels out of order {heads:?}"));
    }
    if !unset && (!w.descends(head, safe) || !w.descends(head, finalized)) {
        bad.push(format!(
            "I1: safe {safe} or finalized {finalized} not an ancestor of head {head}"
        ));
    }
    if let Some(max) = cx.max_finalized
        && !unset
    {
        if finalized.number < max.number || !w.descends(finalized, max) {
            bad.push(format!("I2: finalized {finalized} moves back from or off {max}"));
        }
        if !w.descends(head, max) {
            bad.push(format!("I3: head {head} does not descend from finalized {max}"));
        }
    }
    if !unset && !noop && !w.ever_safe.contains(&safe.hash) && safe.number > 0 {
        bad.push(format!(
            "I4: safe {safe} was never agreed safe by the honest sources (honest safe #{}, \
             honest block there {:?})",
            w.safe,
            w.honest.get(safe.number as usize)
        ));
    }
    if !unset && !noop && !w.ever_final.contains(&finalized.hash) && finalized.number > 0 {
        bad.push(format!("I4: finalized {finalized} was never agreed final"));
    }
    // In enforce, a label moves only to a block whose L1 origin L1 had (finalized: one L1
    // finalized).
    if let Some(l1) = w.l1.as_ref().filter(|l| l.enforce)
        && !unset
        && !noop
    {
        for (label, b, current, fin) in
            [("safe", safe, el.safe, false), ("finalized", finalized, el.finalized, true)]
        {
            if b.number == 0 || Some(b) == current {
                continue;
            }
            match w.origin(&b.hash) {
                // Safe: an origin L1 had (an L1 reorg may have dropped it since). Finalized: L1's
                // block now at a height L1 finalized (a finalized L1 block never changes).
                Some(o) if !fin && l1.ever.contains(&o.hash) => {}
                Some(o) if fin && o.number <= l1.finalized && l1.at(o.number) == Some(o) => {}
                o => bad.push(format!(
                    "L1: {label} moved to {b} past a failed origin check (origin {o:?}, L1 \
                     finalized #{})",
                    l1.finalized
                )),
            }
        }
    }
    // A head lightcl moves to must have been on the honest chain (re-asserting the EL's
    // own head, with whatever labels, moves nothing).
    if head != current_head && head.number > 0 && !w.ever_honest.contains(&head.hash) {
        bad.push(format!("head {head} was never on the honest chain"));
    }
    // A needless rewind: the EL's head is on the honest chain, and lightcl asks for an
    // ancestor of it (geth would rewind).
    let honest_now = w.honest.get(current_head.number as usize) == Some(&current_head.hash);
    let rewind = cx.strict
        && honest_now
        && head.number < current_head.number
        && w.descends(current_head, head);
    let p2p_race = rewind && cx.p2p_moved;
    if rewind && !cx.p2p_moved {
        bad.push(format!("needless rewind from honest head {current_head} to {head}"));
    }
    let mut max_finalized = cx.max_finalized;
    if !unset && finalized.number > max_finalized.map_or(0, |m| m.number) {
        max_finalized = Some(finalized);
    }
    Verdict { violations: bad, p2p_race, max_finalized }
}

/// The checks on a `debug_setHead` to `number` sent to an EL whose chain was `el`: none after
/// lightcl halted, and a roll-back never takes an EL that holds the finalized block lightcl sent
/// below it (whatever the EL does with the call).
pub fn set_head(el: &ElView<'_>, number: u64, cx: &Context) -> Vec<String> {
    let mut bad = Vec::new();
    if cx.halted {
        bad.push(format!("debug_setHead {number} after lightcl halted"));
    }
    let head = el.head().number;
    if let Some(max) = cx.max_finalized
        && number < max.number
        && head >= max.number
        && el.holds(max)
    {
        bad.push(format!(
            "debug_setHead {number} rolls the EL (head #{head}) back below the finalized \
             block #{}",
            max.number
        ));
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The honest block at `n` of a 20-block world (safe #16, finalized #8).
    fn at(w: &World, n: u64) -> BlockRef {
        w.at(&w.honest, n).expect("an honest block")
    }

    fn heads(w: &World, head: u64, safe: u64, finalized: u64) -> Heads {
        Heads { head: at(w, head), safe: at(w, safe), finalized: at(w, finalized) }
    }

    /// An EL holding the honest chain up to `head`, labels unset.
    fn el(w: &World, head: u64) -> ElView<'_> {
        ElView { canonical: &w.honest[..=head as usize], safe: None, finalized: None }
    }

    fn has(v: &Verdict, prefix: &str) -> bool {
        v.violations.iter().any(|s| s.starts_with(prefix))
    }

    #[test]
    fn an_honest_forkchoice_passes_and_raises_max_finalized() {
        let w = World::new(20);
        let v = update(&w, &el(&w, 10), &heads(&w, 12, 10, 8), &Context::default());
        assert!(v.violations.is_empty(), "{v:?}");
        assert_eq!(v.max_finalized, Some(at(&w, 8)));
        assert!(!v.p2p_race);
    }

    #[test]
    fn labels_out_of_order_break_i1() {
        let w = World::new(20);
        let v = update(&w, &el(&w, 10), &heads(&w, 12, 6, 7), &Context::default());
        assert!(has(&v, "I1: labels out of order"), "{v:?}");
    }

    #[test]
    fn finalized_moving_back_breaks_i2() {
        let w = World::new(20);
        let cx = Context { max_finalized: Some(at(&w, 8)), ..Context::default() };
        let v = update(&w, &el(&w, 10), &heads(&w, 12, 10, 6), &cx);
        assert_eq!(v.violations.len(), 1, "{v:?}");
        assert!(has(&v, "I2: finalized"), "{v:?}");
        assert_eq!(v.max_finalized, Some(at(&w, 8)), "the checker's memory never moves back");
    }

    #[test]
    fn a_head_off_finalized_breaks_i3() {
        let mut w = World::new(20);
        let honest = w.honest.clone();
        let rival = w.branch(&honest, 5, 10);
        let cx = Context { max_finalized: Some(at(&w, 8)), ..Context::default() };
        let on_rival = |n: u64| w.at(&rival, n).expect("a rival block");
        let fc = Heads { head: on_rival(12), safe: at(&w, 5), finalized: at(&w, 5) };
        let v = update(&w, &el(&w, 10), &fc, &cx);
        assert!(has(&v, "I3: head"), "{v:?}");
        assert!(has(&v, "head #12"), "never on the honest chain: {v:?}");
    }

    #[test]
    fn labels_never_agreed_break_i4_unless_the_el_already_had_them() {
        let w = World::new(20);
        let fc = heads(&w, 20, 18, 8);
        let v = update(&w, &el(&w, 10), &fc, &Context::default());
        assert!(has(&v, "I4: safe"), "{v:?}");
        // Re-sending the EL's own forkchoice decides nothing new.
        let own = ElView { safe: Some(at(&w, 18)), finalized: Some(at(&w, 8)), ..el(&w, 20) };
        let v = update(&w, &own, &fc, &Context::default());
        assert!(v.violations.is_empty(), "{v:?}");
    }

    #[test]
    fn a_rewind_of_an_honest_head_is_needless_unless_p2p_moved_it() {
        let w = World::new(20);
        let strict = Context { strict: true, ..Context::default() };
        let v = update(&w, &el(&w, 15), &heads(&w, 10, 9, 8), &strict);
        assert!(has(&v, "needless rewind from honest head"), "{v:?}");
        let raced = Context { p2p_moved: true, ..strict };
        let v = update(&w, &el(&w, 15), &heads(&w, 10, 9, 8), &raced);
        assert!(v.violations.is_empty() && v.p2p_race, "{v:?}");
        let lax = update(&w, &el(&w, 15), &heads(&w, 10, 9, 8), &Context::default());
        assert!(lax.violations.is_empty(), "{lax:?}");
    }

    #[test]
    fn writes_after_a_halt_are_violations() {
        let w = World::new(20);
        let halted = Context { halted: true, ..Context::default() };
        let v = update(&w, &el(&w, 10), &heads(&w, 12, 10, 8), &halted);
        assert_eq!(v.violations, vec!["forkchoice after lightcl halted".to_string()]);
        assert_eq!(
            set_head(&el(&w, 10), 9, &halted),
            vec!["debug_setHead 9 after lightcl halted".to_string()]
        );
    }

    #[test]
    fn set_head_never_rolls_below_the_finalized_block_sent() {
        let w = World::new(20);
        let cx = Context { max_finalized: Some(at(&w, 8)), ..Context::default() };
        assert_eq!(
            set_head(&el(&w, 15), 5, &cx),
            vec![
                "debug_setHead 5 rolls the EL (head #15) back below the finalized block #8"
                    .to_string()
            ]
        );
        assert!(set_head(&el(&w, 15), 8, &cx).is_empty());
        // An EL that does not hold the finalized block has nothing to lose below it.
        assert!(set_head(&el(&w, 6), 5, &cx).is_empty());
    }
}
