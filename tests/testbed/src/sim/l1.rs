//! The simulated L1 endpoint: answers from the world's L1 (its chain, finalized block and the
//! anchor it settled), behind lightcl's narrow `L1` trait.

use alloy_primitives::{Address, B256, Bytes};
use lightcl::chain::BlockRef;
use lightcl::l1::output::{selector, word_of};
use lightcl::l1::{L1, L1At, L1Error, L1Header, L1Heads};
use lightcl::util::BoxFuture;

use super::{SharedWorld, lock};

/// The AnchorStateRegistry's address in the simulated L1.
pub const REGISTRY: Address = Address::repeat_byte(0xa5);

/// An L1 endpoint over the world's L1.
#[derive(Debug, Clone)]
pub struct SimL1 {
    world: SharedWorld,
}

impl SimL1 {
    /// An endpoint of `world`'s L1.
    pub fn new(world: SharedWorld) -> Self {
        Self { world }
    }

    fn revert(method: &str) -> L1Error {
        L1Error::Rpc {
            name: "sim-l1".into(),
            method: method.into(),
            message: "execution reverted".into(),
        }
    }
}

impl L1 for SimL1 {
    fn name(&self) -> &str {
        "sim-l1"
    }

    fn chain_id(&self) -> BoxFuture<'_, Result<u64, L1Error>> {
        Box::pin(async { Ok(900) })
    }

    fn block_at(&self, number: u64) -> BoxFuture<'_, Result<Option<BlockRef>, L1Error>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            Ok(lock(&self.world).l1.as_ref().and_then(|l| l.at(number)))
        })
    }

    fn heads(&self) -> BoxFuture<'_, Result<L1Heads, L1Error>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            let w = lock(&self.world);
            let Some(l) = w.l1.as_ref() else { return Ok(L1Heads::default()) };
            Ok(L1Heads { latest: l.at(l.chain.len() as u64 - 1), finalized: l.at(l.finalized) })
        })
    }

    fn header(&self, at: L1At) -> BoxFuture<'_, Result<Option<L1Header>, L1Error>> {
        Box::pin(async move {
            let w = lock(&self.world);
            let Some(l) = w.l1.as_ref() else { return Ok(None) };
            let n = match at {
                L1At::Number(n) => n,
                L1At::Tag("finalized" | "safe") => l.finalized,
                L1At::Tag(_) => l.chain.len() as u64 - 1,
            };
            Ok(l.at(n).map(|block| L1Header {
                block,
                parent_hash: n.checked_sub(1).and_then(|p| l.at(p)).map_or(B256::ZERO, |p| p.hash),
                timestamp: 1_000 + n * 12,
            }))
        })
    }

    fn call(&self, to: Address, data: Bytes, _at: B256) -> BoxFuture<'_, Result<Bytes, L1Error>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            if to != REGISTRY || data.len() < 4 {
                return Err(Self::revert("eth_call"));
            }
            let w = lock(&self.world);
            let anchor = w.l1.as_ref().and_then(|l| l.anchor);
            if data[..4] == selector("getAnchorRoot()") {
                let (n, root) = anchor.unwrap_or((0, B256::ZERO));
                return Ok([root.as_slice(), word_of(n).as_slice()].concat().into());
            }
            if data[..4] == selector("respectedGameType()") {
                return Ok(word_of(0).to_vec().into());
            }
            Err(Self::revert("eth_call"))
        })
    }
}
