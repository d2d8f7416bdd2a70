#!/bin/bash
# vpc (VHD): images qemu-img makes (dynamic, fixed, force_size) read through
# coblk exactly as qemu-img converts them, and coblk's writes into them read
# back in qemu-img; images coblk makes agree with qemu-img on size and data.
# Differencing disks (which qemu-img cannot follow) are checked against the
# expected bytes through coblk, with the parent found relative to the child.
# qemu-img cannot check vpc images, so there is no qemu-img check here.
. "$(dirname "$0")/fmt-lib.sh"

n=0
for opts in "subformat=dynamic" "subformat=fixed" "force_size=on" \
            "subformat=fixed,force_size=on"; do
    n=$((n + 1))
    img=$T/q$n.vhd
    qemu-img create -q -f vpc -o "$opts" "$img" 9M
    qemu-io -f vpc -c "write -P 0x11 0 64k" -c "write -P 0x22 2096640 3072" \
        -c "write -P 0x33 6M 1M" "$img" >/dev/null
    coblk_reads_as_qemu vpc "$img"
    cp "$T/qemu.raw" "$T/exp.raw"
    "$FMTIO" randwrite vpc "$img" $n 32 "$T/exp.raw" || fail "randwrite into qemu's $opts"
    qemu_reads_as vpc "$img" "$T/exp.raw"

    img=$T/c$n.vhd
    "$FMTIO" create vpc "$img" "size=9M,$opts" || fail "create $opts"
    "$FMTIO" dump vpc "$img" "$T/coblk.raw"
    qemu-img convert -f vpc -O raw "$img" "$T/qemu.raw"
    [ "$(stat -c %s "$T/coblk.raw")" -eq "$(stat -c %s "$T/qemu.raw")" ] ||
        fail "sizes differ for $opts"
    cp "$T/qemu.raw" "$T/exp.raw"
    "$FMTIO" randwrite vpc "$img" $((n + 10)) 48 "$T/exp.raw" || fail "randwrite $opts"
    qemu_reads_as vpc "$img" "$T/exp.raw"
    coblk_reads_as_qemu vpc "$img"
done

# A large dynamic disk past the largest CHS geometry keeps its exact size.
"$FMTIO" create vpc "$T/big.vhd" "size=200G" || fail "create 200G"
qemu-img info -f vpc "$T/big.vhd" | grep -q "(214748364800 bytes)" || fail "200G size"

# Differencing: parent by qemu-img, child by coblk in a subfolder-relative name.
mkdir "$T/sub"
qemu-img create -q -f vpc "$T/sub/parent.vhd" 9M
qemu-io -f vpc -c "write -P 0x5a 0 9M" "$T/sub/parent.vhd" >/dev/null
qemu-img convert -f vpc -O raw "$T/sub/parent.vhd" "$T/exp.raw"
cp "$T/exp.raw" "$T/parent.raw"
"$FMTIO" create vpc "$T/sub/child.vhd" "backing_file=parent.vhd" || fail "create child"
"$FMTIO" dump vpc "$T/sub/child.vhd" "$T/coblk.raw" || fail "read child"
same_bytes "$T/coblk.raw" "$T/exp.raw"
"$FMTIO" randwrite vpc "$T/sub/child.vhd" 99 48 "$T/exp.raw" || fail "randwrite child"
(cd / && "$FMTIO" dump vpc "$T/sub/child.vhd" "$T/coblk.raw") || fail "read child again"
same_bytes "$T/coblk.raw" "$T/exp.raw"
qemu-img convert -f vpc -O raw "$T/sub/parent.vhd" "$T/qemu.raw"
same_bytes "$T/qemu.raw" "$T/parent.raw"
# The parent moves along with the child: the relative locator still finds it.
mv "$T/sub" "$T/moved"
"$FMTIO" dump vpc "$T/moved/child.vhd" "$T/coblk.raw" || fail "read moved child"
same_bytes "$T/coblk.raw" "$T/exp.raw"

# Discard: whole blocks of a dynamic disk qemu made unmap and read zero in
# qemu-img too; partial blocks keep their data; the last block is cut off.
M=1048576
qemu-img create -q -f vpc -o force_size=on "$T/d.vhd" 16M
qemu-io -f vpc -c "write -P 0x3c 0 16M" "$T/d.vhd" >/dev/null
qemu-img convert -f vpc -O raw "$T/d.vhd" "$T/exp.raw"
len0=$(stat -c %s "$T/d.vhd")
"$FMTIO" discard vpc "$T/d.vhd" $((M + 512)) $((5 * M)) || fail "discard blocks 1-2"
zero_range "$T/exp.raw" $((2 * M)) $((4 * M))
"$FMTIO" discard vpc "$T/d.vhd" $((14 * M)) $((2 * M)) || fail "discard the last block"
zero_range "$T/exp.raw" $((14 * M)) $((2 * M))
"$FMTIO" discard vpc "$T/d.vhd" $((9 * M)) $M || fail "discard inside a block"
qemu_reads_as vpc "$T/d.vhd" "$T/exp.raw"
coblk_reads_as_qemu vpc "$T/d.vhd"
[ "$(stat -c %s "$T/d.vhd")" -eq $((len0 - 2 * M - 512)) ] || fail "last block not cut off"
qemu-img map -f vpc --output=json "$T/d.vhd" | grep -q '"start": 2097152, "length": 4194304, "depth": 0, "present": true, "zero": true, "data": false' ||
    fail "qemu-img map still maps the discarded blocks"
# qemu-io writes into the discarded ranges and both read the same.
qemu-io -f vpc -c "write -P 0x4d 2M 64k" -c "write -P 0x5e 15M 64k" "$T/d.vhd" >/dev/null
fill_range "$T/exp.raw" $((2 * M)) 65536 0x4d
fill_range "$T/exp.raw" $((15 * M)) 65536 0x5e
qemu_reads_as vpc "$T/d.vhd" "$T/exp.raw"
coblk_reads_as_qemu vpc "$T/d.vhd"
"$FMTIO" check vpc "$T/d.vhd" >/dev/null || fail "check after discard"

# Parent file name: a differencing disk re-pointed at a copy of its parent
# (fmt-io rebase = bdrv_change_backing_file) reads the new parent's data.
mkdir "$T/p"
qemu-img create -q -f vpc "$T/p/a.vhd" 9M
qemu-io -f vpc -c "write -P 0x61 0 9M" "$T/p/a.vhd" >/dev/null
qemu-img create -q -f vpc "$T/p/b.vhd" 9M
qemu-io -f vpc -c "write -P 0x62 0 9M" "$T/p/b.vhd" >/dev/null
"$FMTIO" create vpc "$T/p/c.vhd" "backing_file=a.vhd" || fail "create child of a"
"$FMTIO" write vpc "$T/p/c.vhd" 4096 8192 0x63 || fail "write child"
"$FMTIO" rebase vpc "$T/p/c.vhd" b.vhd vpc || fail "set the parent to b.vhd"
qemu-img convert -f vpc -O raw "$T/p/b.vhd" "$T/exp.raw"
fill_range "$T/exp.raw" 4096 8192 0x63
"$FMTIO" dump vpc "$T/p/c.vhd" "$T/coblk.raw" || fail "read the re-pointed child"
same_bytes "$T/coblk.raw" "$T/exp.raw"
# The old parent may go; qemu-img still reads the (dynamic-looking) child itself.
rm "$T/p/a.vhd"
(cd / && "$FMTIO" dump vpc "$T/p/c.vhd" "$T/coblk.raw") || fail "read child without a.vhd"
same_bytes "$T/coblk.raw" "$T/exp.raw"
qemu-img info -f vpc "$T/p/c.vhd" >/dev/null || fail "qemu-img cannot open the child"
"$FMTIO" rebase vpc "$T/p/c.vhd" "" 2>/dev/null && fail "removing the parent succeeded"
echo "vpc interop: ok"
