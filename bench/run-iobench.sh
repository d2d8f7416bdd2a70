#!/bin/sh
# Side-by-side benchmark: coblk's I/O engines against fio's matching engines,
# 4 KiB random reads, measured in the same run with A/B interleaving.
#
#   bench/run-iobench.sh [BUILD_DIR]
#
# Environment:
#   IOBENCH_DIR     directory for the test file (default: BUILD_DIR). Must be on
#                   a disk file system that accepts O_DIRECT (not tmpfs).
#   IOBENCH_SIZE_MB file size in MiB (default 256)
#   IOBENCH_SECS    seconds per run (default 5)
#   IOBENCH_ROUNDS  A/B rounds per configuration (default 3); the table shows means
#   IOBENCH_QDS     queue depths (default "1 32")
#   IOBENCH_ENGINES coblk engines (default "io_uring native threads")
#   IOBENCH_BUFFERED=1  buffered I/O instead of O_DIRECT
#
# Engine pairs: io_uring <-> fio io_uring, native <-> fio libaio,
# threads <-> fio psync with numjobs=QD (one blocking thread per request).
set -eu

build=${1:-build}
bench="$build/bench/coblk-iobench"
dir=${IOBENCH_DIR:-$build}
size_mb=${IOBENCH_SIZE_MB:-256}
secs=${IOBENCH_SECS:-5}
rounds=${IOBENCH_ROUNDS:-3}
qds=${IOBENCH_QDS:-1 32}
engines=${IOBENCH_ENGINES:-io_uring native threads}
buffered=${IOBENCH_BUFFERED:-0}

if [ ! -x "$bench" ]; then
    echo "run-iobench: $bench not built (ninja -C $build)" >&2
    exit 1
fi
if ! command -v fio >/dev/null 2>&1; then
    echo "run-iobench: fio not found" >&2
    exit 77
fi

file="$dir/coblk-iobench.img"
direct=1
bflag=
if [ "$buffered" = 1 ]; then
    direct=0
    bflag=-B
fi

# Lay the file out with real data once (holes would read without I/O).
want=$((size_mb * 1024 * 1024))
have=$(stat -c %s "$file" 2>/dev/null || echo 0)
if [ "$have" != "$want" ]; then
    echo "creating $file ($size_mb MiB)" >&2
    fio --name=prep --filename="$file" --size="${size_mb}m" --rw=write --bs=1m \
        --ioengine=psync --direct=0 --end_fsync=1 >/dev/null
fi
if [ "$direct" = 1 ] && ! dd if="$file" of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null; then
    echo "run-iobench: $dir does not support O_DIRECT; set IOBENCH_DIR" >&2
    exit 77
fi

fio_engine() {
    case $1 in
    io_uring) echo io_uring ;;
    native) echo libaio ;;
    threads) echo psync ;;
    esac
}

# Prints the IOPS of one fio run: engine qd.
run_fio() {
    fe=$(fio_engine "$1")
    if [ "$fe" = psync ]; then
        depth="--iodepth=1 --numjobs=$2 --group_reporting"
    else
        depth="--iodepth=$2"
    fi
    # shellcheck disable=SC2086 # $depth is several options
    fio --name=iobench --filename="$file" --rw=randread --bs=4k --direct="$direct" \
        --ioengine="$fe" $depth --runtime="$secs" --time_based --norandommap \
        --randrepeat=0 --minimal | awk -F';' '{ printf "%d\n", $8 }'
}

# Prints the IOPS of one coblk run: engine qd.
run_coblk() {
    # shellcheck disable=SC2086 # $bflag is empty or one option
    "$bench" -f "$file" -e "$1" -q "$2" -b 4096 -t "$secs" $bflag |
        sed -n 's/.* iops=\([0-9]*\).*/\1/p'
}

printf '4 KiB random reads, %s, %s MiB file in %s, %ss x %s rounds (A/B interleaved)\n' \
    "$([ "$direct" = 1 ] && echo O_DIRECT || echo buffered)" "$size_mb" "$dir" "$secs" "$rounds"
printf '%-9s %-6s %4s %12s %12s %7s   %s\n' engine fio qd coblk_iops fio_iops ratio \
    "per-round coblk/fio"
for qd in $qds; do
    for e in $engines; do
        c_sum=0
        f_sum=0
        detail=
        r=1
        while [ "$r" -le "$rounds" ]; do
            # Alternate which side goes first so drift hits both equally.
            if [ $((r % 2)) = 1 ]; then
                c=$(run_coblk "$e" "$qd")
                f=$(run_fio "$e" "$qd")
            else
                f=$(run_fio "$e" "$qd")
                c=$(run_coblk "$e" "$qd")
            fi
            c_sum=$((c_sum + c))
            f_sum=$((f_sum + f))
            detail="$detail $c/$f"
            r=$((r + 1))
        done
        printf '%-9s %-6s %4s %12d %12d %7s  %s\n' "$e" "$(fio_engine "$e")" "$qd" \
            $((c_sum / rounds)) $((f_sum / rounds)) \
            "$(awk -v a="$c_sum" -v b="$f_sum" 'BEGIN { printf "%.2f", b ? a / b : 0 }')" \
            "$detail"
    done
done
