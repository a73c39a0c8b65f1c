#!/usr/bin/env bash
# A member back after a disconnect: re-add (only the files changed while it
# was out are rebuilt) against a full rebuild of the same member, side by
# side in one run. RAID-5 over 4 plain directories, FILES files of FILE_MB
# MiB; with member 3 out, one file grows by 16 MiB, three 1 MiB files are
# created and one file is deleted. The state is copied, then one copy's
# member 3 is re-added and the other's rebuilt whole (`--full`), each
# offline with the page cache dropped first. Prints both times, the bytes
# each wrote and the ratio, then checks that both copies read the same
# without member 0.
#
# Not a test (timings vary with the machine's load); part of `make bench`.
#   scripts/bench-readd.sh   (BENCH_BIN: directory of prebuilt release binaries;
#                             FILES, FILE_MB: the data, default 16 × 64 MiB)
set -euo pipefail
. "$(dirname "$0")/bench-common.sh"
bench_setup bench-readd
FILES="${FILES:-16}"
FILE_MB="${FILE_MB:-64}"
R="$BIN/raidfs"
M="$BIN/mount-raidfs"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/raidfs-bench-readd.XXXXXX")"
cleanup() {
    set +e
    for m in "$WORK"/a/mnt "$WORK"/b/mnt; do
        mountpoint -q "$m" && { umount "$m" || umount -l "$m"; }
    done
    sleep 1
    rm -rf "$WORK"
}
trap cleanup EXIT

A="$WORK/a"
mkdir -p "$A"/d0 "$A"/d1 "$A"/d2 "$A"/d3 "$A"/mnt
members() { echo "$1/d0:$1/d1:$1/d2${2:+:$1/d3}"; }
# The daemon finishes its last writes after `umount` returns: wait for it.
unmount() {
    umount "$1/mnt"
    while pgrep -f "mount-raidfs $1/d0" >/dev/null; do sleep 0.1; done
}
"$R" create --level raid5 --name bench-readd --allow-same-fs \
    "$A"/d0 "$A"/d1 "$A"/d2 "$A"/d3 >/dev/null
"$M" "$(members "$A" all)" "$A/mnt"
for i in $(seq 1 "$FILES"); do
    dd if=/dev/urandom of="$A/mnt/f$i" bs=1M count="$FILE_MB" status=none
done
unmount "$A"
# Member 3 is out while a few files change.
"$M" "$(members "$A")" "$A/mnt" 2>/dev/null
dd if=/dev/urandom of="$A/mnt/f1" bs=1M count=16 oflag=append conv=notrunc status=none
for i in 1 2 3; do
    dd if=/dev/urandom of="$A/mnt/new$i" bs=1M count=1 status=none
done
rm "$A/mnt/f$FILES"
unmount "$A"
B="$WORK/b"
cp -a "$A" "$B"

timed() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
    local t0 t1
    t0=$(date +%s.%N)
    "$@" | tail -1 >&2
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}
echo "==> re-add of member 3 ($FILES files of $FILE_MB MiB; 1 grown, 3 new, 1 deleted while it was out)"
readd=$(timed "$R" replace "$(members "$A")" 3 "$A/d3")
echo "==> full rebuild of the same member (--full)"
full=$(timed "$R" replace "$(members "$B")" 3 "$B/d3" --full)
awk -v r="$readd" -v f="$full" 'BEGIN {
    printf "re-add %.2f s, full rebuild %.2f s: re-add takes %.2fx the time of a full rebuild\n", r, f, r / f
}'

for v in "$A" "$B"; do
    "$M" -o ro "$v/d1:$v/d2:$v/d3" "$v/mnt" 2>/dev/null
    (cd "$v/mnt" && sha256sum $(ls | sort)) >"$v.sums"
    umount "$v/mnt"
    while pgrep -f "mount-raidfs $v/d1" >/dev/null; do sleep 0.1; done
done
if cmp -s "$A.sums" "$B.sums"; then
    echo "both read the same without member 0 ($(wc -l <"$A.sums") files)"
else
    echo "MISMATCH: the re-added and the rebuilt member read differently" >&2
    exit 1
fi
