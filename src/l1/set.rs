//! The configured L1 endpoints as one: every read is asked of all of them and counts only when
//! the quorum gives the same answer (the rule the L2 sources follow).

use std::fmt::Debug;
use std::sync::Arc;

use alloy_primitives::{Address, B256, Bytes};
use futures_util::future::join_all;

use super::{L1, L1Error, L1Heads};
use crate::chain::BlockRef;
use crate::util::BoxFuture;

/// The L1 endpoints and how many must agree.
#[derive(Debug, Clone)]
pub struct L1Set {
    members: Vec<Arc<dyn L1>>,
    required: usize,
}

impl L1Set {
    /// `members`, of which `required` (at least 1) must agree.
    pub fn new(members: Vec<Arc<dyn L1>>, required: usize) -> Self {
        Self { members, required: required.max(1) }
    }

    /// The endpoints.
    pub fn members(&self) -> &[Arc<dyn L1>] {
        &self.members
    }

    /// How many must agree.
    pub fn required(&self) -> usize {
        self.required
    }

    /// Asks every endpoint; the answer the quorum gives, or why there is none.
    async fn agree<T, F>(&self, what: &str, read: F) -> Result<T, L1Error>
    where
        T: PartialEq + Clone + Debug,
        F: for<'a> Fn(&'a dyn L1) -> BoxFuture<'a, Result<T, L1Error>>,
    {
        let answers = join_all(self.members.iter().map(|m| read(m.as_ref()))).await;
        quorum_of(what, &answers, self.required, |i| self.members[i].name().to_string())
    }

    /// eth_chainId, agreed.
    pub async fn chain_id(&self) -> Result<u64, L1Error> {
        self.agree("the chain id", |m| m.chain_id()).await
    }

    /// The agreed canonical block at `number`.
    pub async fn block_at(&self, number: u64) -> Result<Option<BlockRef>, L1Error> {
        self.agree(&format!("block {number}"), |m| m.block_at(number)).await
    }

    /// The highest block the quorum calls finalized (each of `required` endpoints has finalized
    /// at least that height, with the agreed hash there), and the highest latest the quorum
    /// reached.
    pub async fn heads(&self) -> Result<L1Heads, L1Error> {
        let answers = join_all(self.members.iter().map(|m| m.heads())).await;
        let ok: Vec<L1Heads> = answers.iter().filter_map(|a| a.as_ref().ok().copied()).collect();
        if ok.len() < self.required {
            let first_err = answers.into_iter().find_map(Result::err);
            return Err(first_err.unwrap_or_else(|| L1Error::NoQuorum {
                what: "the L1 heads".into(),
                answers: "too few answered".into(),
            }));
        }
        let kth = |pick: fn(&L1Heads) -> Option<u64>| -> Option<u64> {
            let mut ns: Vec<u64> = ok.iter().filter_map(pick).collect();
            ns.sort_unstable_by(|a, b| b.cmp(a));
            ns.get(self.required - 1).copied()
        };
        let at = |n: Option<u64>| async move {
            match n {
                Some(n) => self.block_at(n).await,
                None => Ok(None),
            }
        };
        let latest = kth(|h| h.latest.map(|b| b.number));
        let finalized = kth(|h| h.finalized.map(|b| b.number));
        // One endpoint: its own answer is the quorum's, no second read needed.
        if self.members.len() == 1 {
            return Ok(ok[0]);
        }
        Ok(L1Heads { latest: at(latest).await?, finalized: at(finalized).await? })
    }

    /// eth_call at L1 block `at`, agreed.
    pub async fn call(&self, to: Address, data: Bytes, at: B256) -> Result<Bytes, L1Error> {
        let what = format!("a call to {to}");
        self.agree(&what, |m| m.call(to, data.clone(), at)).await
    }
}

/// The answer at least `required` of `answers` gave; else the lone error (one endpoint) or a
/// [`L1Error::NoQuorum`] saying what each said.
fn quorum_of<T: PartialEq + Clone + Debug>(
    what: &str,
    answers: &[Result<T, L1Error>],
    required: usize,
    name: impl Fn(usize) -> String,
) -> Result<T, L1Error> {
    for a in answers.iter().flatten() {
        if answers.iter().flatten().filter(|b| *b == a).count() >= required {
            return Ok(a.clone());
        }
    }
    if answers.len() == 1
        && let Some(Err(e)) = answers.first()
    {
        return Err(e.clone());
    }
    // A call the quorum saw revert reverted: a fact about the contract, like an answer.
    let reverts: Vec<&L1Error> =
        answers.iter().filter_map(|a| a.as_ref().err()).filter(|e| e.is_revert()).collect();
    if reverts.len() >= required
        && let Some(e) = reverts.first()
    {
        return Err((*e).clone());
    }
    let said: Vec<String> = answers
        .iter()
        .enumerate()
        .map(|(i, a)| match a {
            Ok(v) => format!("{}: {v:?}", name(i)),
            Err(e) => format!("{}: {e}", name(i)),
        })
        .collect();
    Err(L1Error::NoQuorum { what: what.to_string(), answers: said.join("; ") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err() -> Result<u64, L1Error> {
        Err(L1Error::Unreachable { name: "x".into(), method: "m".into(), message: "down".into() })
    }

    #[test]
    fn the_quorum_decides() {
        let n = |_| "l1".to_string();
        assert_eq!(quorum_of("x", &[Ok(1), Ok(1), Ok(2)], 2, n), Ok(1));
        assert!(matches!(
            quorum_of("x", &[Ok(1), Ok(2), err()], 2, n),
            Err(L1Error::NoQuorum { .. })
        ));
        assert_eq!(quorum_of("x", &[Ok(5)], 1, n), Ok(5));
        assert!(matches!(quorum_of("x", &[err()], 1, n), Err(L1Error::Unreachable { .. })));
        assert_eq!(quorum_of("x", &[err(), Ok(3), Ok(3)], 2, n), Ok(3));
        // Two endpoints that saw the call revert agree that it reverts.
        let revert = || -> Result<u64, L1Error> {
            Err(L1Error::Rpc {
                name: "x".into(),
                method: "eth_call".into(),
                message: "execution reverted".into(),
            })
        };
        assert!(quorum_of("x", &[revert(), revert()], 2, n).is_err_and(|e| e.is_revert()));
        assert!(matches!(quorum_of("x", &[revert(), err()], 2, n), Err(L1Error::NoQuorum { .. })));
    }
}
