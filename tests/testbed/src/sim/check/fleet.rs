//! The fleet checker: the lockstep rule across replicas. A safe or finalized label moves only
//! to a block every ready replica holds, by hash. Each replica's own writes meet the single-EL
//! checks of [`super::forkchoice`] inside its simulated EL; this one sees the fleet.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lightcl::api::Shared;
use lightcl::chain::Heads;
use tokio::time::Instant;

use crate::sim::el::SimEl;

/// The lockstep watch: every forkchoice that raises a replica's safe or finalized label is
/// checked against the chains of the other ready replicas (by hash).
#[derive(Debug)]
pub struct Watch {
    els: Vec<SimEl>,
    dead: Vec<AtomicBool>,
    lockstep: bool,
    from: Instant,
    violations: Mutex<Vec<String>>,
    checks: AtomicU64,
    /// Each replica's status, for readiness (what a load balancer goes by).
    status: Vec<Arc<Shared>>,
}

impl Watch {
    /// A watch over the replicas `els` (their status in `status`, in the same order), checking
    /// from `from` on, and only if `lockstep`.
    pub fn new(els: Vec<SimEl>, status: Vec<Arc<Shared>>, lockstep: bool, from: Instant) -> Self {
        let dead = els.iter().map(|_| AtomicBool::new(false)).collect();
        Self {
            els,
            dead,
            lockstep,
            from,
            violations: Mutex::default(),
            checks: AtomicU64::new(0),
            status,
        }
    }

    /// Marks replica `i` as down (or back): a dead replica holds nothing back.
    pub fn set_dead(&self, i: usize, dead: bool) {
        if let Some(d) = self.dead.get(i) {
            d.store(dead, Ordering::Relaxed);
        }
    }

    /// Lockstep violations found so far, in order.
    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Label moves checked so far.
    pub fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    /// Checks the forkchoice `heads` replica `me` is about to receive.
    pub fn check(&self, me: usize, heads: &Heads) {
        if !self.lockstep || Instant::now() < self.from {
            return;
        }
        let Some(mine) = self.els.get(me) else { return };
        let (_, safe, finalized) = mine.heads();
        let raised = [(heads.safe, safe), (heads.finalized, finalized)]
            .into_iter()
            .filter(|(new, old)| old.is_none_or(|o| new.number > o.number))
            .map(|(new, _)| new);
        for label in raised {
            self.checks.fetch_add(1, Ordering::Relaxed);
            for (j, el) in self.els.iter().enumerate() {
                if j == me || self.dead[j].load(Ordering::Relaxed) {
                    continue;
                }
                // Only replicas a load balancer sends traffic to count (what lightcl's rule
                // says too): ready ones. A replica syncing from its peers or recovering is not.
                if self.status[j].readiness().is_err() {
                    continue;
                }
                let head = el.heads().0;
                if head.number < label.number {
                    self.violations.lock().unwrap_or_else(|p| p.into_inner()).push(format!(
                        "lockstep: replica {me} moved a label to {label} while ready replica {j} \
                         holds only up to {head}"
                    ));
                } else if !el.holds(label) {
                    // By hash: a ready replica still on a branch the sources left does not
                    // hold the new label block although its head is higher.
                    self.violations.lock().unwrap_or_else(|p| p.into_inner()).push(format!(
                        "lockstep: replica {me} moved a label to {label} while ready replica {j} \
                         (head {head}) holds another block at that height"
                    ));
                }
            }
        }
    }
}
