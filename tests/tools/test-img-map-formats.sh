#!/usr/bin/env bash
# coblk-img map --output=json equals qemu-img's for images qemu-img made and
# qemu-io wrote, for every format both know (unallocated ranges are "present"
# only in formats that cannot have a backing file, as in qemu-img).
. "$(dirname "$0")/lib.sh"

for fmt in vdi vpc vmdk qcow2 qed parallels qcow; do
    if ! "$CIMG" create -q -f "$fmt" probe.$fmt 1M >/dev/null 2>&1; then
        echo "skip: coblk-img cannot create $fmt yet"
        continue
    fi
    qemu-img create -q -f "$fmt" m.$fmt 16M
    qemu-io -f "$fmt" -c "write -P 0x11 0 64k" -c "write -P 0x22 5M 4k" \
        -c "write -z 9M 1M" m.$fmt >/dev/null
    qemu-img map --output=json -f "$fmt" m.$fmt >want.json
    "$CIMG" map --output=json -f "$fmt" m.$fmt >got.json
    same_output "map --output=json of a $fmt image" want.json got.json
done
# qcow2 with the cases map has to tell apart: a backing chain of depth 3,
# compressed clusters, zero clusters (with and without a host cluster),
# subclusters (extended_l2) partly written, zeroed and discarded. coblk-img
# map (JSON and human) and coblk-io -c map equal qemu-img map / qemu-io -c
# map, also where both refuse the human format (compressed clusters).
qemu-img create -q -f qcow2 -o cluster_size=64k base.qcow2 16M
qemu-io -f qcow2 -c "write -P 1 0 1M" -c "write -P 2 8M 512k" base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
qemu-io -f qcow2 -c "write -c -P 3 2M 128k" -c "write -z 512k 128k" -c "write -P 6 3M 64k" \
    -c "write -z -u 3M 64k" mid.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o extended_l2=on -b mid.qcow2 -F qcow2 top.qcow2
qemu-io -f qcow2 -c "write -P 4 4k 8k" -c "write -z 8M 64k" -c "write -P 5 12M 3k" \
    -c "discard 2M 64k" -c "write -c -P 7 14M 64k" top.qcow2 >/dev/null
for f in base mid top; do
    qemu-img map --output=json $f.qcow2 >want.json
    "$CIMG" map --output=json $f.qcow2 >got.json
    same_output "map --output=json of qcow2 chain layer $f" want.json got.json
    qemu-img map $f.qcow2 >want.txt 2>want.err
    "$CIMG" map $f.qcow2 >got.txt 2>got.err
    sed -i 's/^coblk-img: /qemu-img: /' got.err
    same_output "map (human) of qcow2 chain layer $f" want.txt got.txt
    same_output "map (human) errors of qcow2 chain layer $f" want.err got.err
    qemu-io -r -f qcow2 -c map $f.qcow2 >want.io 2>&1
    "$CIO" -r -f qcow2 -c map $f.qcow2 >got.io 2>&1
    same_output "qemu-io -c map of qcow2 chain layer $f" want.io got.io
done
[ "$FAILS" -eq 0 ]
