#!/bin/bash
# qcow (version 1): images qemu-img makes (plain, over a backing file, and
# compressed by convert -c) read through coblk exactly as qemu-img converts
# them; coblk's writes into them (including over compressed clusters) and
# into images coblk makes read back identically in qemu-img. qemu-img cannot
# check qcow images, so there is no qemu-img check here.
. "$(dirname "$0")/fmt-lib.sh"

qemu-img create -q -f raw "$T/base.raw" 9M
qemu-io -f raw -c "write -P 0x61 0 9M" "$T/base.raw" >/dev/null
qemu-img create -q -f qcow "$T/q0.qcow" 9M
qemu-img create -q -f qcow -b base.raw -F raw "$T/q1.qcow" 9M
for i in 0 1; do
    img=$T/q$i.qcow
    qemu-io -f qcow -c "write -P 0x11 0 64k" -c "write -P 0x22 100352 3072" \
        -c "write -P 0x33 6M 1M" "$img" >/dev/null
    coblk_reads_as_qemu qcow "$img"
    cp "$T/qemu.raw" "$T/exp.raw"
    "$FMTIO" randwrite qcow "$img" $i 32 "$T/exp.raw" || fail "randwrite into q$i"
    qemu_reads_as qcow "$img" "$T/exp.raw"
done

# Compressed clusters: read, and rewritten uncompressed when written to.
# (qemu-img 7.2's convert -c to qcow exits 1 silently after writing the whole
# image, so its status is ignored and its result compared with the source.)
cp "$T/base.raw" "$T/flat.raw"
qemu-io -f raw -c "write -P 0x11 0 64k" -c "write -P 0x22 100352 3072" "$T/flat.raw" >/dev/null
qemu-img convert -c -f raw -O qcow "$T/flat.raw" "$T/z.qcow" || true
coblk_reads_as_qemu qcow "$T/z.qcow"
same_bytes "$T/qemu.raw" "$T/flat.raw"
[ "$(stat -c %s "$T/z.qcow")" -lt 4194304 ] || fail "convert -c wrote no compressed clusters"
cp "$T/qemu.raw" "$T/exp.raw"
"$FMTIO" randwrite qcow "$T/z.qcow" 5 32 "$T/exp.raw" || fail "randwrite into compressed"
qemu_reads_as qcow "$T/z.qcow" "$T/exp.raw"

# coblk's images, plain and over a backing file.
n=0
for opts in "size=9M" "size=9M,backing_file=base.raw,backing_fmt=raw" "size=9437696"; do
    n=$((n + 1))
    img=$T/c$n.qcow
    "$FMTIO" create qcow "$img" "$opts" || fail "create $opts"
    qemu-img convert -f qcow -O raw "$img" "$T/exp.raw"
    "$FMTIO" dump qcow "$img" "$T/coblk.raw"
    same_bytes "$T/coblk.raw" "$T/exp.raw"
    "$FMTIO" randwrite qcow "$img" $((n + 20)) 24 "$T/exp.raw" || fail "randwrite $opts"
    qemu_reads_as qcow "$img" "$T/exp.raw"
    coblk_reads_as_qemu qcow "$img"
done
echo "qcow interop: ok"
