//! The configured sources as one set: admission (chain id checked before a source counts),
//! per-source health and penalties, verified block fetches that remember who served what, and
//! the quorum reads of the agreed view (I4).

mod agree;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use alloy_primitives::B256;
use futures_util::future::join_all;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::health::{Health, HealthSnapshot, Transition};
use super::quorum::Quorum;
use super::requests;
use super::{BlockId, LabelReport, Source, SourceError};
use crate::chain::{BlockRef, Proven};
use crate::config::ChainKind;
use crate::payload::{Payload, PayloadError, SourceBlock, from_source_block, with_requests};

/// Longest a read waits for a rate-limited source's quota before passing it over.
pub const QUOTA_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Waits in a row for a quota, each bringing no block, before a walk by hash stops.
const QUOTA_WALK_WAITS: usize = 20;
/// Rate limits waited out while reading one block's execution requests.
const REQUESTS_LIMIT_WAITS: usize = 3;
/// A block's rebuilt requests and the reads it took, or why nothing served matches.
type RequestsRead = Result<
    (alloy_eips::eip7685::Requests, requests::Took),
    crate::payload::requests::RequestsError,
>;
/// Reads of one source asked again while it answers "rate limited".
const QUOTA_TRIES: usize = 3;

/// Most blocks walked by hash to confirm a finalized divergence.
pub const CONFIRM_WALK: u64 = 64;

/// Blocks asked for in one by-number request of a walk down by parent hash.
pub const WALK_BATCH: u64 = 64;

/// How often a persisting disagreement, or a source's inconsistent answers, are logged again.
const DISAGREEMENT_LOG_EVERY: Duration = Duration::from_secs(30);
/// How long the other sources still get once a quorum read is decidable, unless configured.
const DEFAULT_QUORUM_GRACE: Duration =
    Duration::from_millis(crate::config::DEFAULT_QUORUM_GRACE_MS);

/// A source and what the set knows of it.
#[derive(Debug)]
struct Member {
    source: Arc<dyn Source>,
    health: Health,
    /// Its chain id and genesis block were checked; only admitted sources count.
    admitted: AtomicBool,
    /// That it serves no block at the genesis height was said (once).
    no_genesis_said: AtomicBool,
    /// When a failure of it was last said at warn, and whether its recovery is still to be
    /// said (a flaky source would otherwise log a failing / answering-again pair every poll).
    announced: std::sync::Mutex<(Option<Instant>, bool)>,
    /// When its rate limiting was last said at warn (apart from failures: one must not hide
    /// the other).
    limit_said: std::sync::Mutex<Option<Instant>>,
    /// Its label reads and hash lookups, shared between a fleet's replicas (none alone).
    memo: Option<Coalesced>,
}

/// A source's shared label reads and hash lookups.
type Coalesced = (super::memo::Memo<(), LabelReport>, super::memo::Memo<u64, Option<B256>>);

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
pub enum WrongChain {
    /// Another chain id.
    ChainId {
        /// Source name.
        source: String,
        /// What it reports.
        got: u64,
    },
    /// The right chain id, another genesis block: another deployment of the chain, or a
    /// source set up from a wrong genesis.
    Genesis {
        /// Source name.
        source: String,
        /// What it holds at the genesis height.
        got: BlockRef,
        /// What the chain must hold there.
        expected: BlockRef,
        /// Who named the expected block (the preset, the configuration, or the first source).
        named_by: String,
        /// The first source named it (no preset or `genesis_hash`).
        learned: bool,
    },
}

/// The genesis block every source and the EL must hold: configured (by a network preset or
/// `genesis_hash`), or learned from the first source admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenesisRef {
    /// Height and hash.
    pub block: BlockRef,
    /// Who named it, for messages: "the network preset op-mainnet", "the configuration",
    /// "source X (the first to answer)".
    pub named_by: String,
    /// Learned from the first source (no preset or `genesis_hash`): a mismatch then does not
    /// say which side is wrong.
    pub learned: bool,
}

/// All configured sources.
#[derive(Debug)]
pub struct SourceSet {
    members: Vec<Member>,
    kind: ChainKind,
    chain_id: u64,
    quorum: Quorum,
    /// How long the rest still get once a quorum read is decidable.
    grace: Duration,
    /// The last disagreement logged and when (to log a persisting one only now and then).
    last_disagreement: std::sync::Mutex<Option<Instant>>,
    /// Where request latencies go (none in unit tests).
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Every verified payload, held for reuse while memory allows.
    held: super::held::Held,
    /// When the next block is due, learned from the label reads.
    pace: std::sync::Mutex<super::pace::Pace>,
    /// The height of the genesis block every source must hold.
    genesis_number: u64,
    /// That block, once known (configured, or learned from the first source admitted).
    genesis: std::sync::Mutex<Option<GenesisRef>>,
    /// The deposit contract whose `DepositEvent` logs are a Prague block's deposit requests.
    deposit_contract: alloy_primitives::Address,
    /// Send a Prague block's requests hash in place of its list (nothing is read to rebuild it).
    send_requests_hash: bool,
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
                no_genesis_said: AtomicBool::new(false),
                announced: std::sync::Mutex::new((None, false)),
                limit_said: std::sync::Mutex::new(None),
                memo: None,
            })
            .collect();
        Self {
            members,
            kind,
            chain_id,
            quorum,
            grace: DEFAULT_QUORUM_GRACE,
            last_disagreement: std::sync::Mutex::new(None),
            metrics: None,
            held: super::held::Held::new(0),
            pace: std::sync::Mutex::default(),
            genesis_number: 0,
            genesis: std::sync::Mutex::new(None),
            deposit_contract: crate::config::MAINNET_DEPOSIT_CONTRACT,
            send_requests_hash: false,
        }
    }

    /// Sends a Prague block's requests hash in place of its list (for ELs that accept it).
    pub fn with_requests_hash(mut self, send: bool) -> Self {
        self.send_requests_hash = send;
        self
    }

    /// Sets the chain's deposit contract (Ethereum chains; mainnet's by default).
    pub fn with_deposit_contract(mut self, address: alloy_primitives::Address) -> Self {
        self.deposit_contract = address;
        self
    }

    /// Sets the genesis block sources must hold at `number`: `hash` as `named_by` says, or,
    /// when `None`, the first admitted source's.
    pub fn with_genesis(mut self, number: u64, hash: Option<B256>, named_by: &str) -> Self {
        self.genesis_number = number;
        self.genesis = std::sync::Mutex::new(hash.map(|h| GenesisRef {
            block: BlockRef::new(number, h),
            named_by: named_by.to_string(),
            learned: false,
        }));
        self
    }

    /// The genesis block, once known.
    pub fn genesis(&self) -> Option<GenesisRef> {
        crate::util::lock(&self.genesis).clone()
    }

    /// Holds up to `bytes` of verified payloads for reuse ([`super::held::Held`]).
    pub fn with_held(mut self, bytes: usize) -> Self {
        self.held = super::held::Held::new(bytes);
        self
    }

    /// How long to wait before polling the sources again: until just after the next block is
    /// due ([`super::pace::Pace`]; `fallback` is the fixed interval it falls back to and is
    /// bounded by); `None` while the block time is unknown.
    pub fn next_poll(&self, fallback: Duration) -> Option<Duration> {
        let pace = crate::util::lock(&self.pace);
        let block_time = pace.block_time()?;
        let wait = pace.next_poll(super::pace::unix_ms(), fallback);
        debug!(target: "lightcl::source", wait = ?wait, block_time = ?block_time,
            offset_ms = pace.offset_ms(), misses = pace.misses(), "next poll");
        Some(wait)
    }

    /// Notes the latest block a round of label reads sent at `sent_ms` found (for
    /// [`Self::next_poll`]): the highest (height, time) that the quorum's number of reports
    /// reach, so that one source cannot steer the schedule with a height or a time of its own.
    fn pace_reports(&self, reports: &[Option<LabelReport>], sent_ms: u64) {
        let mut seen: Vec<(u64, u64)> = reports
            .iter()
            .flatten()
            .filter_map(|r| Some((r.latest?.number, r.latest_time?)))
            .collect();
        seen.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&(number, time)) = seen.get(self.required().saturating_sub(1)) else { return };
        let now = super::pace::unix_ms();
        // A read's duration says something about the source only when it was its own (not
        // shared between replicas) and did not wait for a quota.
        let own = self.members.iter().all(|m| m.memo.is_none()) && self.rate_limit_wait().is_none();
        let took = own.then(|| now.saturating_sub(sent_ms));
        crate::util::lock(&self.pace).observe(number, time, took, now);
    }

    /// The verified payloads held for reuse.
    pub fn held(&self) -> &super::held::Held {
        &self.held
    }

    /// Sets how long the other sources still get once a quorum read is decidable.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Shares each source's label reads and hash lookups for `window` between the callers that
    /// ask at about the same time (the replicas of a fleet), so that several replicas cost the
    /// sources about what one does.
    pub fn with_coalescing(mut self, window: Duration) -> Self {
        for m in &mut self.members {
            m.memo = Some((super::memo::Memo::new(window), super::memo::Memo::new(window)));
        }
        self
    }

    /// Forgets the shared label reads and hash lookups: the next read of each goes to its source.
    pub fn forget_reads(&self) {
        for m in &self.members {
            if let Some((labels, hashes)) = &m.memo {
                labels.clear();
                hashes.clear();
            }
        }
    }

    /// Records every request's latency in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
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

    /// Whether source `i` is left alone now because it is rate limiting lightcl.
    pub fn rate_limited(&self, i: usize) -> bool {
        self.members[i].health.snapshot(Instant::now()).rate_limited
    }

    /// The shortest wait left among the sources that are rate limiting lightcl now (None: none
    /// is): when the quota lets lightcl ask again.
    pub fn rate_limit_wait(&self) -> Option<std::time::Duration> {
        let now = Instant::now();
        self.members.iter().filter_map(|m| m.health.limited_for(now)).min()
    }

    /// Whether source `i`'s answers count once its quota allows: a source that is rate limiting
    /// lightcl is waited for (up to [`QUOTA_WAIT`]) rather than passed over, so a read that needs
    /// it (a quorum of `all`, an ancestor search) goes at the quota's pace instead of starting
    /// over each round and spending the quota again. A read that can settle without it does not
    /// wait: [`SourceSet::gather`] stops at the quorum.
    pub(crate) async fn vote_after_quota(&self, i: usize) -> bool {
        if let Some(wait) = self.members[i].health.limited_for(Instant::now()) {
            if wait > QUOTA_WAIT {
                return false;
            }
            tokio::time::sleep(wait).await;
        }
        self.can_vote(i)
    }

    /// `read` of source `i` once its quota allows, asked again (at most [`QUOTA_TRIES`] times)
    /// while the answer is a rate limit. None: it cannot vote, or failed.
    pub(crate) async fn read_after_quota<T, Fut>(
        &self,
        i: usize,
        read: impl Fn() -> Fut,
    ) -> Option<T>
    where
        Fut: std::future::Future<Output = Result<T, SourceError>>,
    {
        for _ in 0..QUOTA_TRIES {
            if !self.vote_after_quota(i).await {
                return None;
            }
            match read().await {
                Ok(v) => return Some(v),
                Err(e) if e.rate_limit().is_some() => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// Whether source `i`'s answers about labels and hashes count now: admitted and not
    /// backing off (a source benched for serving bad blocks still votes).
    pub fn can_vote(&self, i: usize) -> bool {
        let m = &self.members[i];
        m.admitted.load(Ordering::Relaxed) && m.health.can_vote(Instant::now())
    }

    /// How many sources are admitted.
    pub fn admitted(&self) -> usize {
        self.members.iter().filter(|m| m.admitted.load(Ordering::Relaxed)).count()
    }

    /// JSON-RPC calls sent to source `i` so far, each call of a batch counted.
    pub fn calls(&self, i: usize) -> u64 {
        self.members[i].source.calls()
    }

    /// Health of source `i` for status output.
    pub fn health(&self, i: usize) -> HealthSnapshot {
        self.members[i].health.snapshot(Instant::now())
    }

    /// Asks every source not admitted yet (and not backing off) for its chain id and its block
    /// at the genesis height, and admits those that serve the configured chain from the
    /// expected genesis (the first to answer names it when none is configured). Returns the
    /// number admitted now, or the first source that serves another chain.
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
        let mut right_chain = Vec::new();
        for (&i, answer) in pending.iter().zip(answers) {
            match answer {
                Ok(id) if id == self.chain_id => right_chain.push(i),
                Ok(got) => {
                    return Err(WrongChain::ChainId { source: self.name(i).to_string(), got });
                }
                Err(e) => self.not_admitted(i, "its chain id is not checked", &e),
            }
        }
        let n = self.genesis_number;
        let geneses =
            join_all(right_chain.iter().map(|&i| self.call(i, self.members[i].source.hash_at(n))))
                .await;
        // In the configured order: without a configured genesis, the first source names it.
        for (&i, answer) in right_chain.iter().zip(geneses) {
            let got = match answer {
                Ok(Some(h)) => BlockRef::new(n, h),
                Ok(None) => {
                    if !self.members[i].no_genesis_said.swap(true, Ordering::Relaxed) {
                        warn!(target: "lightcl::source", source = self.name(i), genesis_height = n,
                            "source not usable yet: it serves no block at the genesis height, so \
                             its chain cannot be checked; asked again every poll (an archive \
                             source, or one that serves old headers, is needed)");
                    }
                    continue;
                }
                Err(e) => {
                    self.not_admitted(i, "its genesis block is not checked", &e);
                    continue;
                }
            };
            let expected = {
                let mut g = crate::util::lock(&self.genesis);
                let known = g.get_or_insert_with(|| GenesisRef {
                    block: got,
                    named_by: format!("source {} (the first to answer)", self.name(i)),
                    learned: true,
                });
                known.clone()
            };
            if got != expected.block {
                return Err(WrongChain::Genesis {
                    source: self.name(i).to_string(),
                    got,
                    expected: expected.block,
                    named_by: expected.named_by,
                    learned: expected.learned,
                });
            }
            self.members[i].admitted.store(true, Ordering::Relaxed);
            info!(target: "lightcl::source", source = self.name(i), chain_id = self.chain_id,
                genesis = %got, admitted = self.admitted(), configured = self.len(), "source admitted");
        }
        Ok(self.admitted())
    }

    /// Says why source `i` is not admitted yet (at warn on the first failure and every tenth).
    fn not_admitted(&self, i: usize, what: &str, e: &SourceError) {
        // Like other failures, said at warn on the first and every tenth (a rate limit is said
        // where it is recorded).
        let n = self.members[i].health.snapshot(Instant::now()).consecutive_errors;
        if e.rate_limit().is_none() && (n <= 1 || n.is_multiple_of(10)) {
            warn!(target: "lightcl::source", source = self.name(i), error = %e, failures = n,
                "source not usable yet ({what}); retrying; it counts once it answers with the \
                 right chain id and genesis block");
        } else {
            debug!(target: "lightcl::source", source = self.name(i), error = %e, "source not usable yet");
        }
    }

    /// Runs one request to source `i`, recording its outcome in the source's health.
    async fn call<T>(
        &self,
        i: usize,
        fut: impl std::future::Future<Output = Result<T, SourceError>>,
    ) -> Result<T, SourceError> {
        let started = Instant::now();
        let res = fut.await;
        if let Some(mx) = &self.metrics {
            mx.observe(
                crate::metrics::SOURCE_DURATION,
                &[("source", self.name(i))],
                started.elapsed().as_secs_f64(),
            );
        }
        let m = &self.members[i];
        let t = match &res {
            Ok(_) => m.health.success(started.elapsed()),
            Err(e) => match e.rate_limit() {
                Some(wait) => m.health.rate_limited(wait, Instant::now()),
                None => m.health.failure(e.reason(), Instant::now()),
            },
        };
        let reason = res.as_ref().err().map_or("ok", SourceError::reason);
        self.log_transition(i, t, reason);
        res
    }

    /// Says that source `i` started failing or answers again: a failure at most once per
    /// [`DISAGREEMENT_LOG_EVERY`] (and at every tenth in a row), a recovery only after a failure
    /// that was said; the rest at debug.
    fn log_transition(&self, i: usize, t: Transition, reason: &str) {
        let now = Instant::now();
        let mut said = crate::util::lock(&self.members[i].announced);
        let errors: u64 = self.members[i].health.snapshot(now).errors.values().sum();
        match t {
            Transition::None => {}
            Transition::Failing { consecutive, retry_in } => {
                let quiet =
                    said.0.is_some_and(|at| now.duration_since(at) < DISAGREEMENT_LOG_EVERY);
                if quiet && consecutive < 10 {
                    debug!(target: "lightcl::source", source = self.name(i), reason, consecutive,
                        "source failing again");
                    return;
                }
                *said = (Some(now), true);
                warn!(target: "lightcl::source", source = self.name(i), reason, consecutive,
                    errors_total = errors, retry_in = ?retry_in,
                    "source failing; it counts as not agreeing and is retried after a backoff \
                     (repeats within 30 s are logged at debug; see errors in /status)");
            }
            Transition::RateLimited { wait, asked } => {
                let mut last = crate::util::lock(&self.members[i].limit_said);
                if last.is_some_and(|at| now.duration_since(at) < DISAGREEMENT_LOG_EVERY) {
                    debug!(target: "lightcl::source", source = self.name(i), wait = ?wait, asked,
                        "source rate limiting again");
                    return;
                }
                *last = Some(now);
                warn!(target: "lightcl::source", source = self.name(i), wait = ?wait,
                    retry_after_given = asked,
                    "source is rate limiting lightcl; it is left alone for that long (it counts as \
                     not agreeing meanwhile, but not as failing). If this lasts, set \
                     max_requests_per_second for it to what its plan allows (rate-limited time in \
                     /status and lightcl_source_rate_limited_seconds_total)");
            }
            Transition::Recovered { after } if said.1 => {
                said.1 = false;
                info!(target: "lightcl::source", source = self.name(i), failures = after,
                    errors_total = errors, "source answering again; re-admitted");
            }
            Transition::Recovered { after } => {
                debug!(target: "lightcl::source", source = self.name(i), failures = after,
                    "source answering again");
            }
        }
    }

    /// Holds a lie against the source that told it (`error` names it): it is benched, longer
    /// for every repeat, and a later success does not clear that. With a single source there
    /// is nobody better to ask, so it is only counted: benching it would also hide its answers
    /// at the heights below, and the blocks already fed could never be confirmed.
    pub fn blame(&self, i: usize, error: &SourceError) {
        let m = &self.members[i];
        if self.members.len() == 1 {
            self.inconsistent(i, error.reason(), error.to_string());
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
        let read = || self.call(i, self.members[i].source.labels());
        let r = match &self.members[i].memo {
            Some((labels, _)) => labels.get((), read).await?,
            None => read().await?,
        };
        let n = |b: Option<BlockRef>| b.map(|b| b.number);
        let ordered = n(r.finalized) <= n(r.safe).or(n(r.finalized))
            && n(r.safe) <= n(r.latest).or(n(r.safe));
        if !ordered {
            let show = |b: Option<BlockRef>| b.map_or_else(|| "unset".into(), |b| b.to_string());
            self.inconsistent(
                i,
                "lying_labels",
                format!(
                    "reports labels out of order (latest {}, safe {}, finalized {}): its safe and \
                     finalized are not used, so it counts as not agreeing on them",
                    show(r.latest),
                    show(r.safe),
                    show(r.finalized)
                ),
            );
            return Ok(LabelReport { safe: None, finalized: None, ..r });
        }
        if let Some(b) = r.latest {
            self.members[i].health.set_head(b.number);
        }
        Ok(r)
    }

    /// Counts an answer of source `i` that cannot be true (labels out of order; its own block
    /// at a height it just reported, changed) under `reason`, and says so by name, at most
    /// every [`DISAGREEMENT_LOG_EVERY`] per source.
    pub(crate) fn inconsistent(&self, i: usize, reason: &'static str, what: String) {
        let m = &self.members[i];
        let advice = match reason {
            "lying_labels" => {
                "check that node (is it still syncing, or broken?) or remove it \
                from sources"
            }
            "bad_block" | "invalid_block" => {
                "it is the only source, so lightcl holds below that \
                block and retries; check that node, or add sources so another can serve it"
            }
            _ => {
                "a load balancer in front of replicas on different branches does this: pin the \
                source to one replica (sticky sessions) or remove it from sources"
            }
        };
        if let Some(count) = m.health.problem(reason, &what, Instant::now(), DISAGREEMENT_LOG_EVERY)
        {
            warn!(target: "lightcl::source", source = self.name(i), reason, times = count,
                "source answers inconsistently: {what}; lightcl does not count those answers \
                 (the quorum decides without them); {advice}");
        } else {
            debug!(target: "lightcl::source", source = self.name(i), reason, "{what}");
        }
    }

    /// How long a block request to source `i` may take before another holder is asked too:
    /// four times its usual latency, and at least the quorum grace.
    pub fn hedge_after(&self, i: usize) -> Duration {
        let usual = self.members[i].health.latency();
        usual.map_or(self.grace, |l| (l * 4).max(self.grace))
    }

    /// Counts a source cut off by a quorum read's grace (it answered too slowly to count).
    fn late(&self, i: usize) {
        self.members[i].health.late();
    }

    /// Source `i`'s hash at `number`.
    pub async fn hash_at(&self, i: usize, number: u64) -> Result<Option<B256>, SourceError> {
        let read = || self.call(i, self.members[i].source.hash_at(number));
        match &self.members[i].memo {
            Some((_, hashes)) => hashes.get(number, read).await,
            None => read().await,
        }
    }

    /// A verified payload from source `i` (I5): the header hashes to the claimed hash, the
    /// transactions and withdrawals to the header's roots, and the block is the one asked for.
    /// A block that fails is held against the source.
    pub async fn payload(&self, i: usize, at: BlockId) -> Result<Option<Payload>, SourceError> {
        let Some(block) = self.call(i, self.members[i].source.block(at)).await? else {
            return Ok(None);
        };
        self.verified(i, at, &block).await.map(Some)
    }

    /// The verified block with hash `hash`: held, or from the first source that serves it
    /// (available sources first, in order). `None` when none does.
    pub async fn block_by_hash(&self, hash: B256) -> Option<Payload> {
        if let Some((_, p)) = self.held.get(hash) {
            self.count_reused(1);
            return Some(p);
        }
        let order = (0..self.len())
            .filter(|&i| self.available(i))
            .chain((0..self.len()).filter(|&i| !self.available(i)));
        for i in order {
            if let Ok(Some(p)) = self.payload(i, BlockId::Hash(hash)).await {
                return Some(p);
            }
        }
        None
    }

    /// Verified payloads of source `i`'s canonical blocks `from..from + count` (one entry per
    /// height, `None` where it has none), fetched in as few requests as it takes. Fewer entries
    /// (a prefix) when the source stopped answering partway, rate limiting lightcl: the rest
    /// are to be asked for again, from it or another.
    pub async fn payloads(
        &self,
        i: usize,
        from: u64,
        count: u64,
    ) -> Result<Vec<Option<Payload>>, SourceError> {
        let blocks = self.call(i, self.members[i].source.blocks(from, count)).await?;
        if (blocks.len() as u64) < count {
            // Cut short by a rate limit (the only reason a source stops partway): it is left
            // alone as for a limit that did not say how long.
            let t = self.members[i].health.rate_limited(None, Instant::now());
            self.log_transition(i, t, "rate_limited");
        }
        if blocks.len() as u64 > count {
            let e = SourceError::Malformed {
                source_name: self.name(i).to_string(),
                method: "blocks".into(),
                message: format!("{} answers for {count} blocks", blocks.len()),
            };
            return Err(e);
        }
        let mut out = Vec::with_capacity(blocks.len());
        for (n, block) in (from..).zip(&blocks) {
            out.push(match block {
                Some(b) => match self.verified(i, BlockId::Number(n), b).await {
                    Ok(p) => Some(p),
                    // A read for a block's execution requests that failed (not a lie): the
                    // blocks before it are kept, the rest asked for again.
                    Err(e) if !e.is_lie() && !out.is_empty() => break,
                    Err(e) => return Err(e),
                },
                None => None,
            });
        }
        Ok(out)
    }

    /// Checks `block`, served by source `i` when asked for `at` (I5); a Prague block's execution
    /// requests are read from the same source and must hash to the header's commitment.
    async fn verified(
        &self,
        i: usize,
        at: BlockId,
        block: &SourceBlock,
    ) -> Result<Payload, SourceError> {
        let name = self.name(i);
        let asked_hash = match at {
            BlockId::Hash(h) => Some(h),
            BlockId::Number(_) => None,
        };
        let what = at.to_string();
        let mut verified = from_source_block(self.kind, &what, asked_hash, block);
        if let Err(PayloadError::RequestsUnavailable(want)) = &verified {
            let number = want.number;
            let requests = match self.requests_of(i, **want).await {
                Ok(r) => r,
                Err(e) => {
                    if e.is_lie() {
                        self.blame(i, &e);
                    }
                    return Err(e);
                }
            };
            verified = match requests {
                Ok((r, read)) => {
                    if let Some(mx) = &self.metrics {
                        let labels = [("source", name), ("read", read)];
                        mx.add(crate::metrics::REQUESTS_REBUILT, &labels, 1.0);
                    }
                    with_requests(self.kind, &what, asked_hash, block, Some(&r))
                }
                Err(error) => Err(PayloadError::Requests { number, error: Box::new(error) }),
            };
        }
        let verified = verified
            .map_err(|error| SourceError::BadBlock { source_name: name.to_string(), error });
        let p = match verified {
            Ok(p) => p,
            Err(e) => {
                self.blame(i, &e);
                return Err(e);
            }
        };
        if let Some(mx) = &self.metrics {
            let format = match block {
                SourceBlock::Rlp(_) => "raw",
                SourceBlock::Json(_) => "json",
            };
            let labels = [("source", name), ("format", format)];
            mx.add(crate::metrics::SOURCE_BLOCKS, &labels, 1.0);
        }
        let asked = match at {
            BlockId::Number(n) => p.block.number == n,
            BlockId::Hash(h) => p.block.hash == h,
        };
        if !asked {
            let e = SourceError::inconsistent(name, format!("asked for {at}, got {}", p.block));
            self.blame(i, &e);
            return Err(e);
        }
        self.held.insert(i, &p);
        Ok(p)
    }

    /// What newPayloadV4 carries for block `want` and the metric's `read` label: its requests
    /// hash (`send_requests_hash`: the EL checks the requests itself, nothing is read), or the
    /// list rebuilt from source `i`.
    async fn requests_of(
        &self,
        i: usize,
        want: crate::payload::RequestsNeeded,
    ) -> Result<
        Result<
            (alloy_eips::eip7685::RequestsOrHash, &'static str),
            crate::payload::requests::RequestsError,
        >,
        SourceError,
    > {
        use alloy_eips::eip7685::RequestsOrHash;
        if self.send_requests_hash {
            return Ok(Ok((RequestsOrHash::Hash(want.requests_hash), "hash_sent")));
        }
        let read = self.read_requests(i, want).await?;
        Ok(read.map(|(r, took)| (RequestsOrHash::Requests(r), took.label())))
    }

    /// The execution requests of block `want` as source `i` serves what they are rebuilt from.
    /// A rate limit met on the way is waited out, a few times (the block itself was already
    /// fetched: giving it up would spend the quota on it again, and again).
    async fn read_requests(
        &self,
        i: usize,
        want: crate::payload::RequestsNeeded,
    ) -> Result<RequestsRead, SourceError> {
        let source = self.members[i].source.as_ref();
        let mut waits = 0;
        loop {
            match self.call(i, requests::read(source, self.deposit_contract, want)).await {
                Err(e) if waits < REQUESTS_LIMIT_WAITS => {
                    let Some(asked) = e.rate_limit() else { return Err(e) };
                    waits += 1;
                    tokio::time::sleep(asked.unwrap_or(Duration::from_secs(1)).min(QUOTA_WAIT))
                        .await;
                }
                other => return other,
            }
        }
    }

    /// Extends `chain` downwards by parent hash towards height `to`, adding at most `budget`
    /// blocks. Blocks are fetched by number in batches of up to `batch`, and each is kept only
    /// while it is the parent of the block above it: a by-number answer from another branch (a
    /// load balancer over replicas on two) breaks the link and is dropped, and the next block
    /// is then asked for by its hash, which no other branch can answer. Each request goes to
    /// the next source in turn (benched ones too when none is available: a walk must not wedge
    /// on a flaky single source), and a failed one is retried on the next, a few times. What
    /// was linked stays linked: a walk that stops is resumed from where it stopped. Returns how
    /// many blocks were added.
    pub async fn extend_down(&self, chain: &mut Proven, to: u64, batch: u64, budget: u64) -> u64 {
        const TRIES: usize = 6;
        let mut added = 0u64;
        let mut turn = 0usize;
        let mut failures = 0usize;
        let mut quota_waits = 0usize;
        let mut batch = batch;
        while chain.low().number > to && added < budget && failures < TRIES {
            // Held blocks link without a request (a walk resumed, or a chain fetched before).
            let knew = chain.below().is_some();
            let reused = self.link_held(chain, to, budget - added);
            if reused > 0 || (!knew && chain.below().is_some()) {
                added += reused;
                failures = 0;
                continue;
            }
            let avail: Vec<usize> = (0..self.len()).filter(|&i| self.available(i)).collect();
            let usable = if avail.is_empty() {
                // Not one that is rate limiting lightcl: it asked to be left alone.
                (0..self.len())
                    .filter(|&i| {
                        self.members[i].admitted.load(Ordering::Relaxed) && !self.rate_limited(i)
                    })
                    .collect()
            } else {
                avail
            };
            if usable.is_empty() {
                // Every source is rate limiting lightcl: wait for the first quota, not counted as
                // a failed try (the walk goes at the quota's pace).
                match self.rate_limit_wait() {
                    Some(wait) if wait <= QUOTA_WAIT && quota_waits < QUOTA_WALK_WAITS => {
                        quota_waits += 1;
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    _ => break,
                }
            }
            let Some(&i) = usable.get(turn % usable.len().max(1)) else { break };
            turn += 1;
            let before = added;
            let knew_below = chain.below().is_some();
            let mut limited_turn = false;
            match chain.below() {
                None => {
                    // The lowest block's own payload (by its hash) names its parent.
                    if let Ok(Some(p)) = self.payload(i, BlockId::Hash(chain.low().hash)).await {
                        chain.learn_below(p.block, p.parent_hash);
                    }
                }
                Some(parent) => {
                    let low = chain.low().number;
                    let count = batch.clamp(1, low - to).min(budget - added);
                    let mut limited = false;
                    if count > 1 {
                        // By number: kept only while each is the parent of the block above.
                        match self.payloads(i, low - count, count).await {
                            // Linked from the top down: only a whole answer has the top.
                            Ok(blocks) if blocks.len() as u64 == count => {
                                for p in blocks.iter().rev() {
                                    if !p
                                        .as_ref()
                                        .is_some_and(|p| chain.push_below(p.block, p.parent_hash))
                                    {
                                        break;
                                    }
                                    added += 1;
                                }
                            }
                            // Cut short by a rate limit: the next batches are no larger than
                            // what came, so that a whole one fits the quota.
                            Ok(blocks) => {
                                batch = (blocks.len() as u64).max(1);
                                limited = true;
                            }
                            Err(e) => limited = e.rate_limit().is_some(),
                        }
                    }
                    limited_turn = limited;
                    if added == before && !limited {
                        // By hash: no other branch can answer it.
                        if let Ok(Some(p)) = self.payload(i, BlockId::Hash(parent)).await
                            && chain.push_below(p.block, p.parent_hash)
                        {
                            added += 1;
                        }
                    }
                }
            }
            if added > before || (!knew_below && chain.below().is_some()) {
                failures = 0;
                quota_waits = 0;
            } else if limited_turn || self.rate_limited(i) {
                // Its quota ran out: the next turn waits for it, this one was not a failure; but
                // a walk that only ever meets limits stops (the next round resumes it).
                quota_waits += 1;
                if quota_waits >= QUOTA_WALK_WAITS {
                    break;
                }
            } else {
                failures += 1;
            }
        }
        added
    }

    /// Extends `chain` downwards towards `to` from the held blocks alone, by parent hash, at
    /// most `budget` blocks. Returns how many were added.
    fn link_held(&self, chain: &mut Proven, to: u64, budget: u64) -> u64 {
        if chain.below().is_none()
            && let Some((_, p)) = self.held.get(chain.low().hash)
        {
            chain.learn_below(p.block, p.parent_hash);
        }
        let mut added = 0;
        while added < budget && chain.low().number > to {
            let Some((_, p)) = chain.below().and_then(|parent| self.held.get(parent)) else {
                break;
            };
            if !chain.push_below(p.block, p.parent_hash) {
                break;
            }
            added += 1;
        }
        self.count_reused(added);
        added
    }

    /// Counts `n` blocks taken from the held ones instead of fetched again.
    pub fn count_reused(&self, n: u64) {
        if let Some(mx) = &self.metrics
            && n > 0
        {
            mx.add(crate::metrics::HELD_REUSED, &[], n as f64);
        }
    }
}
