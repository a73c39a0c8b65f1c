#!/usr/bin/env bash
# Benchmark the mounted filesystem side by side, in one run, with its anchors:
#   raidfs   RAID-5 over 4 members (ext4 images on loop devices), mounted
#   mergerfs over the same 4 member filesystems (no redundancy: the pooling anchor)
#   raw      one ext4 image of the same kind, used directly
# Each gets: sequential write of 1 GiB + fsync, sequential read of 1 GiB cold
# (page cache dropped), 4k random read and write IOPS (fio, short runs),
# 10,000 empty files created / stat'ed / listed (ls -lR) / unlinked, and
# 1,000 small files (16 KiB) written and closed. Prints a table with the
# ratios against mergerfs and raw, and the goals of the mount's issue, and
# the sequential write's bound: the bytes RAID-5 of 4 writes (data and
# parity, 4/3 of the data) written to the four member filesystems at once.
#
# Not a test (timings vary with the machine's load); part of `make bench`.
#   scripts/bench-fuse.sh          (BENCH_BIN: directory of prebuilt release binaries;
#                                   SIZE_MB: sequential size, default 1024;
#                                   LOOP_DIO=0: buffered loop devices, see member_fs)
set -euo pipefail
. "$(dirname "$0")/bench-common.sh"
bench_setup bench-fuse

SIZE_MB="${SIZE_MB:-1024}"
FILES="${FILES:-10000}"
SMALL="${SMALL:-1000}"
IMG_SIZE=3G

need() { command -v "$1" >/dev/null || apt-get install -y -qq "$2" >/dev/null; }
need mergerfs mergerfs
need fio fio
need jq jq
need fusermount3 fuse3

WORK="$(mktemp -d "${TMPDIR:-/tmp}/raidfs-bench-fuse.XXXXXX")"
RAIDFS="$WORK/raidfs"
MERGER="$WORK/mergerfs"
RAW="$WORK/raw"
LOOPS=()

cleanup() {
    set +e
    for m in "$RAIDFS" "$MERGER"; do
        mountpoint -q "$m" && { umount "$m" || umount -l "$m"; }
    done
    # The daemons finish their last writes after the unmount: wait for the
    # member filesystems to become free.
    for d in "$WORK"/m/* "$RAW"; do
        for _ in $(seq 1 60); do
            mountpoint -q "$d" || break
            umount "$d" 2>/dev/null && break
            sleep 0.5
        done
        mountpoint -q "$d" && umount -l "$d"
    done
    for dev in "${LOOPS[@]}"; do losetup -d "$dev"; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# An ext4 image on a loop device mounted on $2 (a plain directory if this
# machine has no loop devices). The loop device reads and writes its image
# with direct I/O (LOOP_DIO=0 to turn that off), as a disk would: a buffered
# loop device keeps a second copy of every block in the host's page cache
# and copies each byte once more in its worker threads, a cost real disks do
# not have, which here took most of the CPU in cold reads and fell hardest
# on whichever target moves the most bytes through the most loop devices.
LOOP_DIO="${LOOP_DIO:-1}"
member_fs() {
    local img="$1" mnt="$2" dev
    mkdir -p "$mnt"
    # Allocated up front, like a disk: a sparse image would get its blocks
    # on the host in the order the members happen to write them back.
    fallocate -l "$IMG_SIZE" "$img" 2>/dev/null || truncate -s "$IMG_SIZE" "$img"
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$img"
    local dio=()
    [ "$LOOP_DIO" = 1 ] && dio=(--direct-io=on)
    if dev=$(losetup "${dio[@]}" --find --show "$img" 2>/dev/null) && mount "$dev" "$mnt" 2>/dev/null; then
        LOOPS+=("$dev")
    else
        [ -n "${dev:-}" ] && losetup -d "$dev" 2>/dev/null
        echo "    (no loop devices: $mnt is a plain directory)"
        SAME_FS=(--allow-same-fs)
    fi
}

echo "==> 5 ext4 images ($IMG_SIZE, loop devices, direct I/O: $LOOP_DIO) in $WORK"
SAME_FS=()
mkdir -p "$WORK/img" "$WORK/m" "$RAIDFS" "$MERGER"
members=()
branches=()
for i in 1 2 3 4; do
    member_fs "$WORK/img/disk$i.img" "$WORK/m/disk$i"
    mkdir -p "$WORK/m/disk$i/raidfs" "$WORK/m/disk$i/mergerfs"
    members+=("$WORK/m/disk$i/raidfs")
    branches+=("$WORK/m/disk$i/mergerfs")
done
member_fs "$WORK/img/raw.img" "$RAW"

"$BIN/raidfs" create --level raid5 --name bench "${SAME_FS[@]}" "${members[@]}" >/dev/null
"$BIN/mount-raidfs" "$(IFS=:; echo "${members[*]}")" "$RAIDFS" -o allow_other
# minfreespace: mergerfs skips branches with less than 4 GiB free by default.
mergerfs -o allow_other,use_ino,cache.files=off,dropcacheonclose=true,category.create=mfs,minfreespace=64M \
    "$(IFS=:; echo "${branches[*]}")" "$MERGER"

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
# rate QUANTITY SECONDS
rate() { awk -v q="$1" -v s="$2" 'BEGIN { printf "%.1f", q / s }'; }

declare -A R
TARGETS=(raidfs mergerfs raw)
dir_of() { case "$1" in raidfs) echo "$RAIDFS" ;; mergerfs) echo "$MERGER" ;; raw) echo "$RAW" ;; esac; }

fio_job() { # dir name rw bs size runtime -> JSON on stdout
    local dir="$1" name="$2" rw="$3" bs="$4" size="$5" runtime="$6"
    local extra=()
    [ "$runtime" != 0 ] && extra=(--time_based --runtime="$runtime")
    fio --name="$name" --directory="$dir" --filename="$name.dat" --rw="$rw" --bs="$bs" \
        --size="$size" --ioengine=psync --iodepth=1 --numjobs=1 --end_fsync=1 \
        --invalidate=1 --randrepeat=0 "${extra[@]}" --output-format=json
}

for t in "${TARGETS[@]}"; do
    d="$(dir_of "$t")"
    echo "==> $t: sequential write ${SIZE_MB} MiB + fsync"
    drop
    t0=$(now)
    dd if=/dev/zero of="$d/seq.dat" bs=1M count="$SIZE_MB" conv=fsync status=none
    R[$t,write]=$(rate "$SIZE_MB" "$(awk -v a="$t0" -v b="$(now)" 'BEGIN{print b-a}')")
    echo "    ${R[$t,write]} MiB/s"
    if [ "$t" = raidfs ]; then
        # What the members' storage allows: RAID-5 of 4 writes a third more
        # than the data (parity). The same bytes, a third of the data per
        # member filesystem, written to all four at once, timed as the data.
        echo "==> members in parallel: $SIZE_MB MiB of data + parity, a third of the data on each + fsync"
        drop
        t0=$(now)
        for i in 1 2 3 4; do
            dd if=/dev/zero of="$WORK/m/disk$i/bound.dat" bs=1M count=$((SIZE_MB / 3)) \
                conv=fsync status=none &
        done
        wait
        R[bound,write]=$(rate "$SIZE_MB" "$(awk -v a="$t0" -v b="$(now)" 'BEGIN{print b-a}')")
        echo "    ${R[bound,write]} MiB/s of data"
        rm -f "$WORK"/m/disk?/bound.dat
    fi

    echo "==> $t: sequential read cold"
    # Let the storage under the images finish the write just made: a read
    # started at once measured that write-back (up to 2x slower) as much
    # as the read.
    sync
    sleep 5
    drop
    t0=$(now)
    dd if="$d/seq.dat" of=/dev/null bs=1M status=none
    R[$t,read]=$(rate "$SIZE_MB" "$(awk -v a="$t0" -v b="$(now)" 'BEGIN{print b-a}')")
    echo "    ${R[$t,read]} MiB/s"
    rm -f "$d/seq.dat"

    echo "==> $t: 4k random read / write (fio, 5 s each)"
    fio_job "$d" rand write 1M 256M 0 >/dev/null
    drop
    R[$t,randread]=$(fio_job "$d" rand randread 4k 256M 5 | jq '.jobs[0].read.iops | floor')
    R[$t,randwrite]=$(fio_job "$d" rand randwrite 4k 256M 5 | jq '.jobs[0].write.iops | floor')
    echo "    read ${R[$t,randread]} IOPS, write ${R[$t,randwrite]} IOPS"
    rm -f "$d/rand.dat"

    echo "==> $t: $FILES files create / stat / ls -lR / unlink; $SMALL x 16 KiB files"
    drop
    out=$(python3 - "$d/meta" "$FILES" "$SMALL" <<'PY'
import os, subprocess, sys, time
base, n, small = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(base)
dirs = [os.path.join(base, f"d{i:02}") for i in range(10)]
for d in dirs:
    os.mkdir(d)
paths = [os.path.join(dirs[i % 10], f"f{i:05}") for i in range(n)]
t = time.perf_counter()
for p in paths:
    os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644))
create = n / (time.perf_counter() - t)
# Stat through fresh lookups: names the kernel has cached are not asked again.
subprocess.run(["sh", "-c", "sync; echo 2 > /proc/sys/vm/drop_caches"], check=True)
t = time.perf_counter()
for p in paths:
    os.stat(p)
stat = n / (time.perf_counter() - t)
subprocess.run(["sh", "-c", "sync; echo 2 > /proc/sys/vm/drop_caches"], check=True)
t = time.perf_counter()
subprocess.run(["ls", "-lR", base], check=True, stdout=subprocess.DEVNULL)
ls = time.perf_counter() - t
t = time.perf_counter()
for p in paths:
    os.unlink(p)
unlink = n / (time.perf_counter() - t)
blob = os.urandom(16384)
t = time.perf_counter()
for i in range(small):
    with open(os.path.join(dirs[i % 10], f"s{i:05}"), "wb") as f:
        f.write(blob)
smallrate = small / (time.perf_counter() - t)
print(f"{create:.0f} {stat:.0f} {ls:.3f} {unlink:.0f} {smallrate:.0f}")
PY
)
    read -r R[$t,create] R[$t,stat] R[$t,ls] R[$t,unlink] R[$t,small] <<<"$out"
    echo "    create/s stat/s ls-lR-s unlink/s small/s: $out"
    rm -rf "$d/meta"
done

echo
printf '%-22s %12s %12s %12s %10s %10s  %s\n' "" raidfs mergerfs raw "vs merger" "vs raw" "goal"
row() { # key label higher-is-better goal
    local k="$1" label="$2" hib="$3" goal="$4"
    local a="${R[raidfs,$k]}" m="${R[mergerfs,$k]}" w="${R[raw,$k]}"
    local rm rw
    if [ "$hib" = 1 ]; then
        rm=$(awk -v a="$a" -v b="$m" 'BEGIN { printf "%.2fx", a / b }')
        rw=$(awk -v a="$a" -v b="$w" 'BEGIN { printf "%.2fx", a / b }')
    else
        rm=$(awk -v a="$a" -v b="$m" 'BEGIN { printf "%.2fx", b / a }')
        rw=$(awk -v a="$a" -v b="$w" 'BEGIN { printf "%.2fx", b / a }')
    fi
    printf '%-22s %12s %12s %12s %10s %10s  %s\n' "$label" "$a" "$m" "$w" "$rm" "$rw" "$goal"
}
row write "seq write MiB/s" 1 ">= 1.0x mergerfs"
row read "seq read cold MiB/s" 1 ">= 1.5x mergerfs"
row randread "4k randread IOPS" 1 ""
row randwrite "4k randwrite IOPS" 1 ""
row create "create files/s" 1 ">= 2x mergerfs"
row stat "stat files/s" 1 ">= 2x mergerfs"
row ls "ls -lR s (lower better)" 0 ">= 2x mergerfs"
row unlink "unlink files/s" 1 ">= 2x mergerfs"
row small "16 KiB files/s" 1 ""
echo "(ratios: higher is better for raidfs; ls -lR ratios are inverted times)"
awk -v a="${R[raidfs,write]}" -v b="${R[bound,write]}" 'BEGIN {
    printf "seq write bound: data + parity written to the 4 member filesystems at once: %.1f MiB/s of data; raidfs %.2fx of it\n", b, a / b }'
echo "(all members share one disk here, so striping adds no bandwidth and parity costs a third)"
