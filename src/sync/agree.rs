//! The agreed view: what the configured quorum of sources agrees on, by hash (I4). Sources that
//! are backing off after errors, or that do not answer, count as not agreeing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use alloy_primitives::B256;
use futures_util::future::join_all;
use tracing::{debug, warn};

use super::ancestor::{AncestorSearch, SearchState};
use super::driver::{Follower, StepError};
use crate::chain::{BlockRef, Heads, Label};
use crate::source::quorum::{agree_at, agree_on_labels, lookups_needed, quorum_top};

/// How often a persisting disagreement is logged again.
const DISAGREEMENT_LOG_EVERY: Duration = Duration::from_secs(30);

impl Follower {
    fn required(&self) -> usize {
        self.config.quorum.required(self.sources.len())
    }

    /// Each source's label (None: unavailable, failed, or no such label).
    async fn reports(&self, label: Label) -> Vec<Option<BlockRef>> {
        join_all(self.sources.iter().map(|s| async move {
            if !s.available() {
                return None;
            }
            let r = s.label(label).await.ok().flatten();
            if let (Label::Latest, Some(b)) = (label, r) {
                s.set_head(b.number);
            }
            r
        }))
        .await
    }

    /// Each available source's hash at `number` (only sources whose label reaches it, if
    /// `reports` is given).
    async fn hashes_at(
        &self,
        number: u64,
        reports: Option<&[Option<BlockRef>]>,
    ) -> Vec<Option<B256>> {
        join_all(self.sources.iter().enumerate().map(|(i, s)| async move {
            let reaches = reports.is_none_or(|r| r[i].is_some_and(|b| b.number >= number));
            if !reaches || !s.available() {
                return None;
            }
            match reports.and_then(|r| r[i]) {
                Some(b) if b.number == number => Some(b.hash),
                _ => s.hash_at(number).await.ok().flatten(),
            }
        }))
        .await
    }

    /// The hash the quorum of sources holds at `number`, if it agrees.
    pub(super) async fn agreed_hash_at(&self, number: u64) -> Result<Option<B256>, StepError> {
        Ok(agree_at(&self.hashes_at(number, None).await, self.required()))
    }

    /// The agreed block for `label`: the highest reported label block the quorum holds; failing
    /// that, the highest block at or above `floor` the quorum holds (binary search).
    async fn agreed_label(&self, label: Label, floor: u64) -> Result<Option<BlockRef>, StepError> {
        let reports = self.reports(label).await;
        let required = self.required();
        let needed = lookups_needed(&reports);
        let found = join_all(needed.iter().map(|&(i, n)| async move {
            let s = &self.sources[i];
            if !s.available() {
                return None;
            }
            s.hash_at(n).await.ok().flatten().map(|h| ((i, n), h))
        }))
        .await;
        let lookups: HashMap<(usize, u64), B256> = found.into_iter().flatten().collect();
        if let Some(b) = agree_on_labels(&reports, required, &lookups) {
            return Ok(Some(b));
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
                            break agreed.get(&n).map(|h| BlockRef::new(n, *h));
                        }
                        SearchState::FinalizedDiverged(_) => break None,
                    }
                }
            }
            _ => None,
        };
        self.report_disagreement(label, &reports, fallback);
        Ok(fallback)
    }

    /// Says which source reports what when the quorum does not agree on a label block (rate
    /// limited while it persists).
    fn report_disagreement(
        &self,
        label: Label,
        reports: &[Option<BlockRef>],
        agreed: Option<BlockRef>,
    ) {
        let what: Vec<String> = self
            .sources
            .iter()
            .zip(reports)
            .map(|(s, r)| match r {
                Some(b) => format!("{}={b}", s.name()),
                None if !s.available() => format!("{}=down", s.name()),
                None => format!("{}=none", s.name()),
            })
            .collect();
        let text = what.join(", ");
        let mut last = self.last_disagreement.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let repeat = last.as_ref().is_some_and(|(t, prev)| {
            prev == &text && now.duration_since(*t) < DISAGREEMENT_LOG_EVERY
        });
        if repeat {
            debug!(target: "lightcl::source", %label, reports = %text, "sources still disagree");
            return;
        }
        *last = Some((now, text.clone()));
        warn!(target: "lightcl::source", %label, required = self.required(), sources = self.sources.len(),
            reports = %text, highest_agreed = ?agreed.map(|b| b.to_string()),
            "sources do not agree on their label block; holding at what the quorum agrees on");
    }

    /// The agreed latest, safe and finalized blocks, if the quorum agrees on all three.
    pub(super) async fn agreed_heads(&self, floor: u64) -> Result<Option<Heads>, StepError> {
        let head = self.agreed_label(Label::Latest, floor).await?;
        let safe = self.agreed_label(Label::Safe, floor).await?;
        let finalized = self.agreed_label(Label::Finalized, floor).await?;
        Ok(match (head, safe, finalized) {
            (Some(head), Some(safe), Some(finalized)) => Some(Heads { head, safe, finalized }),
            _ => None,
        })
    }
}
