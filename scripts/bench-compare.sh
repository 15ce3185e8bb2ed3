#!/usr/bin/env bash
# Catch-up of this tree's lightcl against an earlier commit's, side by side in one run of
# bench-catchup (each round: the EL's import limit, then each binary with raw and JSON blocks).
# Usage: scripts/bench-compare.sh REV [bench-catchup flags: --blocks N --el ... --rounds R]
# REV's lightcl is built in a temporary worktree sharing this tree's target folder (only the
# lightcl crate is rebuilt); both binaries are kept under target/bench/.
set -euo pipefail
REV="${1:?usage: scripts/bench-compare.sh REV [bench-catchup flags]}"
shift
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
OUT="${CARGO_TARGET_DIR:-$ROOT/target}/bench"
mkdir -p "$OUT"
SHORT="$(git rev-parse --short "$REV")"
cp "$TARGET/lightcl" "$OUT/lightcl-this"
WT="$(mktemp -d)"
trap 'git worktree remove --force "$WT" >/dev/null 2>&1 || true; rm -rf "$WT"' EXIT
git worktree add --detach --quiet "$WT" "$REV"
echo "bench-compare: building lightcl at $SHORT" >&2
(cd "$WT" && CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}" cargo build --release --quiet -p lightcl)
cp "$TARGET/lightcl" "$OUT/lightcl-$SHORT"
# Put this tree's binary back where the other benches expect it.
cp "$OUT/lightcl-this" "$TARGET/lightcl"
"$TARGET/bench-catchup" --lightcl "$OUT/lightcl-this" --compare "$OUT/lightcl-$SHORT" "$@"
