#!/usr/bin/env bash
# The main job on a self-contained local default: an op-geth source chain with a block producer,
# a fresh EL (op-reth 2.x where ../shared/els provides it, op-geth otherwise), and lightcl
# following it. Prints progress until Ctrl-C.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
echo "devnet: installing the ELs (cached after the first run)"
bash scripts/install-els.sh
# Not quiet: a first build takes minutes, and cargo's lines show it is moving.
echo "devnet: building lightcl and the devnet (a few minutes the first time)"
cargo build -p lightcl -p lightcl-testbed --bins
exec "${CARGO_TARGET_DIR:-$ROOT/target}/debug/devnet" --lightcl "${CARGO_TARGET_DIR:-$ROOT/target}/debug/lightcl" "$@"
