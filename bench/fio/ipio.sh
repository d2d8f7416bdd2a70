#!/bin/sh
# User-space instructions per I/O of one fio job, from callgrind (no hardware
# counters needed): two runs that differ only in --io_size (N 4 KiB I/Os), and
# (Ir(N2) - Ir(N1)) / (N2 - N1) of the job's thread (--thread), so start-up and
# tear-down cancel out, and fio's main thread (whose periodic work scales with the
# run time, which callgrind stretches) is left out.
#
#   bench/fio/ipio.sh FILE FIO-ARGS...
#   IPIO_N1=20000 IPIO_N2=60000 (defaults) IPIO_QD=32 IPIO_RW=randread
#
# Example (coblk through fio vs fio's io_uring engine on a raw file in tmpfs):
#   so=build/bench/fio/libcoblk-fio.so
#   bench/fio/ipio.sh /dev/shm/raw.img --ioengine=external:$so \
#       --coblk_opts=driver=raw,file.aio=io_uring
#   bench/fio/ipio.sh /dev/shm/raw.img --ioengine=io_uring
set -eu
file=$1
shift
n1=${IPIO_N1:-20000}
n2=${IPIO_N2:-60000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ir() {
    n=$1
    shift
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$tmp/cg.$n" fio --name=job --thread \
        --rw="${IPIO_RW:-randread}" --bs=4k --iodepth="${IPIO_QD:-32}" --direct=1 \
        --norandommap --randrepeat=0 --filename="$file" --io_size=$((n * 4))k \
        --output=/dev/null "$@" >/dev/null 2>"$tmp/log.$n" || { cat "$tmp/log.$n" >&2; exit 1; }
    # the job's thread: the one that ran fio's td_io_queue()
    sed -n 's/^summary: //p' $(grep -l 'td_io_queue' "$tmp/cg.$n"-*)
}
a=$(ir "$n1" "$@")
b=$(ir "$n2" "$@")
echo "$a $b $n1 $n2" | awk '{ printf "%.0f instructions per I/O (Ir %d at %d I/Os, %d at %d)\n",
    ($2 - $1) / ($4 - $3), $1, $3, $2, $4 }'
