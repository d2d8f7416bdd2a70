#!/bin/bash
# vhdx discard (skips with 77 without qemu-img / qemu-io): coblk-io discards
# whole blocks (they read as zeroes: UNMAPPED), part of a block (no change)
# and the disk's last block in an image qemu-img made and qemu-io filled;
# qemu-img compare against a raw file with the same ranges zeroed and
# qemu-img check pass, before and after a write that reuses a discarded
# block's space (the file does not grow). A differencing child's discarded
# block reads as zeroes, not as its parent. Last, a resize past what the BAT
# region maps (1 MiB blocks to 200 GiB) moves the BAT; the next new block
# reuses the old BAT region (the file does not grow); qemu-img check passes
# and qemu-io reads the data back (qemu-img compare over 200 GiB is too slow).
set -u
CIO=$1
IMG=$2
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null || exit 77
D=$(mktemp -d "${COBLK_TEST_DIR:-/tmp}/vhdx-discard.XXXXXX")
trap 'rm -rf "$D"' EXIT
cd "$D" || exit 1
fail() { echo "FAIL: $*" >&2; exit 1; }
M=1048576

for log in on off; do
    rm -f q.vhdx want.raw
    qemu-img create -q -f vhdx -o block_size=1M q.vhdx 20M || fail "qemu-img create"
    qemu-io -f vhdx -c "write -P 0x5a 0 20M" q.vhdx >/dev/null || fail "qemu-io"
    qemu-img convert -O raw q.vhdx want.raw || fail "convert"
    "$CIO" -d unmap --image-opts -c "discard $((2 * M)) $((3 * M))" \
        -c "discard $((7 * M + 512)) $M" -c "discard $((19 * M)) $M" \
        "driver=vhdx,metadata-log=$log,file.filename=q.vhdx" >/dev/null || fail "discard"
    qemu-io -f raw -c "write -z $((2 * M)) $((3 * M))" -c "write -z $((19 * M)) $M" \
        want.raw >/dev/null || fail "raw zero"
    qemu-img compare -q -f vhdx -F raw q.vhdx want.raw || fail "compare after discard ($log)"
    qemu-img check -q q.vhdx || fail "check after discard ($log)"
    size=$(stat -c %s q.vhdx)
    "$CIO" -c "write -P 0x44 $((3 * M + 4096)) 4096" q.vhdx >/dev/null || fail "write"
    qemu-io -f raw -c "write -P 0x44 $((3 * M + 4096)) 4096" want.raw >/dev/null || fail "raw"
    qemu-img compare -q -f vhdx -F raw q.vhdx want.raw || fail "compare after reuse ($log)"
    qemu-img check -q q.vhdx || fail "check after reuse ($log)"
    [ "$(stat -c %s q.vhdx)" = "$size" ] || fail "the write did not reuse the discarded block"
done

# Differencing: the child's discarded block reads as zeroes.
rm -f p.vhdx c.vhdx want.raw got.raw
qemu-img create -q -f vhdx -o block_size=1M p.vhdx 8M || fail "create parent"
qemu-io -f vhdx -c "write -P 0x21 0 8M" p.vhdx >/dev/null || fail "qemu-io parent"
"$IMG" create -q -f vhdx -b p.vhdx -F vhdx c.vhdx || fail "create child"
"$CIO" -c "write -P 0x31 $((1 * M)) 4096" c.vhdx >/dev/null || fail "write child"
"$CIO" -d unmap -c "discard $M $((2 * M))" c.vhdx >/dev/null || fail "discard child"
qemu-img convert -O raw p.vhdx want.raw || fail "convert parent"
qemu-io -f raw -c "write -z $M $((2 * M))" want.raw >/dev/null || fail "raw zero"
"$IMG" convert -O raw c.vhdx got.raw || fail "convert child"
cmp -s want.raw got.raw || fail "the child's discarded blocks do not read as zeroes"
qemu-img check -q p.vhdx || fail "check parent"

# Resize that moves the BAT region.
for log in on off; do
    rm -f q.vhdx want.raw
    qemu-img create -q -f vhdx -o block_size=1M q.vhdx 8M || fail "qemu-img create"
    qemu-io -f vhdx -c "write -P 0x61 1M 1M" q.vhdx >/dev/null || fail "qemu-io"
    "$CIO" --image-opts -c "truncate 200G" \
        "driver=vhdx,metadata-log=$log,file.filename=q.vhdx" >/dev/null || fail "grow ($log)"
    len=$(stat -c %s q.vhdx)
    # Reopened: the new block goes into the old BAT region, the file does not grow.
    "$CIO" --image-opts -c "write -P 0x62 150G 64k" \
        "driver=vhdx,metadata-log=$log,file.filename=q.vhdx" >/dev/null || fail "write ($log)"
    [ "$(stat -c %s q.vhdx)" = "$len" ] ||
        fail "the first new block after the BAT move grew the file ($log)"
    qemu-img check -q q.vhdx || fail "check after the BAT moved ($log)"
    [ "$(qemu-img info --output=json q.vhdx | jq '.["virtual-size"]')" = 214748364800 ] ||
        fail "qemu-img info size after the BAT moved"
    out=$(qemu-io -f vhdx -c "read -P 0x61 1M 1M" -c "read -P 0x62 150G 64k" \
              -c "read -P 0 0 1M" -c "read -P 0 100G 1M" q.vhdx) || fail "qemu-io read"
    case $out in *[Ff]ail*) fail "qemu reads other data after the BAT moved: $out" ;; esac
    "$IMG" check -q q.vhdx || fail "coblk-img check after the BAT moved ($log)"
done
exit 0
