#!/usr/bin/env bash
# Persistent dirty bitmaps (qcow2): coblk-img bitmap against qemu-img bitmap,
# writes through coblk tracked in bitmaps that qemu-nbd then exports (read
# back with nbdinfo --map), qemu-made bitmaps kept and updated by coblk, a
# crash leaving a bitmap in use, coblk-nbd -B / -l next to qemu-nbd,
# convert --bitmaps, measure, and corrupt
# bitmap directories refused with a message.
CNBD=$(realpath "$3")
. "$(dirname "$0")/lib.sh"
command -v qemu-nbd >/dev/null && command -v nbdinfo >/dev/null ||
    { echo "SKIP: qemu-nbd/nbdinfo missing"; exit 77; }

# dirty <image> <bitmap>: the dirty extents as "offset+length" lines.
dirty() {
    nbdinfo --map="qemu:dirty-bitmap:$2" -- [ qemu-nbd -r -f qcow2 -B "$2" "$1" ] |
        awk '$3 == 1 { print $1 "+" $2 }'
}

# expect_dirty <what> <image> <bitmap> <extents...>
expect_dirty() {
    local what=$1 img=$2 bm=$3
    shift 3
    local got want
    got=$(dirty "$img" "$bm" | tr '\n' ' ')
    want="$* "
    [ "$*" = "" ] && want=""
    if [ "$got" = "$want" ]; then pass "$what"; else fail "$what: dirty '$got', want '$want'"; fi
}

qcheck() {
    if qemu-img check -q "$1" >chk.txt 2>&1; then pass "qemu-img check $1 ($2)"
    else fail "qemu-img check $1 ($2): $(cat chk.txt)"; fi
}

M=1048576
K64=65536

# --- coblk creates bitmaps; writes through coblk are tracked -----------------
"$CIMG" create -q -f qcow2 a.qcow2 64M
expect_rc 0 "bitmap --add" "$CIMG" bitmap --add a.qcow2 b1
expect_rc 0 "bitmap --add -g 512k --disable" "$CIMG" bitmap --add -g 512k --disable a.qcow2 b2
expect_rc 1 "bitmap --add of an existing name" "$CIMG" bitmap --add a.qcow2 b1
grep -q "already exists" err.txt && pass "duplicate message" || fail "duplicate: $(cat err.txt)"
qcheck a.qcow2 "after add"
qemu-img info --output=json a.qcow2 | jq -S '.["format-specific"].data.bitmaps' >q.json
"$CIMG" info --output=json a.qcow2 | jq -S '.["format-specific"].data.bitmaps' >c.json
same_output "info json bitmaps like qemu-img" q.json c.json
qemu-img info a.qcow2 | sed -n '/bitmaps:/,/refcount bits/p' >q.txt
"$CIMG" info a.qcow2 | sed -n '/bitmaps:/,/refcount bits/p' >c.txt
same_output "info human bitmaps like qemu-img" q.txt c.txt

"$CIO" -c "write -P 5 $M 64k" -c "write $((10 * M)) 4k" -c "write -z $((20 * M)) 128k" \
    a.qcow2 >/dev/null || fail "coblk-io writes"
qcheck a.qcow2 "after tracked writes"
expect_dirty "coblk writes tracked in the enabled bitmap" a.qcow2 b1 \
    "$M+$K64" "$((10 * M))+$K64" "$((20 * M))+$((2 * K64))"
expect_dirty "the disabled bitmap stays clean" a.qcow2 b2

# enable / disable / clear
"$CIMG" bitmap --enable a.qcow2 b2 && "$CIMG" bitmap --disable a.qcow2 b1 ||
    fail "enable/disable"
"$CIO" -c "write $((30 * M)) 4k" a.qcow2 >/dev/null
expect_dirty "enabled b2 tracks at 512k granularity" a.qcow2 b2 "$((30 * M))+524288"
expect_dirty "disabled b1 no longer changes" a.qcow2 b1 \
    "$M+$K64" "$((10 * M))+$K64" "$((20 * M))+$((2 * K64))"
expect_rc 0 "bitmap --clear" "$CIMG" bitmap --clear a.qcow2 b1
expect_dirty "cleared bitmap" a.qcow2 b1
qcheck a.qcow2 "after enable/disable/clear"

# merge within the image and from another image (-b)
"$CIO" -c "write $((40 * M)) 4k" a.qcow2 >/dev/null
expect_rc 0 "bitmap --merge b2 into b1" "$CIMG" bitmap --merge b2 a.qcow2 b1
expect_dirty "merge converts 512k bits into 64k bits" a.qcow2 b1 \
    "$((30 * M))+524288" "$((40 * M))+524288"
qemu-img create -q -f qcow2 o.qcow2 64M
qemu-img bitmap --add o.qcow2 ob
qemu-io -c "write $((50 * M)) 4k" o.qcow2 >/dev/null
expect_rc 0 "bitmap --merge ob -b other" "$CIMG" bitmap --merge ob -b o.qcow2 -F qcow2 a.qcow2 b1
expect_dirty "merge from another image" a.qcow2 b1 \
    "$((30 * M))+524288" "$((40 * M))+524288" "$((50 * M))+$K64"
expect_rc 1 "merge of a missing bitmap" "$CIMG" bitmap --merge nope a.qcow2 b1
grep -q "not found" err.txt && pass "missing source message" || fail "missing: $(cat err.txt)"

# several operations in order, as qemu-img: add then disable
expect_rc 0 "bitmap --add --disable in one call" "$CIMG" bitmap --add --disable a.qcow2 b3
"$CIMG" info --output=json a.qcow2 |
    jq -e '.["format-specific"].data.bitmaps[] | select(.name == "b3") | .flags == []' \
    >/dev/null && pass "b3 added disabled" || fail "b3 flags"
expect_rc 0 "bitmap --remove" "$CIMG" bitmap --remove a.qcow2 b3
expect_rc 1 "remove twice" "$CIMG" bitmap --remove a.qcow2 b3
qcheck a.qcow2 "after merge/remove"

# --- qemu-made bitmaps are kept and updated by coblk ------------------------
qemu-img create -q -f qcow2 q.qcow2 64M
qemu-img bitmap --add q.qcow2 qb
qemu-img bitmap --add --disable q.qcow2 qd
qemu-io -c "write $((2 * M)) 64k" q.qcow2 >/dev/null
"$CIO" -c "write $((5 * M)) 64k" -c "write $((6 * M)) 512" q.qcow2 >/dev/null ||
    fail "coblk-io on a qemu image with bitmaps"
qcheck q.qcow2 "qemu bitmaps after coblk writes"
expect_dirty "qemu bitmap updated by coblk writes" q.qcow2 qb \
    "$((2 * M))+$K64" "$((5 * M))+$K64" "$((6 * M))+$K64"
expect_dirty "qemu disabled bitmap untouched" q.qcow2 qd
qemu-io -c "write $((7 * M)) 4k" q.qcow2 >/dev/null
expect_dirty "qemu goes on using the bitmap coblk stored" q.qcow2 qb \
    "$((2 * M))+$K64" "$((5 * M))+$K64" "$((6 * M))+$K64" "$((7 * M))+$K64"
# a snapshot switch marks everything dirty
"$CIMG" snapshot -c s1 q.qcow2 && "$CIMG" snapshot -a s1 q.qcow2 || fail "snapshot"
expect_dirty "snapshot apply marks the whole disk" q.qcow2 qb "0+$((64 * M))"
expect_rc 1 "resize with bitmaps is refused" "$CIMG" resize q.qcow2 128M
grep -q "bitmaps" err.txt && pass "resize message" || fail "resize: $(cat err.txt)"

# --- a crash while open leaves the bitmap in use ----------------------------
"$CIMG" create -q -f qcow2 c.qcow2 16M
"$CIMG" bitmap --add c.qcow2 cb
"$CIO" -c "write 0 4k" -c "sleep 60000" c.qcow2 >/dev/null &
pid=$!
for i in $(seq 100); do
    qemu-img info -U --output=json c.qcow2 2>/dev/null |
        jq -e '.["format-specific"].data.bitmaps[0].flags | index("in-use")' >/dev/null && break
    sleep 0.1
done
{ kill -9 $pid; wait $pid; } 2>/dev/null
qemu-img info --output=json c.qcow2 | jq -S '.["format-specific"].data.bitmaps' >q.json
"$CIMG" info --output=json c.qcow2 | jq -S '.["format-specific"].data.bitmaps' >c.json
same_output "in-use bitmap after a crash, info like qemu-img" q.json c.json
jq -e '.[0].flags == ["in-use", "auto"]' q.json >/dev/null && pass "bitmap in use after kill" ||
    fail "flags after kill: $(cat q.json)"
qcheck c.qcow2 "after a crash with a bitmap in use"
expect_rc 1 "clear of an inconsistent bitmap" "$CIMG" bitmap --clear c.qcow2 cb
grep -q "inconsistent" err.txt && pass "inconsistent message" || fail "msg: $(cat err.txt)"
"$CIO" -c "write 8M 4k" c.qcow2 >/dev/null || fail "write next to an inconsistent bitmap"
qemu-img info --output=json c.qcow2 | jq -e '.["format-specific"].data.bitmaps[0].flags ==
    ["in-use", "auto"]' >/dev/null && pass "inconsistent bitmap kept as is" ||
    fail "inconsistent bitmap changed"
expect_rc 0 "remove of an inconsistent bitmap" "$CIMG" bitmap --remove c.qcow2 cb
qemu-img info --output=json c.qcow2 | jq -e '.["format-specific"].data.bitmaps == null' \
    >/dev/null && pass "no bitmaps left" || fail "bitmaps left"
qcheck c.qcow2 "after removing the last bitmap"

# --- coblk-nbd -B exports a bitmap as qemu-nbd -B does; -l a snapshot ------
for b in b1 b2; do
    nbdinfo --map="qemu:dirty-bitmap:$b" -- [ qemu-nbd -r -f qcow2 -B $b a.qcow2 ] >q.txt
    nbdinfo --map="qemu:dirty-bitmap:$b" -- [ "$CNBD" -r -f qcow2 -B $b a.qcow2 ] >c.txt
    same_output "coblk-nbd -B $b like qemu-nbd -B" q.txt c.txt
done
nbdinfo --list --content -- [ "$CNBD" -r -f qcow2 -B b1 a.qcow2 ] 2>&1 |
    grep -q "qemu:dirty-bitmap:b1" && pass "context listed" || fail "context not listed"
expect_rc 1 "coblk-nbd -B of a missing bitmap" "$CNBD" -r -f qcow2 -B nope a.qcow2
grep -q "no usable dirty bitmap 'nope'" err.txt && pass "missing bitmap message" ||
    fail "missing bitmap: $(cat err.txt)"
# (maps differ in detail: qemu-nbd also asks the host file for holes inside
# allocated clusters; coblk reports those ranges as data)
nbdcopy -- [ "$CNBD" -f qcow2 -l s1 q.qcow2 ] c.raw && qemu-img convert -l s1 -O raw q.qcow2 q.raw &&
    cmp -s c.raw q.raw && pass "coblk-nbd -l serves the snapshot's data" || fail "coblk-nbd -l data"

# --- convert --bitmaps and measure -----------------------------------------
qemu-img measure --output=json -O qcow2 a.qcow2 >q.json
"$CIMG" measure --output=json -O qcow2 a.qcow2 >c.json
same_json "measure with bitmaps like qemu-img" q.json c.json
expect_rc 0 "convert --bitmaps" "$CIMG" convert --bitmaps -O qcow2 a.qcow2 conv.qcow2
qcheck conv.qcow2 "converted with bitmaps"
qemu-img info --output=json a.qcow2 | jq -S '.["format-specific"].data.bitmaps' >q.json
qemu-img info --output=json conv.qcow2 | jq -S '.["format-specific"].data.bitmaps' >c.json
same_output "convert --bitmaps copies names, flags and granularity" q.json c.json
for b in b1 b2; do
    dirty a.qcow2 $b >q.txt
    dirty conv.qcow2 $b >c.txt
    same_output "convert --bitmaps copies the bits of $b" q.txt c.txt
done
expect_rc 1 "convert --bitmaps to raw" "$CIMG" convert --bitmaps -O raw a.qcow2 conv.raw

# --- corrupt bitmap directories are refused with a message -------------------
# patch <image> <what> <python expression on d (bytearray), ext offset e, dir offset o>
patch() {
    python3 - "$1" "$3" <<'EOF'
import struct, sys
path, expr = sys.argv[1], sys.argv[2]
d = bytearray(open(path, 'rb').read())
hl = struct.unpack('>I', d[100:104])[0]
p = hl
while True:
    t, l = struct.unpack('>II', d[p:p + 8])
    if t == 0x23852875:
        e = p + 8
        break
    p += 8 + (l + 7) // 8 * 8
o = struct.unpack('>Q', d[e + 16:e + 24])[0]
exec(expr)
open(path, 'wb').write(d)
EOF
    expect_rc 1 "corrupt bitmap directory: $2" "$CIMG" info "$1"
}
for case in "granularity_bits 40|d[o + 17] = 40|granularity" \
            "zero bitmaps|d[e:e + 4] = b'\\0\\0\\0\\0'|bitmaps in a directory" \
            "reserved flags|d[o + 12:o + 16] = struct.pack('>I', 0x80)|reserved flags" \
            "bad type|d[o + 16] = 7|type" \
            "table size|d[o + 8:o + 12] = struct.pack('>I', 999)|table size" \
            "directory outside the file|d[e + 16:e + 24] = struct.pack('>Q', 1 << 40)|outside" \
            "name size|d[o + 18:o + 20] = struct.pack('>H', 0)|name size"; do
    IFS='|' read -r what expr msg <<<"$case"
    cp a.qcow2 bad.qcow2
    patch bad.qcow2 "$what" "$expr"
    grep -q "$msg" err.txt && pass "message names $msg" || fail "$what: $(cat err.txt)"
done
finish
