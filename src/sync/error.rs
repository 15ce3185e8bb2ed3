//! What can go wrong in the sync layer, and what the loop does about it: [`RunError`] is why
//! lightcl (or one replica) stopped or halted, in the operator's words; [`Fault`] is why one
//! round did not finish, and [`Fault::severity`] is the one table that says whether the loop
//! retries, waits for the EL, repairs a stuck EL, halts its writes, or exits.

use alloy_primitives::B256;

use crate::chain::BlockRef;
use crate::engine::EngineError;
use crate::engine::check::CheckError;
use crate::source::SourceError;
use crate::state::StateError;

/// Why the follower stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A source or the EL serves another chain.
    #[error(
        "chain id mismatch: {who} reports chain id {got}, the configuration says {expected}; \
         point lightcl at endpoints of the same chain or fix chain_id"
    )]
    ChainIdMismatch {
        /// Which endpoint.
        who: String,
        /// Configured.
        expected: u64,
        /// Reported.
        got: u64,
    },
    /// A source or the EL holds another genesis block than the chain's: another deployment
    /// of the chain id, or an EL datadir initialised for another chain.
    #[error(
        "genesis mismatch: {} holds block {} at the genesis height, but the chain's genesis is \
         {} (named by {}); {}", .0.who, .0.got, .0.expected, .0.named_by, .0.who_fix
    )]
    GenesisMismatch(Box<GenesisMismatch>),
    /// The EL refused our JWT.
    #[error("{0}")]
    Unauthorized(EngineError),
    /// The EL cannot be used (setup).
    #[error("engine setup: {0}")]
    Engine(EngineError),
    /// The state file cannot be used.
    #[error("{0}")]
    State(StateError),
    /// The operations API cannot start.
    #[error("{0}")]
    Api(String),
    /// The sources disagree with the local finalized block (or the remembered floor); nothing
    /// more was sent to the EL.
    #[error(
        "finalized divergence at height {number}: lightcl's finalized block there is {local}, the \
         sources say {sources_hash}. lightcl halted and sent nothing more to the EL. Check the \
         sources first; if they are right, the EL must be rebuilt or rolled back below {number} \
         by hand and the state file removed (see the runbook, \"Finalized divergence\")"
    )]
    FinalizedDivergence {
        /// Height.
        number: u64,
        /// Local hash.
        local: B256,
        /// Sources' hash.
        sources_hash: B256,
    },
    /// The EL's own chain does not hold the finality floor lightcl remembers.
    #[error(
        "the EL's chain holds {el:?} at height {number}, but lightcl remembers {floor} as \
         finalized there (state file): the EL was moved across finality by something else, or \
         rebuilt. lightcl halted and sent nothing to the EL. If the EL's chain is the right one, \
         remove the state file (see the runbook, \"State file\")"
    )]
    ElLeftFloor {
        /// Height of the floor.
        number: u64,
        /// The floor.
        floor: BlockRef,
        /// What the EL holds there.
        el: Option<B256>,
    },
    /// The EL does not advance past its head although it accepts the blocks above it, and it
    /// could not be repaired through its APIs.
    #[error(
        "the EL does not advance past its head {have}: {symptom}. {tried}. lightcl halted its \
         writes to the EL. Restart the EL, then lightcl: geth and op-geth that lost their state \
         in a crash can stay in snap-sync mode, ignoring every block fed to them, until they \
         restart (their log says \"Ignoring payload while snap syncing\"). If it is still stuck \
         after that, roll it back by hand (debug_setHead to {have} or below) or resync it (see \
         the runbook, \"EL stuck below the blocks it accepted\")"
    )]
    ElStuck {
        /// Where the EL's head stays.
        have: BlockRef,
        /// What the EL does.
        symptom: String,
        /// What lightcl tried.
        tried: String,
    },
    /// The output root of the EL's block differs from the one L1 settled for that height.
    #[error(
        "output root mismatch at L2 block {}: the EL's block {} has output root {}, but L1 \
         settled {} ({}). The EL follows a chain L1 did not settle. lightcl halted and sends \
         nothing more to the EL. Check the sources and the [l1] contract addresses; if the \
         sources lied, resync the EL from a trusted point (see the runbook, \"Output root \
         mismatch\")",
        .0.number, .0.local_block, .0.local_root, .0.settled_root, .0.held_by
    )]
    OutputRootMismatch(Box<OutputMismatch>),
}

/// The local EL's output root differs from a root L1 settled (`[l1] verify = "enforce"`).
#[derive(Debug)]
pub struct OutputMismatch {
    /// The L2 block.
    pub number: u64,
    /// The local EL's block there.
    pub local_block: B256,
    /// The local EL's output root.
    pub local_root: B256,
    /// The root L1 settled.
    pub settled_root: B256,
    /// Where L1 holds it (the anchor, or a game).
    pub held_by: String,
}

/// Why the gate sent nothing.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The forkchoice breaks an invariant: nothing was sent.
    #[error("forkchoice refused by the finality gate (nothing sent to the EL): {0}")]
    Refused(String),
    /// Talking to the EL failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The floor could not be persisted.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Why a round did not finish. The loop asks [`Fault::severity`] what to do about it: one match,
/// not a match per call site.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Fault {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Gate(GateError),
    #[error(transparent)]
    State(#[from] StateError),
    /// Stop writing to the EL and say why until an operator steps in.
    #[error(transparent)]
    Halt(RunError),
    /// Stop lightcl (or this replica of a fleet): nothing it can do would help.
    #[error(transparent)]
    Exit(RunError),
    #[error("the sources have no block {number} yet")]
    Missing { number: u64 },
    /// Every source that holds the block is rate limiting lightcl: wait for the quota.
    #[error(
        "every source that holds block {number} is rate limiting lightcl; waiting for its quota"
    )]
    Throttled { number: u64 },
    #[error("no source is available (all are backing off after errors)")]
    NoSource,
    #[error(
        "the sources give no agreed block at height {number} (down, lagging, backing off or split); cannot compare yet"
    )]
    NoAgreement { number: u64 },
    #[error("block {block} has parent {parent}, but the block below it here is {local}")]
    Discontinuity { block: BlockRef, parent: B256, local: BlockRef, served_by: usize },
    #[error(
        "the EL answered SYNCING for {head}: it cannot execute it yet (missing parent or state). \
         If this repeats after an EL crash, the EL came back in snap-sync mode: see the runbook"
    )]
    Pending { head: BlockRef },
    #[error("the EL rejected block {block} as INVALID: {reason}; this branch is not followed")]
    Invalid { block: BlockRef, reason: String },
    #[error(
        "the EL answers SYNCING to every block on top of its own head {head}, even after a \
         forkchoice to it: it does not have the state of its head"
    )]
    CannotExtendHead { head: BlockRef },
    #[error(
        "the EL took the blocks fed to it, but its head started at or below {head} for \
         {rounds} catch-up rounds in a row"
    )]
    NoProgress { head: BlockRef, rounds: u32 },
    #[error("divergence recovery spent its budget of searches and time; trying again later")]
    RecoveryBudget,
    #[error(
        "the EL cannot execute the sources' branch on top of {ancestor} (its state is gone) and \
         could not be rolled back there ({reason}); enable the debug API on the EL's JSON-RPC \
         (geth: --http.api ...,debug) or run it with historical state"
    )]
    CannotRewind { ancestor: BlockRef, reason: String },
    #[error(
        "forkchoiceUpdated to {wanted} answered VALID, but the EL's head is {}",
        have.map_or_else(|| "unreadable".to_string(), |b| b.to_string())
    )]
    HeadDidNotMove { wanted: BlockRef, have: Option<BlockRef> },
}

impl From<GateError> for Fault {
    fn from(e: GateError) -> Self {
        match e {
            GateError::Engine(e) => Self::Engine(e),
            GateError::State(e) => Self::State(e),
            other => Self::Gate(other),
        }
    }
}

impl From<CheckError> for RunError {
    fn from(e: CheckError) -> Self {
        match e {
            CheckError::ChainId { expected, got } => {
                Self::ChainIdMismatch { who: "the local EL".into(), expected, got }
            }
            CheckError::Engine(e @ EngineError::Unauthorized { .. }) => Self::Unauthorized(e),
            CheckError::Engine(e) => Self::Engine(e),
        }
    }
}

/// A genesis block that differs from the chain's.
#[derive(Debug)]
pub struct GenesisMismatch {
    /// Which endpoint.
    pub who: String,
    /// What it holds.
    pub got: crate::chain::BlockRef,
    /// What the chain holds there.
    pub expected: crate::chain::BlockRef,
    /// Who named the expected block.
    pub named_by: String,
    /// What to do.
    pub who_fix: &'static str,
}

/// How the follower loop handles a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Severity {
    /// Log it, back off, try again.
    Retry,
    /// The EL is unreachable: report it down, re-assert its forkchoice once it is back.
    ElDown,
    /// The EL refused our token: say so loudly and retry (the operator fixes the secret).
    Unauthorized,
    /// The EL does not advance past its head: the stuck-EL repair takes over.
    Repair(Symptom),
    /// A source's quota ran out: wait for it (as long as it asked), without backing off and
    /// without calling it a failure. The catch-up goes at the pace the quota allows.
    Throttled,
    /// No more writes to the EL until an operator steps in ([`Fault::Halt`]).
    Halt,
    /// Stop ([`Fault::Exit`]).
    Exit,
}

impl Fault {
    /// What the loop does about this fault: the one table of retry policy.
    pub(crate) fn severity(&self) -> Severity {
        if let Some(sign) = Symptom::of(self) {
            return Severity::Repair(sign);
        }
        match self {
            Self::Engine(e) if e.is_retryable() => Severity::ElDown,
            Self::Engine(EngineError::Unauthorized { .. }) => Severity::Unauthorized,
            Self::Halt(_) => Severity::Halt,
            Self::Exit(_) => Severity::Exit,
            Self::Throttled { .. } => Severity::Throttled,
            Self::Source(e) if e.rate_limit().is_some() => Severity::Throttled,
            _ => Severity::Retry,
        }
    }
}

/// What a round achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Something was done; run again at once.
    Progress,
    /// Nothing to do (or holding); wait for the next poll or wake-up.
    Idle,
    /// Catch-up found that the EL's head is not on the sources' chain: recovery, from `at`.
    Diverged {
        /// A height where the chains differ.
        at: u64,
    },
}

/// A sign that the EL cannot advance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Symptom {
    /// Where its head stays.
    pub head: BlockRef,
    /// What it does, in words.
    pub what: &'static str,
    /// How many observations the sign stands for.
    pub seen: u32,
}

/// How many times in a row the head must stay put before lightcl repairs: once can be a race
/// with the EL's own processing.
pub(crate) const STUCK_BEFORE_REPAIR: u32 = 2;

impl Symptom {
    /// The head an EL is stuck at and what it does, if `e` says it cannot advance: VALID
    /// answers with a head below the one asked for (op-geth), SYNCING on top of its own head
    /// (geth), or rounds of feeding that never get it past where they started (geth in
    /// snap-sync mode).
    pub(crate) fn of(e: &Fault) -> Option<Self> {
        match e {
            Fault::HeadDidNotMove { have: Some(h), wanted } if h.number < wanted.number => {
                Some(Self {
                    head: *h,
                    what: "it answers VALID to the blocks above its head and to forkchoice \
                           updates, but its head does not move",
                    seen: 1,
                })
            }
            Fault::CannotExtendHead { head } => Some(Self {
                head: *head,
                what: "it answers SYNCING to every block on top of its head, even after a \
                       forkchoice to it",
                seen: 1,
            }),
            // Already several rounds: enough to repair at once.
            Fault::NoProgress { head, .. } => Some(Self {
                head: *head,
                what: "it takes the blocks fed to it, but round after round its head starts \
                       again at or below the same block",
                seen: STUCK_BEFORE_REPAIR,
            }),
            _ => None,
        }
    }
}
