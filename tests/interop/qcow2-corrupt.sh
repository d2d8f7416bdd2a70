#!/bin/bash
# qcow2: corrupt images (built from a qemu-img image by poking the header)
# fail to open with a message naming the field, never a crash; a corrupt
# image opens read-only only.
. "$(dirname "$0")/fmt-lib.sh"

base=$T/base.qcow2
qemu-img create -q -f qcow2 "$base" 16M
qemu-io -f qcow2 -c "write -P 0x11 0 1M" "$base" >/dev/null

# case NAME OFFSET HEXBYTES WORDS
case_() {
    cp "$base" "$T/bad.qcow2"
    poke "$T/bad.qcow2" "$2" "$3"
    must_fail_open qcow2 "$T/bad.qcow2" "$4"
}

case_ version 4 00000004 "version 4"
case_ cluster_bits_low 20 00000008 "cluster_bits 8"
case_ cluster_bits_high 20 00000016 "cluster_bits 22"
case_ huge_l1 36 10000000 "L1 table"
case_ l1_past_eof 40 0000100000000000 "outside the file"
case_ l1_unaligned 40 0000000000030008 "not cluster-aligned"
case_ reftable_past_eof 48 0000100000000000 "refcount table"
case_ reftable_unaligned 48 0000000000010010 "not cluster-aligned"
case_ reftable_huge 56 00001000 "refcount table"
case_ snapshots 60 00100000 "nb_snapshots"
case_ snapshot_table_eof 60 00000001 "snapshot table"
case_ incompat_bit 72 0000000000000200 "bit 9"
case_ refcount_order 96 00000007 "refcount_order 7"
case_ header_length 100 00000064 "header_length 100"
case_ crypt 32 00000001 "encrypt"
case_ backing_len 8 00000000000000c8000013a0 "backing file name length 5024"
case_ backing_eof 8 0000000100000000 "backing file name"
# the corrupt bit: read-only works, read-write is refused
cp "$base" "$T/bad.qcow2"
poke "$T/bad.qcow2" 72 0000000000000002
qemu-img convert -U -O raw "$T/bad.qcow2" "$T/q.raw" 2>/dev/null || true
"$FMTIO" dump qcow2 "$T/bad.qcow2" "$T/c.raw" || fail "read-only open of a corrupt image"
"$FMTIO" write qcow2 "$T/bad.qcow2" 0 512 0x22 2>"$T/err" && fail "write to a corrupt image"
grep -q corrupt "$T/err" || fail "corrupt image: $(cat "$T/err")"
echo "ok: corrupt bit"
# an L2 table overlapping the refcount table: the write is refused, the image marked corrupt
cp "$base" "$T/bad.qcow2"
l1=$(od -An -tx1 -j40 -N8 "$T/bad.qcow2" | tr -d ' \n')
poke "$T/bad.qcow2" $((16#$l1)) 8000000000010000
"$FMTIO" write qcow2 "$T/bad.qcow2" 0 512 0x22 2>/dev/null && fail "write through a bad L2"
od -An -tx1 -j79 -N1 "$T/bad.qcow2" | grep -q 02 || fail "corrupt bit not set"
echo "ok: overlap check marks the image corrupt"
