#!/usr/bin/env bash
# Catch-up benchmark: lightcl against the EL's own import limit, side by side in one run.
# Usage: scripts/bench-catchup.sh [--blocks N] [--chain optimism|ethereum] [--el EL[,EL...]] [--rounds R]
#        EL: geth, op-geth, reth, op-reth (1.10.2) or op-reth-2 (2.x); a list runs each side by side
#        (default: 2000 blocks on op-geth; --el op-reth-2,op-reth compares the two op-reth lines)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
exec "$TARGET/bench-catchup" --lightcl "$TARGET/lightcl" "$@"
