//! The configured sources as one set: admission (chain id checked before a source counts),
//! per-source health and penalties, verified block fetches that remember who served what, and
//! the quorum reads of the agreed view (I4).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use alloy_primitives::B256;
use futures_util::future::join_all;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::health::{Health, HealthSnapshot, Transition};
use super::quorum::{Quorum, agree_at, agree_on_labels, lookups_needed, quorum_top};
use super::{BlockId, LabelReport, Source, SourceError};
use crate::chain::{BlockRef, Heads, Label};
use crate::config::ChainKind;
use crate::payload::{Payload, from_rpc_block_str};
use crate::sync::ancestor::{AncestorSearch, SearchState};

/// Most blocks walked by hash to confirm a finalized divergence.
pub const CONFIRM_WALK: u64 = 64;
/// How often a persisting disagreement is logged again.
const DISAGREEMENT_LOG_EVERY: Duration = Duration::from_secs(30);

/// A source and what the set knows of it.
#[derive(Debug)]
struct Member {
    source: Arc<dyn Source>,
    health: Health,
    /// Its chain id was checked; only admitted sources count.
    admitted: AtomicBool,
}

/// The quorum's answer at one height.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agreed {
    /// At least the quorum holds this hash there.
    Hash(B256),
    /// No quorum either way (sources down, lagging, or split): not evidence of anything.
    Unknown,
}

impl Agreed {
    /// The hash, if agreed.
    pub fn hash(self) -> Option<B256> {
        match self {
            Self::Hash(h) => Some(h),
            Self::Unknown => None,
        }
    }
}

/// A source that serves another chain than the configuration says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongChain {
    /// Source name.
    pub source: String,
    /// What it reports.
    pub got: u64,
}

/// All configured sources.
#[derive(Debug)]
pub struct SourceSet {
    members: Vec<Member>,
    kind: ChainKind,
    chain_id: u64,
    quorum: Quorum,
    /// The last disagreement logged and when (to log a persisting one only now and then).
    last_disagreement: std::sync::Mutex<Option<(Instant, String)>>,
}

impl SourceSet {
    /// A set of `sources` for a `kind` chain with `chain_id`, agreeing by `quorum`. None is
    /// admitted until [`Self::admit`] has checked its chain id.
    pub fn new(
        sources: Vec<Arc<dyn Source>>,
        kind: ChainKind,
        chain_id: u64,
        quorum: Quorum,
    ) -> Self {
        let members = sources
            .into_iter()
            .map(|source| Member {
                source,
                health: Health::default(),
                admitted: AtomicBool::new(false),
            })
            .collect();
        Self { members, kind, chain_id, quorum, last_disagreement: std::sync::Mutex::new(None) }
    }

    /// Number of configured sources.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether no source is configured.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// How many must agree.
    pub fn required(&self) -> usize {
        self.quorum.required(self.members.len())
    }

    /// Source `i`'s name.
    pub fn name(&self, i: usize) -> &str {
        self.members[i].source.name()
    }

    /// The sources themselves (for subscriptions).
    pub fn sources(&self) -> impl Iterator<Item = &Arc<dyn Source>> {
        self.members.iter().map(|m| &m.source)
    }

    /// Whether source `i` counts now: admitted and neither backing off nor benched.
    pub fn available(&self, i: usize) -> bool {
        let m = &self.members[i];
        m.admitted.load(Ordering::Relaxed) && m.health.available(Instant::now())
    }

    /// How many sources are admitted.
    pub fn admitted(&self) -> usize {
        self.members.iter().filter(|m| m.admitted.load(Ordering::Relaxed)).count()
    }

    /// Health of source `i` for status output.
    pub fn health(&self, i: usize) -> HealthSnapshot {
        self.members[i].health.snapshot(Instant::now())
    }

    /// Asks every source not admitted yet (and not backing off) for its chain id and admits
    /// those that serve the configured chain. Returns the number admitted now, or the first
    /// source that serves another chain.
    pub async fn admit(&self) -> Result<usize, WrongChain> {
        let pending: Vec<usize> = (0..self.members.len())
            .filter(|&i| {
                let m = &self.members[i];
                !m.admitted.load(Ordering::Relaxed) && m.health.available(Instant::now())
            })
            .collect();
        let answers =
            join_all(pending.iter().map(|&i| self.call(i, self.members[i].source.chain_id())))
                .await;
        for (&i, answer) in pending.iter().zip(answers) {
            match answer {
                Ok(id) if id == self.chain_id => {
                    self.members[i].admitted.store(true, Ordering::Relaxed);
                    info!(target: "lightcl::source", source = self.name(i), chain_id = id,
                        admitted = self.admitted(), configured = self.len(), "source admitted");
                }
                Ok(got) => return Err(WrongChain { source: self.name(i).to_string(), got }),
                Err(e) => {
                    // Said at warn on the first failure and every tenth, like other failures.
                    let n = self.members[i].health.snapshot(Instant::now()).consecutive_errors;
                    if n == 1 || n.is_multiple_of(10) {
                        warn!(target: "lightcl::source", source = self.name(i), error = %e,
                            failures = n, "source not usable yet (its chain id is not checked); \
                            retrying; it counts once it answers with the right chain id");
                    } else {
                        debug!(target: "lightcl::source", source = self.name(i), error = %e,
                            "source not usable yet");
                    }
                }
            }
        }
        Ok(self.admitted())
    }

    /// Runs one request to source `i`, recording its outcome in the source's health.
    async fn call<T>(
        &self,
        i: usize,
        fut: impl std::future::Future<Output = Result<T, SourceError>>,
    ) -> Result<T, SourceError> {
        let started = Instant::now();
        let res = fut.await;
        let m = &self.members[i];
        let t = match &res {
            Ok(_) => m.health.success(started.elapsed()),
            Err(e) => m.health.failure(e.reason(), Instant::now()),
        };
        let reason = res.as_ref().err().map_or("ok", SourceError::reason);
        self.log_transition(i, t, reason);
        res
    }

    fn log_transition(&self, i: usize, t: Transition, reason: &str) {
        match t {
            Transition::None => {}
            Transition::Failing { consecutive, retry_in } => warn!(
                target: "lightcl::source", source = self.name(i), reason, consecutive,
                retry_in = ?retry_in,
                "source failing; it counts as not agreeing and is retried after a backoff"),
            Transition::Recovered { after } => info!(
                target: "lightcl::source", source = self.name(i), failures = after,
                "source answering again; re-admitted"),
        }
    }

    /// Holds a lie against the source that told it (`error` names it): it is benched, longer
    /// for every repeat, and a later success does not clear that. With a single source there
    /// is nobody better to ask, so it is only counted: benching it would also hide its answers
    /// at the heights below, and the blocks already fed could never be confirmed.
    pub fn blame(&self, i: usize, error: &SourceError) {
        let m = &self.members[i];
        if self.members.len() == 1 {
            m.health.record(error.reason());
            return;
        }
        let benched = m.health.lie(error.reason(), Instant::now());
        warn!(target: "lightcl::source", source = self.name(i), error = %error,
            benched_for = ?benched, "source served a bad block; it is not asked again until the \
            bench ends, and the block is fetched from another source");
    }

    /// Source `i`'s labels; a report whose labels are out of order (finalized above safe, safe
    /// above latest) is not used.
    pub async fn labels(&self, i: usize) -> Result<LabelReport, SourceError> {
        let r = self.call(i, self.members[i].source.labels()).await?;
        let n = |b: Option<BlockRef>| b.map(|b| b.number);
        let ordered = n(r.finalized) <= n(r.safe).or(n(r.finalized))
            && n(r.safe) <= n(r.latest).or(n(r.safe));
        if !ordered {
            debug!(target: "lightcl::source", source = self.name(i), report = ?r,
                "source reports labels out of order (finalized > safe or safe > latest); ignored");
            return Ok(LabelReport { latest: r.latest, safe: None, finalized: None });
        }
        if let Some(b) = r.latest {
            self.members[i].health.set_head(b.number);
        }
        Ok(r)
    }

    /// Source `i`'s hash at `number`.
    pub async fn hash_at(&self, i: usize, number: u64) -> Result<Option<B256>, SourceError> {
        self.call(i, self.members[i].source.hash_at(number)).await
    }

    /// A verified payload from source `i` (I5): the header hashes to the claimed hash, the
    /// transactions and withdrawals to the header's roots, and the block is the one asked for.
    /// A block that fails is held against the source.
    pub async fn payload(&self, i: usize, at: BlockId) -> Result<Option<Payload>, SourceError> {
        let name = self.name(i);
        let Some(text) = self.call(i, self.members[i].source.block(at)).await? else {
            return Ok(None);
        };
        let verified = from_rpc_block_str(self.kind, &at.to_string(), &text)
            .map_err(|error| SourceError::BadBlock { source_name: name.to_string(), error });
        let p = match verified {
            Ok(p) => p,
            Err(e) => {
                self.blame(i, &e);
                return Err(e);
            }
        };
        let asked = match at {
            BlockId::Number(n) => p.block.number == n,
            BlockId::Hash(h) => p.block.hash == h,
        };
        if !asked {
            let e = SourceError::inconsistent(name, format!("asked for {at}, got {}", p.block));
            self.blame(i, &e);
            return Err(e);
        }
        Ok(Some(p))
    }

    /// Each available source's labels (None: unavailable or failed).
    async fn reports(&self) -> Vec<Option<LabelReport>> {
        join_all((0..self.len()).map(|i| async move {
            if !self.available(i) {
                return None;
            }
            self.labels(i).await.ok()
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
        join_all((0..self.len()).map(|i| async move {
            let reaches = reports.is_none_or(|r| r[i].is_some_and(|b| b.number >= number));
            if !reaches || !self.available(i) {
                return None;
            }
            match reports.and_then(|r| r[i]) {
                Some(b) if b.number == number => Some(b.hash),
                _ => self.hash_at(i, number).await.ok().flatten(),
            }
        }))
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

    /// The chain below `top` down to height `to`, walked by parent hash through blocks fetched
    /// by hash and verified. A by-hash answer cannot come from another branch, so whichever
    /// source answers is believed; a source that fails or lacks a block is skipped for that
    /// block. Returns the hashes for `to..=top` (lowest first), or `None` when no available
    /// source holds one of the blocks.
    pub async fn walk_down(&self, top: BlockRef, to: u64) -> Option<Vec<B256>> {
        let mut hashes = vec![top.hash];
        let mut cur = top;
        while cur.number > to {
            let mut parent = None;
            for i in (0..self.len()).filter(|&i| self.available(i)) {
                if let Ok(Some(p)) = self.payload(i, BlockId::Hash(cur.hash)).await {
                    parent = Some(p.parent_hash);
                    break;
                }
            }
            cur = BlockRef::new(cur.number - 1, parent?);
            hashes.push(cur.hash);
        }
        hashes.reverse();
        Some(hashes)
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
        let walks = join_all((0..self.len()).map(|i| async move {
            if !self.available(i) {
                return None;
            }
            let mut cur = finalized;
            while cur.number > height {
                let p = self.payload(i, BlockId::Hash(cur.hash)).await.ok().flatten()?;
                cur = BlockRef::new(cur.number - 1, p.parent_hash);
            }
            Some(cur.hash)
        }))
        .await;
        match agree_at(&walks, self.required()) {
            Some(h) => Agreed::Hash(h),
            None => Agreed::Unknown,
        }
    }

    /// The available sources whose chain holds `target` (so every block below it is theirs
    /// too): the only ones payloads are fetched from.
    pub async fn holders_of(&self, target: BlockRef) -> Vec<usize> {
        let checks = join_all((0..self.len()).map(|i| async move {
            (self.available(i)
                && self.hash_at(i, target.number).await.ok().flatten() == Some(target.hash))
            .then_some(i)
        }))
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
        let found = join_all(needed.iter().map(|&(i, n)| async move {
            if !self.available(i) {
                return None;
            }
            self.hash_at(i, n).await.ok().flatten().map(|h| ((i, n), h))
        }))
        .await;
        let lookups: HashMap<(usize, u64), B256> = found.into_iter().flatten().collect();
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
    /// otherwise let a block nobody called safe pass as an ancestor of the safe blocks.
    async fn still_below_labels(&self, reports: &[Option<BlockRef>], n: u64, hash: B256) -> bool {
        let checks = join_all(reports.iter().enumerate().map(|(i, r)| async move {
            let Some(r) = *r else { return false };
            if r.number < n || !self.available(i) {
                return false;
            }
            let at_n = self.hash_at(i, n).await.ok().flatten();
            let at_label = self.hash_at(i, r.number).await.ok().flatten();
            at_n == Some(hash) && at_label == Some(r.hash)
        }))
        .await;
        checks.into_iter().filter(|ok| *ok).count() >= self.required()
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
                None if !self.available(i) => format!("{}=down", self.name(i)),
                None => format!("{}=none", self.name(i)),
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
        warn!(target: "lightcl::source", %label, required = self.required(), sources = self.len(),
            reports = %text, highest_agreed = ?agreed.map(|b| b.to_string()),
            "sources do not agree on their label block; holding at what the quorum agrees on");
    }

    /// The agreed latest, safe and finalized blocks, if the quorum agrees on all three. The
    /// labels are read once per source, together.
    pub async fn agreed_heads(&self, floor: u64) -> Option<Heads> {
        let reports = self.reports().await;
        let head = self.agreed_label(Label::Latest, &reports, floor).await?;
        let safe = self.agreed_label(Label::Safe, &reports, floor).await?;
        let finalized = self.agreed_label(Label::Finalized, &reports, floor).await?;
        Some(Heads { head, safe, finalized })
    }
}
