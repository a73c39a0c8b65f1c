#!/usr/bin/env bash
# `make test`: everything, as CI runs it. Assumes scripts/install-deps.sh ran.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n==> %s (t=%ss)\n' "$*" "$SECONDS"; }

step "format check and clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

step "local S3-compatible server for the raid-sync tests"
scripts/s3-server.sh install
export RAIDFS_MOTO
RAIDFS_MOTO="$(scripts/s3-server.sh path)"

step "build the binaries the end-to-end tests run, with the tests (one feature set, one build)"
# Building bins alone would resolve features without the dev-dependencies
# and make `cargo test` rebuild shared crates a second time.
cargo build --workspace --bins --tests --examples

step "workspace tests (unit, engine, end-to-end)"
cargo test --workspace

step "raid-core under aarch64 emulation (NEON kernel)"
scripts/test-arm.sh

step "all tests passed"
