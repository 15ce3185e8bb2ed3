//! Synchronisation: the pure planner and ancestor search, and the driver loop that executes
//! their steps (catch-up pipeline, divergence recovery).

mod agree;
pub mod ancestor;
pub mod driver;
mod pipeline;
pub mod plan;
mod recover;
