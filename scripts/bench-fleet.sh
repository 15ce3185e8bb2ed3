#!/usr/bin/env bash
# Fleet benchmark: one replica and three through one lightcl, side by side on one chain.
# Usage: scripts/bench-fleet.sh [--blocks N] [--el op-geth|op-reth|op-reth-2|geth|reth]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
exec "$TARGET/bench-fleet" --lightcl "$TARGET/lightcl" "$@"
