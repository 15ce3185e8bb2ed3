#!/usr/bin/env bash
# Tip latency: from a block becoming the source's head to the local EL's forkchoice answering
# VALID for it, minus the EL's own newPayload time; p50 and p99, and source calls per block, for a
# WebSocket source, an HTTP source polled on the fixed 1 s clock and one polled just after each
# block is due (poll_aligned, the default), on a 2 s and a 1 s chain, in one run on one source.
# Usage: scripts/bench-tip-latency.sh [--blocks N] [--block-ms MS[,MS...]] [--el op-geth|geth]
#        [--modes websocket,fixed,aligned]
#        (default: 100 blocks per run, block times 2000,1000 ms, op-geth, all three modes)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$TARGET/bench-tip" --lightcl "$TARGET/lightcl" "$@"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
