#!/usr/bin/env bash
# The qcow2 speed goals of issue 4, side by side in one run:
#
#   1. 4 KiB random reads of allocated clusters, qd 32:
#      a. qcow2 >= 0.95x coblk raw on the same medium (fio + coblk engine, randread)
#      b. >= 1.3x qemu-img bench on the same image (same flags both sides; qemu-img
#         bench has no random mode, so a large odd step -S scatters the reads)
#   2. reads through a backing chain of depth 5 >= 0.9x depth 0 (fio + coblk engine,
#      randread; the data lives in the bottom image, empty qcow2 layers above)
#   3. allocating writes into an empty image, qd 32, >= 1.5x `qemu-img bench -w`:
#      a. 4 KiB "random" (a scattering step, so each write allocates a new cluster
#         and copies the rest of it), b. 64 KiB sequential
#   4. reads of compressed clusters (an image made by `qemu-img convert -c` from
#      compressible data: files of /usr/lib, every 8th MiB random), coblk-blkbench
#      vs `qemu-img bench`, same flags, qd 32:
#      cseq     64 KiB sequential reads (-S 64k), >= 1x
#      crand    4 KiB reads scattered (-S 1 MiB + 4 KiB) over the whole image
#               (CSIZE_MB, default 256 MiB): the working set is far larger than the
#               decompressed-cluster cache (4 MiB by default), >= 4x
#      crandhot the same on a 2 MiB compressed image: the working set (32 clusters)
#               fits in the cache, so nearly every read is a cache hit, >= 4x
#
#   bash bench/run-qcow2.sh [BUILD_DIR] [IMAGE_DIR]
#
# Every row is an A/B pair run interleaved (A B, then B A in the next round);
# IOPS are medians of the rounds, the ratio is the median of the per-round
# ratios A/B. Not a test: it never passes or fails on time; the table says
# whether each goal was met in this run. Measure on an idle machine: under
# load the ratios say more about the scheduler than about either side.
#
# Environment:
#   ROUNDS=5          pairs per row (the goals want >= 5)
#   QCOW2_QUICK=1     a quick check that the script works (ROUNDS=1, small counts)
#   QCOW2_SIZE_MB     guest size of the read images (default 1024)
#   FIO_SECS          seconds per fio run (default 5)
#   READ_COUNT        requests per qemu-img bench read run (default 500000)
#   ALLOC_COUNT       writes per allocating run (default 20000)
#   QCOW2_ROWS        subset of rows to run: "raw bench chain alloc4k alloc64k cseq crand
#                     crandhot"
#   CSIZE_MB          guest size of the compressed image (default 256; quick 32)
#   COPTS             extra coblk qcow2 options for the compressed rows (coblk side only),
#                     e.g. "compressed-cache-size=0" to measure without the cache
# IMAGE_DIR defaults to /dev/shm (tmpfs: O_DIRECT works, CPU-bound figures);
# pass a directory on a disk to measure there. Images are made there and
# deleted at the end, even on ^C. All coblk sides use cache.direct=on and the
# default I/O engine (io_uring, for backing files too); qemu-img bench runs
# with -t none -i io_uring.
set -euo pipefail
BUILD=$(realpath "${1:-build}")
DIR=${2:-/dev/shm}/coblk-qcow2.$$
QUICK=${QCOW2_QUICK:-0}
if [ "$QUICK" = 1 ]; then
    ROUNDS=${ROUNDS:-1} SIZE=${QCOW2_SIZE_MB:-128} SECS=${FIO_SECS:-1}
    RCOUNT=${READ_COUNT:-20000} ACOUNT=${ALLOC_COUNT:-2000} CSIZE=${CSIZE_MB:-32}
else
    ROUNDS=${ROUNDS:-5} SIZE=${QCOW2_SIZE_MB:-1024} SECS=${FIO_SECS:-5}
    RCOUNT=${READ_COUNT:-500000} ACOUNT=${ALLOC_COUNT:-20000} CSIZE=${CSIZE_MB:-256}
fi
ROWS=${QCOW2_ROWS:-raw bench chain alloc4k alloc64k cseq crand crandhot}
# Reads per run of the compressed rows: two passes over the image (cseq), and about as
# many scattered reads as each side does in a second or two.
CSEQ_COUNT=$((CSIZE * 16 * 2))
CRAND_COUNT=${CRAND_COUNT:-$((QUICK == 1 ? 5000 : 40000))}
COPTS=${COPTS:-}
# coblk side of the `qemu-img bench` rows: coblk-blkbench, qemu-img bench's loop over
# coblk with its flags (the offset wraps modulo the image size, as qemu-img bench's does).
CBENCH=$BUILD/bench/coblk-blkbench
ENGINE=$BUILD/bench/fio/libcoblk-fio.so
SCATTER=$(((1 << 20) + 4096))   # read/write step: 1 MiB + 4 KiB, crosses clusters and L2s
DEPTH=5

for t in qemu-img fio python3; do
    command -v $t >/dev/null || { echo "run-qcow2: $t not found" >&2; exit 77; }
done
for f in "$CBENCH" "$ENGINE"; do
    [ -e "$f" ] || { echo "run-qcow2: build $f first" >&2; exit 1; }
done
"$BUILD/bench/coblk-blkbench" --drivers 2>/dev/null | grep -qw qcow2 ||
    { echo "run-qcow2: this build has no qcow2 driver" >&2; exit 77; }
mkdir -p "$DIR"
trap 'rm -rf "$DIR"' EXIT INT TERM

wants() { [[ " $ROWS " =~ \ ($1)\  ]]; }

# The read images: raw with fio's (non-zero) data, its qcow2 copy (every
# cluster allocated), and a chain of DEPTH empty qcow2 layers over that copy.
if wants 'raw|bench|chain'; then
    echo "run-qcow2: making a $SIZE MiB raw image, its qcow2 copy and a chain of $DEPTH" >&2
    fio --name=prep --filename="$DIR/raw.img" --size=${SIZE}m --rw=write --bs=1m \
        --ioengine=psync --end_fsync=1 >/dev/null
    qemu-img convert -f raw -O qcow2 "$DIR/raw.img" "$DIR/d0.qcow2"
    for ((i = 1; i <= DEPTH; i++)); do
        qemu-img create -q -f qcow2 -b "d$((i - 1)).qcow2" -F qcow2 "$DIR/d$i.qcow2"
    done
fi

# $1 MiB of compressible data into file $2: the files under /usr/lib in a fixed
# order (binaries, libraries, text), with every 8th MiB random (stored uncompressed).
compressible_raw() {
    python3 - "$1" "$2" <<'PY'
import os, random, sys
size, path = int(sys.argv[1]) << 20, sys.argv[2]
rnd = random.Random(4)
with open(path, "wb") as out:
    done = 0
    for root, dirs, files in os.walk("/usr/lib"):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(root, f)
            if done >= size or os.path.islink(p) or not os.path.isfile(p):
                continue
            try:
                data = open(p, "rb").read(size - done)
            except OSError:
                continue
            for i in range(0, len(data), 1 << 20):
                if (done >> 20) % 8 == 7:
                    out.write(rnd.randbytes(1 << 20)); done += 1 << 20
                chunk = data[i:i + (1 << 20)][: size - done]
                out.write(chunk); done += len(chunk)
                if done >= size:
                    break
    out.truncate(size)
PY
}

# The compressed images: CSIZE MiB (cseq, crand) and 2 MiB (crandhot), 64 KiB clusters.
if wants 'cseq|crand'; then
    echo "run-qcow2: making a $CSIZE MiB compressed qcow2 image (qemu-img convert -c)" >&2
    compressible_raw "$CSIZE" "$DIR/craw.img"
    qemu-img convert -c -f raw -O qcow2 "$DIR/craw.img" "$DIR/c.qcow2"
    rm -f "$DIR/craw.img"
fi
if wants crandhot; then
    compressible_raw 2 "$DIR/craw.img"
    qemu-img convert -c -f raw -O qcow2 "$DIR/craw.img" "$DIR/chot.qcow2"
    rm -f "$DIR/craw.img"
fi
# The coblk side of a compressed row: image options, with COPTS (the I/O engine goes
# there too: with --image-opts, -i would be an option of the qcow2 node).
cimg() {
    local o="driver=qcow2${COPTS:+,$COPTS},file.driver=file,file.aio=io_uring"
    echo "--image-opts $o,file.filename=$1"
}

# IOPS of one fio run through the coblk engine: randread 4k qd32 on image $1 with driver $2.
fio_coblk() {
    fio --name=r --filename="$1" --ioengine=external:"$ENGINE" \
        --coblk_opts="driver=$2,cache.direct=on" --direct=1 --rw=randread --bs=4k \
        --iodepth=32 --size=${SIZE}m --time_based --runtime=${SECS} --ramp_time=0.5 \
        --norandommap --randrepeat=0 --minimal | awk -F';' '{ printf "%d\n", $8 }'
}

# IOPS of one `TOOL bench` run (coblk-img and qemu-img print the same line); $1 = count.
iops_bench() {
    local n=$1
    shift
    "$@" | sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p' |
        awk -v n="$n" '{ printf "%d\n", ($1 > 0 ? n / $1 : 0) }'
}

# An allocating-write run: a fresh empty image of $2 bytes, then BENCH -w; $1 = the bench
# command (coblk-blkbench or 'qemu-img bench').
alloc_run() {
    local tool=$1 size=$2
    shift 2
    rm -f "$DIR/w.qcow2"
    qemu-img create -q -f qcow2 "$DIR/w.qcow2" "$size"
    iops_bench "$ACOUNT" $tool -w -f qcow2 -t none -c "$ACOUNT" -d 32 "$@" \
        "$DIR/w.qcow2"
}

median() {
    sort -g | awk '{ v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m }'
}

TABLE=()
# row label goal A-command B-command: ROUNDS interleaved pairs.
row() {
    local label=$1 goal=$2 a=$3 b=$4 ra=() rb=() rr=() x y
    for ((r = 1; r <= ROUNDS; r++)); do
        if ((r % 2)); then
            x=$(eval "$a"); y=$(eval "$b")
        else
            y=$(eval "$b"); x=$(eval "$a")
        fi
        ra+=("$x"); rb+=("$y")
        rr+=("$(awk -v a="$x" -v b="$y" 'BEGIN { printf "%.4f\n", (b > 0 ? a / b : 0) }')")
        echo "  $label round $r/$ROUNDS: A $x B $y" >&2
    done
    local ma mb mr met
    ma=$(printf '%s\n' "${ra[@]}" | median)
    mb=$(printf '%s\n' "${rb[@]}" | median)
    mr=$(printf '%s\n' "${rr[@]}" | median)
    met=$(awk -v r="$mr" -v g="$goal" 'BEGIN { print (r >= g ? "met" : "not met") }')
    TABLE+=("$(printf '%-52s %10.0f %10.0f %6.3f  >= %-4s %s' "$label" "$ma" "$mb" "$mr" \
        "$goal" "$met")")
}

load0=$(cut -d' ' -f1-3 /proc/loadavg)
ALLOC_SIZE=$(((ACOUNT + 1) * SCATTER + (64 << 20)))
BOPTS="-f qcow2 -t none -i io_uring -d 32 -s 4k -S $SCATTER -c $RCOUNT"
CBOPTS="-t none -d 32"
for r in $ROWS; do
    case $r in
    raw) row "1a randread 4k qd32: qcow2 / coblk raw (fio)" 0.95 \
        "fio_coblk $DIR/d0.qcow2 qcow2" "fio_coblk $DIR/raw.img raw" ;;
    bench) row "1b read 4k qd32 -S $SCATTER: coblk / qemu-img" 1.3 \
        "iops_bench $RCOUNT $CBENCH $BOPTS $DIR/d0.qcow2" \
        "iops_bench $RCOUNT qemu-img bench $BOPTS $DIR/d0.qcow2" ;;
    chain) row "2  randread 4k qd32: depth $DEPTH / depth 0 (fio)" 0.9 \
        "fio_coblk $DIR/d$DEPTH.qcow2 qcow2" "fio_coblk $DIR/d0.qcow2 qcow2" ;;
    alloc4k) row "3a alloc write 4k qd32 -S $SCATTER: coblk / qemu-img" 1.5 \
        "alloc_run $CBENCH $ALLOC_SIZE -i io_uring -s 4k -S $SCATTER" \
        "alloc_run 'qemu-img bench' $ALLOC_SIZE -i io_uring -s 4k -S $SCATTER" ;;
    alloc64k) row "3b alloc write 64k seq qd32: coblk / qemu-img" 1.5 \
        "alloc_run $CBENCH $(((ACOUNT + 1) << 16)) -i io_uring -s 64k" \
        "alloc_run 'qemu-img bench' $(((ACOUNT + 1) << 16)) -i io_uring -s 64k" ;;
    cseq) row "4a compressed read 64k seq qd32: coblk / qemu-img" 1 \
        "iops_bench $CSEQ_COUNT $CBENCH $CBOPTS -s 64k -S 64k -c $CSEQ_COUNT \
         \$(cimg $DIR/c.qcow2)" \
        "iops_bench $CSEQ_COUNT qemu-img bench $CBOPTS -i io_uring -s 64k -S 64k -c $CSEQ_COUNT \
         -f qcow2 $DIR/c.qcow2" ;;
    crand) row "4b compressed read 4k, ws ${CSIZE}M > cache: coblk / qemu" 4 \
        "iops_bench $CRAND_COUNT $CBENCH $CBOPTS -s 4k -S $SCATTER -c $CRAND_COUNT \
         \$(cimg $DIR/c.qcow2)" \
        "iops_bench $CRAND_COUNT qemu-img bench $CBOPTS -i io_uring -s 4k -S $SCATTER \
         -c $CRAND_COUNT -f qcow2 $DIR/c.qcow2" ;;
    crandhot) row "4c compressed read 4k, ws 2M in cache: coblk / qemu" 4 \
        "iops_bench $CRAND_COUNT $CBENCH $CBOPTS -s 4k -S $SCATTER -c $CRAND_COUNT \
         \$(cimg $DIR/chot.qcow2)" \
        "iops_bench $CRAND_COUNT qemu-img bench $CBOPTS -i io_uring -s 4k -S $SCATTER \
         -c $CRAND_COUNT -f qcow2 $DIR/chot.qcow2" ;;
    *) echo "run-qcow2: unknown row $r" >&2; exit 1 ;;
    esac
done

echo "qcow2 goals (issue 4): $ROUNDS interleaved pairs per row, medians; $SIZE MiB images in" \
    "${2:-/dev/shm}; fio ${SECS}s per run; $RCOUNT bench reads, $ACOUNT allocating writes;" \
    "compressed rows: $CSIZE MiB image, 64 KiB clusters, $CSEQ_COUNT seq / $CRAND_COUNT" \
    "scattered reads${COPTS:+, coblk options $COPTS}"
printf '%-52s %10s %10s %6s  %-7s %s\n' "row (A / B)" "A IOPS" "B IOPS" ratio goal result
printf '%s\n' "${TABLE[@]}"
echo "machine: $(nproc) CPUs, $(uname -r); load average at start $load0," \
    "at end $(cut -d' ' -f1-3 /proc/loadavg)"
