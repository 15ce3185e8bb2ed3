//! The common-ancestor search, written without I/O: the caller asks [`AncestorSearch::next`]
//! which height to look up, fetches the local and the source hash there, and reports whether they
//! agree. `agree(n)` is monotone on two hash chains (agreeing at n implies agreeing below n), so
//! a binary search over `[local finalized, divergence)` finds the highest agreeing height in
//! O(log n) lookups. The lower bound is probed first: disagreement there is a finalized
//! divergence, and the search never answers below it.
//!
//! A load-balanced source may answer from replicas on different branches and break
//! monotonicity; the answer is then a candidate only. Recovery accepts it after the blocks it
//! fetches for replay link by parent hash from the candidate to the target it captured first,
//! and searches again otherwise (see `sync/task/recover.rs`).

/// Where the search stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchState {
    /// Look up this height next.
    Probe(u64),
    /// The highest agreeing height found.
    Found(u64),
    /// The chains differ at the lower bound (local finalized): halt.
    FinalizedDiverged(u64),
}

/// Binary search for the highest height in `[lo, hi)` where local and source agree.
#[derive(Debug, Clone)]
pub struct AncestorSearch {
    lo: u64,
    /// Highest height known to agree (starts unknown: the lower bound is checked first).
    good: Option<u64>,
    /// Lowest height known to disagree.
    bad: u64,
    lookups: u32,
}

impl AncestorSearch {
    /// A search over `[finalized, diverged)`: `diverged` is a height where the chains differ.
    pub fn new(finalized: u64, diverged: u64) -> Self {
        Self { lo: finalized, good: None, bad: diverged.max(finalized), lookups: 0 }
    }

    /// What to do next.
    pub fn next(&self) -> SearchState {
        match self.good {
            None if self.bad <= self.lo => SearchState::FinalizedDiverged(self.lo),
            None => SearchState::Probe(self.lo),
            Some(g) if g + 1 >= self.bad => SearchState::Found(g),
            Some(g) => SearchState::Probe(g + (self.bad - g) / 2),
        }
    }

    /// Reports the comparison at `height` (the last probe).
    pub fn answer(&mut self, height: u64, agree: bool) {
        self.lookups += 1;
        match (self.good, agree) {
            (None, true) if height == self.lo => self.good = Some(height),
            (None, false) if height == self.lo => self.bad = self.lo,
            (Some(g), true) if height > g && height < self.bad => self.good = Some(height),
            (Some(g), false) if height > g && height < self.bad => self.bad = height,
            // An answer for a height that is not the current probe changes nothing.
            _ => {}
        }
    }

    /// Probes answered so far.
    pub fn lookups(&self) -> u32 {
        self.lookups
    }
}

/// The most probes a search over `range` heights needs: the lower bound plus ceil(log2(range)).
pub fn max_probes(range: u64) -> u32 {
    1 + (64 - range.saturating_sub(1).leading_zeros())
}

/// Runs a search to the end with a synchronous `agree(n)` (for tests and simulations).
pub fn search_with(
    finalized: u64,
    diverged: u64,
    mut agree: impl FnMut(u64) -> bool,
) -> (SearchState, u32) {
    let mut s = AncestorSearch::new(finalized, diverged);
    loop {
        match s.next() {
            SearchState::Probe(n) => {
                let a = agree(n);
                s.answer(n, a);
            }
            done => return (done, s.lookups()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        // (finalized, diverged, fork point: highest common height, expected)
        let cases = [
            (0, 10, 5, SearchState::Found(5)),
            (0, 10, 9, SearchState::Found(9)),
            (0, 10, 0, SearchState::Found(0)),
            (5, 10, 5, SearchState::Found(5)),
            (5, 6, 5, SearchState::Found(5)),
            (100, 300, 299, SearchState::Found(299)),
            (0, 1_000_000, 123_456, SearchState::Found(123_456)),
        ];
        for (fin, div, fork, want) in cases {
            let (got, lookups) = search_with(fin, div, |n| n <= fork);
            assert_eq!(got, want, "fin {fin} div {div} fork {fork}");
            assert!(lookups <= max_probes(div - fin), "{lookups} lookups for range {}", div - fin);
        }
        // Disagreement at finalized.
        assert_eq!(search_with(5, 10, |_| false).0, SearchState::FinalizedDiverged(5));
        // Divergence reported at or below finalized.
        assert_eq!(search_with(5, 5, |_| true).0, SearchState::FinalizedDiverged(5));
    }

    #[test]
    fn probe_budget() {
        assert_eq!(max_probes(1), 1);
        assert_eq!(max_probes(2), 2);
        assert_eq!(max_probes(3), 3);
        assert_eq!(max_probes(200), 9);
        assert_eq!(max_probes(1024), 11);
    }

    proptest! {
        /// Honest source: the result is exactly the fork point, within the probe budget.
        #[test]
        fn finds_the_fork_point(fin in 0u64..1000, fork_off in 0u64..1000, lag in 1u64..1000) {
            let fork = fin + fork_off;
            let diverged = fork + lag;
            let (got, lookups) = search_with(fin, diverged, |n| n <= fork);
            prop_assert_eq!(got, SearchState::Found(fork));
            prop_assert!(lookups <= max_probes(diverged - fin));
        }

        /// A source whose answers flip between two branches (load-balanced replicas): the search
        /// may return a wrong candidate, but never one below finalized, and a candidate it calls
        /// common is one where the answer it got said "agree" (recovery then verifies linkage).
        #[test]
        fn flipping_source_never_goes_below_finalized(
            fin in 0u64..500,
            fork_a in 0u64..500,
            fork_b in 0u64..500,
            lag in 1u64..500,
            flips in proptest::collection::vec(any::<bool>(), 64),
        ) {
            let (fa, fb) = (fin + fork_a, fin + fork_b);
            let diverged = fin + fork_a.max(fork_b) + lag;
            let mut i = 0;
            let mut agreed_at = Vec::new();
            let (got, lookups) = search_with(fin, diverged, |n| {
                let on_b = flips[i % flips.len()];
                i += 1;
                let a = n <= if on_b { fb } else { fa };
                if a { agreed_at.push(n); }
                a
            });
            prop_assert!(lookups <= max_probes(diverged - fin));
            match got {
                SearchState::Found(n) => {
                    prop_assert!(n >= fin && n < diverged);
                    prop_assert!(agreed_at.contains(&n));
                }
                SearchState::FinalizedDiverged(n) => prop_assert_eq!(n, fin),
                SearchState::Probe(_) => prop_assert!(false, "search did not finish"),
            }
        }
    }
}
