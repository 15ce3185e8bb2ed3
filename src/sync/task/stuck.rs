//! An EL stuck below blocks it accepted. After a crash, op-geth can come back with its state
//! rewound to an old block while keeping the headers and bodies above it: it answers VALID
//! ("already known") to those blocks and to a forkchoice naming them, but its head never moves.
//! geth can come back with a head whose state it lacks: it answers SYNCING to every block on
//! top of it, even after a forkchoice to it. Either way feeding again changes nothing. Repair:
//! roll the EL back to its own head with `debug_setHead`, which deletes the stateless blocks
//! above it (and rewinds further, to a block whose state it has, where the head's own state is
//! gone), and feed them again. The head itself is the EL's own canonical block, so nothing at
//! or below it changes and no forkchoice is involved; the refill that follows goes through the
//! gate like any catch-up.
//!
//! A geth or op-geth whose snap-sync marker is above its head after such a crash switches to
//! snap sync for the life of its process and ignores every payload; no roll-back helps, only a
//! restart. Seen from here, round after round of feeding never gets its head past where the
//! round started. Where the EL has no `debug_setHead`, answers it without rolling back (reth,
//! op-reth), or roll-backs reached the finality floor (never below it:
//! the gate refuses that) or genesis and it is still stuck, lightcl halts its writes and
//! says what to do (the runbook section).

use tracing::{info, warn};

use super::super::ctx::Ctx;
use super::super::error::{Fault, GateError, RunError, STUCK_BEFORE_REPAIR, Symptom};
use super::super::forkchoice::Forkchoice;
use crate::chain::{BlockRef, Label};
use crate::engine::BlockAt;
use crate::metrics as m;

/// Why a roll-back that failed or did nothing ends the repair (said in the halt message).
const NO_SET_HEAD: &str = "this EL cannot be rolled back through debug_setHead: reth 1.10.2 and \
    op-reth 1.10.2 refuse geth's hex form of it, op-reth 2.3.2 accepts it and does nothing";

/// How long to wait before feeding a stuck EL again.
pub(crate) const STUCK_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Catch-up rounds in a row that start no higher than the one before, although blocks were fed,
/// before lightcl calls the EL stuck. A crash can send the head back once; three rounds that
/// never get past where they started cannot be a slow EL (each feeds up to thousands of blocks).
const BARREN_ROUNDS: u32 = 3;

/// Where the last catch-up rounds started.
#[derive(Debug, Default)]
struct ProgressWatch {
    /// The heads the last two rounds started from, the latest first.
    last: [Option<u64>; 2],
    /// Rounds in a row that started no higher than either of the two before.
    barren: u32,
}

impl ProgressWatch {
    /// Notes that a catch-up round that fed blocks without an error started at `head`; an
    /// error once [`BARREN_ROUNDS`] such rounds in a row started no higher than both rounds
    /// before them (two, not one: geth in snap-sync mode can take the first block of each
    /// round, so that the starts alternate between two heights). Rounds that fed nothing
    /// (sources down, no agreement) do not count.
    fn note(&mut self, head: BlockRef) -> Result<(), Fault> {
        match self.last.iter().flatten().max() {
            Some(&high) if head.number <= high => self.barren += 1,
            _ => self.barren = 0,
        }
        self.last = [Some(head.number), self.last[0]];
        if self.barren >= BARREN_ROUNDS {
            let rounds = self.barren;
            *self = Self::default();
            return Err(Fault::NoProgress { head, rounds });
        }
        Ok(())
    }
}

/// Where the EL's head stays although it answered VALID, and what lightcl did about it.
#[derive(Debug, Default)]
struct Stuck {
    /// The head that does not move, and how many times in a row.
    at: Option<(BlockRef, u32)>,
    /// The repair under way, until the head gets past where it first got stuck.
    episode: Option<Episode>,
}

/// One stuck EL being repaired.
#[derive(Debug, Clone, Copy)]
struct Episode {
    /// The highest head it was stuck at: the episode ends when the head passes it.
    high: u64,
    /// Roll-backs so far: each goes twice as far as the one before.
    rounds: u32,
    /// A roll-back reached the lowest block it may (the finality floor, or genesis without
    /// one): being stuck again means no roll-back can help.
    at_bottom: bool,
}

/// A stuck EL's detection and repair: the sightings of a head that does not move, the repair
/// under way, and where the last catch-up rounds started.
#[derive(Debug, Default)]
pub(crate) struct StuckEl {
    stuck: Stuck,
    watch: ProgressWatch,
}

impl StuckEl {
    /// Notes a catch-up round that fed blocks from `head` (see [`ProgressWatch`]).
    pub fn watch_progress(&mut self, head: BlockRef) -> Result<(), Fault> {
        self.watch.note(head)
    }

    /// An EL that restarted is a new EL: forget everything.
    pub fn forget(&mut self) {
        *self = Self::default();
    }

    /// Counts one more sign that the EL's head stays at `have` although it takes the blocks
    /// above; repairs on the second in a row, and halts if the roll-backs already reached
    /// genesis or are impossible.
    pub async fn repair(
        &mut self,
        ctx: &Ctx,
        fc: &mut Forkchoice,
        sign: Symptom,
    ) -> Result<(), Fault> {
        if !self.sighted(ctx, sign).await? {
            return Ok(());
        }
        let Symptom { head: have, what: symptom, .. } = sign;
        let halt = |tried: String| {
            Fault::Halt(RunError::ElStuck { have, symptom: symptom.to_string(), tried })
        };
        let mut episode = self.stuck.episode.unwrap_or(Episode {
            high: have.number,
            rounds: 0,
            at_bottom: false,
        });
        episode.high = episode.high.max(have.number);
        // A roll-back never takes the EL below the finality floor (the gate refuses it too):
        // where the EL would need that, no roll-back can help and lightcl halts.
        let floor = fc.floor().get().filter(|_| !fc.floor().refilling());
        let bottom = floor.map_or(0, |f| f.number);
        let lowest = match floor {
            Some(f) if f.number > 0 => format!("the finality floor {f}"),
            _ => "genesis".to_string(),
        };
        if episode.at_bottom {
            return Err(halt(format!(
                "lightcl rolled it back with debug_setHead as far as it may go ({lowest}: it \
                 never rolls an EL back below the highest block it finalized) and it is still \
                 stuck"
            )));
        }
        warn!(target: "lightcl::engine", head = %have,
            "the EL lacks state it claims (seen after a crash of geth or op-geth); rolling it \
             back to its own head with debug_setHead, which also drops blocks above it that have \
             no state, so that it executes them again (runbook: \"EL stuck below the blocks it \
             accepted\")");
        let target = have.number.saturating_sub((1u64 << episode.rounds.min(40)) - 1).max(bottom);
        let target = roll_back(fc, target, bottom).await.map_err(|e| match e {
            RollBack::Fault(f) => f,
            RollBack::Halt(tried) => halt(tried),
        })?;
        let now_head = ctx.engine.block(BlockAt::Label(Label::Latest)).await?.map(|b| b.block);
        // An EL that answers success and keeps its head did nothing: asking again would only
        // step down to genesis in vain.
        if let Some(now) = now_head.filter(|b| b.number > target) {
            return Err(halt(format!(
                "debug_setHead({target}) answered success but the EL's head is still {now} \
                 ({NO_SET_HEAD})"
            )));
        }
        episode.rounds += 1;
        // Rounds before the roll-back say nothing about the EL after it.
        self.watch = ProgressWatch::default();
        episode.at_bottom = target <= bottom || now_head.is_some_and(|b| b.number <= bottom);
        self.stuck = Stuck { at: None, episode: Some(episode) };
        info!(target: "lightcl::engine", head = ?now_head.map(|b| b.to_string()),
            "EL rolled back to its own head; feeding the blocks above it again");
        Ok(())
    }

    /// Counts a sighting of `sign`; whether to roll back now: on the second in a row, unless
    /// the EL has meanwhile advanced past where it was seen stuck.
    async fn sighted(&mut self, ctx: &Ctx, sign: Symptom) -> Result<bool, Fault> {
        let Symptom { head: have, what: symptom, seen } = sign;
        let count = match self.stuck.at {
            Some((b, n)) if b == have => n + seen,
            _ => seen,
        };
        self.stuck.at = Some((have, count));
        ctx.report.gauge(m::EL_STUCK, &[], 1.0);
        warn!(target: "lightcl::engine", head = %have, times = count,
            "the EL does not advance past its head: {symptom}");
        if count < STUCK_BEFORE_REPAIR {
            return Ok(false);
        }
        // The sightings can be older than the EL's head: a round that started at a head the EL
        // had fallen back to (a crash) may have carried it well past it since. An EL that is
        // above where it was seen stuck is not stuck; rolling it back would undo that.
        let now = ctx.engine.block(BlockAt::Label(Label::Latest)).await?.map(|b| b.block);
        // (More than one block: geth in snap-sync mode takes the first block of each round and
        // is stuck all the same.)
        if let Some(now) = now.filter(|b| b.number > have.number + 1) {
            info!(target: "lightcl::engine", seen_stuck_at = %have, head = %now,
                "the EL advanced past where it looked stuck; no roll-back");
            self.stuck.at = None;
            self.watch = ProgressWatch::default();
            return Ok(false);
        }
        Ok(true)
    }

    /// Forgets the sightings of a stuck head but keeps the repair under way (how far it rolled
    /// back): trying a stuck EL again after a while must not start its roll-backs over.
    pub fn retry(&mut self) {
        self.stuck.at = None;
        self.watch = ProgressWatch::default();
    }

    /// Forgets a stuck head once the head moves again, and ends the repair once the head gets
    /// past where it first got stuck.
    pub fn head_moved(&mut self, ctx: &Ctx, head: BlockRef) {
        if self.stuck.at.is_some_and(|(b, _)| b != head) {
            self.stuck.at = None;
        }
        if self.stuck.episode.is_some_and(|e| head.number > e.high) {
            info!(target: "lightcl::engine", head = %head, "the EL advances again");
            self.stuck.episode = None;
        }
        if self.stuck.at.is_none() && self.stuck.episode.is_none() {
            ctx.report.gauge(m::EL_STUCK, &[], 0.0);
        }
    }
}

/// Why a roll-back did not happen.
enum RollBack {
    /// Try again later (the EL is unreachable, the floor cannot be stored).
    Fault(Fault),
    /// No roll-back can happen: what was tried, for the halt message.
    Halt(String),
}

/// Rolls the EL back with `debug_setHead` to `target`, or lower if it refuses: geth refuses a
/// target above the block it really executes to ("not allowed to rewind to a future block")
/// when the head it reports lacks its state, so step down (never below `bottom`) until it
/// accepts. A lower target only means more blocks fed again. Returns where it rolled back to.
async fn roll_back(fc: &mut Forkchoice, mut target: u64, bottom: u64) -> Result<u64, RollBack> {
    let mut step = 1;
    loop {
        match fc.set_head(target).await {
            Ok(()) => return Ok(target),
            Err(GateError::Engine(e)) if e.is_retryable() => {
                return Err(RollBack::Fault(e.into()));
            }
            Err(GateError::Engine(e))
                if e.to_string().contains("future block") && target > bottom =>
            {
                target = target.saturating_sub(step).max(bottom);
                step *= 2;
            }
            Err(GateError::Engine(e)) => {
                return Err(RollBack::Halt(format!(
                    "debug_setHead({target}) failed: {e} ({NO_SET_HEAD})"
                )));
            }
            Err(GateError::State(e)) => return Err(RollBack::Fault(e.into())),
            Err(e @ GateError::Refused(_)) => return Err(RollBack::Halt(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use alloy_primitives::B256;

    use super::*;

    fn at(n: u64) -> BlockRef {
        BlockRef::new(n, B256::with_last_byte(n as u8))
    }

    /// Rounds that fed blocks, by the head each started at: when the watch calls the EL stuck.
    #[test]
    fn barren_rounds_table() {
        let cases: [(&[u64], Option<usize>); 9] = [
            // Climbing: never.
            (&[0, 10, 20, 30, 40, 50], None),
            // Back once after a crash, then climbing: never.
            (&[100, 0, 50, 120, 200], None),
            // Starting again at the same head: the third repeat.
            (&[0, 0, 0, 0], Some(3)),
            // Starting again lower each time counts too.
            (&[5, 4, 3, 2], Some(3)),
            // Two repeats, then progress resets the count.
            (&[7, 7, 7, 8, 8, 8], None),
            (&[7, 7, 7, 8, 8, 8, 8], Some(6)),
            // Alternating between two heights (geth in snap-sync mode takes block 1 each time).
            (&[0, 1, 0, 1, 0, 1], Some(4)),
            // Back far after a crash, then short rounds climbing again: never.
            (&[1000, 0, 10, 20, 30, 40], None),
            // Back after a crash, then stuck there.
            (&[250, 128, 128, 128], Some(3)),
        ];
        for (starts, want) in cases {
            let mut watch = ProgressWatch::default();
            let got = starts.iter().position(|&n| watch.note(at(n)).is_err());
            assert_eq!(got, want, "{starts:?}");
        }
    }
}
