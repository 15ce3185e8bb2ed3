//! The liveness judgements, made over a whole history rather than at each write: lightcl ends
//! either converged on the honest chain or halted, and halted only when it had to (a finalized
//! block the honest chain no longer holds); under faults that leave progress possible it kept
//! up, not only after they healed.
//!
//! The history measures (it samples the EL's lag on its own clock and watches for convergence
//! while lightcl runs); these functions judge what it measured.

use lightcl::chain::BlockRef;
use lightcl::config::Follow;

use crate::sim::World;

/// The EL's head, safe and finalized blocks (unset labels as `None`), as `SimEl::heads` gives
/// them.
pub type ElHeads = (BlockRef, Option<BlockRef>, Option<BlockRef>);

/// How a history ended, as the liveness judgement needs it.
#[derive(Debug, Clone, Copy)]
pub struct End {
    /// lightcl halted.
    pub halted: bool,
    /// The EL was seen holding the honest target after healing.
    pub converged: bool,
    /// lightcl (or the EL it was given) had finalized a block the honest chain no longer holds
    /// (see [`lost_finality`]).
    pub lost_finality: bool,
    /// The EL's heads at the end.
    pub el: ElHeads,
    /// The largest lag behind the honest tip (blocks) once the EL had first caught up, before
    /// healing.
    pub lag: u64,
    /// The most that lag may be (`None`: the history's faults do not promise progress).
    pub lag_bound: Option<u64>,
}

/// Whether an EL with `heads` holds the honest target of `follow` and the honest labels.
pub fn converged(w: &World, heads: ElHeads, follow: Follow) -> bool {
    let (head, safe, fin) = heads;
    let at = |n: u64| w.at(&w.honest, n);
    let target = match follow {
        Follow::Safe => at(w.safe),
        Follow::Latest => Some(w.tip()),
    };
    // Following safe, a head that was already ahead on the honest chain may stay there.
    let head_ok = Some(head) == target
        || (follow == Follow::Safe && at(head.number) == Some(head) && head.number >= w.safe);
    head_ok && safe == at(w.safe) && fin == at(w.finalized)
}

/// Whether any of `finalized` (blocks lightcl finalized, or the EL came with) is off the honest
/// chain now: then halting is the right end.
pub fn lost_finality(w: &World, finalized: &[Option<BlockRef>]) -> bool {
    finalized.iter().flatten().any(|f| w.at(&w.honest, f.number) != Some(*f))
}

/// The liveness violations of a history that ended as `end` (empty: it was live).
pub fn judge(w: &World, end: &End) -> Vec<String> {
    let mut bad: Vec<String> = Vec::new();
    // Halting is right only if lightcl had finalized a block the honest chain no longer holds
    // (or the EL came with one); otherwise it must have converged.
    if end.halted && !end.lost_finality {
        bad.push("halted without a finalized divergence".into());
    }
    if !end.halted && !end.converged && !end.lost_finality {
        bad.push(format!(
            "did not converge: EL {:?}, honest tip {} safe #{} finalized #{}",
            end.el,
            w.tip(),
            w.safe,
            w.finalized
        ));
    }
    let max_lag_seen = end.lag;
    if let Some(bound) = end.lag_bound
        && max_lag_seen > bound
        && !end.halted
    {
        bad.push(format!(
            "lagged {max_lag_seen} blocks behind the honest tip during faults that leave \
             progress possible, after it had caught up (at most {bound})"
        ));
    }
    if !end.halted && end.lost_finality {
        bad.push("did not halt although the honest chain no longer holds a finalized block".into());
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halting_is_right_only_after_a_finalized_divergence() {
        let mut w = World::new(20);
        let fin = w.at(&w.honest, w.finalized);
        let heads = (w.tip(), None, fin);
        let end = End {
            halted: true,
            converged: false,
            lost_finality: lost_finality(&w, &[fin]),
            el: heads,
            lag: 0,
            lag_bound: None,
        };
        assert!(!end.lost_finality);
        assert_eq!(judge(&w, &end), vec!["halted without a finalized divergence".to_string()]);
        w.reorg_below_finality(4);
        let lost = End { lost_finality: lost_finality(&w, &[fin]), ..end };
        assert!(lost.lost_finality);
        assert!(judge(&w, &lost).is_empty());
        assert_eq!(
            judge(&w, &End { halted: false, ..lost }),
            vec![
                "did not halt although the honest chain no longer holds a finalized block"
                    .to_string()
            ]
        );
    }

    #[test]
    fn following_safe_a_head_ahead_on_the_honest_chain_has_converged() {
        let w = World::new(20);
        let at = |n: u64| w.at(&w.honest, n);
        let ahead = at(18).expect("an honest block");
        assert!(converged(&w, (ahead, at(16), at(8)), Follow::Safe));
        assert!(!converged(&w, (ahead, at(16), at(8)), Follow::Latest));
        assert!(!converged(&w, (ahead, at(15), at(8)), Follow::Safe));
    }
}
