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
[ "$FAILS" -eq 0 ]
