#!/bin/bash
# Differencing vhdx (skips with 77 without qemu-img / qemu-io): a child that
# coblk-img creates over a parent qemu-img made and qemu-io wrote, written by
# coblk (partial blocks, a whole block, zeroes), flattens with
# `coblk-img convert -O raw` to the parent's content with the same writes
# applied to a raw copy; qemu-img check of the parent stays clean. qemu-img
# refuses differencing vhdx, so the child itself is only read by coblk.
set -u
IO=$1
IMG=$2
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null || exit 77
D=$(mktemp -d "${COBLK_TEST_DIR:-/tmp}/vhdx-diff.XXXXXX")
trap 'rm -rf "$D"' EXIT
cd "$D" || exit 1
fail() { echo "FAIL: $*" >&2; exit 1; }

writes() { # fmt file
    "$IO" write "$1" "$2" 4096 8192 0x5a &&
    "$IO" write "$1" "$2" 8388608 8388608 0x33 &&
    "$IO" write "$1" "$2" 8384512 12288 0x71 &&
    "$IO" write "$1" "$2" 20967424 4096 0x19 &&
    "$IO" zero "$1" "$2" 1048576 65536
}

for bs in 8M 1M; do
    rm -f parent.vhdx child.vhdx want.raw got.raw
    qemu-img create -q -f vhdx -o block_size=$bs parent.vhdx 20M || fail "qemu-img create"
    qemu-io -f vhdx -c "write -P 0x12 0 20M" -c "write -P 0x13 5M 3M" parent.vhdx >/dev/null ||
        fail "qemu-io"
    qemu-img convert -O raw parent.vhdx want.raw || fail "convert parent"
    "$IMG" create -q -f vhdx -b parent.vhdx -F vhdx child.vhdx || fail "coblk-img create -b"
    "$IMG" convert -O raw child.vhdx got.raw || fail "convert the new child"
    cmp -s want.raw got.raw || fail "the new child ($bs) does not read as its parent"
    writes vhdx child.vhdx || fail "coblk writes into the child"
    writes raw want.raw || fail "raw writes"
    "$IMG" convert -O raw child.vhdx got.raw || fail "convert the child"
    cmp -s want.raw got.raw || fail "the flattened child ($bs) differs"
    "$IMG" check -q child.vhdx || fail "coblk-img check of the child"
    qemu-img check -q parent.vhdx || fail "qemu-img check of the parent ($bs)"
    qemu-img info child.vhdx >/dev/null 2>&1 && echo "note: qemu-img opened a differencing vhdx"
    # The parent written again: the child is refused with the linkage error.
    qemu-io -f vhdx -c "write 0 512" parent.vhdx >/dev/null || fail "qemu-io parent"
    out=$("$IMG" info child.vhdx 2>&1) && fail "a child of a changed parent opened"
    case $out in *DataWriteGuid*) ;; *) fail "linkage error missing: $out" ;; esac
done
exit 0
