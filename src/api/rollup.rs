//! lightcl's view served read-only in op-node's rollup RPC shape, on a listener of its own
//! (`rollup_rpc_listen`), for tools and light clients that take an op-node RPC:
//! `optimism_syncStatus` and `optimism_outputAtBlock`. Field names as op-node's own types
//! (`eth.SyncStatus`, `eth.L1BlockRef`, `eth.L2BlockRef`, `eth.OutputResponse`): block numbers
//! and timestamps are JSON numbers, hashes 0x-hex; the block parameter of outputAtBlock is a
//! hex quantity.
//!
//! The L2 blocks are the EL's own labels (unsafe = its head), each shown with the L1 origin its
//! L1 attributes deposit names (read from the verified block, held or fetched by hash); the L1
//! blocks are the `[l1]` endpoints' (zero without an `[l1]` section, as op-node shows an unset
//! reference).

use std::sync::Arc;

use alloy_primitives::B256;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Shared;
use crate::chain::BlockRef;
use crate::engine::Engine;
use crate::l1::info::origin_of;
use crate::l1::{L1At, Verification};
use crate::source::SourceSet;

/// What the rollup RPC reads: the replica it shows, its EL, the sources and L1.
#[derive(Debug, Clone)]
pub struct RollupView {
    /// The replica whose labels are shown (a fleet's first).
    pub shared: Arc<Shared>,
    /// Its EL.
    pub engine: Arc<dyn Engine>,
    /// The sources (blocks by hash for the L1 origins).
    pub sources: Arc<SourceSet>,
    /// L1, with an `[l1]` section.
    pub l1: Option<Arc<Verification>>,
    /// L2 block references already made, by hash (a block's never changes): requests to this
    /// listener cost the sources a block at most once each, within the bound.
    pub refs: Arc<std::sync::Mutex<std::collections::HashMap<B256, Value>>>,
}

/// Most L2 block references remembered.
const REFS_REMEMBERED: usize = 4_096;

/// Serves the rollup RPC on `listener` until `token` is cancelled.
pub async fn serve(listener: TcpListener, view: RollupView, token: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        info!(target: "lightcl::api", %addr, "serving the rollup RPC (optimism_syncStatus, optimism_outputAtBlock)");
    }
    let app = Router::new().route("/", post(handle)).with_state(Arc::new(view));
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(token.cancelled_owned()).await
    {
        warn!(target: "lightcl::api", error = %e, "the rollup RPC stopped; following goes on");
    }
}

async fn handle(State(view): State<Arc<RollupView>>, body: String) -> impl IntoResponse {
    let json = [(header::CONTENT_TYPE, "application/json")];
    let Ok(req) = serde_json::from_str::<Value>(&body) else {
        let e = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "parse error"}});
        return (json, e.to_string());
    };
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let method = req.get("method").and_then(Value::as_str).unwrap_or("");
    let params = req.get("params").cloned().unwrap_or(json!([]));
    let res = match method {
        "optimism_syncStatus" => sync_status(&view).await,
        "optimism_outputAtBlock" => output_at_block(&view, &params).await,
        "optimism_rollupConfig" | "optimism_version" => Err((
            -32601,
            format!("{method} is not served by lightcl (it has no rollup config of its own)"),
        )),
        _ => Err((-32601, format!("the method {method} does not exist/is not available"))),
    };
    let answer = match res {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err((code, message)) => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
        }
    };
    (json, answer.to_string())
}

type RpcResult = Result<Value, (i64, String)>;

fn internal(e: impl std::fmt::Display) -> (i64, String) {
    (-32000, e.to_string())
}

/// An unset reference, as op-node shows one.
fn zero_l1() -> Value {
    json!({"hash": B256::ZERO, "number": 0, "parentHash": B256::ZERO, "timestamp": 0})
}

fn zero_l2() -> Value {
    json!({
        "hash": B256::ZERO, "number": 0, "parentHash": B256::ZERO, "timestamp": 0,
        "l1origin": {"hash": B256::ZERO, "number": 0}, "sequenceNumber": 0
    })
}

/// An L1 block reference by label, from the `[l1]` endpoints (the first that answers).
async fn l1_ref(view: &RollupView, tag: &'static str) -> Value {
    let Some(v) = &view.l1 else { return zero_l1() };
    for m in v.verifier.l1().members() {
        if let Ok(Some(h)) = m.header(L1At::Tag(tag)).await {
            return json!({
                "hash": h.block.hash, "number": h.block.number,
                "parentHash": h.parent_hash, "timestamp": h.timestamp
            });
        }
    }
    zero_l1()
}

/// The L2 block reference of the agreed-chain block `b`, with its L1 origin.
async fn l2_ref(view: &RollupView, b: BlockRef) -> Result<Value, (i64, String)> {
    if let Some(v) = crate::util::lock(&view.refs).get(&b.hash) {
        return Ok(v.clone());
    }
    let Some(p) = view.sources.block_by_hash(b.hash).await else {
        return Err(internal(format!("no source served block {b}")));
    };
    let (origin, seq) = match origin_of(&p) {
        Ok(o) => (json!({"hash": o.block.hash, "number": o.block.number}), o.sequence_number),
        Err(_) => (json!({"hash": B256::ZERO, "number": 0}), 0),
    };
    let v = json!({
        "hash": b.hash, "number": b.number, "parentHash": p.parent_hash,
        "timestamp": p.timestamp, "l1origin": origin, "sequenceNumber": seq
    });
    let mut refs = crate::util::lock(&view.refs);
    if refs.len() >= REFS_REMEMBERED {
        refs.clear();
    }
    refs.insert(b.hash, v.clone());
    Ok(v)
}

async fn l2_or_zero(view: &RollupView, b: BlockRef) -> Result<Value, (i64, String)> {
    if b.number == 0 { Ok(zero_l2()) } else { l2_ref(view, b).await }
}

async fn sync_status(view: &RollupView) -> RpcResult {
    let Some(local) = view.shared.snapshot().local else {
        return Err(internal("lightcl has not read the EL's heads yet"));
    };
    let (head_l1, safe_l1, finalized_l1) =
        (l1_ref(view, "latest").await, l1_ref(view, "safe").await, l1_ref(view, "finalized").await);
    let unsafe_l2 = l2_or_zero(view, local.head).await?;
    let safe_l2 = l2_or_zero(view, local.safe).await?;
    let finalized_l2 = l2_or_zero(view, local.finalized).await?;
    Ok(json!({
        "current_l1": head_l1,
        "current_l1_finalized": finalized_l1,
        "head_l1": head_l1,
        "safe_l1": safe_l1,
        "finalized_l1": finalized_l1,
        "unsafe_l2": unsafe_l2,
        "safe_l2": safe_l2,
        "finalized_l2": finalized_l2,
        "pending_safe_l2": safe_l2,
        "cross_unsafe_l2": unsafe_l2,
        "local_safe_l2": safe_l2,
    }))
}

async fn output_at_block(view: &RollupView, params: &Value) -> RpcResult {
    let n = params
        .get(0)
        .and_then(Value::as_str)
        .and_then(|s| s.strip_prefix("0x"))
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .ok_or((
            -32602,
            "invalid params: give the L2 block number as a hex quantity".to_string(),
        ))?;
    let parts = view.engine.output_parts(n).await.map_err(internal)?;
    let Some(parts) = parts else {
        return Err(internal(format!("the EL has no block {n}")));
    };
    let block_ref = l2_ref(view, parts.block).await?;
    let status = sync_status(view).await?;
    Ok(json!({
        "version": B256::ZERO,
        "outputRoot": parts.root(),
        "blockRef": block_ref,
        "withdrawalStorageRoot": parts.message_passer_root,
        "stateRoot": parts.state_root,
        "syncStatus": status,
    }))
}
