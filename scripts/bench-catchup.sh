#!/usr/bin/env bash
# Catch-up benchmark: lightcl against the EL's own import limit, side by side in one run.
# Usage: scripts/bench-catchup.sh [--blocks N] [--chain optimism|ethereum] [--el geth|op-geth|reth|op-reth] [--rounds R]
#        (default: 2000 blocks on op-geth; --el op-reth runs both fresh ELs on op-reth)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/install-els.sh >/dev/null
cargo build --release --quiet -p lightcl -p lightcl-testbed --bins
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/release"
exec "$TARGET/bench-catchup" --lightcl "$TARGET/lightcl" "$@"
