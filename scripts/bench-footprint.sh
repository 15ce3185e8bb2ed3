#!/usr/bin/env bash
# Memory and idle cost of lightcl with its default configuration: peak RSS during a catch-up,
# RSS and CPU while following a chain making a block every 2 s for 10 minutes, CPU idle in sync.
# Usage: scripts/bench-footprint.sh [--blocks N] [--minutes M] [--block-ms MS] [--idle-minutes M]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
"$TARGET/bench-footprint" --lightcl "$TARGET/lightcl" "$@"
