#!/usr/bin/env bash
# Install the raidfs binaries (release build) and the systemd units.
#   /usr/local/bin/raidfs, /usr/local/bin/raidfs-sync
#   /usr/local/sbin/mount.raidfs, linked where mount(8) looks for helpers
#   (/sbin, which is /usr/sbin on merged-/usr systems) as mount.raidfs and, for
#   fstab lines of type fuse.raidfs, mount.fuse.raidfs
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
PREFIX="${PREFIX:-/usr/local}"
cargo build --release -p raid-fuse
BIN="${CARGO_TARGET_DIR:-target}/release"
install -D -m 0755 "$BIN/raidfs" "$PREFIX/bin/raidfs"
install -D -m 0755 "$BIN/mount-raidfs" "$PREFIX/sbin/mount.raidfs"
for dir in /usr/sbin /sbin; do
    # /sbin is a link to /usr/sbin on merged-/usr systems: one set of links.
    [ "$dir" = /sbin ] && [ -L /sbin ] && continue
    [ -d "$dir" ] || continue
    ln -sf "$PREFIX/sbin/mount.raidfs" "$dir/mount.raidfs"
    ln -sf "$PREFIX/sbin/mount.raidfs" "$dir/mount.fuse.raidfs"
done
if cargo build --release -p raid-sync 2>/dev/null && [ -x "$BIN/raidfs-sync" ]; then
    install -D -m 0755 "$BIN/raidfs-sync" "$PREFIX/bin/raidfs-sync"
fi
# The units' Documentation= lines point here.
install -d /usr/share/doc/raidfs
install -m 0644 docs/*.md /usr/share/doc/raidfs/
# raidfs@ (mount), raidfs-sync@, raidfs-scrub@ (.service + monthly .timer).
if [ -d /etc/systemd/system ]; then
    install -m 0644 scripts/systemd/*.service /etc/systemd/system/ 2>/dev/null || true
    install -m 0644 scripts/systemd/*.timer /etc/systemd/system/ 2>/dev/null || true
    command -v systemctl >/dev/null && systemctl daemon-reload 2>/dev/null || true
fi
echo "installed into $PREFIX"
