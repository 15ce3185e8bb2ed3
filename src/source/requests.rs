//! Reading a Prague block's execution requests from the source that served the block, since no
//! JSON-RPC method returns them (`payload::requests` says how they are rebuilt).
//!
//! Cheapest first, and the header's commitment decides each time:
//! 1. the block's logs from the log index (`eth_getLogs` by block hash, the deposit contract
//!    and the two system contracts only), with the queues taken as empty at the parent: right
//!    for nearly every block (deposits, and withdrawal or consolidation requests made and taken
//!    in the same block);
//! 2. with the queues as they stood at the parent (`eth_getStorageAt` by the parent's hash:
//!    head and tail, then the entries the block could take, each a batch);
//! 3. with the logs from the block's receipts, for a provider whose log index lags the chain.
//!
//! A list that hashes to the commitment is the block's (SHA-256 over the requests); when none
//! does, the source served something false or incomplete for that block and is blamed for it.

use alloy_eips::eip7685::Requests;
use alloy_primitives::{Address, B256};

use super::{LogsFrom, Source, SourceError};
use crate::payload::requests::{self, LogEntry, Queue, QueueAtParent, RequestsError};
use crate::payload::{PayloadError, RequestsNeeded};

/// Which reads it took to rebuild a block's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Took {
    /// The logs alone.
    Logs,
    /// The logs and the queues at the parent.
    Storage,
    /// The receipts' logs (and the queues), after the log index fell short.
    Receipts,
}

impl Took {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Logs => "logs",
            Self::Storage => "storage",
            Self::Receipts => "receipts",
        }
    }
}

/// The requests of block `want` as `source` serves what they are rebuilt from: the outer error
/// when a read failed, the inner one when what it served matches no list the header commits to
/// (a source to blame: [`bad`]).
pub async fn read(
    source: &dyn Source,
    deposit_contract: Address,
    want: RequestsNeeded,
) -> Result<Result<(Requests, Took), RequestsError>, SourceError> {
    let addresses =
        vec![deposit_contract, Queue::Withdrawals.address(), Queue::Consolidations.address()];
    let rebuild = |logs: &[LogEntry], queues: Option<&[QueueAtParent; 2]>| {
        requests::rebuild(deposit_contract, want.requests_hash, logs, queues)
    };
    let logs = source.logs(want.hash, addresses.clone(), LogsFrom::Index).await?;
    if let Ok(r) = rebuild(&logs, None) {
        return Ok(Ok((r, Took::Logs)));
    }
    let queues = queues_at(source, want.parent_hash).await?;
    if queues.iter().any(|q| !q.is_empty())
        && let Ok(r) = rebuild(&logs, Some(&queues))
    {
        return Ok(Ok((r, Took::Storage)));
    }
    let receipts = source.logs(want.hash, addresses, LogsFrom::Receipts).await?;
    Ok(rebuild(&receipts, Some(&queues)).map(|r| (r, Took::Receipts)))
}

/// Both queues at block `at`: head and tail (one batch), then the entries a block could take.
async fn queues_at(source: &dyn Source, at: B256) -> Result<[QueueAtParent; 2], SourceError> {
    let index: Vec<_> = Queue::ALL
        .into_iter()
        .flat_map(|q| Queue::index_slots().map(|s| (q.address(), s)))
        .collect();
    let words = source.storage(at, index.clone()).await?;
    if words.len() != index.len() {
        return Err(short(source, words.len(), index.len()));
    }
    let word = |k: usize| alloy_primitives::U256::from_be_bytes(words[k].0);
    let mut queues = [0, 1].map(|k| QueueAtParent {
        head: word(2 * k),
        tail: word(2 * k + 1),
        entries: Vec::new(),
    });
    let slots: Vec<_> = Queue::ALL
        .into_iter()
        .zip(&queues)
        .flat_map(|(q, at)| {
            q.entry_slots(at.head, at.tail).into_iter().map(move |s| (q.address(), s))
        })
        .collect();
    if slots.is_empty() {
        return Ok(queues);
    }
    let words = source.storage(at, slots.clone()).await?;
    if words.len() != slots.len() {
        return Err(short(source, words.len(), slots.len()));
    }
    let mut words = words.into_iter();
    for (q, at) in Queue::ALL.into_iter().zip(queues.iter_mut()) {
        let n = q.entry_slots(at.head, at.tail).len();
        at.entries = words.by_ref().take(n).collect();
    }
    Ok(queues)
}

fn short(source: &dyn Source, got: usize, asked: usize) -> SourceError {
    SourceError::Malformed {
        source_name: source.name().to_string(),
        method: "eth_getStorageAt".into(),
        message: format!("{got} answers for {asked} slots"),
    }
}

/// The error for source `name` whose reads for block `number` match no list the header commits
/// to.
pub fn bad(name: &str, number: u64, error: RequestsError) -> SourceError {
    SourceError::BadBlock {
        source_name: name.to_string(),
        error: PayloadError::Requests { number, error: Box::new(error) },
    }
}
