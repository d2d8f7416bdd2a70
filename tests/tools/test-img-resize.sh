#!/usr/bin/env bash
# coblk-img resize on qed, vdi, vpc, vmdk and vhdx (and their subformats), on
# images created by qemu-img: grow, then data written past the old end by
# coblk-io; qemu-img check passes, qemu-img info reports the new size and
# qemu-img compare finds the image identical to a raw reference that got the
# same writes. Shrink where the format allows it (same checks) or a refusal
# with a message. qed, which qemu-img can resize too: an image qemu-img grew
# reads correctly through coblk.
. "$(dirname "$0")/lib.sh"

# name  format  create-options  shrink (yes: allowed / no: refused)
CASES="
qed qed - no
vdi vdi - yes
vdi-static vdi static=on no
vpc vpc - yes
vpc-fixed vpc subformat=fixed yes
vhdx vhdx - yes
vhdx-fixed vhdx subformat=fixed yes
vmdk vmdk - no
vmdk-flat vmdk subformat=monolithicFlat yes
vmdk-2gsparse vmdk subformat=twoGbMaxExtentSparse no
vmdk-2gflat vmdk subformat=twoGbMaxExtentFlat yes
"

size_of() { qemu-img info -f "$1" --output=json "$2" | jq '.["virtual-size"]'; }

# qemu-img check: 0 (clean) or 63 (format without a check) pass.
check_ok() {
    qemu-img check -q -f "$2" "$3" >/dev/null 2>&1; local rc=$?
    [ $rc = 0 ] || [ $rc = 63 ] && pass "$1: qemu-img check" || fail "$1: qemu-img check rc $rc"
}

while read -r name fmt copts shrink; do
    [ -n "$name" ] || continue
    mkdir -p "$name" && cd "$name" || exit 1
    o=(); [ "$copts" = - ] || o=(-o "$copts")
    qemu-img create -q -f "$fmt" "${o[@]}" a.img 10M
    qemu-io -f "$fmt" -c 'write -P 0x5a 0 64k' -c 'write -P 0x6b 9M 1M' a.img >/dev/null
    qemu-img convert -f "$fmt" -O raw a.img ref.raw
    old=$(size_of "$fmt" a.img)

    if ! "$CIMG" resize -q -f "$fmt" a.img 300M 2>err.txt; then
        fail "$name: resize 300M: $(cat err.txt)"
        cd .. && continue
    fi
    new=$(size_of "$fmt" a.img)
    # vpc rounds up to a whole CHS geometry (as qemu-img create): less than a cylinder more.
    [ "$new" -ge $((300 << 20)) ] && [ "$new" -lt $(((300 << 20) + 16 * 255 * 512)) ] &&
        pass "$name: qemu-img info size $new" || fail "$name: size $new after resize 300M"
    check_ok "$name" "$fmt" a.img
    truncate -s "$new" ref.raw
    for io in "write -P 0x7c $((old)) 64k" "write -P 0x8d 200M 1M" "write -P 0x9e $((new - 4096)) 4k"; do
        "$CIO" -f "$fmt" -c "$io" a.img >/dev/null || fail "$name: coblk-io $io"
        qemu-io -f raw -c "$io" ref.raw >/dev/null
    done
    check_ok "$name after writes" "$fmt" a.img
    qemu-img compare -q -f "$fmt" -F raw a.img ref.raw && pass "$name: identical to the reference" ||
        fail "$name: differs from the raw reference"

    if "$CIMG" resize -q -f "$fmt" --shrink a.img 100M 2>err.txt; then
        [ "$shrink" = yes ] || fail "$name: shrink succeeded, expected a refusal"
        s=$(size_of "$fmt" a.img)
        check_ok "$name after shrink" "$fmt" a.img
        truncate -s "$s" ref.raw
        qemu-img compare -q -f "$fmt" -F raw a.img ref.raw && pass "$name: shrunk, identical" ||
            fail "$name: shrunk image differs from the reference"
    else
        [ "$shrink" = no ] && grep -q "cannot shrink\|cannot resize" err.txt &&
            pass "$name: shrink refused: $(grep -v warning: err.txt | head -c 120)" ||
            fail "$name: shrink: $(cat err.txt)"
        [ "$(size_of "$fmt" a.img)" = "$new" ] || fail "$name: size changed by a refused shrink"
    fi
    cd ..
done <<<"$CASES"

# vmdk streamOptimized: refused with a message, the image unchanged.
qemu-img create -q -f vmdk -o subformat=streamOptimized s.vmdk 10M
expect_rc 1 "vmdk streamOptimized resize refused" "$CIMG" resize -f vmdk s.vmdk 20M
grep -q streamOptimized err.txt || fail "streamOptimized: no message naming it"
[ "$(size_of vmdk s.vmdk)" = $((10 << 20)) ] || fail "streamOptimized: size changed"

# vmdk grown past what its grain directory's last sector maps (4 GiB of 64 KiB
# grains): the directories move to the end of the file; qemu-img checks and
# reads the result, and writes into the new area.
qemu-img create -q -f vmdk g.vmdk 10M
qemu-io -f vmdk -c 'write -P 0x41 0 64k' -c 'write -P 0x42 9M 1M' g.vmdk >/dev/null
expect_rc 0 "vmdk grown to 10G (directory moved)" "$CIMG" resize -f vmdk g.vmdk 10G
check_ok "vmdk with a moved directory" vmdk g.vmdk
[ "$(size_of vmdk g.vmdk)" = $((10 << 30)) ] || fail "vmdk 10G: size"
qemu-io -f vmdk -c 'read -P 0x41 0 64k' -c 'read -P 0x42 9M 1M' -c 'read -P 0 10M 1M' \
    -c 'write -P 0x43 9G 64k' g.vmdk >out.txt 2>&1 && ! grep -q "failed" out.txt &&
    pass "vmdk 10G: qemu-io reads the old data and writes the new area" ||
    fail "vmdk 10G: $(cat out.txt)"
"$CIO" -f vmdk -c 'read -P 0x43 9G 64k' -c 'read -P 0x42 9M 1M' g.vmdk >out.txt 2>&1 &&
    ! grep -q "failed" out.txt && pass "vmdk 10G: coblk reads qemu's write" ||
    fail "vmdk 10G: $(cat out.txt)"
check_ok "vmdk with a moved directory, after qemu's write" vmdk g.vmdk

# twoGbMaxExtentSparse / twoGbMaxExtentFlat grown past 2 GiB: the extent fills
# to 2 GiB and files named as qemu-img names them are added (t-s002.vmdk,
# t-s003.vmdk); qemu-img check, info and compare against a raw reference,
# qemu-io reads the old data and writes into every new extent, coblk reads
# qemu's writes.
for sub in Sparse:s Flat:f; do
    kind=${sub#*:} sub=${sub%:*}
    mkdir -p "2g$kind" && cd "2g$kind" || exit 1
    qemu-img create -q -f vmdk -o subformat=twoGbMaxExtent$sub t.vmdk 10M
    qemu-io -f vmdk -c 'write -P 0x51 0 64k' -c 'write -P 0x52 9M 1M' t.vmdk >/dev/null
    qemu-img convert -f vmdk -O raw t.vmdk ref.raw
    want=$(((5 << 30) + (1 << 20)))
    expect_rc 0 "twoGb$sub grown to 5G+1M" "$CIMG" resize -f vmdk t.vmdk $want
    [ "$(size_of vmdk t.vmdk)" = $want ] && pass "twoGb$sub: qemu-img info size $want" ||
        fail "twoGb$sub: size $(size_of vmdk t.vmdk)"
    [ -f t-${kind}002.vmdk ] && [ -f t-${kind}003.vmdk ] && [ ! -e t-${kind}004.vmdk ] &&
        grep -q "RW 4194304 .* \"t-${kind}002.vmdk\"" t.vmdk &&
        grep -q "RW 2099200 .* \"t-${kind}003.vmdk\"" t.vmdk &&
        pass "twoGb$sub: extents t-${kind}002/003.vmdk in the descriptor" ||
        { fail "twoGb$sub: extent files or descriptor"; ls; cat t.vmdk; }
    check_ok "twoGb$sub grown" vmdk t.vmdk
    truncate -s $want ref.raw
    for io in "write -P 0x53 $(((2 << 30) - 32768)) 64k" "write -P 0x54 3G 1M" \
              "write -P 0x55 $((want - 4096)) 4k"; do
        qemu-io -f vmdk -c "$io" t.vmdk >/dev/null || fail "twoGb$sub: qemu-io $io"
        qemu-io -f raw -c "$io" ref.raw >/dev/null
    done
    "$CIO" -f vmdk -c 'read -P 0x51 0 64k' -c 'read -P 0x52 9M 1M' -c 'read -P 0x54 3G 1M' \
        -c "read -P 0x55 $((want - 4096)) 4k" t.vmdk >out.txt 2>&1 && ! grep -q failed out.txt &&
        pass "twoGb$sub: coblk reads the old data and qemu's writes" ||
        fail "twoGb$sub: $(cat out.txt)"
    check_ok "twoGb$sub after qemu's writes" vmdk t.vmdk
    qemu-img compare -q -f vmdk -F raw t.vmdk ref.raw &&
        pass "twoGb$sub: identical to the reference" || fail "twoGb$sub: differs from the raw reference"
    cd ..
done

# qed grown by qemu-img reads correctly through coblk (qemu-img can only resize qed,
# raw and qcow2 of these formats).
qemu-img create -q -f qed q.qed 10M
qemu-io -f qed -c 'write -P 0x21 9M 1M' q.qed >/dev/null
qemu-img resize -q -f qed q.qed 50M
qemu-io -f qed -c 'write -P 0x32 40M 64k' q.qed >/dev/null
"$CIO" -f qed -c 'read -P 0x21 9M 1M' -c 'read -P 0 10M 30M' -c 'read -P 0x32 40M 64k' q.qed \
    >out.txt 2>&1 && ! grep -q "failed" out.txt && pass "qed resized by qemu-img reads back" ||
    { fail "qed resized by qemu-img"; cat out.txt; }
finish
