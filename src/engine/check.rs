//! The start-up checks of an EL, shared by `lightcl run` and `lightcl check`: the chain id its
//! JSON-RPC reports, then a JWT-authenticated Engine API call.

use super::{Engine, EngineError};

/// Why an EL failed its checks.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The EL serves another chain.
    #[error(
        "chain id mismatch: the local EL reports chain id {got}, the configuration says \
         {expected}; point lightcl at endpoints of the same chain or fix chain_id"
    )]
    ChainId {
        /// Configured.
        expected: u64,
        /// Reported.
        got: u64,
    },
    /// The call failed (unreachable, refused token, bad answer).
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Checks the EL: chain id, then a JWT-authenticated call; returns how many Engine API methods
/// it offers.
pub async fn check(engine: &dyn Engine, chain_id: u64) -> Result<usize, CheckError> {
    chain(engine, chain_id).await?;
    auth(engine).await
}

/// The EL's JSON-RPC answers with the configured chain id.
pub async fn chain(engine: &dyn Engine, chain_id: u64) -> Result<(), CheckError> {
    let got = engine.chain_id().await?;
    if got != chain_id {
        return Err(CheckError::ChainId { expected: chain_id, got });
    }
    Ok(())
}

/// The Engine API accepts our JWT; returns how many methods it offers.
pub async fn auth(engine: &dyn Engine) -> Result<usize, CheckError> {
    Ok(engine.capabilities().await?.len())
}
