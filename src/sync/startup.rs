//! Start-up and the checks that repeat on every round: sources admitted once their chain id is
//! checked (the follower starts as soon as the quorum can be met), the EL checked (chain id,
//! JWT), and the EL's finalized block reconciled with the remembered floor.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::driver::{Follower, ReplicaParts, RunError, StepError, sleep_or_cancel};
use super::fleet::Fleet;
use super::gate::Gate;
use crate::api::Shared;
use crate::backoff::Backoff;
use crate::chain::Heads;
use crate::config::Config;
use crate::engine::{BlockAt, Engine, EngineError};
use crate::source::SourceSet;

/// Checks the EL: chain id, then a JWT-authenticated call. Shared with `lightcl check`.
pub async fn check_engine(engine: &dyn Engine, chain_id: u64) -> Result<usize, RunError> {
    check_engine_chain(engine, chain_id).await?;
    check_engine_auth(engine).await
}

/// The EL's JSON-RPC answers with the configured chain id.
pub async fn check_engine_chain(engine: &dyn Engine, chain_id: u64) -> Result<(), RunError> {
    let id = engine.chain_id().await.map_err(engine_err)?;
    if id != chain_id {
        return Err(RunError::ChainIdMismatch {
            who: "the local EL".into(),
            expected: chain_id,
            got: id,
        });
    }
    Ok(())
}

/// The Engine API accepts our JWT; returns how many methods it offers.
pub async fn check_engine_auth(engine: &dyn Engine) -> Result<usize, RunError> {
    let caps = engine.capabilities().await.map_err(engine_err)?;
    Ok(caps.len())
}

fn engine_err(e: EngineError) -> RunError {
    match e {
        e @ EngineError::Unauthorized { .. } => RunError::Unauthorized(e),
        e => RunError::Engine(e),
    }
}

/// Admits the sources before any replica starts: as soon as the quorum can be met (the rest are
/// admitted when they answer). `Ok(false)`: cancelled first. A source of another chain is fatal.
pub(super) async fn admit_at_start(
    sources: &SourceSet,
    chain_id: u64,
    token: &CancellationToken,
) -> Result<bool, RunError> {
    let mut backoff = Backoff::default();
    loop {
        match admit(sources, chain_id).await {
            Ok(n) if n >= sources.required() => return Ok(true),
            Ok(n) => {
                let d = backoff.next_delay();
                warn!(target: "lightcl::source", admitted = n, required = sources.required(),
                    configured = sources.len(), retry_in = ?d,
                    "not enough sources answer yet to meet the quorum; retrying");
                if !sleep_or_cancel(token, d).await {
                    return Ok(false);
                }
            }
            Err(StepError::Fatal(e)) => return Err(e),
            Err(e) => return Err(RunError::Api(e.to_string())),
        }
    }
}

/// Admits the sources that answer with the right chain id; a wrong one is fatal.
async fn admit(sources: &SourceSet, chain_id: u64) -> Result<usize, StepError> {
    sources.admit().await.map_err(|w| {
        StepError::Fatal(RunError::ChainIdMismatch {
            who: format!("source {}", w.source),
            expected: chain_id,
            got: w.got,
        })
    })
}

/// One task per push-capable source turning new-head notifications into wake-ups of every
/// replica. The tasks end when `token` is cancelled.
pub(super) fn spawn_subscriptions(
    sources: &SourceSet,
    fleet: &Arc<Fleet>,
    token: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let sources: Vec<_> = sources.sources().cloned().collect();
    sources
        .into_iter()
        .map(|s| {
            let (fleet, token) = (fleet.clone(), token.clone());
            tokio::spawn(async move {
                let mut backoff = Backoff::default();
                while !token.is_cancelled() {
                    match s.subscribe_heads().await {
                        Ok(Some(mut stream)) => {
                            backoff.reset();
                            loop {
                                tokio::select! {
                                    _ = token.cancelled() => return,
                                    item = stream.next() => match item {
                                        Some(()) => fleet.wake_all(),
                                        None => break,
                                    },
                                }
                            }
                            warn!(target: "lightcl::source", source = s.name(), "newHeads subscription ended; resubscribing");
                        }
                        Ok(None) => return,
                        Err(e) => warn!(target: "lightcl::source", source = s.name(), error = %e, "cannot subscribe to newHeads; polling only"),
                    }
                    if !sleep_or_cancel(&token, backoff.next_delay()).await {
                        return;
                    }
                }
            })
        })
        .collect()
}

impl Follower {
    /// Connects and checks replica `index`'s EL before the first engine write. `Ok(None)`:
    /// cancelled.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn start(
        config: Config,
        replica: ReplicaParts,
        index: usize,
        sources: Arc<SourceSet>,
        fleet: Arc<Fleet>,
        token: CancellationToken,
        shared: Arc<Shared>,
    ) -> Result<Option<Self>, RunError> {
        let ReplicaParts { engine, state: (store, floor), .. } = replica;
        if let Some(f) = floor {
            info!(target: "lightcl::gate", floor = %f, file = %store.path().display(),
                "finality floor read from the state file");
        }
        let gate = Gate::new(engine.clone(), floor, Some(store));
        let f = Self {
            config,
            engine,
            sources,
            gate,
            token,
            wake: fleet.wake(index),
            fleet,
            index,
            shared,
            stuck: Default::default(),
            progress_watch: Default::default(),
            boot: Default::default(),
        };
        let mut backoff = Backoff::default();
        loop {
            match check_engine(f.engine.as_ref(), f.config.chain_id).await {
                Ok(caps) => {
                    info!(target: "lightcl::engine", capabilities = caps, "EL connected, JWT accepted");
                    break;
                }
                Err(RunError::Engine(e)) if e.is_retryable() => {
                    let d = backoff.next_delay();
                    f.shared.update(|s| s.el_up = false);
                    warn!(target: "lightcl::engine", error = %e, retry_in = ?d, "EL not reachable at start; retrying");
                    if !sleep_or_cancel(&f.token, d).await {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Some(f))
    }

    /// Admits the sources that answer with the right chain id; a wrong one is fatal.
    pub(super) async fn admit_sources(&self) -> Result<usize, StepError> {
        admit(&self.sources, self.config.chain_id).await
    }

    /// The local view with the remembered floor applied. The EL's finalized block may be older
    /// than the floor (an EL back from a crash): when the EL still holds the floor block, the
    /// floor stands in for its finalized block; when it lost it, the EL is being refilled and
    /// its labels stay below the floor. An EL whose own chain holds another block at the floor
    /// height is a halt. A finalized block of the EL above the floor, on the floor's chain,
    /// raises the floor.
    pub(super) async fn reconcile_floor(
        &self,
        el: Heads,
    ) -> Result<Result<Heads, RunError>, StepError> {
        let Some(floor) = self.gate.floor() else {
            self.gate.set_refilling(false);
            if el.finalized.number > 0 {
                self.gate.raise(el.finalized)?;
            }
            return Ok(Ok(el));
        };
        if el.head.number < floor.number {
            if !self.gate_refilling_logged(el) {
                self.gate.set_refilling(true);
            }
            return Ok(Ok(el));
        }
        self.gate.set_refilling(false);
        let el_at_floor = if el.finalized.number == floor.number {
            Some(el.finalized.hash)
        } else {
            self.engine.block(BlockAt::Number(floor.number)).await?.map(|b| b.block.hash)
        };
        if el_at_floor != Some(floor.hash) {
            return Ok(Err(RunError::ElLeftFloor { number: floor.number, floor, el: el_at_floor }));
        }
        if el.finalized.number > floor.number {
            self.gate.raise(el.finalized)?;
            return Ok(Ok(el));
        }
        let safe = if el.safe.number < floor.number { floor } else { el.safe };
        Ok(Ok(Heads { head: el.head, safe, finalized: floor }))
    }

    /// Logs (once per episode) that the EL lost blocks below the floor; returns whether it was
    /// already known.
    fn gate_refilling_logged(&self, el: Heads) -> bool {
        let was = self.gate.refilling();
        if !was && self.boot.syncing() {
            info!(target: "lightcl::gate", el_head = %el.head, floor = ?self.gate.floor().map(|f| f.to_string()),
                "the EL syncs from its peers towards the finalized block lightcl handed it");
        } else if !was {
            warn!(target: "lightcl::gate", el_head = %el.head, floor = ?self.gate.floor().map(|f| f.to_string()),
                "the EL's head is below the finality floor lightcl remembers (it lost blocks, for \
                 example in a crash); refilling it along the chain through the floor");
        }
        was
    }
}
