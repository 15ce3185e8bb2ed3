//! What the follower's steps do, one module per step, each a function (or a small struct) over
//! `&Ctx` and `&mut Forkchoice` plus its own state: fetch and feed (the pipeline), catch-up,
//! divergence recovery, bootstrap by EL sync, the stuck-EL repair, and verification against L1.

pub(crate) mod catch_up;
pub(crate) mod el_sync;
pub(crate) mod feed;
pub(crate) mod fetch;
pub(crate) mod l1;
pub(crate) mod recover;
pub(crate) mod stuck;
