//! Synchronisation: the pure planner and the driver loop that executes its steps.

pub mod driver;
pub mod plan;
