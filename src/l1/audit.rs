//! The output-root audit: the roots L1 holds for the chain (the AnchorStateRegistry's anchor,
//! dispute games from the DisputeGameFactory) compared with the output roots of the local EL's
//! own blocks at those heights.
//!
//! Only the anchor (`getAnchorRoot()`, registries from v3) and games L1 settled are facts: a
//! game the registry says is valid
//! (`isGameClaimValid`, registries from v3: resolved for the claim, past the airgap, not
//! blacklisted or retired, of the respected type). On older registries a resolved game is not
//! taken as settled (its airgap and the guardian's blacklist are not checked): it is reported
//! like a claim, and so is the anchor such a registry keeps per game type (`anchors(uint32)`),
//! which any resolved game moved. A game still open is a claim anyone could make: a claim that disagrees with the
//! local chain is reported, never acted on; games resolved against their claim are left out.
//! Games that name an L2 sequence number only (super roots) are not output roots and are
//! skipped, and so is a game whose answers do not decode (with a warning: one odd game never
//! stops the scan). Every read is taken at L1's finalized block; a call counts as missing only
//! when it reverts (a rate limit or a timeout is asked again, never remembered).
//!
//! The reads run in the background ([`Audit::take_due`], [`Audit::refresh_kept`]), at most
//! once per interval: a round compares with what the last read found ([`Audit::held`]) and
//! never waits on L1's contracts.

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
    /// The AnchorStateRegistry's anchor (`getAnchorRoot()`, v3 and later): settled.
    Anchor,
    /// The anchor a registry before v3 keeps per game type (`anchors(uint32)`): moved by any
    /// resolved game, airgap and blacklist unchecked, so a claim, not a settled fact.
    LegacyAnchor,
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
            Self::LegacyAnchor => false,
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
    /// A background read is under way (one at a time, fleet-wide).
    refreshing: bool,
    /// Why the last read failed (`None`: it succeeded, or none ran yet).
    error: Option<String>,
    /// A read has succeeded once (until then `enforce` holds the finalized label).
    read_once: bool,
    anchor: Option<Held>,
    next_game: Option<u64>,
    games: BTreeMap<u64, Game>,
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

    /// Whether a read of L1's contracts is due (the interval passed and none is under way);
    /// true claims it: the caller runs [`Self::refresh_kept`] next (in the background).
    pub fn take_due(&self) -> bool {
        let mut m = crate::util::lock(&self.memory);
        let due = !m.refreshing && m.read_at.is_none_or(|t| t.elapsed() >= self.every);
        if due {
            m.refreshing = true;
            // Due again only after the interval, also when this read fails: L1 contracts that
            // do not answer are asked once per interval.
            m.read_at = Some(Instant::now());
        }
        due
    }

    /// Reads what L1 holds at L1's finalized block `l1_finalized` and keeps it for
    /// [`Self::held`] (a failure kept for [`Self::error`]); ends the claim of
    /// [`Self::take_due`].
    pub async fn refresh_kept(&self, l1: &L1Set, l1_finalized: BlockRef) {
        let r = self.refresh(l1, l1_finalized.hash).await;
        let mut m = crate::util::lock(&self.memory);
        m.read_once |= r.is_ok();
        m.error = r.err().map(|e| e.to_string());
        m.refreshing = false;
    }

    /// Ends a claim of [`Self::take_due`] whose read did not run or did not finish (L1's heads
    /// could not be read, L1 finalized nothing yet, the read failed unexpectedly); `why` is
    /// shown until the next read.
    pub fn abandon(&self, why: String) {
        let mut m = crate::util::lock(&self.memory);
        m.error = Some(why);
        m.refreshing = false;
    }

    /// Whether a read has succeeded since lightcl started.
    pub fn read_once(&self) -> bool {
        crate::util::lock(&self.memory).read_once
    }

    /// Why the last read failed.
    pub fn error(&self) -> Option<String> {
        crate::util::lock(&self.memory).error.clone()
    }

    /// The roots the last reads found.
    pub fn held(&self) -> Vec<Held> {
        let m = crate::util::lock(&self.memory);
        let mut out: Vec<Held> = m.anchor.into_iter().collect();
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
        out
    }

    /// The roots L1 holds now, read at `l1_finalized` (`lightcl check`: read once, in the
    /// foreground).
    pub async fn roots(&self, l1: &L1Set, l1_finalized: BlockRef) -> Result<Vec<Held>, L1Error> {
        self.refresh(l1, l1_finalized.hash).await?;
        Ok(self.held())
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
                    Ok(d) => {
                        let r = super::output::word_address(&d, 0)
                            .ok_or_else(|| Self::malformed("anchorStateRegistry", &d))?;
                        c.anchor_state_registry = Some(r);
                    }
                    Err(e) if e.is_revert() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        crate::util::lock(&self.memory).resolved = Some(c);
        Ok(c)
    }

    /// The game type that counts: configured, or the registry's.
    async fn game_type(&self, l1: &L1Set, c: &Contracts, at: B256) -> Result<Option<u32>, L1Error> {
        // Read on every refresh: the guardian can change the respected type.
        if let Some(t) = c.game_type {
            return Ok(Some(t));
        }
        let Some(reg) = c.anchor_state_registry else { return Ok(None) };
        match self.read(l1, reg, "respectedGameType()", &[], at).await {
            Ok(d) => {
                let t = word_u64(&d, 0)
                    .and_then(|t| u32::try_from(t).ok())
                    .ok_or_else(|| Self::malformed("respectedGameType", &d))?;
                Ok(Some(t))
            }
            Err(e) if e.is_revert() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn refresh(&self, l1: &L1Set, at: B256) -> Result<(), L1Error> {
        let c = self.contracts(l1, at).await?;
        let game_type = self.game_type(l1, &c, at).await?;
        if let Some(reg) = c.anchor_state_registry {
            let (anchor, source) = match self.read(l1, reg, "getAnchorRoot()", &[], at).await {
                Ok(d) => (d, RootSource::Anchor),
                // Registries before v3 keep an anchor per game type: a claim (see above).
                Err(e) if e.is_revert() => {
                    let t = word_of(u64::from(game_type.unwrap_or(0)));
                    (
                        self.read(l1, reg, "anchors(uint32)", &[t], at).await?,
                        RootSource::LegacyAnchor,
                    )
                }
                Err(e) => return Err(e),
            };
            let a = decode_anchor(&anchor).ok_or_else(|| Self::malformed("anchor", &anchor))?;
            // A zero root, or the placeholder a deployment starts with at L2 block 0, is no
            // settled root: nothing to compare.
            let placeholder = a.root.is_zero() || a.root == PLACEHOLDER_ROOT || a.l2_number == 0;
            crate::util::lock(&self.memory).anchor =
                (!placeholder).then_some(Held { root: a, source });
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
        let to = count.min(from.saturating_add(NEW_GAMES_PER_REFRESH));
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
            let (status, settled) = match self.status_of(l1, c, g.address, at).await {
                Ok(s) => s,
                Err(e @ L1Error::Malformed { .. }) => {
                    odd_game(index, g.address, &e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(g) = crate::util::lock(&self.memory).games.get_mut(&index) {
                g.status = status;
                g.settled = settled;
            }
        }
        for index in from..to {
            let d = self.read(l1, factory, "gameAtIndex(uint256)", &[word_of(index)], at).await?;
            let Some((ty, _created, address)) = decode_game_at(&d) else {
                odd_game(index, Address::ZERO, &Self::malformed("gameAtIndex", &d));
                continue;
            };
            if game_type.is_some_and(|t| t != ty) {
                continue;
            }
            let game = match self.read_game(l1, c, address, at).await {
                Ok(Some(g)) => g,
                Ok(None) => continue,
                Err(e @ L1Error::Malformed { .. }) => {
                    odd_game(index, address, &e);
                    continue;
                }
                Err(e) => return Err(e),
            };
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

    /// Whether L1 settled the game's claim: the registry's `isGameClaimValid` where it answers
    /// (only a game resolved for its claim can be); a registry that reverts (before v3, or
    /// refusing this game) settles nothing for this game.
    async fn claim_valid(
        &self,
        l1: &L1Set,
        c: &Contracts,
        game: Address,
        at: B256,
    ) -> Result<bool, L1Error> {
        let Some(reg) = c.anchor_state_registry else { return Ok(false) };
        let arg = B256::left_padding_from(game.as_slice());
        match self.read(l1, reg, "isGameClaimValid(address)", &[arg], at).await {
            Ok(d) => match word_u64(&d, 0) {
                Some(v @ (0 | 1)) => Ok(v == 1),
                _ => Err(Self::malformed("isGameClaimValid", &d)),
            },
            Err(e) if e.is_revert() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A game whose answers do not decode: left out, said once per read.
fn odd_game(index: u64, address: Address, e: &L1Error) {
    tracing::warn!(target: "lightcl::l1", game = index, %address, error = %e,
        "a dispute game's answers do not decode; it is left out of the audit (the others are read)");
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::output::word_of;
    use super::super::{L1, L1At, L1Header, L1Heads};
    use super::*;
    use crate::util::BoxFuture;

    /// An L1 whose contracts answer from a table of (to, calldata) -> answer; anything else
    /// reverts.
    #[derive(Debug, Default)]
    struct TableL1 {
        answers: HashMap<(Address, Bytes), Bytes>,
    }

    impl TableL1 {
        fn set(&mut self, to: Address, sig: &str, args: &[B256], words: &[B256]) {
            let d: Vec<u8> = words.iter().flat_map(|w| w.0).collect();
            self.answers.insert((to, calldata(sig, args)), d.into());
        }
    }

    impl L1 for TableL1 {
        fn name(&self) -> &str {
            "table"
        }
        fn chain_id(&self) -> BoxFuture<'_, Result<u64, L1Error>> {
            Box::pin(async { Ok(900) })
        }
        fn block_at(&self, _: u64) -> BoxFuture<'_, Result<Option<BlockRef>, L1Error>> {
            Box::pin(async { Ok(None) })
        }
        fn heads(&self) -> BoxFuture<'_, Result<L1Heads, L1Error>> {
            Box::pin(async { Ok(L1Heads::default()) })
        }
        fn header(&self, _: L1At) -> BoxFuture<'_, Result<Option<L1Header>, L1Error>> {
            Box::pin(async { Ok(None) })
        }
        fn call(&self, to: Address, data: Bytes, _: B256) -> BoxFuture<'_, Result<Bytes, L1Error>> {
            let a = self.answers.get(&(to, data)).cloned();
            Box::pin(async move {
                a.ok_or_else(|| L1Error::Rpc {
                    name: "table".into(),
                    method: "eth_call".into(),
                    message: "execution reverted".into(),
                })
            })
        }
    }

    const REG: Address = Address::repeat_byte(0x11);
    const FACTORY: Address = Address::repeat_byte(0x22);
    const PORTAL: Address = Address::repeat_byte(0x33);

    fn addr_word(a: Address) -> B256 {
        B256::left_padding_from(a.as_slice())
    }

    fn game(l1: &mut TableL1, address: Address, l2: u64, root: u8, status: u64) {
        l1.set(address, "rootClaim()", &[], &[B256::repeat_byte(root)]);
        l1.set(address, "l2BlockNumber()", &[], &[word_of(l2)]);
        l1.set(address, "status()", &[], &[word_of(status)]);
    }

    fn audit(l1: TableL1, contracts: Contracts) -> (Audit, L1Set) {
        let set = L1Set::new(vec![Arc::new(l1) as Arc<dyn L1>], 1);
        (Audit::new(contracts, Duration::from_secs(60)), set)
    }

    fn at() -> BlockRef {
        BlockRef::new(10, B256::repeat_byte(0xf0))
    }

    #[tokio::test]
    async fn an_older_registrys_anchor_is_a_claim_and_a_newer_ones_is_settled() {
        let anchor = [B256::repeat_byte(0xaa), word_of(100)];
        let mut old = TableL1::default();
        old.set(REG, "respectedGameType()", &[], &[word_of(1)]);
        old.set(REG, "anchors(uint32)", &[word_of(1)], &anchor);
        let only_reg = Contracts { anchor_state_registry: Some(REG), ..Default::default() };
        let (a, set) = audit(old, only_reg);
        let held = a.roots(&set, at()).await.expect("the roots are read");
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].source, RootSource::LegacyAnchor);
        assert!(!held[0].source.settled());

        let mut new = TableL1::default();
        new.set(REG, "respectedGameType()", &[], &[word_of(1)]);
        new.set(REG, "getAnchorRoot()", &[], &anchor);
        let (a, set) = audit(new, only_reg);
        let held = a.roots(&set, at()).await.expect("the roots are read");
        assert_eq!(held[0].source, RootSource::Anchor);
        assert!(held[0].source.settled());
        assert_eq!(held[0].root, L1Root { root: B256::repeat_byte(0xaa), l2_number: 100 });
    }

    #[tokio::test]
    async fn an_odd_game_is_skipped_and_settlement_is_decided_per_game() {
        let mut l1 = TableL1::default();
        let (g0, g2, g3) =
            (Address::repeat_byte(0xa0), Address::repeat_byte(0xa2), Address::repeat_byte(0xa3));
        l1.set(REG, "respectedGameType()", &[], &[word_of(0)]);
        // A fresh deployment's placeholder anchor: no anchor to compare.
        l1.set(REG, "getAnchorRoot()", &[], &[B256::ZERO, word_of(0)]);
        l1.set(FACTORY, "gameCount()", &[], &[word_of(4)]);
        l1.set(
            FACTORY,
            "gameAtIndex(uint256)",
            &[word_of(0)],
            &[word_of(0), word_of(1), addr_word(g0)],
        );
        // Game 1: an answer too short to decode.
        l1.set(FACTORY, "gameAtIndex(uint256)", &[word_of(1)], &[word_of(0)]);
        l1.set(
            FACTORY,
            "gameAtIndex(uint256)",
            &[word_of(2)],
            &[word_of(0), word_of(1), addr_word(g2)],
        );
        l1.set(
            FACTORY,
            "gameAtIndex(uint256)",
            &[word_of(3)],
            &[word_of(0), word_of(1), addr_word(g3)],
        );
        game(&mut l1, g0, 50, 0x50, 2);
        game(&mut l1, g2, 60, 0x60, 2);
        // Game 3 answers a status no game has: skipped.
        game(&mut l1, g3, 70, 0x70, 9);
        l1.set(REG, "isGameClaimValid(address)", &[addr_word(g0)], &[word_of(1)]);
        // The registry reverts for game 2 only: game 2 is not settled, game 0 still is.
        let c = Contracts {
            anchor_state_registry: Some(REG),
            dispute_game_factory: Some(FACTORY),
            ..Default::default()
        };
        let (a, set) = audit(l1, c);
        let held = a.roots(&set, at()).await.expect("the roots are read");
        let settled: Vec<(u64, bool)> =
            held.iter().map(|h| (h.root.l2_number, h.source.settled())).collect();
        assert_eq!(settled, vec![(50, true), (60, false)]);
    }

    #[tokio::test]
    async fn undecodable_contract_answers_are_errors_not_silence() {
        let mut l1 = TableL1::default();
        l1.set(PORTAL, "disputeGameFactory()", &[], &[addr_word(FACTORY)]);
        // Not an address (high bytes set): malformed, never "no registry".
        l1.set(PORTAL, "anchorStateRegistry()", &[], &[B256::repeat_byte(0xff)]);
        let (a, set) = audit(l1, Contracts { portal: Some(PORTAL), ..Default::default() });
        let e = a.roots(&set, at()).await.expect_err("an undecodable answer is an error");
        assert!(matches!(e, L1Error::Malformed { .. }), "{e}");

        let mut l1 = TableL1::default();
        l1.set(REG, "respectedGameType()", &[], &[B256::repeat_byte(0xff)]);
        let only_reg = Contracts { anchor_state_registry: Some(REG), ..Default::default() };
        let (a, set) = audit(l1, only_reg);
        let e = a.roots(&set, at()).await.expect_err("an undecodable answer is an error");
        assert!(e.to_string().contains("respectedGameType"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn one_background_read_at_a_time_and_once_per_interval() {
        let only_reg = Contracts { anchor_state_registry: Some(REG), ..Default::default() };
        let (a, set) = audit(TableL1::default(), only_reg);
        assert!(a.take_due());
        assert!(!a.take_due(), "a read under way is not started twice");
        a.refresh_kept(&set, at()).await;
        assert!(a.error().is_some(), "a registry that reverts everything is an error to show");
        assert!(!a.read_once());
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(!a.take_due(), "due again only after the interval, also after a failure");
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(a.take_due(), "due after the interval: the failed read ended its claim");
        a.abandon("L1 has no finalized block yet".into());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(a.take_due(), "an abandoned read ends its claim too");

        let mut l1 = TableL1::default();
        l1.set(REG, "getAnchorRoot()", &[], &[B256::repeat_byte(0xaa), word_of(100)]);
        let (a, set) = audit(l1, only_reg);
        assert!(a.take_due());
        a.refresh_kept(&set, at()).await;
        assert_eq!((a.error(), a.read_once(), a.held().len()), (None, true, 1));
    }
}
