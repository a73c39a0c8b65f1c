#!/usr/bin/env bash
# The main job, from a fresh clone, as root: build raidfs, self-test the
# parity kernels, create a RAID-5 array over four file-backed members under
# ./demo (ext4 images on loop devices), mount it on ./demo/array, copy a
# sample tree in, and show it.
#
#   scripts/demo.sh          set up (again) and mount
#   scripts/demo.sh stop     unmount the array and the members, keep the images
#   scripts/demo.sh clean    stop and delete ./demo
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
DEMO="$ROOT/demo"
N=4
SIZE=512M

stop() {
    if mountpoint -q "$DEMO/array" 2>/dev/null; then
        umount "$DEMO/array" || umount -l "$DEMO/array"
    fi
    for i in $(seq 1 $N); do
        local m="$DEMO/members/disk$i"
        if mountpoint -q "$m" 2>/dev/null; then
            # The daemon closes the array (superblocks marked clean) after
            # the unmount returns: give it time before the members go.
            local tries=0
            until umount "$m" 2>/dev/null; do
                tries=$((tries + 1))
                if [ "$tries" -ge 30 ]; then
                    umount -l "$m"
                    break
                fi
                sleep 1
            done
        fi
        local img="$DEMO/images/disk$i.img"
        if [ -f "$img" ]; then
            losetup -j "$img" -O NAME --noheadings 2>/dev/null | while read -r dev; do losetup -d "$dev" || true; done
        fi
    done
}

case "${1:-}" in
    stop) stop; echo "demo array and members unmounted"; exit 0 ;;
    clean) stop; rm -rf "$DEMO"; echo "demo removed"; exit 0 ;;
    "") ;;
    *) echo "usage: $0 [stop|clean]" >&2; exit 2 ;;
esac

if [ "$(id -u)" != 0 ]; then
    echo "the demo mounts filesystems: run it as root" >&2
    exit 1
fi

scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

echo "==> building (release)"
cargo build --release --quiet -p raid-fuse
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"

echo "==> parity kernels on this CPU"
"$BIN/raidfs" selftest

stop
rm -rf "$DEMO/members" "$DEMO/images"
mkdir -p "$DEMO/images" "$DEMO/members" "$DEMO/array"

echo "==> $N file-backed members ($SIZE ext4 images on loop devices)"
members=()
same_fs=()
for i in $(seq 1 $N); do
    img="$DEMO/images/disk$i.img"
    mnt="$DEMO/members/disk$i"
    mkdir -p "$mnt"
    truncate -s "$SIZE" "$img"
    mkfs.ext4 -q -F "$img"
    if dev=$(losetup --find --show "$img" 2>/dev/null) && mount "$dev" "$mnt" 2>/dev/null; then
        :
    else
        # No loop devices (some containers): plain directories on one filesystem.
        [ -n "${dev:-}" ] && losetup -d "$dev" 2>/dev/null || true
        echo "    (no loop devices here: member $i is a plain directory)"
        same_fs=(--allow-same-fs)
    fi
    mkdir -p "$mnt/raidfs"
    members+=("$mnt/raidfs")
done

echo "==> raidfs create --level raid5 --name demo ${members[*]}"
"$BIN/raidfs" create --level raid5 --name demo "${same_fs[@]}" "${members[@]}"

echo "==> mount.raidfs demo $DEMO/array"
spec=$(IFS=:; echo "${members[*]}")
"$BIN/mount-raidfs" "$spec" "$DEMO/array"

echo "==> copying a sample tree (this repository's docs and sources) in"
cp -r "$ROOT/docs" "$ROOT/crates" "$DEMO/array/"
sync
echo
ls -l "$DEMO/array"
echo
df -h "$DEMO/array"
echo
echo "==> raidfs status"
"$BIN/raidfs" status "${members[@]}"
echo
cat <<MSG
The array is mounted on $DEMO/array: use it like any folder (cp, ls, mv, rm).
Each member's shard files are under $DEMO/members/disk*/raidfs/.raidfs/.
Unmount with:   umount $DEMO/array     (or: scripts/demo.sh stop)
Remove it with: scripts/demo.sh clean
MSG
