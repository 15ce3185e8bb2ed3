# Sourced by the bench-*.sh scripts: from the repository root, installs the ELs (cached),
# builds lightcl and the test bed's bench binaries in release mode, and sets TARGET to where
# they are.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/install-els.sh >/dev/null
cargo build --release --quiet -p lightcl -p lightcl-testbed --bins
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/release"
