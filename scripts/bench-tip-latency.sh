#!/usr/bin/env bash
# Tip latency: from a block becoming the source's head to the local EL's forkchoice answering
# VALID for it, minus the EL's own newPayload time; p50 and p99 for a WebSocket source and for an
# HTTP source polled at the default interval, in one run on one source chain.
# Usage: scripts/bench-tip-latency.sh [--blocks N] [--block-ms MS] [--el op-geth|geth]
#        (default: 300 blocks, one a second, op-geth)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$TARGET/bench-tip" --lightcl "$TARGET/lightcl" "$@"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
