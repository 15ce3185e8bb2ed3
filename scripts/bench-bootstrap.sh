#!/usr/bin/env bash
# Bootstrap benchmark: the same chain brought into a fresh EL by EL sync (lightcl hands the EL the
# agreed head, the EL syncs from its peer) and by replay (lightcl feeds every block), side by side
# in one run; prints both times and the ratio.
# Usage: scripts/bench-bootstrap.sh [--blocks N] [--el geth|op-geth|reth|op-reth|op-reth-2] [--syncmode full|snap]
#        (default: 5000 blocks with transactions on geth, full sync)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
exec "$TARGET/bench-bootstrap" --lightcl "$TARGET/lightcl" "$@"
