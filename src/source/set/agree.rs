//! Quorum reads of the agreed view (I4). Every read asks all available sources at once and is
//! decided as soon as the answers in settle it: once enough matching answers are in, or the
//! quorum is out of reach. Where the answers still missing could only add to what is known (a
//! higher label held by more sources), they get a short grace (`quorum_grace_ms`) and then the
//! read goes on without them. A source that never answers in time therefore counts as not
//! agreeing; it never sets the pace. Dropping an answer can only take a vote away, never add
//! one, so no early decision can make a block agreed that the full read would not.

use std::collections::HashMap;
use std::future::Future;

use alloy_primitives::B256;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{Agreed, CONFIRM_WALK, DISAGREEMENT_LOG_EVERY, SourceSet};
use crate::chain::ancestor::{AncestorSearch, SearchState};
use crate::chain::{BlockRef, Heads, Label};
use crate::source::quorum::{agree_at, agree_on_labels, lookups_needed, quorum_top};
use crate::source::{BlockId, LabelReport};

/// Where a quorum read stands after the answers so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Needs more answers.
    Wait,
    /// Decidable now; the others may still improve it within the grace.
    Grace,
    /// Settled: no further answer can change it.
    Done,
}

/// The decision rule for one height: settled once a hash has `required` votes or none can
/// reach it any more.
pub(crate) fn height_settled(
    answers: &[Option<B256>],
    outstanding: usize,
    required: usize,
) -> Decision {
    let mut counts: HashMap<B256, usize> = HashMap::new();
    for h in answers.iter().flatten() {
        *counts.entry(*h).or_default() += 1;
    }
    let best = counts.values().copied().max().unwrap_or(0);
    if best >= required || best + outstanding < required { Decision::Done } else { Decision::Wait }
}

/// The decision rule for a read where any `required` answers decide and more can only help:
/// grace once `required` sources answered, settled when the rest cannot make `required`.
pub(crate) fn enough_answered<T>(
    answers: &[Option<T>],
    outstanding: usize,
    required: usize,
) -> Decision {
    let n = answers.iter().filter(|a| a.is_some()).count();
    if n >= required {
        Decision::Grace
    } else if n + outstanding < required {
        Decision::Done
    } else {
        Decision::Wait
    }
}

impl SourceSet {
    /// Asks every source at once (`ask(i)`, None: no answer or unavailable) and collects the
    /// answers until `decide(answers, outstanding)` says the read is settled, or the grace after
    /// it became decidable runs out. Sources cut off by the grace are counted as late.
    pub(crate) async fn gather<'a, T, Fut>(
        &'a self,
        ask: impl Fn(usize) -> Fut,
        decide: impl Fn(&[Option<T>], usize) -> Decision,
    ) -> Vec<Option<T>>
    where
        Fut: Future<Output = Option<T>> + 'a,
    {
        let n = self.len();
        let mut answers: Vec<Option<T>> = (0..n).map(|_| None).collect();
        let mut waiting = vec![true; n];
        let mut pending: FuturesUnordered<_> = (0..n)
            .map(|i| {
                let f = ask(i);
                async move { (i, f.await) }
            })
            .collect();
        let mut deadline: Option<Instant> = None;
        let mut outstanding = n;
        let mut cut = false;
        while outstanding > 0 {
            let next = match deadline {
                None => pending.next().await,
                Some(d) => tokio::select! {
                    biased;
                    x = pending.next() => x,
                    () = tokio::time::sleep_until(d) => {
                        cut = true;
                        None
                    }
                },
            };
            let Some((i, v)) = next else { break };
            answers[i] = v;
            waiting[i] = false;
            outstanding -= 1;
            match decide(&answers, outstanding) {
                Decision::Done => break,
                Decision::Grace if deadline.is_none() => {
                    deadline = Some(Instant::now() + self.grace);
                }
                _ => {}
            }
        }
        if cut {
            for i in (0..n).filter(|&i| waiting[i]) {
                self.late(i);
            }
        }
        answers
    }

    /// Each available source's labels (None: unavailable, failed or late). The grace for the
    /// slower sources starts only once the answers in hand can decide: `required` reports that
    /// carry all three labels (a report whose labels are out of order carries only latest, so a
    /// fast liar never cuts off a far honest source). `patient`: no grace, every source that
    /// answers within its timeout counts (a read the graced one could not decide).
    pub(super) async fn reports(&self, patient: bool) -> Vec<Option<LabelReport>> {
        let required = self.required();
        let sent = super::super::pace::unix_ms();
        let reports = self
            .gather(
                |i| async move { self.read_after_quota(i, || self.labels(i)).await },
                |a, o| {
                    if patient {
                        return if o == 0 { Decision::Done } else { Decision::Wait };
                    }
                    let full: Vec<Option<()>> =
                        a.iter().map(|r| r.filter(LabelReport::complete).map(|_| ())).collect();
                    enough_answered(&full, o, required)
                },
            )
            .await;
        self.pace_reports(&reports, sent);
        reports
    }

    /// Each available source's hash at `number` (only sources whose label reaches it, if
    /// `reports` is given), until the quorum's answer there is settled.
    async fn hashes_at(
        &self,
        number: u64,
        reports: Option<&[Option<BlockRef>]>,
    ) -> Vec<Option<B256>> {
        let required = self.required();
        self.gather(
            |i| async move {
                let reaches = reports.is_none_or(|r| r[i].is_some_and(|b| b.number >= number));
                if !reaches {
                    return None;
                }
                match reports.and_then(|r| r[i]) {
                    // Its own report, no request: a rate limit does not take its vote away.
                    Some(b) if b.number == number => {
                        (self.can_vote(i) || self.rate_limited(i)).then_some(b.hash)
                    }
                    _ => self.read_after_quota(i, || self.hash_at(i, number)).await.flatten(),
                }
            },
            |a, o| height_settled(a, o, required),
        )
        .await
    }

    /// What the quorum holds at `number`. A source without a block there (a lagging replica)
    /// or that fails does not count either way.
    pub async fn agreed_at(&self, number: u64) -> Agreed {
        match agree_at(&self.hashes_at(number, None).await, self.required()) {
            Some(h) => Agreed::Hash(h),
            None => Agreed::Unknown,
        }
    }

    /// Confirms what the quorum's finalized chain holds at `height`, walking parent hashes down
    /// from `finalized` (blocks fetched by hash, verified), at most [`CONFIRM_WALK`] blocks. A
    /// by-number answer can come from a replica on a stale branch; a walk from the finalized
    /// block by hash cannot, so this is the evidence a halt needs. Beyond the walk's reach the
    /// by-number answer stands.
    pub async fn confirm_at(&self, finalized: BlockRef, height: u64) -> Agreed {
        if finalized.number < height {
            return Agreed::Unknown;
        }
        if finalized.number - height > CONFIRM_WALK {
            return self.agreed_at(height).await;
        }
        let required = self.required();
        let walks = self
            .gather(
                |i| async move {
                    if !self.available(i) {
                        return None;
                    }
                    let mut cur = finalized;
                    while cur.number > height {
                        let p = self.payload(i, BlockId::Hash(cur.hash)).await.ok().flatten()?;
                        cur = BlockRef::new(cur.number - 1, p.parent_hash);
                    }
                    Some(cur.hash)
                },
                |a, o| height_settled(a, o, required),
            )
            .await;
        match agree_at(&walks, required) {
            Some(h) => Agreed::Hash(h),
            None => Agreed::Unknown,
        }
    }

    /// The available sources whose chain holds `target` (so every block below it is theirs
    /// too): the only ones payloads are fetched from. Decided once one holder answered and the
    /// grace is over.
    pub async fn holders_of(&self, target: BlockRef) -> Vec<usize> {
        let checks = self
            .gather(
                |i| async move {
                    (self.available(i)
                        && self.hash_at(i, target.number).await.ok().flatten() == Some(target.hash))
                    .then_some(i)
                },
                |a, o| enough_answered(a, o, 1),
            )
            .await;
        checks.into_iter().flatten().collect()
    }

    /// The agreed block for one label from the sources' reports: the highest reported label
    /// block the quorum holds; failing that, the highest block at or above `floor` it holds.
    async fn agreed_label(
        &self,
        label: Label,
        reports: &[Option<LabelReport>],
        floor: u64,
    ) -> Option<BlockRef> {
        let reports: Vec<Option<BlockRef>> =
            reports.iter().map(|r| r.and_then(|r| r.get(label))).collect();
        let required = self.required();
        let needed = lookups_needed(&reports);
        let needed = &needed;
        let reports_ref = &reports;
        let found = self
            .gather(
                |i| async move {
                    reports_ref[i]?;
                    let mine: Vec<u64> =
                        needed.iter().filter(|(s, _)| *s == i).map(|(_, n)| *n).collect();
                    if mine.is_empty() {
                        return Some(Vec::new());
                    }
                    if !self.can_vote(i) {
                        return None;
                    }
                    let hashes = futures_util::future::join_all(
                        mine.iter().map(|&n| async move { self.hash_at(i, n).await }),
                    )
                    .await;
                    let got: Vec<((usize, u64), B256)> = mine
                        .iter()
                        .zip(hashes)
                        .filter_map(|(&n, h)| h.ok().flatten().map(|h| ((i, n), h)))
                        .collect();
                    Some(got)
                },
                |a, o| enough_answered(a, o, required),
            )
            .await;
        let lookups: HashMap<(usize, u64), B256> = found.into_iter().flatten().flatten().collect();
        if let Some(b) = agree_on_labels(&reports, required, &lookups) {
            return Some(b);
        }
        // No reported label is held by the quorum: find the highest block it does hold.
        let fallback = match quorum_top(&reports, required) {
            Some(top) if top >= floor => {
                let mut search = AncestorSearch::new(floor, top + 1);
                let mut agreed = HashMap::new();
                loop {
                    match search.next() {
                        SearchState::Probe(n) => {
                            let hash = agree_at(&self.hashes_at(n, Some(&reports)).await, required);
                            if let Some(h) = hash {
                                agreed.insert(n, h);
                            }
                            search.answer(n, hash.is_some());
                        }
                        SearchState::Found(n) => {
                            let Some(&h) = agreed.get(&n) else { break None };
                            break self
                                .still_below_labels(&reports, n, h)
                                .await
                                .then_some(BlockRef::new(n, h));
                        }
                        SearchState::FinalizedDiverged(_) => break None,
                    }
                }
            }
            _ => None,
        };
        self.report_disagreement(label, &reports, fallback);
        fallback
    }

    /// Whether the quorum still holds `hash` at `n` below the label blocks it reported: each
    /// counted source's canonical block at its reported label height is still that block. The
    /// label reads and the search's lookups are a moment apart; a reorg in between would
    /// otherwise let a block nobody called safe pass as an ancestor of the safe blocks. A
    /// source whose block at its own reported label changed within the read is answering from
    /// replicas on different branches (or reorged just then): it is counted as inconsistent.
    async fn still_below_labels(&self, reports: &[Option<BlockRef>], n: u64, hash: B256) -> bool {
        let required = self.required();
        let checks = self
            .gather(
                |i| async move {
                    let r = reports[i]?;
                    if r.number < n || !self.can_vote(i) {
                        return None;
                    }
                    let (at_n, at_label) =
                        tokio::join!(self.hash_at(i, n), self.hash_at(i, r.number));
                    let at_label = at_label.ok().flatten();
                    if at_label.is_some_and(|h| h != r.hash) {
                        self.inconsistent(
                            i,
                            "flapping",
                            format!(
                                "reported {r} as its block at height {}, then answered {} there",
                                r.number,
                                at_label.map_or_else(|| "nothing".into(), |h| h.to_string())
                            ),
                        );
                    }
                    (at_n.ok().flatten() == Some(hash) && at_label == Some(r.hash)).then_some(())
                },
                |a, o| match enough_answered(a, o, required) {
                    Decision::Grace => Decision::Done,
                    d => d,
                },
            )
            .await;
        checks.into_iter().flatten().count() >= required
    }

    /// Says which source reports what when the quorum does not agree on a label block (rate
    /// limited while it persists).
    fn report_disagreement(
        &self,
        label: Label,
        reports: &[Option<BlockRef>],
        agreed: Option<BlockRef>,
    ) {
        let what: Vec<String> = reports
            .iter()
            .enumerate()
            .map(|(i, r)| match r {
                Some(b) => format!("{}={b}", self.name(i)),
                None if !self.can_vote(i) => format!("{}=down", self.name(i)),
                None => format!("{}=none", self.name(i)),
            })
            .collect();
        let text = what.join(", ");
        let mut last = crate::util::lock(&self.last_disagreement);
        let now = Instant::now();
        // Once per period for all labels: heights move every block, so a persisting
        // disagreement would otherwise be said again at every poll, once per label.
        if last.is_some_and(|t| now.duration_since(t) < DISAGREEMENT_LOG_EVERY) {
            debug!(target: "lightcl::source", %label, reports = %text, "sources still disagree");
            return;
        }
        *last = Some(now);
        warn!(target: "lightcl::source", %label, required = self.required(), sources = self.len(),
            reports = %text, highest_agreed = ?agreed.map(|b| b.to_string()),
            "sources do not agree on their label block; holding at what the quorum agrees on");
    }

    /// The agreed latest, safe and finalized blocks, if the quorum agrees on all three. The
    /// labels are read once per source, together.
    /// A read that cannot agree with the answers the grace let in is read again without it,
    /// so that a far source whose vote is needed is waited for (up to its timeout).
    pub async fn agreed_heads(&self, floor: u64) -> Option<Heads> {
        let reports = self.reports(false).await;
        if let Some(heads) = self.agree_on_reports(&reports, floor).await {
            return Some(heads);
        }
        // Worth reading again only where the sources left out could still make the quorum.
        let complete = reports.iter().flatten().filter(|r| LabelReport::complete(r)).count();
        let missing = (0..self.len()).filter(|&i| reports[i].is_none() && self.can_vote(i)).count();
        if missing == 0 || complete + missing < self.required() {
            return None;
        }
        let reports = self.reports(true).await;
        self.agree_on_reports(&reports, floor).await
    }

    async fn agree_on_reports(&self, reports: &[Option<LabelReport>], floor: u64) -> Option<Heads> {
        let head = self.agreed_label(Label::Latest, reports, floor).await?;
        let safe = self.agreed_label(Label::Safe, reports, floor).await?;
        let finalized = self.agreed_label(Label::Finalized, reports, floor).await?;
        Some(Heads { head, safe, finalized })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let a = Some(B256::with_last_byte(1));
        let b = Some(B256::with_last_byte(2));
        // Two of three agree: settled, whatever the third says.
        assert_eq!(height_settled(&[a, a, None], 1, 2), Decision::Done);
        // One each and one outstanding: the third decides.
        assert_eq!(height_settled(&[a, b, None], 1, 2), Decision::Wait);
        // Split with nobody left: settled (no quorum).
        assert_eq!(height_settled(&[a, b, None], 0, 2), Decision::Done);
        // All of three required, one failed: out of reach at once.
        assert_eq!(height_settled(&[a, None, None], 1, 3), Decision::Done);
        assert_eq!(enough_answered(&[Some(1), Some(2), None], 1, 2), Decision::Grace);
        assert_eq!(enough_answered(&[Some(1), None, None], 2, 2), Decision::Wait);
        assert_eq!(enough_answered::<u8>(&[None, None, None], 1, 2), Decision::Done);
    }
}
