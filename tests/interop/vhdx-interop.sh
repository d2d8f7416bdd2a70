#!/bin/bash
# vhdx interop with Debian's qemu-img / qemu-io (skips with 77 without them):
#  1. dynamic and fixed images qemu-img creates (block_state_zero on/off) and
#     qemu-io writes read back through coblk byte-identical to
#     `qemu-img convert -O raw`;
#  2. images coblk creates (dynamic/fixed, block sizes, log sizes) and writes
#     are identical for `qemu-img compare` to the
#     same writes on a raw file and pass `qemu-img check`;
#  3. coblk writes into qemu's images, qemu writes into coblk's.
# qemu-img 7.2 refuses 4096-byte logical sectors, so those are only tested in
# tests/unit/test-vhdx.c.
set -u
IO=$1
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null || exit 77
D=$(mktemp -d "${COBLK_TEST_DIR:-/tmp}/vhdx-interop.XXXXXX")
trap 'rm -rf "$D"' EXIT
cd "$D" || exit 1
fail() { echo "FAIL: $*" >&2; exit 1; }

writes() { # fmt file
    "$IO" write "$1" "$2" 0 65536 0x5a &&
    "$IO" write "$1" "$2" 9437184 65536 0x33 &&
    "$IO" write "$1" "$2" 73728 4096 0x71 &&
    "$IO" write "$1" "$2" 20967424 4096 0x19 &&
    "$IO" zero "$1" "$2" 9437184 4096
}

# 1. qemu writes, coblk reads (and then writes more; qemu checks).
for sf in dynamic fixed; do
    for bz in on off; do
        rm -f q.vhdx want.raw
        qemu-img create -q -f vhdx -o subformat=$sf,block_state_zero=$bz q.vhdx 20M ||
            fail "qemu-img create $sf"
        qemu-io -f vhdx -c "write -P 0x5a 0 64k" -c "write -P 0x33 9M 64k" \
            -c "write -P 0x71 70k 5k" -c "write -P 0x12 19M 1M" q.vhdx >/dev/null ||
            fail "qemu-io $sf"
        qemu-img convert -O raw q.vhdx want.raw || fail "convert"
        "$IO" dump vhdx q.vhdx got.raw || fail "coblk read of qemu's $sf"
        cmp -s want.raw got.raw || fail "coblk read of qemu's $sf/$bz differs"
        writes vhdx q.vhdx && writes raw want.raw || fail "coblk writes into qemu's $sf"
        qemu-img compare -q -f vhdx -F raw q.vhdx want.raw || fail "compare after coblk writes"
        qemu-img check -q q.vhdx || fail "check after coblk writes into qemu's $sf/$bz"
    done
done

# 2. coblk creates and writes, qemu compares and checks, then writes.
for opts in "subformat=dynamic" "subformat=fixed" "subformat=fixed,block_state_zero=off" \
            "block_size=1M,log_size=2M" "block_size=32M" \
            "subformat=dynamic,block_state_zero=off"; do
    rm -f c.vhdx want.raw
    "$IO" create vhdx c.vhdx "size=20M,$opts" || fail "create $opts"
    "$IO" create raw want.raw "size=20M" || fail "create raw"
    writes vhdx c.vhdx || fail "coblk writes ($opts)"
    writes raw want.raw || fail "raw writes"
    qemu-img compare -q -f vhdx -F raw c.vhdx want.raw || fail "qemu-img compare ($opts)"
    qemu-img check -q c.vhdx || fail "qemu-img check ($opts)"
    qemu-io -f vhdx -c "write -P 0x66 5M 8k" c.vhdx >/dev/null || fail "qemu-io on ($opts)"
    "$IO" write raw want.raw 5242880 8192 0x66 || fail "raw"
    "$IO" dump vhdx c.vhdx got.raw && cmp -s got.raw want.raw || fail "reread ($opts)"
done
qemu-img info c.vhdx | grep -q "file format: vhdx" || fail "qemu-img info"
exit 0
