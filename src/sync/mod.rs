//! Synchronisation: the pure planner and ancestor search, and the driver loop that executes
//! their steps (catch-up pipeline, divergence recovery).

pub mod ancestor;
pub mod bootstrap;
mod cache;
pub mod driver;
pub mod fleet;
pub mod gate;
mod pipeline;
pub mod plan;
mod publish;
mod recover;
mod repair;
pub mod startup;
