#!/usr/bin/env bash
# Feeds a million mutated blocks (raw RLP and JSON, OP and Ethereum; truncated, extended, bits
# flipped, huge length prefixes, fields deleted, retyped or made huge) to lightcl's block
# decoders in release mode and prints how many ran, how many were accepted (each must be the
# original payload exactly) and how long it took. Any panic, or a mutated block passing as the
# original's hash with other contents, fails with the case number to replay.
#
#   bash scripts/fuzz-decoders.sh [--cases N] [--seed S]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CASES=1000000
SEED=0
while [ $# -gt 0 ]; do
    case "$1" in
        --cases) CASES="$2"; shift 2 ;;
        --seed) SEED="$2"; shift 2 ;;
        *) echo "fuzz-decoders: unknown argument $1 (use --cases N, --seed S)" >&2; exit 2 ;;
    esac
done
echo "fuzz-decoders: building in release mode (a few minutes on the first run)..." >&2
cargo test --release --lib --no-run 2>&1 | grep -E "^(error|warning)" || true
echo "fuzz-decoders: decoding $CASES mutated blocks from seed $SEED..." >&2
LIGHTCL_FUZZ_CASES="$CASES" LIGHTCL_FUZZ_SEED="$SEED" \
    cargo test --release --quiet --lib payload::fuzz -- --nocapture 2>&1 \
    | grep -E "fuzz:|panicked|case [0-9]+|test result"
