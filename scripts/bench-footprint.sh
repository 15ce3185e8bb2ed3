#!/usr/bin/env bash
# Memory and idle cost of lightcl with its default configuration: peak RSS during a catch-up,
# RSS and CPU while following a chain making a block every 2 s for 10 minutes, CPU idle in sync.
# Usage: scripts/bench-footprint.sh [--blocks N] [--minutes M] [--block-ms MS] [--idle-minutes M]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/install-els.sh >/dev/null
cargo build --release --quiet -p lightcl -p lightcl-testbed --bins
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/release"
"$TARGET/bench-footprint" --lightcl "$TARGET/lightcl" "$@"
