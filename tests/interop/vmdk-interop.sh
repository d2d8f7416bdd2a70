#!/bin/bash
# vmdk interop with Debian's qemu-img / qemu-io (skips with 77 without them):
#  1. every subformat qemu-img creates and qemu-io writes reads back through
#     coblk byte-identical to `qemu-img convert -O raw`;
#  2. every subformat coblk creates and writes (aligned, unaligned, partial
#     grains, write-zeroes) is identical for `qemu-img compare` to the same
#     writes applied to a raw file, and passes `qemu-img check`;
#  3. backing files (parentFileNameHint) both ways; zeroed_grain; options.
set -u
IO=$1
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null || exit 77
D=$(mktemp -d "${COBLK_TEST_DIR:-/tmp}/vmdk-interop.XXXXXX")
trap 'rm -rf "$D"' EXIT
cd "$D" || exit 1
fail() { echo "FAIL: $*" >&2; exit 1; }
SUBFORMATS="monolithicSparse monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat streamOptimized"

# 0. coblk's format-specific info matches qemu-img info's, for every subformat.
if command -v python3 >/dev/null; then
    for sf in $SUBFORMATS; do
        rm -f i*.vmdk
        qemu-img create -q -f vmdk -o subformat=$sf i.vmdk 3M || fail "create $sf"
        qemu-img info --output=json i.vmdk > q.json && "$IO" info vmdk i.vmdk > c.json ||
            fail "info $sf"
        python3 -c 'import json,sys
q = json.load(open("q.json"))["format-specific"]["data"]
c = json.load(open("c.json"))
sys.exit(0 if q == c else 1)' || fail "info of $sf differs: $(cat c.json)"
    done
fi

# 1. qemu writes, coblk reads.
for sf in $SUBFORMATS; do
    qemu-img create -q -f vmdk -o subformat=$sf q.vmdk 5M || fail "qemu-img create $sf"
    cmds=(-c "write -P 0x5a 0 64k" -c "write -P 0x33 1M 64k" -c "write -P 0x44 3M 128k")
    if [ $sf != streamOptimized ]; then
        cmds+=(-c "write -P 0x71 70k 5k" -c "write -z 3M 64k")
    fi
    qemu-io -f vmdk "${cmds[@]}" q.vmdk >/dev/null || fail "qemu-io $sf"
    qemu-img convert -O raw q.vmdk want.raw || fail "convert $sf"
    "$IO" dump vmdk q.vmdk got.raw || fail "coblk read of qemu's $sf"
    cmp -s want.raw got.raw || fail "coblk read of qemu's $sf differs"
    rm -f q*.vmdk
done

# 2. coblk creates and writes, qemu-img compares and checks.
writes() { # fmt file
    "$IO" write "$1" "$2" 0 65536 0x5a &&
    "$IO" write "$1" "$2" 1048576 65536 0x33 &&
    "$IO" write "$1" "$2" 3145728 131072 0x44 &&
    "$IO" write "$1" "$2" 71680 5120 0x71 &&
    "$IO" write "$1" "$2" 4193792 1024 0x19 &&
    "$IO" zero "$1" "$2" 3145728 65536 &&
    "$IO" zero "$1" "$2" 512 1024
}
for sf in $SUBFORMATS; do
    for zg in off on; do
        rm -f c*.vmdk want.raw
        "$IO" create vmdk c.vmdk "size=5M,subformat=$sf,zeroed_grain=$zg" || fail "create $sf"
        "$IO" create raw want.raw "size=5M" || fail "create raw"
        writes vmdk c.vmdk || fail "coblk writes to $sf"
        writes raw want.raw || fail "raw writes"
        qemu-img compare -q -f vmdk -F raw c.vmdk want.raw || fail "qemu-img compare $sf zg=$zg"
        qemu-img check -q c.vmdk || fail "qemu-img check $sf zg=$zg"
    done
done

# 3a. A coblk child over a coblk parent.
rm -f *.vmdk *.raw
"$IO" create vmdk base.vmdk "size=4M" || fail "create base"
"$IO" write vmdk base.vmdk 0 2097152 0x11 || fail "write base"
"$IO" create vmdk top.vmdk "backing_file=base.vmdk,backing_fmt=vmdk" || fail "create top"
"$IO" write vmdk top.vmdk 4096 8192 0x22 || fail "write top"
"$IO" create raw want.raw "size=4M" && "$IO" write raw want.raw 0 2097152 0x11 &&
    "$IO" write raw want.raw 4096 8192 0x22 || fail "raw"
qemu-img info top.vmdk | grep -q "backing file: base.vmdk" || fail "qemu sees no backing file"
qemu-img compare -q top.vmdk want.raw || fail "qemu-img compare of the child"
qemu-img check -q top.vmdk || fail "qemu-img check of the child"
"$IO" dump vmdk top.vmdk got.raw && cmp -s got.raw want.raw || fail "coblk read of the child"
# The parent is untouched.
"$IO" create raw base.raw "size=4M" && "$IO" write raw base.raw 0 2097152 0x11
qemu-img compare -q base.vmdk base.raw || fail "the parent changed"

# 3b. A qemu child over a qemu parent, read by coblk.
rm -f *.vmdk *.raw
qemu-img create -q -f vmdk base.vmdk 4M && qemu-io -f vmdk -c "write -P 0x11 0 2M" base.vmdk >/dev/null
qemu-img create -q -f vmdk -b base.vmdk -F vmdk top.vmdk && qemu-io -f vmdk -c "write -P 0x22 4k 8k" top.vmdk >/dev/null
qemu-img convert -O raw top.vmdk want.raw
"$IO" dump vmdk top.vmdk got.raw && cmp -s got.raw want.raw || fail "coblk read of qemu's child"

# 3c. Create options land where qemu-img reads them.
rm -f *.vmdk
"$IO" create vmdk o.vmdk "size=100M,adapter_type=lsilogic,hwversion=7,toolsversion=1234" || fail "create opts"
grep -aq 'ddb.adapterType = "lsilogic"' o.vmdk && grep -aq 'ddb.virtualHWVersion = "7"' o.vmdk &&
    grep -aq 'ddb.toolsVersion = "1234"' o.vmdk || fail "ddb keys"
qemu-img check -q o.vmdk || fail "check opts"
"$IO" create vmdk o6.vmdk "size=1M,compat6=on" && grep -aq 'ddb.virtualHWVersion = "6"' o6.vmdk ||
    fail "compat6"
"$IO" info vmdk o.vmdk | grep -q '"create-type": "monolithicSparse"' || fail "info"
exit 0
