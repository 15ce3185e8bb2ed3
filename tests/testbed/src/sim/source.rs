//! Simulated sources: honest, or one of the ways a real source goes wrong.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use alloy_primitives::{Address, B256, Bytes, U256};
use futures_util::stream::BoxStream;
use lightcl::chain::BlockRef;
use lightcl::payload::requests::LogEntry;
use lightcl::payload::{OpaqueTx, SourceBlock, raw};
use lightcl::source::{BlockId, BoxFuture, LabelReport, LogsFrom, Source, SourceError};
use serde_json::Value;

use super::{Rng, SharedWorld, World, lock};

/// How a tampering source changes the blocks it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// Drops the withdrawals list (the header still commits to one).
    DropWithdrawals,
    /// Changes a withdrawal's amount.
    ChangeWithdrawal,
    /// Changes a header field (gasUsed).
    ChangeHeader,
    /// Changes a byte of the first deposit log of a Prague block's (its block is intact).
    DepositLog,
    /// Changes a queued request's storage word at the parent of a Prague block.
    QueueSlot,
}

/// What a source does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Serves the honest chain and labels.
    Honest,
    /// A replica this many blocks behind the honest tip.
    Lagging(u64),
    /// A load-balanced source whose replicas sit on two branches: each answer comes from the
    /// honest chain or the rival branch at random.
    Flapping,
    /// Honest labels, but a sibling block for payloads at the height of the honest safe and
    /// latest blocks.
    SiblingAtTarget,
    /// Honest labels and hashes, but for every payload a sibling of the honest block (its
    /// parent is honest, so it links to the block below and breaks the link to the one above).
    SiblingBlocks,
    /// Honest labels and hashes; blocks tampered with.
    Tamper(Tamper),
    /// Honest everywhere except the block at this one height, tampered with.
    TamperAt(Tamper, u64),
    /// Labels out of order: safe above latest, finalized above safe.
    LabelLies,
    /// Latest and finalized from the honest chain, safe from the rival branch: a safe block
    /// that is not an ancestor of latest.
    MixedLabels,
    /// Serves, for payloads, blocks of another genesis (they link to nothing here).
    WrongParent,
    /// Unreachable.
    Down,
    /// Serves a chain from genesis whose blocks name L1 origins L1 never had, with labels on
    /// it (a source of a chain not derived from this L1).
    FalseOrigins,
    /// The honest chain, but calls its safe block finalized while that block's L1 origin is not
    /// final on L1.
    EagerFinal,
    /// Another deployment of the chain id: honest answers, except its genesis block differs.
    OtherGenesis,
    /// A provider whose log index lags: `eth_getLogs` answers nothing, receipts are right.
    LaggingLogIndex,
}

#[derive(Debug)]
struct State {
    behaviour: Behaviour,
    error_rate: f64,
    slow: Duration,
    hang: (f64, Duration),
    rng: Rng,
    /// Serves raw blocks (RLP, as `debug_getRawBlock`) rather than JSON.
    raw: bool,
    /// A provider's plan: at most this many calls in any second, and whether it says
    /// `Retry-After` (1 s) when over it.
    limit: Option<(u32, bool)>,
    /// When the calls let through in the last second arrived.
    window: std::collections::VecDeque<tokio::time::Instant>,
}

/// Requests a simulated source answered, by kind.
#[derive(Debug, Default)]
pub struct Counts {
    /// Label reads (latest, safe and finalized together).
    pub labels: std::sync::atomic::AtomicU64,
    /// Hash lookups by number.
    pub hashes: std::sync::atomic::AtomicU64,
    /// Blocks (each block of a batch counts once).
    pub blocks: std::sync::atomic::AtomicU64,
}

/// A simulated source. Clones share it.
#[derive(Debug, Clone)]
pub struct SimSource {
    name: String,
    world: SharedWorld,
    state: Arc<Mutex<State>>,
    counts: Arc<Counts>,
}

impl SimSource {
    /// A source named `name` behaving as `behaviour`.
    pub fn new(world: SharedWorld, name: &str, behaviour: Behaviour, seed: u64) -> Self {
        let state = State {
            behaviour,
            error_rate: 0.0,
            slow: Duration::ZERO,
            hang: (0.0, Duration::ZERO),
            rng: Rng::new(seed),
            raw: false,
            limit: None,
            window: std::collections::VecDeque::new(),
        };
        Self {
            name: name.to_string(),
            world,
            state: Arc::new(Mutex::new(state)),
            counts: Arc::default(),
        }
    }

    /// What it was asked so far: (label reads, hash lookups, blocks).
    pub fn counts(&self) -> (u64, u64, u64) {
        let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        (get(&self.counts.labels), get(&self.counts.hashes), get(&self.counts.blocks))
    }

    fn count(&self, what: fn(&Counts) -> &std::sync::atomic::AtomicU64) {
        what(&self.counts).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes what it does.
    pub fn set_behaviour(&self, b: Behaviour) {
        self.lock().behaviour = b;
    }

    /// Serves raw blocks (RLP) instead of JSON.
    pub fn set_raw(&self, raw: bool) {
        self.lock().raw = raw;
    }

    /// What it does now.
    pub fn behaviour(&self) -> Behaviour {
        self.lock().behaviour
    }

    /// Fails this share of requests (half as JSON-RPC errors, half as timeouts).
    pub fn set_error_rate(&self, p: f64) {
        self.lock().error_rate = p;
    }

    /// Rate limits like a provider: at most `calls` in any second, each call over it refused as
    /// rate limited (with `Retry-After: 1` when `says_when`). None lifts it.
    pub fn set_rate_limit(&self, limit: Option<(u32, bool)>) {
        self.lock().limit = limit;
    }

    /// Whether a call now passes the plan (and counts it); the refusal otherwise.
    fn admit(&self, method: &str) -> Result<(), SourceError> {
        let mut s = self.lock();
        let Some((calls, says_when)) = s.limit else { return Ok(()) };
        let now = tokio::time::Instant::now();
        while s.window.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1)) {
            s.window.pop_front();
        }
        if s.window.len() >= calls as usize {
            return Err(SourceError::RateLimited {
                source_name: self.name.clone(),
                method: method.into(),
                retry_after: says_when.then_some(Duration::from_secs(1)),
                detail: "over the plan's calls per second".into(),
            });
        }
        s.window.push_back(now);
        Ok(())
    }

    /// Answers after `d`.
    pub fn set_slow(&self, d: Duration) {
        self.lock().slow = d;
    }

    /// Hangs on this share of requests for `d`, then times out.
    pub fn set_hang(&self, p: f64, d: Duration) {
        self.lock().hang = (p, d);
    }

    /// Waits as configured, then fails now and then; returns the behaviour and a coin.
    async fn prelude(&self, method: &str) -> Result<(Behaviour, bool), SourceError> {
        self.admit(method)?;
        let (behaviour, slow, fail, timeout, coin, hang) = {
            let mut s = self.lock();
            let (hp, hd) = s.hang;
            let hang = (hp > 0.0 && s.rng.chance(hp)).then_some(hd);
            let p = s.error_rate;
            let fail = p > 0.0 && s.rng.chance(p);
            let timeout = s.rng.chance(0.5);
            let coin = s.rng.chance(0.5);
            // Network jitter: answers to requests in flight together come back in any order.
            let jitter = Duration::from_micros(s.rng.range(0, 3_000));
            (s.behaviour, s.slow + jitter, fail, timeout, coin, hang)
        };
        if let Some(d) = hang {
            tokio::time::sleep(d).await;
            return Err(SourceError::Timeout {
                source_name: self.name.clone(),
                method: method.into(),
            });
        }
        if !slow.is_zero() {
            tokio::time::sleep(slow).await;
        } else {
            tokio::task::yield_now().await;
        }
        if behaviour == Behaviour::Down {
            return Err(SourceError::Unreachable {
                source_name: self.name.clone(),
                message: "connection refused".into(),
            });
        }
        if fail {
            if timeout {
                tokio::time::sleep(Duration::from_secs(2)).await;
                return Err(SourceError::Timeout {
                    source_name: self.name.clone(),
                    method: method.into(),
                });
            }
            return Err(SourceError::Rpc {
                source_name: self.name.clone(),
                method: method.into(),
                code: -32603,
                message: "internal error".into(),
            });
        }
        Ok((behaviour, coin))
    }

    /// The chain this source shows now (a prefix of it for a lagging replica) and its labels.
    fn view(w: &World, b: Behaviour, coin: bool) -> (&[B256], u64, u64) {
        match b {
            Behaviour::Lagging(k) => {
                let keep = w.honest.len().saturating_sub(k as usize).max(1);
                let top = (keep - 1) as u64;
                (&w.honest[..keep], w.safe.min(top), w.finalized.min(top))
            }
            Behaviour::Flapping if coin => {
                let (safe, fin) = w.rival_labels;
                (&w.rival, safe, fin)
            }
            Behaviour::FalseOrigins if w.false_chain.len() > 1 => {
                let top = (w.false_chain.len() - 1) as u64;
                (&w.false_chain, top.saturating_sub(4), top.saturating_sub(12))
            }
            Behaviour::EagerFinal => {
                // Its safe block as finalized, while that block's L1 origin is not final on L1.
                let origin = w.honest.get(w.safe as usize).and_then(|h| w.origin(h));
                let l1_final = w.l1.as_ref().map_or(0, |l| l.finalized);
                let eager = origin.is_some_and(|o| o.number > l1_final);
                (&w.honest, w.safe, if eager { w.safe } else { w.finalized })
            }
            _ => (&w.honest, w.safe, w.finalized),
        }
    }
}

/// A sibling of the honest block at `n` (cached in the world's rival-of-height map).
fn sibling(w: &mut World, n: u64) -> Option<B256> {
    if n == 0 || n as usize >= w.honest.len() {
        return None;
    }
    let honest = w.honest.clone();
    let c = w.branch(&honest, n - 1, 1);
    c.get(n as usize).copied()
}

fn tampered_rlp(rlp: &[u8], how: Tamper) -> Bytes {
    let mut buf = rlp;
    let Ok(mut block) =
        <alloy_consensus::Block<OpaqueTx> as alloy_rlp::Decodable>::decode(&mut buf)
    else {
        return Bytes::copy_from_slice(rlp);
    };
    match how {
        Tamper::DropWithdrawals => block.body.withdrawals = None,
        Tamper::ChangeWithdrawal => {
            if let Some(w) = block.body.withdrawals.as_mut().and_then(|ws| ws.first_mut()) {
                w.amount = 0x99999;
            }
        }
        Tamper::ChangeHeader => block.header.gas_used = 1,
        Tamper::DepositLog | Tamper::QueueSlot => {}
    }
    raw::encode(&block)
}

fn tampered(json: &str, how: Tamper) -> Box<str> {
    let mut v: Value = serde_json::from_str(json).unwrap_or(Value::Null);
    match how {
        Tamper::DropWithdrawals => {
            if let Some(o) = v.as_object_mut() {
                o.remove("withdrawals");
            }
        }
        Tamper::ChangeWithdrawal => v["withdrawals"][0]["amount"] = Value::from("0x99999"),
        Tamper::ChangeHeader => v["gasUsed"] = Value::from("0x1"),
        Tamper::DepositLog | Tamper::QueueSlot => {}
    }
    v.to_string().into()
}

impl Source for SimSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn chain_id(&self) -> BoxFuture<'_, Result<u64, SourceError>> {
        Box::pin(async move {
            self.prelude("eth_chainId").await?;
            Ok(1337)
        })
    }

    fn labels(&self) -> BoxFuture<'_, Result<LabelReport, SourceError>> {
        Box::pin(async move {
            self.count(|c| &c.labels);
            let (b, coin) = self.prelude("eth_getBlockByNumber").await?;
            let w = lock(&self.world);
            let (c, safe, fin) = Self::view(&w, b, coin);
            let top = (c.len() - 1) as u64;
            let at = |n: u64| c.get(n as usize).map(|h| BlockRef::new(n, *h));
            if b == Behaviour::LabelLies {
                let bogus =
                    |n: u64| Some(BlockRef::new(n, B256::with_last_byte((n % 250) as u8 + 1)));
                return Ok(LabelReport {
                    latest: at(top),
                    safe: bogus(top + 3),
                    finalized: bogus(top + 9),
                    latest_time: None,
                });
            }
            if b == Behaviour::MixedLabels {
                let rival = w.at(&w.rival, w.rival_labels.0);
                return Ok(LabelReport {
                    latest: at(top),
                    safe: rival,
                    finalized: at(fin),
                    latest_time: None,
                });
            }
            Ok(LabelReport {
                latest: at(top),
                safe: at(safe),
                finalized: at(fin),
                latest_time: None,
            })
        })
    }

    fn hash_at(&self, number: u64) -> BoxFuture<'_, Result<Option<B256>, SourceError>> {
        Box::pin(async move {
            self.count(|c| &c.hashes);
            let (b, coin) = self.prelude("eth_getBlockByNumber").await?;
            let w = lock(&self.world);
            let (c, _, _) = Self::view(&w, b, coin);
            if b == Behaviour::OtherGenesis && number == 0 {
                return Ok(Some(B256::repeat_byte(0x6e)));
            }
            Ok(c.get(number as usize).copied())
        })
    }

    fn block(&self, at: BlockId) -> BoxFuture<'_, Result<Option<SourceBlock>, SourceError>> {
        Box::pin(async move {
            self.count(|c| &c.blocks);
            let (b, coin) = self.prelude("eth_getBlockByNumber").await?;
            let (out, late) = self.block_now(at, b, coin);
            if late {
                // The bad block comes from a slow replica: its answer arrives after those for
                // the blocks above it that were asked for at the same time.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(out)
        })
    }

    fn logs(
        &self,
        block: B256,
        addresses: Vec<Address>,
        from: LogsFrom,
    ) -> BoxFuture<'_, Result<Vec<LogEntry>, SourceError>> {
        Box::pin(async move {
            let method = match from {
                LogsFrom::Index => "eth_getLogs",
                LogsFrom::Receipts => "eth_getBlockReceipts",
            };
            let (b, _) = self.prelude(method).await?;
            let w = lock(&self.world);
            let Some(blk) = w.block(&block) else {
                return Err(self.not_found(method, block));
            };
            let mut logs: Vec<LogEntry> =
                blk.logs().iter().filter(|l| addresses.contains(&l.address)).cloned().collect();
            match b {
                Behaviour::Tamper(Tamper::DepositLog)
                | Behaviour::TamperAt(Tamper::DepositLog, _)
                    if tamper_here(b, blk.id.number) =>
                {
                    if let Some(l) = logs.iter_mut().find(|l| !l.topics.is_empty()) {
                        let mut d = l.data.to_vec();
                        d[200] ^= 1;
                        l.data = d.into();
                    }
                }
                Behaviour::LaggingLogIndex if from == LogsFrom::Index => logs.clear(),
                _ => {}
            }
            Ok(logs)
        })
    }

    fn storage(
        &self,
        at: B256,
        slots: Vec<(Address, U256)>,
    ) -> BoxFuture<'_, Result<Vec<B256>, SourceError>> {
        Box::pin(async move {
            let (b, _) = self.prelude("eth_getStorageAt").await?;
            let w = lock(&self.world);
            let Some(blk) = w.block(&at) else {
                return Err(self.not_found("eth_getStorageAt", at));
            };
            let mut words: Vec<B256> = slots.iter().map(|(a, s)| blk.storage(*a, *s)).collect();
            // A tampered queue entry (an index slot would only make the queue inconsistent).
            if matches!(
                b,
                Behaviour::Tamper(Tamper::QueueSlot) | Behaviour::TamperAt(Tamper::QueueSlot, _)
            ) && tamper_here(b, blk.id.number + 1)
                && let Some(k) = slots.iter().position(|(_, s)| *s >= U256::from(4))
            {
                words[k].0[31] ^= 1;
            }
            Ok(words)
        })
    }

    fn subscribe_heads(
        &self,
    ) -> BoxFuture<'_, Result<Option<BoxStream<'static, Option<u64>>>, SourceError>> {
        Box::pin(async { Ok(None) })
    }
}

/// Whether a tampering behaviour applies to the block at `number`.
fn tamper_here(b: Behaviour, number: u64) -> bool {
    match b {
        Behaviour::Tamper(_) => true,
        Behaviour::TamperAt(_, at) => at == number,
        _ => false,
    }
}

impl SimSource {
    fn not_found(&self, method: &str, block: B256) -> SourceError {
        SourceError::Rpc {
            source_name: self.name.clone(),
            method: method.into(),
            code: -32000,
            message: format!("unknown block {block}"),
        }
    }

    /// The block `at` as this source serves it, and whether the answer comes late.
    fn block_now(&self, at: BlockId, b: Behaviour, coin: bool) -> (Option<SourceBlock>, bool) {
        let raw = self.lock().raw;
        let mut w = lock(&self.world);
        let (c, safe, _) = Self::view(&w, b, coin);
        let top = (c.len() - 1) as u64;
        let hash = match at {
            BlockId::Number(n) => c.get(n as usize).copied(),
            BlockId::Hash(h) => w.block(&h).map(|_| h),
        };
        let Some(mut hash) = hash else { return (None, false) };
        let number = w.block(&hash).map_or(0, |b| b.id.number);
        match b {
            Behaviour::SiblingBlocks if matches!(at, BlockId::Number(_)) => {
                if let Some(s) = sibling(&mut w, number) {
                    hash = s;
                }
            }
            Behaviour::SiblingAtTarget if number == safe || number == top => {
                if let Some(s) = sibling(&mut w, number) {
                    hash = s;
                }
            }
            Behaviour::WrongParent if number > 0 => {
                while w.foreign_len() <= number {
                    w.extend_foreign(64);
                }
                if let Some(f) = w.foreign_at(number) {
                    hash = f;
                }
            }
            _ => {}
        }
        let Some(block) = w.block(&hash).cloned() else { return (None, false) };
        w.in_flight += 1;
        w.max_in_flight = w.max_in_flight.max(w.in_flight);
        *w.served.entry(hash).or_default() += 1;
        let how = match b {
            Behaviour::Tamper(how) => Some(how),
            Behaviour::TamperAt(how, at) if at == number => Some(how),
            _ => None,
        };
        let out = match (raw, how) {
            (true, Some(how)) => SourceBlock::Rlp(tampered_rlp(&block.rlp, how)),
            (true, None) => SourceBlock::Rlp(block.rlp.clone()),
            (false, Some(how)) => SourceBlock::Json(tampered(&block.json, how)),
            (false, None) => SourceBlock::Json(Box::<str>::from(&*block.json)),
        };
        let out = Some(out);
        (out, matches!(b, Behaviour::TamperAt(_, at) if at == number))
    }
}
