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
echo "vpc interop: ok"
