#!/usr/bin/env bash
# Benchmark raidfs-sync side by side with `aws s3 sync` and `rclone sync`
# against the same local S3 server (moto). Not a test: prints times and ratios.
#
# Dataset: 2,000 files of 1-64 KiB in nested directories + 4 files of 64 MiB.
# For each tool: initial sync into an empty bucket, a run with no change, and a
# run after 11 changes (10 small files rewritten, 1 added). Then the time from
# closing a changed file to its object being in the bucket, with the daemon.
#
#   scripts/bench-sync.sh   (BENCH_DIR: where the data goes; BENCH_BIN: a prebuilt binary;
#                            BENCH_JOBS="4 8 16 32": also time the initial sync at those --jobs;
#                            BENCH_VARIANTS="--jobs 8;--multipart-threshold 128MiB": also time
#                            initial syncs with these argument sets (';'-separated), alternating
#                            with aws cli for BENCH_ROUNDS rounds (default 2))
set -euo pipefail
cd "$(dirname "$0")/.."
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_PAGER=""

BENCH_DIR="${BENCH_DIR:-$PWD/target/bench-sync}"
VENV="${RAIDFS_S3_VENV:-$PWD/target/s3-venv}"
mkdir -p "$BENCH_DIR"

if [ -n "${BENCH_BIN:-}" ]; then
    BIN="$BENCH_BIN"
else
    echo "==> building raidfs-sync (release)"
    cargo build --release -p raid-sync --bin raidfs-sync >&2
    BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/raidfs-sync"
fi

command -v aws >/dev/null || { scripts/s3-server.sh install; "$VENV/bin/pip" install --quiet awscli; PATH="$VENV/bin:$PATH"; }
command -v rclone >/dev/null || { apt-get install -y -qq rclone >/dev/null; }

ENDPOINT="$(RAIDFS_S3_RUN="$BENCH_DIR/server" scripts/s3-server.sh start)"
trap 'RAIDFS_S3_RUN="$BENCH_DIR/server" scripts/s3-server.sh stop' EXIT
echo "==> S3 server at $ENDPOINT"

BASE="$BENCH_DIR/base"
if [ ! -f "$BASE/.complete" ]; then
    echo "==> creating dataset in $BASE"
    rm -rf "$BASE"
    "$VENV/bin/python" - "$BASE" <<'PY'
import os, random, sys
base = sys.argv[1]
rng = random.Random(42)
for i in range(2000):
    d = os.path.join(base, f"d{i % 20:02d}", f"s{(i // 20) % 5}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:04d}.dat"), "wb") as f:
        f.write(rng.randbytes(rng.randint(1024, 65536)))
os.makedirs(os.path.join(base, "big"), exist_ok=True)
for i in range(4):
    with open(os.path.join(base, "big", f"big{i}.bin"), "wb") as f:
        f.write(os.urandom(64 << 20))
open(os.path.join(base, ".complete"), "w").close()
PY
fi

change() { # 11 changes: rewrite 10 small files, add one
    local dir="$1"
    for i in 0 1 2 3 4 5 6 7 8 9; do
        head -c 5000 /dev/urandom >"$dir/d0$i/s0/f00$(printf %02d $i).dat"
    done
    head -c 7000 /dev/urandom >"$dir/d00/new-file.dat"
}

now() { date +%s.%N; }
SERVER_PID="$(cat "$BENCH_DIR/server/pid")"
TICK="$(getconf CLK_TCK)"
# CPU seconds (user + system) the S3 server has used so far: if it is close to
# the wall time of a phase, the single Python server process is the bottleneck.
server_cpu() { awk -v t="$TICK" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$SERVER_PID/stat"; }
declare -A T S
bench() { # tool, phase, command...
    local tool="$1" phase="$2"
    shift 2
    local t0 t1 c0 c1
    c0=$(server_cpu)
    t0=$(now)
    "$@" >"$BENCH_DIR/$tool-$phase.log" 2>&1 || { echo "$tool $phase failed; see $BENCH_DIR/$tool-$phase.log" >&2; exit 1; }
    t1=$(now)
    c1=$(server_cpu)
    T[$tool,$phase]=$(echo "$t1 - $t0" | bc -l)
    S[$tool,$phase]=$(echo "$c1 - $c0" | bc -l)
    printf '  %-12s %-10s %7.2f s   (server CPU %6.2f s)\n' "$tool" "$phase" "${T[$tool,$phase]}" "${S[$tool,$phase]}"
}

run_tool() {
    local tool="$1"
    local dir="$BENCH_DIR/data-$tool" bucket="bench-$tool-$RANDOM"
    rm -rf "$dir" && cp -a "$BASE" "$dir" && rm -f "$dir/.complete"
    aws --endpoint-url "$ENDPOINT" s3api create-bucket --bucket "$bucket" >/dev/null
    case "$tool" in
    raidfs-sync)
        local st="$BENCH_DIR/raidfs-sync.state"
        rm -f "$st"
        cmd=("$BIN" --bucket "$bucket" --endpoint-url "$ENDPOINT" --once --no-progress --state "$st" "$dir")
        ;;
    aws)
        cmd=(aws --endpoint-url "$ENDPOINT" s3 sync --delete --only-show-errors "$dir" "s3://$bucket/")
        ;;
    rclone)
        cmd=(env -u AWS_CA_BUNDLE RCLONE_CONFIG_B_TYPE=s3 RCLONE_CONFIG_B_PROVIDER=Other
            RCLONE_CONFIG_B_ENDPOINT="$ENDPOINT" RCLONE_CONFIG_B_ACCESS_KEY_ID=test
            RCLONE_CONFIG_B_SECRET_ACCESS_KEY=test RCLONE_CONFIG_B_REGION=us-east-1
            rclone sync "$dir" "b:$bucket")
        ;;
    esac
    bench "$tool" initial "${cmd[@]}"
    bench "$tool" no-change "${cmd[@]}"
    change "$dir"
    bench "$tool" changes "${cmd[@]}"
}

echo "==> runs"
for tool in raidfs-sync aws rclone; do run_tool "$tool"; done

echo "==> change latency (daemon, file closed -> object visible)"
LAT_DIR="$BENCH_DIR/latency" LAT_BUCKET="bench-latency-$RANDOM"
rm -rf "$LAT_DIR" "$BENCH_DIR/latency.state" && mkdir -p "$LAT_DIR"
"$BIN" --bucket "$LAT_BUCKET" --endpoint-url "$ENDPOINT" --create-bucket --no-progress \
    --state "$BENCH_DIR/latency.state" "$LAT_DIR" >"$BENCH_DIR/latency.log" 2>&1 &
DAEMON=$!
sleep 2
LAT=$("$VENV/bin/python" - "$ENDPOINT" "$LAT_BUCKET" "$LAT_DIR" <<'PY'
import sys, time, boto3
ep, bucket, d = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=ep, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
worst = 0.0
for i in range(5):
    with open(f"{d}/file{i}.txt", "w") as f:
        f.write("x" * 1000)
    t0 = time.time()
    while True:
        try:
            s3.head_object(Bucket=bucket, Key=f"file{i}.txt")
            break
        except Exception:
            if time.time() - t0 > 30:
                sys.exit("change did not arrive within 30 s")
            time.sleep(0.02)
    worst = max(worst, time.time() - t0)
    time.sleep(0.5)
print(f"{worst:.2f}")
PY
)
kill "$DAEMON"; wait "$DAEMON" 2>/dev/null || true
echo "  worst of 5: ${LAT} s (goal: <= 2 s)"

echo
echo "==> summary (seconds; ratio = raidfs-sync / other, lower is better)"
printf '%-10s %12s %8s %8s %14s %14s\n' phase raidfs-sync aws rclone "ratio vs aws" "ratio vs rclone"
for phase in initial no-change changes; do
    r=${T[raidfs-sync,$phase]} a=${T[aws,$phase]} c=${T[rclone,$phase]}
    printf '%-10s %12.2f %8.2f %8.2f %14.2f %14.2f\n' "$phase" "$r" "$a" "$c" \
        "$(echo "$r / $a" | bc -l)" "$(echo "$r / $c" | bc -l)"
done
echo "change latency worst of 5: ${LAT} s"
echo
echo "==> S3 server CPU seconds per phase (one Python process; ~= wall time means it is the bottleneck)"
for phase in initial no-change changes; do
    printf '%-10s %12.2f %8.2f %8.2f\n' "$phase" "${S[raidfs-sync,$phase]}" "${S[aws,$phase]}" "${S[rclone,$phase]}"
done
if [ -n "${BENCH_JOBS:-}" ]; then
    echo
    echo "==> raidfs-sync initial sync by --jobs"
    for j in $BENCH_JOBS; do
        dir="$BENCH_DIR/data-jobs" bucket="bench-jobs-$j-$RANDOM"
        rm -rf "$dir" && cp -a "$BASE" "$dir" && rm -f "$dir/.complete" "$BENCH_DIR/jobs.state"
        aws --endpoint-url "$ENDPOINT" s3api create-bucket --bucket "$bucket" >/dev/null
        bench "jobs-$j" initial "$BIN" --bucket "$bucket" --endpoint-url "$ENDPOINT" --once --no-progress \
            --jobs "$j" --state "$BENCH_DIR/jobs.state" "$dir"
    done
fi
if [ -n "${BENCH_VARIANTS:-}" ]; then
    echo
    echo "==> initial sync: aws cli and raidfs-sync variants, alternating (wall time and server CPU)"
    dir="$BENCH_DIR/data-variants"
    rm -rf "$dir" && cp -a "$BASE" "$dir" && rm -f "$dir/.complete"
    IFS=';' read -r -a variants <<<"$BENCH_VARIANTS"
    for r in $(seq "${BENCH_ROUNDS:-2}"); do
        bucket="bench-var-aws-$r-$RANDOM"
        aws --endpoint-url "$ENDPOINT" s3api create-bucket --bucket "$bucket" >/dev/null
        bench "aws#$r" initial aws --endpoint-url "$ENDPOINT" s3 sync --only-show-errors "$dir" "s3://$bucket/"
        for i in "${!variants[@]}"; do
            bucket="bench-var-$i-$r-$RANDOM"
            aws --endpoint-url "$ENDPOINT" s3api create-bucket --bucket "$bucket" >/dev/null
            rm -f "$BENCH_DIR/variant.state"
            # shellcheck disable=SC2086 # the variant is an argument list
            bench "v$i#$r" initial "$BIN" --bucket "$bucket" --endpoint-url "$ENDPOINT" --once --no-progress \
                --state "$BENCH_DIR/variant.state" ${variants[$i]} "$dir"
        done
    done
    for i in "${!variants[@]}"; do echo "  v$i = ${variants[$i]:-(defaults)}"; done
fi
