#!/usr/bin/env bash
# coblk-nbd (tools/nbd) served to real NBD clients: qemu-io and qemu-img
# (nbd+unix and nbd:// over TCP), nbdinfo (--list, --json, --map of
# base:allocation and qemu:allocation-depth), nbdcopy (both directions),
# several clients at once, a read-only export, systemd socket activation, -s,
# misbehaving clients (nbd-bad-client.py) while others carry on, and writes
# acknowledged after a flush surviving a SIGKILL of the server.
# Usage: nbd-server.sh COBLK_NBD
NBD=$1
. "$(dirname "$0")/nbd-lib.sh"
need qemu-io qemu-img python3
HERE=$(dirname "$0")

img=$T/a.img
qemu-img create -f raw "$img" 64M >/dev/null
qio "$img" "write -P 0x11 0 1M" "write -P 0x22 10M 2M" "write -P 0x33 63M 1M"

# start_server ARGS...: coblk-nbd --fork returns once it listens.
start_server() {
    rm -f "$T/pid"
    "$NBD" --fork --pid-file="$T/pid" "$@" || fail "coblk-nbd $* did not start"
    SPID=$(cat "$T/pid")
    PIDS+=("$SPID")
}

sock=$T/s.sock
start_server -f raw -k "$sock" -t -e 0 -x exp -D "interop disk" -A --discard=unmap "$img"
main_pid=$SPID
url="nbd+unix:///exp?socket=$sock"

# qemu-io: reads, FUA write, zero with and without unmap, discard, aio writes, flush
qio "$url" "read -P 0x11 0 1M" "read -P 0x22 10M 2M" "read -P 0 20M 1M" "read -P 0x33 63M 1M"
qio "$url" "write -f -P 0x55 40M 64k" "write -z 10M 64k" "write -z -u 11M 1M" \
    "discard 62M 1M" "aio_write -P 0x61 44M 64k" "aio_write -P 0x62 45M 64k" \
    "aio_write -P 0x63 46M 64k" "aio_write -P 0x64 47M 64k" "aio_flush" "flush" \
    "read -P 0x55 40M 64k" "read -P 0 10M 64k" "read -P 0x22 10752k 256k" "read -P 0 11M 1M" \
    "read -P 0 62M 1M" "read -P 0x63 46M 64k"
# several clients at once
cpids=()
for i in 1 2 3 4; do
    qio "$url" "write -P 0x7$i $((20 + i))M 1M" "read -P 0x7$i $((20 + i))M 1M" &
    cpids+=($!)
done
for p in "${cpids[@]}"; do
    wait "$p" || fail "a concurrent qemu-io client failed"
done

if command -v nbdinfo >/dev/null; then
    nbdinfo --list "nbd+unix:///?socket=$sock" >"$T/list"
    grep -q 'export="exp"' "$T/list" || fail "nbdinfo --list: $(cat "$T/list")"
    grep -q 'description: interop disk' "$T/list" || fail "no description in --list"
    nbdinfo --json "$url" >"$T/json"
    python3 - "$T/json" <<'PY' || fail "nbdinfo --json: $(cat "$T/json")"
import json, sys
e = json.load(open(sys.argv[1]))["exports"][0]
assert e["export-size"] == 64 << 20, e
assert e["can_flush"] and e["can_fua"] and e["can_trim"] and e["can_zero"], e
assert e["can_multi_conn"] and e["can_df"] and not e["is_read_only"], e
assert "base:allocation" in e["contexts"] and "qemu:allocation-depth" in e["contexts"], e
assert e["block_size_maximum"] == 32 << 20, e
PY
    nbdinfo --map "$url" >"$T/map"
    # kind_at OFFSET: the base:allocation description of the extent holding OFFSET
    kind_at() {
        awk -v o="$1" '$1 <= o && o < $1 + $2 { $1 = $2 = $3 = ""; print; exit }' "$T/map"
    }
    [[ "$(kind_at 0)" == *data* ]] || fail "map at 0: $(cat "$T/map")"
    [[ "$(kind_at $((11 * 1048576)))" == *zero* ]] || fail "map at 11M: $(cat "$T/map")"
    [[ "$(kind_at $((30 * 1048576)))" == *hole*zero* ]] ||
        fail "map at 30M: $(cat "$T/map")"
    nbdinfo --map=qemu:allocation-depth "$url" >"$T/depth" || fail "allocation-depth map"
    [ -s "$T/depth" ] || fail "empty allocation-depth map"
    echo "nbdinfo: ok"
fi

# qemu-img: sparse convert from NBD, check, compare against the live export
qemu-img convert -f raw -O qcow2 "$url" "$T/out.qcow2"
qemu-img check "$T/out.qcow2" >/dev/null || fail "qemu-img check of the converted image"
qemu-img compare -f raw -F qcow2 "$url" "$T/out.qcow2" >/dev/null || fail "compare after convert"
used=$(qemu-img info --output=json "$T/out.qcow2" | python3 -c \
       'import json,sys; print(json.load(sys.stdin)["actual-size"])')
[ "$used" -lt $((32 * 1048576)) ] || fail "convert from NBD was not sparse ($used bytes)"

if command -v nbdcopy >/dev/null; then
    nbdcopy "$url" "$T/copy.raw"
    qemu-img compare -f raw -F raw "$url" "$T/copy.raw" >/dev/null || fail "nbdcopy from NBD"
    # into an export over TCP, then the server flushes at exit
    port=$((20000 + $$ % 20000))
    qemu-img create -f raw "$T/b.img" 64M >/dev/null
    start_server -f raw -b 127.0.0.1 -p "$port" -x "" "$T/b.img"
    nbdcopy "$T/copy.raw" "nbd://127.0.0.1:$port/" || fail "nbdcopy into coblk-nbd over TCP"
    wait_gone "$SPID" # without -t the server exits after its last client
    cmp "$T/copy.raw" "$T/b.img" || fail "nbdcopy into NBD wrote different bytes"
    echo "nbdcopy: ok"
fi

# misbehaving clients; the server keeps serving others and the data stays intact
python3 "$HERE/nbd-bad-client.py" "$sock" || fail "misbehaving clients"
qio "$url" "read -P 0x11 0 1M" "read -P 0x55 40M 64k" "read -P 0x33 63M 1M"
kill -0 "$main_pid" || fail "the server died"

# read-only export, served through systemd socket activation when available
if command -v systemd-socket-activate >/dev/null; then
    qemu-img create -f raw "$T/ro.img" 1M >/dev/null
    qio "$T/ro.img" "write -P 0x12 0 1M"
    systemd-socket-activate -l "$T/ro.sock" "$NBD" -f raw -r -x ro "$T/ro.img" >/dev/null 2>&1 &
    PIDS+=($!)
    wait_sock "$T/ro.sock"
    out=$(qemu-io -r -f raw -c "read -P 0x12 0 1M" "nbd+unix:///ro?socket=$T/ro.sock" 2>&1)
    grep -q "read 1048576/1048576" <<<"$out" || fail "read-only export: $out"
    if qemu-io -f raw -c "write 0 512" "nbd+unix:///ro?socket=$T/ro.sock" >/dev/null 2>&1; then
        fail "a write to a read-only export succeeded"
    fi
    echo "socket activation and read-only: ok"
fi

# --image-opts with writethrough cache, the threads engine, an offset-free raw window
qemu-img create -f raw "$T/io.img" 4M >/dev/null
qio "$T/io.img" "write -P 0x21 0 4M"
start_server --image-opts -k "$T/io.sock" -t --cache=writethrough --aio=threads \
    --detect-zeroes=on "driver=raw,file.driver=file,file.filename=$T/io.img"
qio "nbd+unix:///?socket=$T/io.sock" "read -P 0x21 0 4M" "write -P 0x23 1M 64k"
kill "$SPID"
wait_gone "$SPID"
qio "$T/io.img" "read -P 0x23 1M 64k" "read -P 0x21 0 1M"

# -s: writes go to a temporary qcow2 overlay, the image is untouched
start_server -f raw -s -k "$T/snap.sock" -t "$T/io.img"
qio "nbd+unix:///?socket=$T/snap.sock" "write -P 0x2f 0 1M" "read -P 0x2f 0 1M" \
    "read -P 0x21 2M 1M"
kill "$SPID"
wait_gone "$SPID"
qio "$T/io.img" "read -P 0x21 0 1M"

# an acknowledged write after a flush survives a SIGKILL of the server
qio "$url" "write -P 0x99 50M 1M" "flush"
kill -9 "$main_pid"
wait_gone "$main_pid"
qio "$img" "read -P 0x99 50M 1M" "read -P 0x55 40M 64k"
echo "coblk-nbd interop: ok"
