//! Synchronisation: one follower per replica EL.
//!
//! ```text
//! follower.rs   the loop: observe -> plan::plan -> one match that dispatches the step;
//!               one match on Fault::severity for what goes wrong
//!   plan.rs     pure: local + agreed view -> Step
//!   task/       the steps: fetch + feed (catch_up), recover, el_sync, stuck (repair)
//!   forkchoice/ the only writer of forkchoices and roll-backs: an Origin per call site, pure
//!               labels per origin, the gate (I1-I3) and the finality floor
//!   report.rs   the only writer of status and gauges
//! ctx.rs        what tasks read (config, EL, sources, fleet, cancellation, reporter)
//! error.rs      RunError (why lightcl stops or halts), Fault + Severity (why a round failed)
//! fleet.rs, cache.rs  what a fleet's replicas share (lockstep, the shared fetch)
//! ```

mod cache;
pub(crate) mod ctx;
pub mod error;
pub(crate) mod fleet;
pub(crate) mod follower;
pub(crate) mod forkchoice;
pub(crate) mod plan;
pub(crate) mod report;
pub(crate) mod task;

pub use error::RunError;
