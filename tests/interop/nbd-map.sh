#!/usr/bin/env bash
# base:allocation from coblk-nbd matches qemu-nbd's on the same images, as
# nbdinfo --map shows them: raw files with holes (SEEK_DATA/SEEK_HOLE of
# the file protocol), and qcow2 images whose data clusters sit over holes of
# the host file (punched clusters, preallocation=metadata, partly written
# clusters), preallocated ones (falloc), a backing chain and zero clusters.
# Usage: nbd-map.sh COBLK_NBD
NBD=$1
. "$(dirname "$0")/nbd-lib.sh"
need qemu-io qemu-img qemu-nbd nbdinfo fallocate python3

q() {
    local fmt=$1 img=$2
    shift 2
    local args=()
    for c in "$@"; do
        args+=(-c "$c")
    done
    qemu-io -f "$fmt" "${args[@]}" "$img" >/dev/null || fail "qemu-io on $img"
}

# host_offset IMG GUEST_OFFSET: where qcow2 stores that guest byte.
host_offset() {
    qemu-img map --output=json "$1" | python3 -c '
import json, sys
off = int(sys.argv[1])
for e in json.load(sys.stdin):
    if e["start"] <= off < e["start"] + e["length"] and "offset" in e:
        print(e["offset"] + off - e["start"]); break
else:
    sys.exit(1)' "$2" || fail "no host offset for $2 in $1"
}

# map SERVER FMT IMG: nbdinfo --map of IMG exported read-only by SERVER.
map() {
    local sock=$T/m.sock pid
    rm -f "$sock"
    "$1" -r -f "$2" -k "$sock" "$3" &
    pid=$!
    PIDS+=("$pid")
    wait_sock "$sock"
    nbdinfo --map "nbd+unix:///?socket=$sock" || fail "nbdinfo --map via $1 on $3"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

compare() {
    local fmt=$1 img=$2
    map qemu-nbd "$fmt" "$img" >"$T/want"
    map "$NBD" "$fmt" "$img" >"$T/got"
    if ! diff -u "$T/want" "$T/got"; then
        fail "base:allocation of $(basename "$img") ($fmt) differs from qemu-nbd's (-want +got)"
    fi
    n=$((n + 1))
}
n=0

# raw: data, a hole, data, zeroes written with write -z, an unaligned tail.
raw=$T/a.raw
truncate -s 4M "$raw"
q raw "$raw" "write -P 1 0 64k" "write -P 2 1M 4k" "write -z 2M 64k" "write -P 3 3145000 100"
compare raw "$raw"
sparse=$T/b.raw
truncate -s 3M "$sparse"
compare raw "$sparse"

# qcow2 with a data cluster whose host cluster is punched out of the file.
punched=$T/p.qcow2
qemu-img create -q -f qcow2 "$punched" 4M
q qcow2 "$punched" "write -P 1 0 64k" "write -P 5 1M 64k" "write -z 2M 64k" "write -P 3 3M 4k"
fallocate -p -o "$(host_offset "$punched" 1048576)" -l 65536 "$punched"
compare qcow2 "$punched"

# qcow2 preallocation=metadata (every cluster mapped, the file mostly holes).
meta=$T/m.qcow2
qemu-img create -q -f qcow2 -o preallocation=metadata "$meta" 4M
q qcow2 "$meta" "write -P 5 1M 4k"
compare qcow2 "$meta"

# qcow2 preallocation=falloc, and a plain one with partly written clusters.
falloc=$T/f.qcow2
qemu-img create -q -f qcow2 -o preallocation=falloc "$falloc" 4M
compare qcow2 "$falloc"
part=$T/w.qcow2
qemu-img create -q -f qcow2 "$part" 4M
q qcow2 "$part" "write -P 3 0 4k" "write -P 4 1M 1M" "write -z 3M 64k"
compare qcow2 "$part"

# a chain: the top's unallocated ranges show the backing file's status.
base=$T/base.qcow2
top=$T/top.qcow2
qemu-img create -q -f qcow2 "$base" 4M
q qcow2 "$base" "write -P 1 0 1M" "write -z 2M 1M"
qemu-img create -q -f qcow2 -b "$base" -F qcow2 "$top" 4M
q qcow2 "$top" "write -P 2 512k 64k" "write -z 3M 64k"
compare qcow2 "$top"

echo "$n passed, 0 failed: coblk-nbd's base:allocation matches qemu-nbd's"
