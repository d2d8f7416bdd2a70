#!/usr/bin/env bash
# coblk-img next to qemu-img on the same qcow2 image, in the same run:
# convert to raw, to qcow2 and to compressed qcow2 (-c), compare (the image
# against its raw copy) and map. Rounds are interleaved (A B, then B A) and
# each figure is the median of the rounds; the ratio is coblk / qemu wall
# time (< 1: coblk is faster; the issue's goal is <= 0.7). Not a test: it
# never passes or fails on time.
#
#   bash bench/run-convert.sh [build-dir] [image-dir]
#   CONVERT_SIZE_MB=2048 CONVERT_ROUNDS=5 CONVERT_FLAGS="-m 8"
#   CONVERT_CASES="raw qcow2 c compare map" (a subset runs faster)
#
# The source is a CONVERT_SIZE_MB qcow2 image, half of it random data written
# by qemu-io in extents of 64 KiB..1 MiB in a shuffled order (so its host
# layout is fragmented like a used image), the rest never written (sparse).
# Everything lives in image-dir (default /tmp: a disk, so conversions pay for
# the writes as a user's would) and is deleted at the end, even on ^C.
# Before every timed command the script runs `sync` (untimed; the page cache is
# kept, not dropped, so the source stays cached for both tools): the previous
# command's dirty target is written back first instead of in the next one's
# time (a -c target still being written back slowed the compare after it).
# CONVERT_SETTLE=SECONDS also sleeps that long after the sync (default 0): on a
# virtual disk the host may still be writing back or punching holes after the
# guest's sync returns; a settle delay tells whether that lands in the next run.
set -euo pipefail
BUILD=$(realpath "${1:-build}")
DIR=${2:-/tmp}/coblk-convert.$$
SIZE=${CONVERT_SIZE_MB:-2048}
ROUNDS=${CONVERT_ROUNDS:-5}
FLAGS=${CONVERT_FLAGS:--m 8}
CASES=${CONVERT_CASES:-raw qcow2 c compare map}
SETTLE=${CONVERT_SETTLE:-0}
CIMG=$BUILD/tools/img/coblk-img
for t in qemu-img qemu-io python3; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done
"$CIMG" --help | grep -q "qcow2" || { echo "coblk-img has no qcow2 driver"; exit 77; }
mkdir -p "$DIR"
trap 'rm -rf "$DIR"' EXIT INT TERM
cd "$DIR"

# The source image: extents planned front to back (data or hole, 64 KiB..1 MiB
# each, about half data), written in a shuffled order.
echo "building a $SIZE MiB qcow2 image, half random data..." >&2
head -c $((1 << 20)) /dev/urandom >pattern.bin
qemu-img create -q -f qcow2 src.qcow2 ${SIZE}M
python3 - "$SIZE" >cmds.txt <<'PY'
import random, sys
size = int(sys.argv[1]) << 20
r = random.Random(42)
off, ext = 0, []
while off < size:
    n = min(r.randint(1, 16) * 65536, size - off)
    if r.random() < 0.5:
        ext.append((off, n))
    off += n
r.shuffle(ext)
for off, n in ext:
    print(f"write -q -s pattern.bin {off} {n}")
PY
qemu-io -f qcow2 src.qcow2 <cmds.txt >/dev/null
qemu-img convert -f qcow2 -O raw src.qcow2 ref.raw
echo "source: $(qemu-img info --output=json src.qcow2 |
    python3 -c 'import json,sys; i=json.load(sys.stdin); print(i["actual-size"] >> 20)') MiB" \
    "allocated of $SIZE MiB; $(grep -c . cmds.txt) extents" >&2

declare -A W C
# run key command...: appends the wall time and the CPU time (user + sys).
run() {
    local key=$1 t0 t1 u s
    shift
    rm -f out.*
    sync
    sleep "$SETTLE"
    t0=$(date +%s%N)
    /usr/bin/time -f "%U %S" -o time.txt "$@" >/dev/null
    t1=$(date +%s%N)
    read -r u s <time.txt
    W[$key]="${W[$key]:-} $(echo "($t1 - $t0) / 1000000000" | bc -l)"
    C[$key]="${C[$key]:-} $(echo "$u + $s" | bc -l)"
}

median() {
    tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ v[NR] = $1 }
        END { print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# case name -> arguments after the tool name
declare -A ARGS=(
    [raw]="convert $FLAGS -f qcow2 -O raw src.qcow2 out.raw"
    [qcow2]="convert $FLAGS -f qcow2 -O qcow2 src.qcow2 out.qcow2"
    [c]="convert -c $FLAGS -f qcow2 -O qcow2 src.qcow2 out.qcow2"
    [compare]="compare -f qcow2 -F raw src.qcow2 ref.raw"
    [map]="map -f qcow2 --output=json src.qcow2"
)
for ((r = 0; r < ROUNDS; r++)); do
    for c in $CASES; do
        if ((r % 2 == 0)); then
            run "qemu $c" qemu-img ${ARGS[$c]}
            run "coblk $c" "$CIMG" ${ARGS[$c]}
        else
            run "coblk $c" "$CIMG" ${ARGS[$c]}
            run "qemu $c" qemu-img ${ARGS[$c]}
        fi
    done
    echo "round $((r + 1))/$ROUNDS done" >&2
done
rm -f out.*

printf "%-34s %9s %9s %6s   %9s %9s %6s\n" "case ($SIZE MiB, median of $ROUNDS)" "qemu wall" \
    "coblk" "ratio" "qemu cpu" "coblk" "ratio"
for c in $CASES; do
    qw=$(median "${W[qemu $c]}") cw=$(median "${W[coblk $c]}")
    qc=$(median "${C[qemu $c]}") cc=$(median "${C[coblk $c]}")
    printf "%-34s %8.3fs %8.3fs %6.2f   %8.3fs %8.3fs %6.2f\n" "${ARGS[$c]%% src.qcow2*}" \
        "$qw" "$cw" "$(echo "$cw / $qw" | bc -l)" "$qc" "$cc" \
        "$(echo "$cc / ($qc + 0.0001)" | bc -l)"
done
echo "flags: $FLAGS; settle: ${SETTLE} s; load average: $(cut -d' ' -f1-3 /proc/loadavg);" \
    "$(nproc) CPUs"
