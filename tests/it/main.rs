//! Integration tests, built into one binary. EL-heavy tests run real geth / op-geth processes
//! (built by `scripts/install-els.sh`); run them with bounded parallelism (`--test-threads 2`).

#![allow(clippy::unwrap_used)]

mod bad_input;
mod bootstrap;
mod container;
mod deploy;
mod el_crash;
mod engines;
mod engines_reth;
mod faults;
mod fleet;
mod follow;
mod genesis;
mod l1;
mod on_reth;
mod ops;
mod packaging;
mod provider;
mod quorum;
mod raw;
mod recovery;
mod requests;
mod resilience;
mod sim;
mod testbed;
