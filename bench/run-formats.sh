#!/usr/bin/env bash
# Per-format side-by-side: coblk (coblk-blkbench, qemu-img bench's request
# loop and flags) against QEMU's block layer (qemu-img bench) on the same
# image, for every writable format, in one run: interleaved A/B pairs,
# medians, ratios (coblk IOPS / qemu-img IOPS: above 1 is coblk faster).
#
#   bench/run-formats.sh [BUILD_DIR]
#
# Each row prints the median IOPS of each side, their ratio, and the median
# of the per-pair ratios ("pairs": robust to a machine whose speed drifts).
#
# Rows per format (images made by qemu-img, or by coblk-img with MAKER=coblk;
# both sides use the same image or bytes):
#   seq-read    SEQ_BS requests, SEQ_PASSES passes over a fully written image
#   rand-read   4 KiB requests with a large step (-S RAND_STEP, wrapping to 0:
#               the "random-ish" pattern qemu-img bench can make)
#   seq-write   SEQ_BS requests into a new, empty image (allocating writes)
#   rand-write  4 KiB requests, large step, into a fully written image
#               (in-place overwrites)
# Every write run gets its own fresh copy of the image, made (and synced to
# disk) before the timed run, so that the copy's writeback is not charged to
# a run: a format that makes a header durable at its first write (vhdx, parallels)
# would otherwise write back the whole copy there. Each converted image is
# synced, dropped from the page cache and read once before its rows: how
# qemu-img's driver wrote it (4 KiB at a time for qcow) would otherwise decide
# the page cache's folio sizes, and so the read rows.
# Not a test: figures depend on the machine; run it on an idle one.
#
# Environment: ROWS (default "seq-read rand-read seq-write rand-write"), ROUNDS
# (pairs per row, default 5), FORMATS (default: qcow2 qed
# qcow vdi vpc vhdx vmdk parallels raw), SIZE (image size, default 256M),
# SEQ_BS (default 64k), SEQ_PASSES (write passes, default 4), SEQ_READ_PASSES
# (default 16), RAND_COUNT (4 KiB requests per random write run, default
# 100000), RAND_READ_COUNT (default 500000: a read run of 100000 took about
# 0.1 s), RAND_STEP (default 1052672 = 1 MiB + 4 KiB), DEPTH (queue depth,
# default 16), CACHE (-t for both, default writeback), DIR (where images go,
# default BUILD_DIR/bench-formats), CBENCH (coblk side, default
# BUILD_DIR/bench/coblk-blkbench; "coblk-img bench" takes the same flags),
# AGAINST (qemu: side B is qemu-img bench on the same image, the default;
# raw: side B is coblk on a raw image of the same bytes, so that each row is
# an interleaved A/B of the format against raw), MAKER (qemu: images made by
# qemu-img create/convert, the default; coblk: by coblk-img, whose layout
# can differ: vdi data 1 MiB-aligned instead of right after the map).
set -euo pipefail
build=${1:-build}
rounds=${ROUNDS:-5}
formats=${FORMATS:-"qcow2 qed qcow vdi vpc vhdx vmdk parallels raw"}
size=${SIZE:-256M}
seq_bs=${SEQ_BS:-64k}
seq_passes=${SEQ_PASSES:-4}
seq_read_passes=${SEQ_READ_PASSES:-16}
rand_count=${RAND_COUNT:-100000}
rand_read_count=${RAND_READ_COUNT:-500000}
rand_step=${RAND_STEP:-1052672}
depth=${DEPTH:-16}
cache=${CACHE:-writeback}
dir=${DIR:-$build/bench-formats}
cbench=${CBENCH:-$build/bench/coblk-blkbench}
against=${AGAINST:-qemu}
maker=${MAKER:-qemu}
mk=(qemu-img)
[ "$maker" = coblk ] && mk=("$build/tools/img/coblk-img")

command -v qemu-img >/dev/null || { echo "run-formats: qemu-img not found" >&2; exit 77; }
[ -x "${cbench%% *}" ] || { echo "run-formats: build ${cbench%% *} first" >&2; exit 1; }
mkdir -p "$dir"
trap 'rm -rf "$dir"' EXIT

bytes() { numfmt --from=iec "${1^^}"; }
size_b=$(bytes "$size")
seq_b=$(bytes "$seq_bs")
seq_count=$((size_b / seq_b * seq_passes))
seq_read_count=$((size_b / seq_b * seq_read_passes))

# A raw source of non-zero, incompressible bytes, converted once per format.
head -c "$size_b" /dev/urandom >"$dir/src.raw"
sync "$dir/src.raw" # its writeback would land in the first rows

# IOPS of one run: both tools print "Run completed in X seconds." (3 decimals:
# a run under 0.1 s is flagged, its figure is too coarse).
iops() { # count, then the command
    local n=$1 t
    shift
    t=$("$@" | sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p')
    [ -n "$t" ] || { echo "run-formats: no timing from: $*" >&2; exit 1; }
    awk -v t="$t" 'BEGIN { exit !(t < 0.1) }' && touch "$dir/short"
    awk -v n="$n" -v t="$t" 'BEGIN { if (t > 0) printf "%d\n", n / t; else print 0 }'
}

# Syncs the files, drops them from the page cache and reads them once
# (readahead). As root the whole clean page cache is dropped, else each file
# with POSIX_FADV_DONTNEED (dd iflag=nocache), which can leave some pages
# behind (pages still in per-CPU LRU batches are not invalidated). With the
# per-file drop, qcow's seq-read after qed's rows was 0.74 of raw and 0.99
# alone; with the global drop 0.92 and 0.99 (2026-11-23, noisy machine).
recache() {
    local f
    sync "$@"
    if [ -w /proc/sys/vm/drop_caches ]; then
        echo 1 >/proc/sys/vm/drop_caches
    else
        for f in "$@"; do dd if="$f" iflag=nocache count=0 status=none; done
    fi
    for f in "$@"; do cat "$f" >/dev/null; done
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# Create options: vpc keeps the exact size (no CHS rounding), so that a pass
# of SEQ_BS requests ends at the end of the disk on both sides.
fmt_opts() { [ "$1" = vpc ] && echo "-o force_size=on"; true; }

# One run of side A (coblk) or B (qemu-img) of a row.
# run SIDE FMT KIND: prints the IOPS.
run() {
    local side=$1 fmt=$2 kind=$3 img args count
    local tool=("qemu-img" "bench")
    [ "$side" = A ] && read -r -a tool <<<"$cbench"
    if [ "$side" = B ] && [ "$against" = raw ]; then
        read -r -a tool <<<"$cbench"
        fmt=raw
    fi
    case $kind in
    seq-read) img=$dir/full.$fmt; count=$seq_read_count; args=(-s "$seq_b") ;;
    rand-read) img=$dir/full.$fmt; count=$rand_read_count; args=(-s 4096 -S "$rand_step") ;;
    seq-write)
        img=$dir/w.$fmt
        rm -f "$img"
        "${mk[@]}" create -q -f "$fmt" $(fmt_opts "$fmt") "$img" "$size_b" >/dev/null
        count=$seq_count
        args=(-w -s "$seq_b")
        ;;
    rand-write)
        img=$dir/w.$fmt
        rm -f "$img"
        cp --sparse=always "$dir/full.$fmt" "$img"
        sync "$img"
        count=$rand_count
        args=(-w -s 4096 -S "$rand_step")
        ;;
    esac
    iops "$count" "${tool[@]}" -f "$fmt" -t "$cache" -d "$depth" -c "$count" "${args[@]}" "$img"
}

row() { # fmt kind
    local ra=() rb=() r ma mb
    for ((r = 1; r <= rounds; r++)); do
        if ((r % 2)); then
            ra+=("$(run A "$1" "$2")"); rb+=("$(run B "$1" "$2")")
        else
            rb+=("$(run B "$1" "$2")"); ra+=("$(run A "$1" "$2")")
        fi
    done
    ma=$(printf '%s\n' "${ra[@]}" | median)
    mb=$(printf '%s\n' "${rb[@]}" | median)
    # The median of the ratios of each pair's two runs (taken back to back, so
    # a slow minute of the machine slows both) next to the ratio of the medians.
    mp=$(for ((r = 0; r < rounds; r++)); do
        awk -v a="${ra[r]}" -v b="${rb[r]}" 'BEGIN { printf "%.4f\n", b ? a / b : 0 }'
    done | median)
    printf '%-10s %-11s %10d %10d %6.2f %6.2f\n' "$1" "$2" "$ma" "$mb" \
        "$(awk -v a="$ma" -v b="$mb" 'BEGIN { print b ? a / b : 0 }')" "$mp"
}

vs="qemu-img bench"
[ "$against" = raw ] && vs="coblk on a raw image of the same bytes"
echo "coblk ($cbench) vs $vs: $size images, queue depth $depth, cache $cache,"
echo "seq $seq_bs x $seq_read_count (reads) / $seq_count (writes)," \
     "random 4 KiB x $rand_read_count (reads) / $rand_count (writes) step $rand_step;" \
     "median of $rounds interleaved pairs"
echo "machine: $(nproc) cores, $(uname -r); $(qemu-img --version | head -1); images made by ${mk[0]##*/}"
if [ "$against" = raw ]; then
    qemu-img convert -q -f raw -O raw "$dir/src.raw" "$dir/full.raw"
    recache "$dir/full.raw"
    printf '%-10s %-11s %10s %10s %6s %6s\n' format row "coblk IOPS" "raw IOPS" ratio pairs
else
    printf '%-10s %-11s %10s %10s %6s %6s\n' format row "coblk IOPS" "qemu IOPS" ratio pairs
fi
for fmt in $formats; do
    [ "$against" = raw ] && [ "$fmt" = raw ] && continue
    "${mk[@]}" convert -q -f raw -O "$fmt" $(fmt_opts "$fmt") "$dir/src.raw" "$dir/full.$fmt"
    if [ "$against" = raw ]; then
        recache "$dir/full.$fmt" "$dir/full.raw"
    else
        recache "$dir/full.$fmt"
    fi
    for kind in ${ROWS:-seq-read rand-read seq-write rand-write}; do
        row "$fmt" "$kind"
    done
    rm -f "$dir/full.$fmt" "$dir/w.$fmt"
done
if [ -e "$dir/short" ]; then
    echo "note: some runs took under 0.1 s: raise SIZE, SEQ_PASSES or RAND_COUNT"
fi
