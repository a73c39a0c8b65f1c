#!/usr/bin/env bash
# `make bench`: every benchmark, each printing ratios against anchors measured
# in the same run (this machine is shared and noisy; absolute figures vary).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

scripts/bench-parity.sh
# The engine's data path against one plain directory (same disk, same run).
cargo bench -p raid-array --bench datapath
# The mounted filesystem against mergerfs and a raw directory (same run).
scripts/bench-fuse.sh
scripts/bench-sync.sh
scripts/bench-readd.sh
