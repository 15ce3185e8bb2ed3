#!/usr/bin/env bash
# The test command: builds the test ELs (cached), then runs every test with bounded parallelism.
# Afterwards it checks that no EL process outlived the run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Wall time of each phase, for the report at the end (how the next person sees a regression).
PHASES=()
phase_start=$SECONDS
run_started=$SECONDS
phase_done() { PHASES+=("$(printf '%-34s %5d s' "$1" $((SECONDS - phase_start)))"); phase_start=$SECONDS; }

bash scripts/install-els.sh
# promtool checks the alert rules (Debian package "prometheus"; only the tool is used).
if ! command -v promtool >/dev/null 2>&1; then
    echo "test.sh: installing promtool (Debian package prometheus)" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
        || { echo "test.sh: could not install the prometheus package (for promtool)" >&2; exit 1; }
    # The package starts a prometheus service where it can; the tests need only promtool.
    $SUDO pkill -x prometheus 2>/dev/null || true
fi
# The schema validators of the deployment files (PyPI, pinned), in a virtualenv of their own.
PYTOOLS="$ROOT/.cache/pytools"
if [ ! -x "$PYTOOLS/bin/check-jsonschema" ] || [ ! -x "$PYTOOLS/bin/kubernetes-validate" ]; then
    echo "test.sh: installing the deployment-file validators (check-jsonschema, kubernetes-validate)" >&2
    rm -rf "$PYTOOLS"
    if ! python3 -m venv "$PYTOOLS" >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
        $SUDO apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null 2>&1 || true
        python3 -m venv "$PYTOOLS" || { echo "test.sh: cannot make a Python virtualenv" >&2; exit 1; }
    fi
    "$PYTOOLS/bin/pip" install -q "check-jsonschema==0.39.0" "kubernetes-validate==1.37.0" \
        || { echo "test.sh: could not install the validators from PyPI" >&2; exit 1; }
fi
export TESTBED_PYTOOLS="$PYTOOLS/bin"
# podman (and runc, which runs containers where crun cannot) builds and runs the container
# image in its test; where they cannot be installed the test says why it skips.
if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1; then
    echo "test.sh: installing podman and runc (Debian packages) for the container image test" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends podman runc >/dev/null 2>&1 \
        || echo "test.sh: podman could not be installed; the container image test will skip" >&2
fi
if command -v podman >/dev/null 2>&1; then
    export TESTBED_REQUIRE_PODMAN=1
fi
CACHE="${TESTBED_EL_CACHE:-$ROOT/.cache/els}"
# reth and op-reth (1.10.2, and 2.x as op-reth-2) come only from the shared folder
# (install-els.sh) or an operator's own build: say up front whether their tests will run or skip
# (without op-reth-2, op-geth follows in the OP end-to-end tests).
for el in reth op-reth op-reth-2; do
    var="TESTBED_$(echo "$el" | tr 'a-z-' 'A-Z_')_BIN"
    if [ -n "${!var:-}" ]; then
        # The test bed uses the variable alone when it is set (no fallback to the cache).
        [ -x "${!var}" ] || { echo "test.sh: $var=${!var} is not an executable file" >&2; exit 1; }
        echo "test.sh: $el tests run on ${!var} ($var)"
    elif [ -x "$CACHE/$el" ]; then
        echo "test.sh: $el tests run on the installed $(readlink "$CACHE/$el" || echo "$el")"
    else
        echo "test.sh: SKIPPING the $el characterisation and end-to-end tests: no $el in $CACHE" \
             "(install-els.sh unpacks it from ../shared/els when that folder exists); set $var" \
             "to an installed $el binary to run them" >&2
        if [ "$el" = op-reth-2 ]; then
            echo "test.sh: the OP end-to-end tests follow with op-geth instead of op-reth 2.x" >&2
        fi
    fi
done
# Where op-reth 2.x is installed, the OP end-to-end tests must follow with it: never let op-geth
# stand in silently (tests/testbed/src/client.rs, follower_for).
if [ -n "${TESTBED_OP_RETH_2_BIN:-}" ] || [ -x "$CACHE/op-reth-2" ]; then
    export TESTBED_REQUIRE_OP_RETH_2=1
fi
TESTBED_PID_DIR="$(mktemp -d)"
export TESTBED_PID_DIR
# Each end-to-end test appends "seconds<TAB>name" here when it ends (tests/testbed/src/timing.rs).
# Kept after the run (every test, not only the ten slowest): target/test-times.tsv.
mkdir -p target
TESTBED_TIMES_FILE="$ROOT/target/test-times.tsv"
: > "$TESTBED_TIMES_FILE"
export TESTBED_TIMES_FILE
phase_done "ELs and tools installed"

# EL-heavy tests start two to four EL processes each; two at a time fits a 2-core machine.
THREADS="${TESTBED_TEST_THREADS:-2}"
status=0
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
phase_done "format and lint (clippy builds)"
cargo test --workspace --all-targets --no-run --quiet
phase_done "build of the tests"
cargo test --workspace --all-targets -- --test-threads "$THREADS" --skip sim:: || status=$?
phase_done "unit and real-EL tests ($THREADS threads)"
# The simulation uses both cores for about a minute: run it on its own, after the EL-heavy
# tests, so that neither starves the other (it prints how many histories ran and how long).
cargo test --test it sim:: -- --test-threads 2 --nocapture || status=$?
# The simulation's own checkers (tests/testbed/src/sim/check), skipped above with `sim::`.
cargo test -p lightcl-testbed --lib sim::check || status=$?
phase_done "simulation"

# No EL this run started may outlive it, even after a failing or panicking test. The test bed
# records the pid of every EL it starts in TESTBED_PID_DIR; ELs that other runs or an operator
# started are never touched.
sleep 1
leftover=""
for f in "$TESTBED_PID_DIR"/*; do
    [ -e "$f" ] || continue
    pid="$(basename "$f")"
    # The pid must still be one of our ELs (not a reused pid): its command line names the cache.
    if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "$CACHE/"; then
        leftover="$leftover $pid"
    fi
done
rm -rf "$TESTBED_PID_DIR"
if [ -n "$leftover" ]; then
    echo "test.sh: EL processes this run started outlived it (pids:$leftover); killing them" >&2
    ps -o pid,args -p $leftover >&2 || true
    kill -9 $leftover 2>/dev/null || true
    status=1
else
    echo "test.sh: no EL process this run started outlived it"
fi

echo
echo "test.sh: where the time went"
for p in "${PHASES[@]}"; do echo "  $p"; done
printf '  %-34s %5d s\n' "whole run" $((SECONDS - run_started))
if [ -s "$TESTBED_TIMES_FILE" ]; then
    echo "  the ten slowest end-to-end tests (wall seconds; $(wc -l < "$TESTBED_TIMES_FILE") recorded," \
         "$(awk -F'\t' '{s+=$1} END {printf "%.0f", s}' "$TESTBED_TIMES_FILE") s in all):"
    # awk stops printing, not reading: no SIGPIPE for sort under pipefail.
    sort -t$'\t' -k1,1 -g -r "$TESTBED_TIMES_FILE" | awk -F'\t' 'NR <= 10 {printf "    %7.1f  %s\n", $1, $2}'
fi
exit "$status"
