//! The output-root audit: the roots L1 holds for the chain (the AnchorStateRegistry's anchor,
//! dispute games from the DisputeGameFactory) compared with the output roots of the local EL's
//! own blocks at those heights.
//!
//! Only the anchor and games L1 settled are facts: a game the registry says is valid
//! (`isGameClaimValid`, registries from v3: resolved for the claim, past the airgap, not
//! blacklisted or retired, of the respected type). On older registries a resolved game is not
//! taken as settled (its airgap and the guardian's blacklist are not checked): it is reported
//! like a claim. A game still open is a claim anyone could make: a claim that disagrees with the
//! local chain is reported, never acted on; games resolved against their claim are left out.
//! Games that name an L2 sequence number only (super roots) are not output roots and are
//! skipped. Every read is taken at L1's finalized block; a call counts as missing only when it
//! reverts (a rate limit or a timeout is asked again, never remembered).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use alloy_primitives::{Address, B256, Bytes};
use serde::Serialize;

use super::output::{
    GameStatus, L1Root, calldata, decode_anchor, decode_game_at, word, word_of, word_u64,
};
use super::{L1Error, L1Set};
use crate::chain::BlockRef;

/// Games read when lightcl starts (the newest); later, every new one is read.
const FIRST_GAMES: u64 = 16;
/// Most games followed at once (the newest are kept).
const FOLLOWED_GAMES: usize = 64;
/// Most new games read per refresh.
const NEW_GAMES_PER_REFRESH: u64 = 16;
/// Most followed games whose status is read again per refresh (the oldest first).
const RECHECKED_PER_REFRESH: usize = 16;
/// The placeholder root an OP deployment starts its registry with (`bytes32(hex"dead")`).
const PLACEHOLDER_ROOT: B256 = {
    let mut b = [0u8; 32];
    b[0] = 0xde;
    b[1] = 0xad;
    B256::new(b)
};

/// The L1 contracts of the chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Contracts {
    /// AnchorStateRegistry.
    pub anchor_state_registry: Option<Address>,
    /// DisputeGameFactory.
    pub dispute_game_factory: Option<Address>,
    /// The game type whose games count (`None`: the registry's `respectedGameType()`).
    pub game_type: Option<u32>,
    /// The OptimismPortal, which names the two above when they are not given.
    pub portal: Option<Address>,
}

/// Where an L1 root comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RootSource {
    /// The AnchorStateRegistry's anchor.
    Anchor,
    /// A dispute game: its index in the factory, its address and status.
    Game {
        /// Index in the factory.
        index: u64,
        /// The game contract.
        address: Address,
        /// Its status.
        status: &'static str,
        /// Whether L1 settled it (its claim is a fact).
        settled: bool,
    },
}

impl RootSource {
    /// Whether the root is settled on L1 (not a mere claim).
    pub fn settled(&self) -> bool {
        match self {
            Self::Anchor => true,
            Self::Game { settled, .. } => *settled,
        }
    }
}

/// A root L1 holds and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The root.
    pub root: L1Root,
    /// Its source.
    pub source: RootSource,
}

#[derive(Debug, Clone, Copy)]
struct Game {
    address: Address,
    root: L1Root,
    status: GameStatus,
    settled: bool,
}

#[derive(Debug, Default)]
struct Memory {
    read_at: Option<Instant>,
    anchor: Option<L1Root>,
    game_type: Option<u32>,
    next_game: Option<u64>,
    games: BTreeMap<u64, Game>,
    /// Whether the registry answers `isGameClaimValid` (v3 and later).
    claim_valid_known: Option<bool>,
    /// The contracts, once the portal named the missing ones.
    resolved: Option<Contracts>,
}

/// Reads what L1 holds; shared by a fleet's replicas.
#[derive(Debug)]
pub struct Audit {
    contracts: Contracts,
    every: Duration,
    memory: std::sync::Mutex<Memory>,
}

impl Audit {
    /// An audit of `contracts`, reading L1 at most every `every`.
    pub fn new(contracts: Contracts, every: Duration) -> Self {
        Self { contracts, every, memory: Default::default() }
    }

    /// Whether there is anything to read.
    pub fn enabled(&self) -> bool {
        let c = &self.contracts;
        c.anchor_state_registry.is_some() || c.dispute_game_factory.is_some() || c.portal.is_some()
    }

    /// The roots L1 holds now (read again when the last read is older than the interval).
    /// `l1_finalized` is the L1 block the reads are taken at.
    pub async fn roots(&self, l1: &L1Set, l1_finalized: BlockRef) -> Result<Vec<Held>, L1Error> {
        let due = crate::util::lock(&self.memory).read_at.is_none_or(|t| t.elapsed() >= self.every);
        if due {
            self.refresh(l1, l1_finalized.hash).await?;
        }
        let m = crate::util::lock(&self.memory);
        let mut out = Vec::new();
        if let Some(a) = m.anchor {
            out.push(Held { root: a, source: RootSource::Anchor });
        }
        for (index, g) in &m.games {
            if g.status == GameStatus::ChallengerWins {
                continue;
            }
            let source = RootSource::Game {
                index: *index,
                address: g.address,
                status: g.status.as_str(),
                settled: g.settled,
            };
            out.push(Held { root: g.root, source });
        }
        Ok(out)
    }

    async fn read(
        &self,
        l1: &L1Set,
        to: Address,
        sig: &str,
        args: &[B256],
        at: B256,
    ) -> Result<Bytes, L1Error> {
        l1.call(to, calldata(sig, args), at).await
    }

    fn malformed(what: &str, data: &Bytes) -> L1Error {
        L1Error::Malformed {
            name: "L1".into(),
            method: what.to_string(),
            message: format!("unexpected answer {data}"),
        }
    }

    /// The game type that counts: configured, or the registry's.
    /// The contracts, the missing ones read from the portal (once).
    async fn contracts(&self, l1: &L1Set, at: B256) -> Result<Contracts, L1Error> {
        if let Some(c) = crate::util::lock(&self.memory).resolved {
            return Ok(c);
        }
        let mut c = self.contracts;
        if let Some(portal) = c.portal {
            if c.dispute_game_factory.is_none() {
                let d = self.read(l1, portal, "disputeGameFactory()", &[], at).await?;
                let f = super::output::word_address(&d, 0)
                    .ok_or_else(|| Self::malformed("disputeGameFactory", &d))?;
                c.dispute_game_factory = Some(f);
            }
            if c.anchor_state_registry.is_none() {
                // Portals before v3 do not name the registry: the anchor is then not audited.
                match self.read(l1, portal, "anchorStateRegistry()", &[], at).await {
                    Ok(d) => c.anchor_state_registry = super::output::word_address(&d, 0),
                    Err(e) if e.is_revert() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        crate::util::lock(&self.memory).resolved = Some(c);
        Ok(c)
    }

    async fn game_type(&self, l1: &L1Set, c: &Contracts, at: B256) -> Result<Option<u32>, L1Error> {
        if let Some(t) = c.game_type.or(crate::util::lock(&self.memory).game_type) {
            return Ok(Some(t));
        }
        let Some(reg) = c.anchor_state_registry else { return Ok(None) };
        match self.read(l1, reg, "respectedGameType()", &[], at).await {
            Ok(d) => {
                let t = word_u64(&d, 0).and_then(|t| u32::try_from(t).ok());
                crate::util::lock(&self.memory).game_type = t;
                Ok(t)
            }
            Err(e) if e.is_revert() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn refresh(&self, l1: &L1Set, at: B256) -> Result<(), L1Error> {
        // Due again only after the interval, also when this read fails: a round never waits
        // on an L1 that does not answer more than once per interval.
        crate::util::lock(&self.memory).read_at = Some(Instant::now());
        let c = self.contracts(l1, at).await?;
        let game_type = self.game_type(l1, &c, at).await?;
        if let Some(reg) = c.anchor_state_registry {
            let anchor = match self.read(l1, reg, "getAnchorRoot()", &[], at).await {
                Ok(d) => d,
                // Registries before v3 keep an anchor per game type.
                Err(e) if e.is_revert() => {
                    let t = word_of(u64::from(game_type.unwrap_or(0)));
                    self.read(l1, reg, "anchors(uint32)", &[t], at).await?
                }
                Err(e) => return Err(e),
            };
            let a = decode_anchor(&anchor).ok_or_else(|| Self::malformed("anchor", &anchor))?;
            // A zero root, or the placeholder a deployment starts with at L2 block 0, is no
            // settled root: nothing to compare.
            let placeholder = a.root.is_zero() || a.root == PLACEHOLDER_ROOT || a.l2_number == 0;
            crate::util::lock(&self.memory).anchor = (!placeholder).then_some(a);
        }
        if let Some(f) = c.dispute_game_factory {
            self.refresh_games(l1, &c, f, game_type, at).await?;
        }
        Ok(())
    }

    async fn refresh_games(
        &self,
        l1: &L1Set,
        c: &Contracts,
        factory: Address,
        game_type: Option<u32>,
        at: B256,
    ) -> Result<(), L1Error> {
        let d = self.read(l1, factory, "gameCount()", &[], at).await?;
        let count = word_u64(&d, 0).ok_or_else(|| Self::malformed("gameCount", &d))?;
        let next = crate::util::lock(&self.memory).next_game;
        let from = next.unwrap_or(count.saturating_sub(FIRST_GAMES));
        let to = count.min(from + NEW_GAMES_PER_REFRESH);
        // Followed games not settled yet: only their status is read again (a game's claim and
        // height never change), the oldest first, a bounded number per refresh.
        let recheck: Vec<(u64, Game)> = crate::util::lock(&self.memory)
            .games
            .iter()
            .filter(|(_, g)| !g.settled && g.status != GameStatus::ChallengerWins)
            .take(RECHECKED_PER_REFRESH)
            .map(|(i, g)| (*i, *g))
            .collect();
        for (index, g) in recheck {
            let (status, settled) = self.status_of(l1, c, g.address, at).await?;
            if let Some(g) = crate::util::lock(&self.memory).games.get_mut(&index) {
                g.status = status;
                g.settled = settled;
            }
        }
        for index in from..to {
            let d = self.read(l1, factory, "gameAtIndex(uint256)", &[word_of(index)], at).await?;
            let (ty, _created, address) =
                decode_game_at(&d).ok_or_else(|| Self::malformed("gameAtIndex", &d))?;
            if game_type.is_some_and(|t| t != ty) {
                continue;
            }
            let Some(game) = self.read_game(l1, c, address, at).await? else { continue };
            let mut m = crate::util::lock(&self.memory);
            m.games.insert(index, game);
            while m.games.len() > FOLLOWED_GAMES {
                m.games.pop_first();
            }
        }
        crate::util::lock(&self.memory).next_game = Some(to);
        Ok(())
    }

    async fn read_game(
        &self,
        l1: &L1Set,
        c: &Contracts,
        game: Address,
        at: B256,
    ) -> Result<Option<Game>, L1Error> {
        let d = self.read(l1, game, "rootClaim()", &[], at).await?;
        let root = word(&d, 0).ok_or_else(|| Self::malformed("rootClaim", &d))?;
        let d = match self.read(l1, game, "l2BlockNumber()", &[], at).await {
            Ok(d) => d,
            // A game over super roots (an L2 sequence number only): not an output root.
            Err(e) if e.is_revert() => return Ok(None),
            Err(e) => return Err(e),
        };
        let l2_number = word_u64(&d, 0).ok_or_else(|| Self::malformed("l2BlockNumber", &d))?;
        let (status, settled) = self.status_of(l1, c, game, at).await?;
        Ok(Some(Game { address: game, root: L1Root { l2_number, root }, status, settled }))
    }

    /// A game's status, and whether L1 settled its claim.
    async fn status_of(
        &self,
        l1: &L1Set,
        c: &Contracts,
        game: Address,
        at: B256,
    ) -> Result<(GameStatus, bool), L1Error> {
        let d = self.read(l1, game, "status()", &[], at).await?;
        let status = word_u64(&d, 0)
            .and_then(GameStatus::from_u8)
            .ok_or_else(|| Self::malformed("status", &d))?;
        Ok((status, self.claim_valid(l1, c, game, at).await?))
    }

    /// Whether L1 settled the game's claim: the registry's `isGameClaimValid` where it has one
    /// (only a game resolved for its claim can be); never on older registries.
    async fn claim_valid(
        &self,
        l1: &L1Set,
        c: &Contracts,
        game: Address,
        at: B256,
    ) -> Result<bool, L1Error> {
        let known = crate::util::lock(&self.memory).claim_valid_known;
        if let (Some(reg), None | Some(true)) = (c.anchor_state_registry, known) {
            let arg = B256::left_padding_from(game.as_slice());
            match self.read(l1, reg, "isGameClaimValid(address)", &[arg], at).await {
                Ok(d) => {
                    crate::util::lock(&self.memory).claim_valid_known = Some(true);
                    return Ok(word_u64(&d, 0) == Some(1));
                }
                Err(e) if e.is_revert() => {
                    crate::util::lock(&self.memory).claim_valid_known = Some(false);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }
}

/// One comparison of an L1 root with the local EL's output root at its height.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Comparison {
    /// The L2 block number.
    pub l2_number: u64,
    /// The local EL's block there.
    pub local_block: B256,
    /// The root L1 holds.
    pub l1_root: B256,
    /// The local EL's output root.
    pub local_root: B256,
    /// Equal.
    pub matched: bool,
    /// Where the L1 root comes from.
    pub source: RootSource,
}

/// What a replica compared already (by L2 height and root), so each root is computed once.
#[derive(Debug, Default)]
pub struct Compared {
    done: HashMap<(u64, B256, bool), Comparison>,
}

impl Compared {
    /// The earlier comparison of `held` on the block `local` (at its height).
    pub fn get(&self, held: &Held) -> Option<&Comparison> {
        self.done.get(&(held.root.l2_number, held.root.root, held.source.settled()))
    }

    /// Remembers a comparison (the oldest forgotten past a bound).
    pub fn insert(&mut self, held: &Held, c: Comparison) {
        if self.done.len() >= 4 * FOLLOWED_GAMES {
            self.done.clear();
        }
        self.done.insert((held.root.l2_number, held.root.root, held.source.settled()), c);
    }
}
