#!/usr/bin/env bash
# coblk-nbd vs qemu-nbd on the same raw image over a Unix socket and TCP
# loopback, measured with the same client (fio's nbd engine) in the same run:
# 4 KiB random read/write at qd 32 and 1 MiB sequential reads at qd 8.
# Prints IOPS side by side and the ratio. Not a test: never fails on time.
# Usage: bench/run-nbd.sh BUILD_DIR   (NBD_BENCH_SECS=3 NBD_BENCH_DIR=/dev/shm)
set -eu
BUILD=${1:-build}
SECS=${NBD_BENCH_SECS:-3}
DIR=$(mktemp -d "${NBD_BENCH_DIR:-/dev/shm}/nbd-bench.XXXXXX")
COBLK_NBD=$BUILD/tools/nbd/coblk-nbd
PORT=$((30000 + $$ % 20000))
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"' EXIT
fio --enghelp=nbd >/dev/null 2>&1 || { echo "fio has no nbd engine: skipping"; exit 0; }
command -v qemu-nbd >/dev/null || { echo "qemu-nbd missing: skipping"; exit 0; }
img=$DIR/bench.img
qemu-img create -f raw "$img" 256M >/dev/null
qemu-io -f raw -c "write -P 3 0 256M" "$img" >/dev/null

iops() { # uri rw bs qd
    fio --name=b --ioengine=nbd --uri="$1" --rw="$2" --bs="$3" --iodepth="$4" --size=256M \
        --runtime="$SECS" --time_based --output-format=json 2>/dev/null | sed -n "/^{/,\$p" |
        python3 -c 'import json, sys
j = json.load(sys.stdin)["jobs"][0]
print(int(j["write" if "write" in sys.argv[1] else "read"]["iops"]))' "$2"
}

# serve NAME TRANSPORT: starts a server and prints the URI
serve() {
    local sock=$DIR/$1.sock args
    if [ "$2" = unix ]; then args=(-k "$sock"); else args=(-b 127.0.0.1 -p "$PORT"); fi
    if [ "$1" = coblk ]; then
        "$COBLK_NBD" -f raw -t -e 0 "${args[@]}" "$img" &
    else
        qemu-nbd -f raw -t -e 0 "${args[@]}" "$img" &
    fi
    SRV=$!
    sleep 0.5
    if [ "$2" = unix ]; then URI="nbd+unix:///?socket=$sock"; else URI="nbd://127.0.0.1:$PORT/"; fi
}

printf "%-6s %-22s %12s %12s %7s\n" transport workload coblk-nbd qemu-nbd ratio
for tr in unix tcp; do
    for w in "randread 4k 32" "randwrite 4k 32" "read 1M 8"; do
        set -- $w
        serve coblk "$tr"; a=$(iops "$URI" "$1" "$2" "$3"); kill "$SRV"; wait "$SRV" || true
        serve qemu "$tr"; b=$(iops "$URI" "$1" "$2" "$3"); kill "$SRV"; wait "$SRV" || true
        printf "%-6s %-22s %12s %12s %7s\n" "$tr" "$1 $2 qd$3" "$a" "$b" \
               "$(awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.2f", a / b }')"
    done
done
