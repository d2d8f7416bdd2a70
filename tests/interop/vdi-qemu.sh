#!/bin/bash
# vdi: images qemu-img makes (dynamic, static) read through coblk exactly as
# qemu-img converts them; images coblk makes and writes (random partial
# writes, 16 in flight) read identically in qemu-img and pass qemu-img check;
# discard and compact release blocks and shrink the file and stay valid.
. "$(dirname "$0")/fmt-lib.sh"

for sub in off on; do
    img=$T/q-$sub.vdi
    qemu-img create -q -f vdi -o static=$sub "$img" 5M
    qemu-io -f vdi -c "write -P 0x11 0 64k" -c "write -P 0x22 1049088 3072" \
        -c "write -P 0x33 4M 1M" "$img" >/dev/null
    coblk_reads_as_qemu vdi "$img"
    # coblk writes into qemu's image; qemu still agrees and checks it clean.
    cp "$T/qemu.raw" "$T/exp.raw"
    "$FMTIO" randwrite vdi "$img" 7 32 "$T/exp.raw" || fail "randwrite static=$sub"
    qemu_reads_as vdi "$img" "$T/exp.raw"
    qemu-img check -q -f vdi "$img" || fail "qemu-img check static=$sub"
done

for sub in off on; do
    img=$T/c-$sub.vdi
    "$FMTIO" create vdi "$img" "size=9M,static=$sub" || fail "create static=$sub"
    qemu-img check -q -f vdi "$img" || fail "qemu-img check of a new image"
    truncate -s 9M "$T/exp.raw"
    : > "$T/exp.raw"; truncate -s 9M "$T/exp.raw"
    "$FMTIO" randwrite vdi "$img" 42 64 "$T/exp.raw" || fail "randwrite"
    qemu_reads_as vdi "$img" "$T/exp.raw"
    qemu-img check -q -f vdi "$img" || fail "qemu-img check after writes static=$sub"
    "$FMTIO" check vdi "$img" >/dev/null || fail "coblk check static=$sub"
    coblk_reads_as_qemu vdi "$img"
done

# Discard releases whole blocks at once: the file shrinks and stays valid.
img=$T/d.vdi
"$FMTIO" create vdi "$img" "size=6M"
: > "$T/exp.raw"; truncate -s 6M "$T/exp.raw"
"$FMTIO" write vdi "$img" 0 6291456 0x5a
fill_range "$T/exp.raw" 0 6291456 0x5a
before=$(stat -c %s "$img")
"$FMTIO" discard vdi "$img" 1048576 2097152 || fail discard
zero_range "$T/exp.raw" 1048576 2097152
after=$(stat -c %s "$img")
[ "$after" -eq $((before - 2097152)) ] || fail "discard: file $before -> $after bytes"
qemu_reads_as vdi "$img" "$T/exp.raw"
qemu-img check -q -f vdi "$img" || fail "qemu-img check after discard"

# Compact: blocks that became zero are released and the file shrinks.
"$FMTIO" write vdi "$img" 4194304 1048576 0 || fail "zero write"
zero_range "$T/exp.raw" 4194304 1048576
before=$(stat -c %s "$img")
"$FMTIO" compact vdi "$img" || fail compact
after=$(stat -c %s "$img")
[ "$after" -eq $((before - 1048576)) ] || fail "compact: file $before -> $after bytes"
qemu_reads_as vdi "$img" "$T/exp.raw"
qemu-img check -q -f vdi "$img" || fail "qemu-img check after compact"
echo "vdi interop: ok"
