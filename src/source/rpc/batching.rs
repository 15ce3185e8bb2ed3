//! How many calls one source takes in a JSON-RPC batch, learned from its answers.
//!
//! Providers cap batches (a count, or a size of answer) and refuse the whole batch past it; a
//! provider that counts calls per second refuses any batch larger than a second's worth of its
//! plan, however long lightcl waits; and some serve `debug_getRawBlock` singly but not inside a
//! batch. Each of those would otherwise cost every batch a refusal and a re-ask call by call.
//! So the source remembers: the batch is halved until it passes (a size refusal is a property of
//! the provider and is kept; a rate refusal grows back after clean batches), and raw blocks are
//! asked for one per request once the source refused them in a batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tracing::{debug, info};

use crate::source::SourceError;

/// Clean batches at a rate-halved size before it is doubled again.
pub(super) const REGROW_AFTER: usize = 16;

/// The smallest batch a rate limit halves to.
const RATE_FLOOR: usize = 2;

/// Raw blocks asked for at once, one request each, from a source that refuses them in batches.
pub(super) const SINGLES_IN_FLIGHT: usize = 8;

/// What a batch's answer says about the batch itself (as opposed to the blocks in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Answered: take what came, ask again one by one for any call that failed.
    Answered,
    /// Refused for its size (HTTP 413, an error naming the batch's size or limit, an answer
    /// over `max_response_mib`): halve and ask again.
    TooBig,
    /// Every call refused by a rate limit: halve (for a provider that counts calls per second)
    /// and leave the source alone as it asked.
    RateLimited,
    /// A batch of raw-block calls whose every call failed with the same kind of error, not a
    /// rate limit: the source may serve them singly only.
    AllFailed,
}

/// Whether an error names the batch's size or a limit on it: geth's "batch too large" (code
/// -32600, one answer for the whole batch) and "response too large" (-32003), and providers'
/// "batch size exceeds", "too many requests in batch", "batch limit".
pub(super) fn names_batch_size(e: &SourceError) -> bool {
    match e {
        SourceError::TooLarge { .. } | SourceError::Http { status: 413, .. } => true,
        SourceError::Rpc { message, code, .. } => {
            let m = message.to_lowercase();
            let sized = ["too large", "too big", "limit", "exceed", "too many", "size", "maximum"];
            (m.contains("batch") && sized.iter().any(|w| m.contains(w)))
                || (*code == -32003 && m.contains("response too large"))
        }
        _ => false,
    }
}

/// Judges one batch's answer: the whole request's error, or each call's result.
pub(super) fn verdict<T>(answer: &Result<Vec<Result<T, SourceError>>, SourceError>) -> Verdict {
    let calls = match answer {
        Err(e) if names_batch_size(e) => return Verdict::TooBig,
        Err(e) if e.rate_limit().is_some() => return Verdict::RateLimited,
        Err(_) => return Verdict::Answered,
        Ok(calls) => calls,
    };
    let errors: Vec<&SourceError> = calls.iter().filter_map(|c| c.as_ref().err()).collect();
    if errors.iter().any(|e| names_batch_size(e)) {
        return Verdict::TooBig;
    }
    if errors.is_empty() || errors.len() < calls.len() {
        return Verdict::Answered;
    }
    if errors.iter().all(|e| e.rate_limit().is_some()) {
        return Verdict::RateLimited;
    }
    let first = errors[0].reason();
    if errors.iter().all(|e| e.reason() == first && e.rate_limit().is_none()) {
        return Verdict::AllFailed;
    }
    Verdict::Answered
}

/// One source's batch sizes and what it turned out to refuse. Shared by its clones.
#[derive(Debug, Clone)]
pub(super) struct Batching {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Its `fetch_batch` and `max_requests_per_second` (a batch larger than a second's worth of
    /// the plan is refused whole by a provider that counts per second), whichever is lower.
    configured: usize,
    /// Halved on each size refusal, never grown back.
    size_cap: AtomicUsize,
    /// Halved on each whole-batch rate limit, doubled after [`REGROW_AFTER`] clean batches.
    rate_cap: AtomicUsize,
    /// Clean batches at `rate_cap` since it last changed.
    clean: AtomicUsize,
    /// It refused raw blocks in a batch and served them singly.
    raw_singly: AtomicBool,
}

impl Batching {
    /// A source's batching, from its own `fetch_batch` and `max_requests_per_second`.
    pub(super) fn new(fetch_batch: Option<usize>, per_second: Option<u32>) -> Self {
        let configured = fetch_batch
            .unwrap_or(usize::MAX)
            .min(per_second.map_or(usize::MAX, |p| p as usize))
            .max(1);
        Self {
            inner: Arc::new(Inner {
                configured,
                size_cap: AtomicUsize::new(usize::MAX),
                rate_cap: AtomicUsize::new(usize::MAX),
                clean: AtomicUsize::new(0),
                raw_singly: AtomicBool::new(false),
            }),
        }
    }

    /// Calls to put in one batch now.
    pub(super) fn size(&self) -> usize {
        let i = &self.inner;
        i.configured.min(i.size_cap.load(Ordering::Relaxed)).min(i.rate_cap.load(Ordering::Relaxed))
    }

    /// Whether raw blocks go one per request.
    pub(super) fn raw_singly(&self) -> bool {
        self.inner.raw_singly.load(Ordering::Relaxed)
    }

    /// A batch of `tried` calls was refused for its size: halve (said once per new size).
    /// False when it was a single call already (nothing left to halve).
    pub(super) fn too_big(&self, source: &str, tried: usize, detail: &str) -> bool {
        if tried <= 1 {
            return false;
        }
        let half = tried / 2;
        let before = self.inner.size_cap.fetch_min(half, Ordering::Relaxed);
        if before > half {
            info!(target: "lightcl::source", source, refused = tried, from_now_on = half,
                answer = detail,
                "source refused a batch for its size; sending smaller batches to it from now on \
                 (set its fetch_batch to at most this to skip the refusals)");
        }
        true
    }

    /// Every call of a batch of `tried` was rate limited: halve the batch until the source
    /// recovers (a provider that counts calls per second refuses anything over its plan).
    pub(super) fn rate_limited(&self, source: &str, tried: usize) {
        if tried <= 1 {
            return;
        }
        // Not below two for a rate limit: a refused small batch (the end of a range, the rest of
        // one cut short) may only have met a full window, not a size (a batch cap refuses with
        // its own answer, and `max_requests_per_second = 1` gives batches of one anyway).
        let half = (tried / 2).max(RATE_FLOOR);
        let before = self.inner.rate_cap.fetch_min(half, Ordering::Relaxed);
        self.inner.clean.store(0, Ordering::Relaxed);
        if before > half {
            info!(target: "lightcl::source", source, refused = tried, from_now_on = half,
                "source rate limited a whole batch; sending smaller batches to it while it does \
                 (they grow back after clean answers)");
        }
    }

    /// A batch of `tried` calls was answered: after enough at the rate-halved size, double it.
    pub(super) fn answered(&self, source: &str, tried: usize) {
        let i = &self.inner;
        let cap = i.rate_cap.load(Ordering::Relaxed);
        if cap == usize::MAX || tried < cap {
            return;
        }
        if i.clean.fetch_add(1, Ordering::Relaxed) + 1 >= REGROW_AFTER {
            i.clean.store(0, Ordering::Relaxed);
            let grown = if cap.saturating_mul(2) >= i.configured { usize::MAX } else { cap * 2 };
            if i.rate_cap.compare_exchange(cap, grown, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                debug!(target: "lightcl::source", source, batch = grown.min(i.configured),
                    "batches to the source grow back after clean answers");
            }
        }
    }

    /// The source served a raw block singly after refusing raw blocks in a batch: one per
    /// request from now on (said once).
    pub(super) fn raw_only_singly(&self, source: &str, detail: &str) {
        if !self.inner.raw_singly.swap(true, Ordering::Relaxed) {
            info!(target: "lightcl::source", source, answer = detail,
                "source serves debug_getRawBlock singly but not in batches; asking for raw \
                 blocks one per request from now on (more requests, the same calls)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpc(code: i64, message: &str) -> SourceError {
        SourceError::Rpc {
            source_name: "s".into(),
            method: "m".into(),
            code,
            message: message.into(),
        }
    }

    fn limited() -> SourceError {
        SourceError::RateLimited {
            source_name: "s".into(),
            method: "m".into(),
            retry_after: None,
            detail: "429".into(),
        }
    }

    #[test]
    fn what_a_batch_answer_says() {
        let http =
            |status| SourceError::Http { source_name: "s".into(), method: "m".into(), status };
        let timeout = || SourceError::Timeout { source_name: "s".into(), method: "m".into() };
        type Answer = Result<Vec<Result<(), SourceError>>, SourceError>;
        let cases: Vec<(Answer, Verdict)> = vec![
            (Ok(vec![Ok(()), Ok(())]), Verdict::Answered),
            (Err(http(413)), Verdict::TooBig),
            (Err(limited()), Verdict::RateLimited),
            (Err(timeout()), Verdict::Answered),
            // geth: one answer naming the batch, the other calls without an answer.
            (Ok(vec![Err(rpc(-32600, "batch too large")), Err(timeout())]), Verdict::TooBig),
            (Ok(vec![Ok(()), Err(rpc(-32003, "response too large"))]), Verdict::TooBig),
            (Ok(vec![Err(rpc(-32000, "batch size exceeds 10"))]), Verdict::TooBig),
            (Ok(vec![Err(limited()), Err(limited())]), Verdict::RateLimited),
            // Partly limited: what came is kept, the rest asked again.
            (Ok(vec![Ok(()), Err(limited())]), Verdict::Answered),
            (
                Ok(vec![
                    Err(rpc(-32600, "debug methods are not supported in batch requests")),
                    Err(rpc(-32600, "debug methods are not supported in batch requests")),
                ]),
                Verdict::AllFailed,
            ),
            (Ok(vec![Err(rpc(-32000, "x")), Err(timeout())]), Verdict::Answered),
            (Ok(vec![Err(rpc(-32000, "block not found")), Ok(())]), Verdict::Answered),
        ];
        for (answer, want) in cases {
            assert_eq!(verdict(&answer), want, "{answer:?}");
        }
    }

    #[test]
    fn sizes_halve_on_refusals_and_rate_halvings_grow_back() {
        let b = Batching::new(Some(128), None);
        assert_eq!(b.size(), 128);
        assert!(b.too_big("s", 128, "batch too large"));
        assert!(b.too_big("s", 64, "batch too large"));
        assert_eq!(b.size(), 32);
        // A refusal of an older, larger batch in flight does not raise it again.
        assert!(b.too_big("s", 128, "batch too large"));
        assert_eq!(b.size(), 32);
        assert!(!b.too_big("s", 1, "batch too large"), "one call cannot be halved");

        let b = Batching::new(None, Some(40));
        assert_eq!(b.size(), 40, "a second's worth of the plan");
        b.rate_limited("s", 40);
        assert_eq!(b.size(), 20);
        for _ in 0..REGROW_AFTER - 1 {
            b.answered("s", 20);
        }
        assert_eq!(b.size(), 20);
        b.answered("s", 20);
        assert_eq!(b.size(), 40, "grown back, never past the plan");
        b.rate_limited("s", 40);
        b.rate_limited("s", 20);
        assert_eq!(b.size(), 10);
        for _ in 0..REGROW_AFTER {
            b.answered("s", 5);
        }
        assert_eq!(b.size(), 10, "smaller batches do not count as clean at the cap");
        // A size refusal is kept whatever the rate does.
        b.too_big("s", 10, "batch too large");
        for _ in 0..REGROW_AFTER * 4 {
            b.answered("s", 5);
        }
        assert_eq!(b.size(), 5);
    }
}
