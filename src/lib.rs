//! lightcl: a light consensus-layer follower.
//!
//! lightcl keeps a local execution client (EL) on exactly the chain that one or more trusted
//! source RPCs call canonical, without an L1 node and without derivation.
//!
//! ```text
//!  sources (1..n, HTTP/WS JSON-RPC)
//!      -> agreed view (latest / safe / finalized the quorum agrees on, by hash)
//!      -> planner (pure): local view + agreed view -> Idle | Insert | Promote | Recover | Halt
//!      -> executor: engine_newPayload / engine_forkchoiceUpdated, result read back
//!      -> local EL (Engine API, JWT)
//! ```
//!
//! The EL is the only state: on start the local view is read back from it. The invariants that
//! hold at every forkchoice update are listed in the project's design notes (I1-I6).

/// The crate version, as reported by `lightcl --version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
