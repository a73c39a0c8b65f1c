#!/usr/bin/env bash
# The main job, from a fresh clone: build, self-test the parity kernels on
# this CPU and print their speed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

cargo run --quiet --release -p raid-core --example speedtest
