#!/usr/bin/env bash
# VD-style metadata commands per format: timestamp (vpc stores them; the
# footer bytes and checksum are checked and qemu-img still reads the image),
# rename (single-file formats, vmdk descriptor + extents, refusals), comment,
# and the formats listing. Usage: test-img-meta.sh coblk-img coblk-io
. "$(dirname "$0")/lib.sh"
command -v python3 >/dev/null || { echo "SKIP: python3 missing"; exit 77; }

# ---- timestamps: vpc footer (creation) and dynamic header (parent time)
"$CIMG" create -q -f vpc a.vhd 16M
expect_rc 0 "vpc timestamp set" "$CIMG" timestamp a.vhd 1700000000
expect_rc 0 "vpc timestamp get" "$CIMG" timestamp a.vhd
grep -qx "1700000000 (2023-11-14T22:13:20Z)" out.txt || fail "vpc timestamp: $(cat out.txt)"
python3 - a.vhd <<'PY' && pass "vpc footer time and checksums" || fail "vpc footer bytes"
import struct, sys
f = open(sys.argv[1], "rb").read()
for foot in (f[:512], f[-512:]):
    assert struct.unpack(">I", foot[24:28])[0] == 1700000000 - 946684800
    s = (~(sum(foot[:64]) + sum(foot[68:]))) & 0xffffffff
    assert struct.unpack(">I", foot[64:68])[0] == s
PY
expect_rc 0 "qemu-img reads the vpc after a timestamp change" qemu-img info a.vhd
expect_rc 1 "vpc time before 2000" "$CIMG" timestamp a.vhd 5
grep -q "outside the VHD range" err.txt || fail "range message: $(cat err.txt)"
expect_rc 1 "dynamic vpc has no parent time" "$CIMG" timestamp --kind parent-modification a.vhd
grep -q "does not store a parent-modification timestamp" err.txt || fail "$(cat err.txt)"
"$CIMG" create -q -f vpc -b a.vhd -F vpc d.vhd
expect_rc 0 "differencing vpc parent time set" \
    "$CIMG" timestamp --kind parent-modification d.vhd 1600000000
expect_rc 0 "differencing vpc parent time get" "$CIMG" timestamp --kind parent-modification d.vhd
grep -q "^1600000000 " out.txt || fail "parent time: $(cat out.txt)"
for fmt in qcow2 vdi vhdx qed qcow vmdk raw; do
    "$CIMG" create -q -f $fmt t.$fmt 1M
    expect_rc 1 "$fmt stores no timestamp" "$CIMG" timestamp -f $fmt t.$fmt
    grep -q "does not store a creation timestamp" err.txt || fail "$fmt: $(cat err.txt)"
    expect_rc 1 "$fmt: setting a timestamp is refused" "$CIMG" timestamp -f $fmt t.$fmt 1700000000
    grep -q "does not support stored timestamps" err.txt || fail "$fmt: $(cat err.txt)"
done

# ---- rename: one-file formats (data intact, old name gone)
for fmt in raw qcow2 vdi vpc vhdx qed qcow vmdk; do
    "$CIMG" create -q -f $fmt r.$fmt 4M
    qemu-io -f $fmt -c 'write -P 0x5c 1M 64k' r.$fmt >/dev/null
    qemu-img convert -f $fmt -O raw r.$fmt ref.raw
    expect_rc 0 "$fmt rename" "$CIMG" rename -f $fmt r.$fmt s.$fmt
    [ ! -e r.$fmt ] && [ -f s.$fmt ] || fail "$fmt: files after rename: $(ls)"
    expect_rc 0 "$fmt renamed image reads the same" qemu-img compare -f $fmt -F raw s.$fmt ref.raw
    rm -f s.$fmt ref.raw
done

# ---- rename: vmdk descriptor with extents (sparse and flat, split)
for sub in twoGbMaxExtentSparse monolithicFlat twoGbMaxExtentFlat; do
    "$CIMG" create -q -f vmdk -o subformat=$sub v.vmdk 3G
    qemu-io -f vmdk -c 'write -P 0x6d 2047M 2M' v.vmdk >/dev/null
    expect_rc 0 "vmdk $sub rename" "$CIMG" rename v.vmdk w.vmdk
    left=$(ls v.vmdk v-*.vmdk 2>/dev/null)
    [ -z "$left" ] || fail "vmdk $sub: old files left: $left"
    grep -E '^RW ' w.vmdk | grep -vq '"w-' && fail "vmdk $sub: descriptor: $(grep RW w.vmdk)"
    for x in $(grep -E '^RW ' w.vmdk | sed -E 's/.*"([^"]*)".*/\1/'); do
        [ -f "$x" ] || fail "vmdk $sub: extent $x missing"
    done
    expect_rc 0 "vmdk $sub renamed: qemu-img check" qemu-img check w.vmdk
    expect_rc 0 "vmdk $sub renamed: data" qemu-io -f vmdk -c 'read -P 0x6d 2047M 2M' w.vmdk
    grep -q "read 2097152/2097152" out.txt || fail "vmdk $sub read: $(cat out.txt)"
    rm -f w.vmdk w-*.vmdk
done
"$CIMG" create -q -f vmdk -o subformat=monolithicFlat v.vmdk 1M
mkdir sub
expect_rc 0 "vmdk rename into another directory" "$CIMG" rename v.vmdk sub/m.vmdk
[ -f sub/m-flat.vmdk ] && [ ! -e v-flat.vmdk ] || fail "vmdk move: $(ls . sub)"
expect_rc 0 "vmdk moved: qemu-img check" qemu-img check sub/m.vmdk

"$CIMG" create -q -f qcow2 x.qcow2 1M
"$CIMG" create -q -f qcow2 y.qcow2 1M
expect_rc 1 "rename onto an existing file" "$CIMG" rename x.qcow2 y.qcow2
grep -q "File exists" err.txt || fail "$(cat err.txt)"
[ -f x.qcow2 ] || fail "source vanished after a refused rename"
"$CIMG" create -q -f qcow2 -o data_file=dq.data dq.qcow2 1M
expect_rc 1 "rename qcow2 with an external data file" "$CIMG" rename dq.qcow2 dq2.qcow2
grep -q "does not support renaming an image made of several files" err.txt ||
    fail "$(cat err.txt)"

# ---- comment
"$CIMG" create -q -f vdi c.vdi 1M
expect_rc 0 "vdi comment set" "$CIMG" comment c.vdi "hello disk"
expect_rc 0 "vdi comment get" "$CIMG" comment c.vdi
grep -qx "hello disk" out.txt || fail "comment: $(cat out.txt)"
expect_rc 1 "qcow2 has no comment" "$CIMG" comment x.qcow2
grep -q "does not support a comment" err.txt || fail "$(cat err.txt)"

# ---- formats listing
expect_rc 0 "formats" "$CIMG" formats
grep -Eq '^vpc +format +\.vhd,\.vpc .*timestamp' out.txt || fail "vpc row: $(grep vpc out.txt)"
grep -Eq '^vmdk +format +\.vmdk .*rename' out.txt || fail "vmdk row: $(grep vmdk out.txt)"
expect_rc 0 "formats json" "$CIMG" formats --output=json
jq -e '.[] | select(.name == "qcow2") | .extensions == ["qcow2"]' out.txt >/dev/null ||
    fail "formats json: $(cat out.txt)"

[ "$FAILS" -eq 0 ] || exit 1
