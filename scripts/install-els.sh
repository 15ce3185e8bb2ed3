#!/usr/bin/env bash
# Builds the execution clients the test bed runs (geth and op-geth) from the Go module proxy into
# .cache/els/ of this repository. Idempotent: when the pinned binaries are present it only prints
# their versions. Versions are pinned in scripts/els.env.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=els.env
source "$ROOT/scripts/els.env"
CACHE="${TESTBED_EL_CACHE:-$ROOT/.cache/els}"
mkdir -p "$CACHE"

GETH_BIN="$CACHE/geth-$GETH_VERSION"
OP_GETH_BIN="$CACHE/op-geth-$OP_GETH_VERSION"

die() { echo "install-els: $*" >&2; exit 1; }

need_go() {
    if ! command -v go >/dev/null 2>&1; then
        die "the Go toolchain ('go') is not on PATH. Install Go 1.24 or newer (for example from your distribution's packages) and run this script again."
    fi
}

# run_step DESCRIPTION VERSION CMD...: runs CMD; on failure names the version and the command.
run_step() {
    local what="$1" version="$2"; shift 2
    if ! "$@"; then
        die "building $what $version failed; the command that failed was: $* (is $version served by the Go module proxy? check with 'go list -m -versions')"
    fi
}

build_geth() {
    [ -x "$GETH_BIN" ] && return 0
    need_go
    echo "install-els: building geth $GETH_VERSION (a few minutes on first run)" >&2
    local gobin; gobin="$(mktemp -d)"
    run_step geth "$GETH_VERSION" env GOBIN="$gobin" go install "github.com/ethereum/go-ethereum/cmd/geth@$GETH_VERSION"
    mv "$gobin/geth" "$GETH_BIN"
    rmdir "$gobin" 2>/dev/null || true
}

build_op_geth() {
    [ -x "$OP_GETH_BIN" ] && return 0
    need_go
    echo "install-els: building op-geth $OP_GETH_VERSION (a few minutes on first run)" >&2
    # op-geth declares the module path github.com/ethereum/go-ethereum, so it is built from a
    # throwaway module that replaces go-ethereum with op-geth.
    local mod; mod="$(mktemp -d)"
    (
        cd "$mod"
        run_step op-geth "$OP_GETH_VERSION" go mod init lightcl-op-geth-build >/dev/null 2>&1
        run_step op-geth "$OP_GETH_VERSION" go mod edit \
            "-require=github.com/ethereum/go-ethereum@$OP_GETH_VERSION" \
            "-replace=github.com/ethereum/go-ethereum=github.com/ethereum-optimism/op-geth@$OP_GETH_VERSION"
        run_step op-geth "$OP_GETH_VERSION" go mod download github.com/ethereum/go-ethereum
        run_step op-geth "$OP_GETH_VERSION" go build -mod=mod -o "$OP_GETH_BIN.tmp" github.com/ethereum/go-ethereum/cmd/geth
    )
    mv "$OP_GETH_BIN.tmp" "$OP_GETH_BIN"
    rm -rf "$mod"
}

# unpack_reth NAME VERSION [LINK]: unpacks NAME-VERSION.zst from the shared folder into the cache,
# checks it against the folder's SHA256SUMS.uncompressed (the line named NAME-VERSION, else NAME)
# and links it as LINK (default NAME) in the cache. Nothing is downloaded.
SHARED_ELS="${TESTBED_SHARED_ELS:-$ROOT/../shared/els}"
unpack_reth() {
    local name="$1" version="$2" link="${3:-$1}"
    local bin="$CACHE/$name-$version" packed="$SHARED_ELS/$name-$version.zst"
    if [ ! -f "$packed" ]; then
        echo "install-els: $packed not found; the $link tests will be skipped (set TESTBED_$(echo "$link" | tr 'a-z-' 'A-Z_')_BIN to an installed $name $version to run them)" >&2
        return 0
    fi
    local sums="$SHARED_ELS/SHA256SUMS.uncompressed" want
    want="$(awk -v n="$name-$version" '$2 == n { print $1 }' "$sums")"
    [ -n "$want" ] || want="$(awk -v n="$name" '$2 == n { print $1 }' "$sums")"
    [ -n "$want" ] || die "no checksum for $name in $SHARED_ELS/SHA256SUMS.uncompressed"
    if [ -x "$bin" ] && [ "$(sha256sum "$bin" | cut -d' ' -f1)" = "$want" ]; then
        ln -sfn "$(basename "$bin")" "$CACHE/$link"
        return 0
    fi
    if ! command -v zstd >/dev/null 2>&1; then
        echo "install-els: installing zstd (Debian package zstd) to unpack $name" >&2
        if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
        $SUDO apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends zstd >/dev/null 2>&1 \
            || die "could not install zstd (Debian package zstd), needed to unpack $packed"
    fi
    zstd -q -d -f "$packed" -o "$bin.tmp" || die "could not unpack $packed"
    local got; got="$(sha256sum "$bin.tmp" | cut -d' ' -f1)"
    if [ "$got" != "$want" ]; then
        rm -f "$bin.tmp"
        die "$name from $packed has sha256 $got, not $want as $SHARED_ELS/SHA256SUMS.uncompressed says; the file is damaged"
    fi
    chmod +x "$bin.tmp"
    mv "$bin.tmp" "$bin"
    ln -sfn "$(basename "$bin")" "$CACHE/$link"
    echo "install-els: $name $version ready: $("$bin" --version 2>/dev/null | head -1)"
}

build_geth
build_op_geth
unpack_reth reth "$RETH_VERSION"
unpack_reth op-reth "$OP_RETH_VERSION"
unpack_reth op-reth "$OP_RETH_2_VERSION" op-reth-2

ln -sfn "$(basename "$GETH_BIN")" "$CACHE/geth"
ln -sfn "$(basename "$OP_GETH_BIN")" "$CACHE/op-geth"

version_of() { "$1" version 2>/dev/null | grep -E '^(Version|Upstream Version):' | tr '\n' ' '; }
echo "install-els: geth $GETH_VERSION ready: $(version_of "$GETH_BIN")"
echo "install-els: op-geth $OP_GETH_VERSION ready: $(version_of "$OP_GETH_BIN")"
