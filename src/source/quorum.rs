//! Agreement between sources, by block hash (I4). Pure functions; `SourceSet` (set/agree.rs)
//! does the lookups. The policy type, [`Quorum`], is configuration (`config::quorum`).
//!
//! For a label, the agreed block is the highest block that at least `required` sources hold on
//! their chain at that height with the same hash, counting a source only up to its own label (a
//! source whose label is higher still counts if its block at that height matches; one whose
//! label is lower does not call that block safe or finalized yet).

use std::collections::HashMap;

use alloy_primitives::B256;

use crate::chain::BlockRef;

pub use crate::config::quorum::{Quorum, QuorumName};

/// The agreed block among the reported labels. `reports[i]` is source i's label (None: no answer
/// or no such label); `hash_at(i, n)` is source i's hash at height n, looked up beforehand for
/// every source whose label is above a candidate height (missing: unknown, counts as not
/// agreeing).
pub fn agree_on_labels(
    reports: &[Option<BlockRef>],
    required: usize,
    hash_at: &HashMap<(usize, u64), B256>,
) -> Option<BlockRef> {
    if required == 0 {
        return None;
    }
    let mut candidates: Vec<BlockRef> = reports.iter().flatten().copied().collect();
    candidates.sort_by_key(|b| std::cmp::Reverse(b.number));
    candidates.dedup();
    candidates.into_iter().find(|c| holders(reports, hash_at, c.number, c.hash) >= required)
}

/// How many sources hold `hash` at `number`, counting each only up to its own label.
pub fn holders(
    reports: &[Option<BlockRef>],
    hash_at: &HashMap<(usize, u64), B256>,
    number: u64,
    hash: B256,
) -> usize {
    reports
        .iter()
        .enumerate()
        .filter(|(i, r)| match r {
            Some(r) if r.number == number => r.hash == hash,
            Some(r) if r.number > number => hash_at.get(&(*i, number)) == Some(&hash),
            _ => false,
        })
        .count()
}

/// The heights at which `hash_at` lookups are needed for [`agree_on_labels`]: (source, height)
/// for every source whose label is above another reported label.
pub fn lookups_needed(reports: &[Option<BlockRef>]) -> Vec<(usize, u64)> {
    let mut heights: Vec<u64> = reports.iter().flatten().map(|r| r.number).collect();
    heights.sort_unstable();
    heights.dedup();
    let mut out = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        if let Some(r) = r {
            out.extend(heights.iter().filter(|&&n| n < r.number).map(|&n| (i, n)));
        }
    }
    out
}

/// The hash at least `required` of `hashes` share, if any (for a single height).
pub fn agree_at(hashes: &[Option<B256>], required: usize) -> Option<B256> {
    let mut counts: HashMap<B256, usize> = HashMap::new();
    for h in hashes.iter().flatten() {
        *counts.entry(*h).or_default() += 1;
    }
    counts.into_iter().find(|(_, c)| *c >= required && required > 0).map(|(h, _)| h)
}

/// The height below which at least `required` sources have a label: the highest height the
/// quorum could agree on.
pub fn quorum_top(reports: &[Option<BlockRef>], required: usize) -> Option<u64> {
    let mut numbers: Vec<u64> = reports.iter().flatten().map(|r| r.number).collect();
    numbers.sort_unstable_by(|a, b| b.cmp(a));
    numbers.get(required.checked_sub(1)?).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(branch: u8, n: u64) -> B256 {
        let mut b = B256::ZERO;
        b.0[0] = branch;
        b.0[24..].copy_from_slice(&n.to_be_bytes());
        b
    }

    /// A source on `branch` above `fork`, on branch 0 at or below it.
    fn chain_hash(branch: u8, fork: u64, n: u64) -> B256 {
        if n <= fork { h(0, n) } else { h(branch, n) }
    }

    fn lookups(reports: &[Option<BlockRef>], chains: &[(u8, u64)]) -> HashMap<(usize, u64), B256> {
        lookups_needed(reports)
            .into_iter()
            .map(|(i, n)| ((i, n), chain_hash(chains[i].0, chains[i].1, n)))
            .collect()
    }

    fn report(chains: &[(u8, u64)], labels: &[Option<u64>]) -> Vec<Option<BlockRef>> {
        labels
            .iter()
            .zip(chains)
            .map(|(l, (b, f))| l.map(|n| BlockRef::new(n, chain_hash(*b, *f, n))))
            .collect()
    }

    #[test]
    fn policies() {
        assert_eq!(Quorum::Named(QuorumName::All).required(3), 3);
        assert_eq!(Quorum::Named(QuorumName::Majority).required(3), 2);
        assert_eq!(Quorum::Named(QuorumName::Majority).required(4), 3);
        assert!(Quorum::Count(2).check(3).is_ok());
        assert!(Quorum::Count(1).check(2).is_err(), "1 of 2 is not a majority");
        assert!(Quorum::Count(4).check(3).is_err());
        assert!(Quorum::Named(QuorumName::All).check(1).is_ok());
    }

    #[test]
    fn table() {
        // (chains (branch, fork), labels, required, expected: height and a source holding it)
        type Case = (Vec<(u8, u64)>, Vec<Option<u64>>, usize, Option<(u64, usize)>);
        let cases: Vec<Case> = vec![
            // All on one chain, labels differ: the lowest label is held by all.
            (
                vec![(0, 0), (0, 0), (0, 0)],
                vec![Some(100), Some(101), Some(102)],
                3,
                Some((100, 0)),
            ),
            // Majority: the second-highest label is held by two.
            (
                vec![(0, 0), (0, 0), (0, 0)],
                vec![Some(100), Some(101), Some(102)],
                2,
                Some((101, 0)),
            ),
            // Two on branch 1 above 50, one on branch 2 above 50; majority follows branch 1.
            (
                vec![(1, 50), (1, 50), (2, 50)],
                vec![Some(100), Some(100), Some(120)],
                2,
                Some((100, 0)),
            ),
            // Same with all: no label block is held by all three (the fallback search finds 50).
            (vec![(1, 50), (1, 50), (2, 50)], vec![Some(100), Some(100), Some(120)], 3, None),
            // A down source (None) counts as not agreeing.
            (vec![(0, 0), (0, 0), (0, 0)], vec![Some(100), None, Some(100)], 2, Some((100, 0))),
            (vec![(0, 0), (0, 0), (0, 0)], vec![Some(100), None, Some(100)], 3, None),
            // A lying source with the highest label does not pull the quorum up.
            (
                vec![(0, 0), (0, 0), (9, 90)],
                vec![Some(100), Some(100), Some(500)],
                2,
                Some((100, 0)),
            ),
        ];
        for (chains, labels, required, want) in cases {
            let reports = report(&chains, &labels);
            let got = agree_on_labels(&reports, required, &lookups(&reports, &chains));
            let want = want.map(|(n, i)| BlockRef::new(n, chain_hash(chains[i].0, chains[i].1, n)));
            assert_eq!(got, want, "chains {chains:?} labels {labels:?} required {required}");
        }
    }

    #[test]
    fn single_height_and_top() {
        let (a, b) = (Some(h(1, 5)), Some(h(2, 5)));
        assert_eq!(agree_at(&[a, a, b], 2), a);
        assert_eq!(agree_at(&[a, a, b], 3), None);
        assert_eq!(agree_at(&[a, None, b], 2), None);
        let r = |n| Some(BlockRef::new(n, B256::ZERO));
        assert_eq!(quorum_top(&[r(10), r(30), r(20)], 2), Some(20));
        assert_eq!(quorum_top(&[r(10), None, r(20)], 3), None);
    }

    proptest! {
        /// Never yields a block that fewer than `required` sources hold at or below their label.
        #[test]
        fn never_yields_a_block_fewer_than_required_hold(
            chains in proptest::collection::vec((0u8..3, 0u64..40), 1..6),
            labels in proptest::collection::vec(proptest::option::of(0u64..60), 6),
            extra in 0usize..3,
        ) {
            let n = chains.len();
            let labels = &labels[..n];
            let required = (n / 2 + 1 + extra).min(n);
            let reports = report(&chains, labels);
            if let Some(b) = agree_on_labels(&reports, required, &lookups(&reports, &chains)) {
                let holding = chains.iter().zip(labels).filter(|((br, f), l)| {
                    l.is_some_and(|l| l >= b.number) && chain_hash(*br, *f, b.number) == b.hash
                }).count();
                prop_assert!(holding >= required, "{b:?} held by {holding} < {required}");
            }
        }
    }
}
