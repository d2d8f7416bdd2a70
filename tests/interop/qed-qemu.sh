#!/bin/bash
# qed: images qemu-img makes (with and without a backing file) read through
# coblk exactly as qemu-img converts them; images coblk makes and writes
# (random partial writes, 16 in flight; small clusters; raw and qed backing
# files) read identically in qemu-img and pass qemu-img check; an image left
# dirty by a crash is repaired and marked clean on the next read-write open;
# change_backing_file rewrites the header as qemu-img expects.
. "$(dirname "$0")/fmt-lib.sh"

# qemu-img's images, plain and over a raw and a qed backing file.
qemu-img create -q -f raw "$T/base.raw" 8M
qemu-io -f raw -c "write -P 0x61 0 8M" "$T/base.raw" >/dev/null
qemu-img create -q -f qed "$T/base.qed" 8M
qemu-io -f qed -c "write -P 0x62 1M 2M" "$T/base.qed" >/dev/null
qemu-img create -q -f qed "$T/q0.qed" 9M
qemu-img create -q -f qed -b base.raw -F raw "$T/q1.qed" 9M
qemu-img create -q -f qed -b base.qed -F qed "$T/q2.qed" 9M
for i in 0 1 2; do
    img=$T/q$i.qed
    qemu-io -f qed -c "write -P 0x11 0 64k" -c "write -P 0x22 100000 3000" \
        -c "write -P 0x33 6M 1M" -c "write -z 2M 64k" "$img" >/dev/null
    coblk_reads_as_qemu qed "$img"
    cp "$T/qemu.raw" "$T/exp.raw"
    "$FMTIO" randwrite qed "$img" $i 32 "$T/exp.raw" || fail "randwrite into q$i"
    qemu_reads_as qed "$img" "$T/exp.raw"
    qemu-img check -q -f qed "$img" || fail "qemu-img check q$i"
done

# coblk's images: default and small clusters, with and without backing files.
# (qemu-img 7.2 refuses table_size=1 images, its own too: "QED table offset is
# invalid"; so the smallest tables here are 2 clusters.)
n=0
for opts in "size=9M" "size=9M,cluster_size=4k,table_size=2" \
            "size=9M,backing_file=base.raw,backing_fmt=raw" \
            "size=9M,backing_file=base.qed,backing_fmt=qed,cluster_size=16k"; do
    n=$((n + 1))
    img=$T/c$n.qed
    "$FMTIO" create qed "$img" "$opts" || fail "create $opts"
    qemu-img check -q -f qed "$img" || fail "qemu-img check new $opts"
    qemu-img convert -f qed -O raw "$img" "$T/exp.raw"
    "$FMTIO" randwrite qed "$img" $((n + 7)) 64 "$T/exp.raw" || fail "randwrite $opts"
    qemu_reads_as qed "$img" "$T/exp.raw"
    qemu-img check -q -f qed "$img" || fail "qemu-img check $opts"
    "$FMTIO" check qed "$img" >/dev/null || fail "coblk check $opts"
    coblk_reads_as_qemu qed "$img"
done

# A crash after writing leaves the image marked dirty; opening it read-write
# checks it and clears the mark.
img=$T/crash.qed
"$FMTIO" create qed "$img" "size=9M" || fail "create crash.qed"
"$FMTIO" crashwrite qed "$img" 5M 70000 0x7e || fail crashwrite
[ "$(od -An -tu1 -j16 -N1 "$img" | tr -d ' ')" = 2 ] || fail "need-check flag not set"
"$FMTIO" write qed "$img" 0 512 0x01 || fail "open dirty read-write"
[ "$(od -An -tu1 -j16 -N1 "$img" | tr -d ' ')" = 0 ] || fail "need-check flag not cleared"
qemu-img check -q -f qed "$img" || fail "qemu-img check after the dirty open"

# change_backing_file: qemu-img follows the new name and format.
cp "$T/base.raw" "$T/other.raw"
"$FMTIO" rebase qed "$T/c3.qed" other.raw raw || fail rebase
qemu-img info -f qed "$T/c3.qed" | grep -q "backing file: other.raw" || fail "rebase name"
coblk_reads_as_qemu qed "$T/c3.qed"
"$FMTIO" rebase qed "$T/c3.qed" "" || fail "drop backing"
qemu-img info -f qed "$T/c3.qed" | grep -q "backing file" && fail "backing file still set"
coblk_reads_as_qemu qed "$T/c3.qed"
echo "qed interop: ok"
