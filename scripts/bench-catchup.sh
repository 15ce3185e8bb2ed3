#!/usr/bin/env bash
# Catch-up benchmark: lightcl against the EL's own import limit, side by side in one run.
# Usage: scripts/bench-catchup.sh [--blocks N] [--chain optimism|ethereum] [--el geth|op-geth|reth|op-reth] [--rounds R]
#        (default: 2000 blocks on op-geth; --el op-reth runs both fresh ELs on op-reth)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
exec "$TARGET/bench-catchup" --lightcl "$TARGET/lightcl" "$@"
