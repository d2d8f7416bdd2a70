#!/usr/bin/env bash
# The coblk nbd client (drivers/protocol/nbd) against real servers: nbdkit
# (memory and file plugins) and qemu-nbd over a Unix socket and TCP. The
# nbd-check helper writes (32 in flight, FUA), zeroes, trims, flushes, reads
# back and checks block status (also over 4 connections to nbdkit); qemu-io
# then checks the server's copy.
# Usage: nbd-client.sh NBD_CHECK
CHECK=$1
. "$(dirname "$0")/nbd-lib.sh"
need qemu-io qemu-img

# The bytes nbd-check leaves, read by qemu-io through TARGET.
verify() {
    qio "$1" "read -P 0 0 64k" "read -P 0 128k 64k" "read -P 0x42 256k 64k" \
        "read -P 0x5f 3968k 64k" "read -P 0 4032k 64k" "read -P 0x5a 5M 1M" \
        "read -P 0 8M 1M" "read -P 0 32M 1M"
}

if command -v nbdkit >/dev/null; then
    nbdkit -f -U "$T/mem.sock" memory 64M &
    PIDS+=($!)
    wait_sock "$T/mem.sock"
    "$CHECK" "nbd+unix:///?socket=$T/mem.sock" || fail "nbd-check against nbdkit memory"
    verify "nbd+unix:///?socket=$T/mem.sock"
    # nbdkit advertises multi-conn: four sockets to one export
    "$CHECK" "nbd+unix:///?socket=$T/mem.sock" file.connections=4 ||
        fail "nbd-check with 4 connections against nbdkit memory"
    verify "nbd+unix:///?socket=$T/mem.sock"

    truncate -s 64M "$T/file.img"
    nbdkit -f -U "$T/file.sock" file "$T/file.img" &
    PIDS+=($!)
    wait_sock "$T/file.sock"
    "$CHECK" "nbd+unix:///?socket=$T/file.sock" || fail "nbd-check against nbdkit file"
    verify "$T/file.img"
    echo "nbdkit: ok"
else
    echo "nbdkit not installed: skipping its part"
fi

qemu-img create -f raw "$T/q.img" 64M >/dev/null
qemu-nbd -f raw -t -x exp -k "$T/q.sock" "$T/q.img" &
qpid=$!
PIDS+=($qpid)
wait_sock "$T/q.sock"
"$CHECK" "nbd+unix:///exp?socket=$T/q.sock" || fail "nbd-check against qemu-nbd (unix)"
kill "$qpid"
wait_gone "$qpid"
verify "$T/q.img"

# TCP on a port picked from the pid, with the export name in the URL.
port=$((20000 + $$ % 20000))
qemu-img create -f raw "$T/t.img" 64M >/dev/null
qemu-nbd -f raw -t -x exp -b 127.0.0.1 -p "$port" "$T/t.img" &
tpid=$!
PIDS+=($tpid)
for _ in $(seq 100); do
    qemu-io -f raw -r -c "read 0 512" "nbd://127.0.0.1:$port/exp" >/dev/null 2>&1 && break
    sleep 0.05
done
"$CHECK" "nbd://127.0.0.1:$port/exp" || fail "nbd-check against qemu-nbd (tcp)"
kill "$tpid"
wait_gone "$tpid"
verify "$T/t.img"
echo "qemu-nbd: ok"
