//! lightcl: a light consensus-layer follower.
//!
//! lightcl keeps a local execution client (EL) on exactly the chain that one or more trusted
//! source RPCs call canonical, without an L1 node and without derivation.
//!
//! ```text
//!  sources (1..n, HTTP/WS JSON-RPC)          source::   RpcSource, label reads, blocks raw
//!                                                       (debug_getRawBlock) or JSON, batched
//!      -> agreed view (latest/safe/finalized) source::set + source::quorum (pure rules)
//!      -> checked against L1 (optional)      l1::       L1 origins of safe/finalized, output
//!                                                       roots vs the roots L1 settled
//!      -> payloads, verified (hash, roots)   payload::   opaque EIP-2718 transactions
//!      -> one round per replica              sync::follower: observe -> plan -> dispatch
//!           planner (pure)                   sync::plan: local + agreed -> Step
//!           steps                            sync::task: fetch + feed (catch_up), recover,
//!                                                        el_sync (bootstrap), stuck (repair)
//!           every forkchoice / roll-back     sync::forkchoice: Origin, labels, gate, floor
//!           status and gauges                sync::report
//!      -> local EL (Engine API, JWT)         engine::   EngineClient
//!  process wiring, API server, shutdown      node:: run / run_with (TaskTracker)
//! ```
//!
//! Modules from the bottom up (a module imports only modules before it in this list):
//! `util`, `chain` (block types, the ancestor search), `redact`, `jwt`, `config`, `metrics`,
//! `http`, `state`; `payload`, `engine`, `source`; `l1` (verification against L1); `api` (status, `/readyz`, metrics endpoint);
//! `sync`; `node`; `main.rs`.
//!
//! A fleet (`[[engines]]`) runs one follower per replica EL over one set of sources:
//! `sync::fleet` holds what they share (coalesced source reads, the shared fetch in
//! `sync::cache` that hands a block fetched for one replica to the others, a common poll clock,
//! the lockstep label cap); each follower keeps its own local view, forkchoice writer, floor and
//! health.
//!
//! The EL is the only state: on every round the local view is read back from it. Invariants
//! that hold at every forkchoice update (I1-I6 of the design notes): finalized <= safe <= head
//! on one chain; finalized never moves back; the head descends from finalized; only agreed
//! blocks become safe/finalized; a payload is sent only if it hashes to the claimed block (a raw
//! block asked for by number claims nothing: the block above it, the agreed target or the
//! quorum vouches for it) and links to its parent; every engine answer is checked and the head
//! is read back. I1-I3 are enforced in one place, `sync::forkchoice`'s gate, the only caller of
//! `Engine::forkchoice_updated` and `Engine::set_head` (clippy's `disallowed-methods` keeps it
//! so).

pub mod api;
pub mod backoff;
pub mod chain;
pub mod config;
pub mod engine;
pub mod http;
pub mod jwt;
pub mod l1;
pub mod metrics;
pub mod node;
pub mod payload;
pub mod redact;
pub mod source;
pub mod state;
pub mod sync;
pub mod util;

pub use config::Config;
pub use node::{Parts, ReplicaParts, run, run_with};
pub use sync::RunError;

/// The crate version, as reported by `lightcl --version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
