#!/usr/bin/env bash
# coblk-img convert: raw -> raw copies that qemu-img compare finds identical
# and that stay sparse on disk; -S 0 allocates everything; -n with and
# without --target-is-zero over a dirty target; -m/-W; several sources
# joined; streaming a raw image to stdout; -p on stderr.
. "$(dirname "$0")/lib.sh"

alloc_kib() { du -k "$1" | cut -f1; }
# KiB of data extents (SEEK_DATA): unlike du, blind to the file system's own
# blocks (ext4 extent tree blocks count in st_blocks once a file has > 4 extents).
data_kib() {
    qemu-img map -f raw --output=json "$1" | jq '[.[] | select(.data) | .length] | add // 0 | ./1024 | floor'
}

qemu-img create -q -f raw src.raw 8M
qemu-io -f raw -c 'write -P 0xab 0 64k' -c 'write -P 0x11 1M 300k' -c 'write -z 3M 1M' \
    -c 'write -P 0x22 5M 4k' -c 'write -P 0x33 8188k 4k' src.raw >/dev/null
# zero-filled data that is allocated on disk: convert must leave it sparse
qemu-io -f raw -c 'write -P 0 6M 1M' src.raw >/dev/null

"$CIMG" convert -f raw -O raw src.raw dst.raw && pass "convert raw->raw" || fail "convert raw->raw"
qemu-img compare -f raw -F raw src.raw dst.raw >/dev/null && pass "convert: identical" ||
    fail "convert: qemu-img compare finds a difference"
[ "$(alloc_kib dst.raw)" -le 512 ] && pass "convert: sparse ($(alloc_kib dst.raw) KiB)" ||
    fail "convert: target not sparse ($(alloc_kib dst.raw) KiB allocated)"

"$CIMG" convert -S 0 -f raw -O raw src.raw full.raw
qemu-img compare -f raw -F raw src.raw full.raw >/dev/null && pass "convert -S 0: identical" ||
    fail "convert -S 0: differs"
[ "$(alloc_kib full.raw)" -ge 8000 ] && pass "convert -S 0: fully allocated" ||
    fail "convert -S 0: only $(alloc_kib full.raw) KiB allocated"

for m in "-m 1" "-m 16 -W" "-m 4" "-W"; do
    rm -f mw.raw
    "$CIMG" convert $m -f raw -O raw src.raw mw.raw
    qemu-img compare -f raw -F raw src.raw mw.raw >/dev/null && pass "convert $m" ||
        fail "convert $m differs"
done

# -n over a target full of 0xff: zero ranges must be written
qemu-img create -q -f raw dirty.raw 8M
qemu-io -f raw -c 'write -P 0xff 0 8M' dirty.raw >/dev/null
"$CIMG" convert -n -f raw -O raw src.raw dirty.raw
qemu-img compare -f raw -F raw src.raw dirty.raw >/dev/null && pass "convert -n over dirty" ||
    fail "convert -n over dirty target differs"
# --target-is-zero trusts the caller: a really zero target gives an identical copy
qemu-img create -q -f raw zero.raw 8M
"$CIMG" convert -n --target-is-zero -f raw -O raw src.raw zero.raw
qemu-img compare -f raw -F raw src.raw zero.raw >/dev/null && pass "convert --target-is-zero" ||
    fail "convert --target-is-zero differs"
qemu-img create -q -f raw small.raw 4k
expect_rc 1 "convert -n into a smaller target" "$CIMG" convert -n -f raw -O raw src.raw small.raw
grep -q "output file is smaller than input file" err.txt && pass "smaller target message" ||
    fail "smaller target message: $(cat err.txt)"
expect_rc 1 "--target-is-zero without -n" "$CIMG" convert --target-is-zero -f raw -O raw src.raw x.raw

# Several sources are joined.
qemu-img create -q -f raw p1.raw 1M; qemu-io -f raw -c 'write -P 1 0 1M' p1.raw >/dev/null
qemu-img create -q -f raw p2.raw 512k; qemu-io -f raw -c 'write -P 2 4k 4k' p2.raw >/dev/null
"$CIMG" convert -f raw -O raw p1.raw p2.raw joined.raw
cat p1.raw p2.raw | cmp - joined.raw && pass "convert joins sources" || fail "joined sources differ"
qemu-img convert -f raw -O raw p1.raw p2.raw qjoined.raw
cmp qjoined.raw joined.raw && pass "joined like qemu-img" || fail "joined unlike qemu-img"

# Streaming raw bytes to stdout (qemu-img cannot).
"$CIMG" convert -f raw -O raw src.raw - | cmp - src.raw && pass "convert to stdout" ||
    fail "convert to stdout differs"
"$CIMG" convert -f raw -O raw src.raw - | cat >piped.raw
cmp piped.raw src.raw && pass "convert to a pipe" || fail "convert to a pipe differs"
expect_rc 1 "stdout with -n" "$CIMG" convert -n -f raw -O raw src.raw -
if "$CIMG" --help | grep -q " vmdk"; then
    "$CIMG" convert -f raw -O vmdk -o subformat=streamOptimized src.raw - | cat >so.vmdk
    qemu-img check -q so.vmdk && qemu-img compare -q -F raw so.vmdk src.raw &&
        pass "vmdk streamOptimized to a pipe" || fail "vmdk streamOptimized to a pipe"
fi

# -p prints progress on stderr only; -q prints nothing.
"$CIMG" convert -p -f raw -O raw src.raw prog.raw >out.txt 2>err.txt
[ ! -s out.txt ] && grep -q '(100.00/100%)' err.txt && pass "convert -p on stderr" ||
    fail "convert -p: stdout '$(cat out.txt)' stderr '$(tr '\r' ' ' <err.txt)'"

# -o options reach the target format; -o help lists them.
"$CIMG" convert -f raw -O raw -o preallocation=full src.raw pre.raw
[ "$(alloc_kib pre.raw)" -ge 8000 ] && pass "convert -o preallocation=full" ||
    fail "convert -o preallocation=full: $(alloc_kib pre.raw) KiB"
expect_rc 0 "convert -o help" "$CIMG" convert -O raw -o help
# compression on raw is refused, clearly
expect_rc 1 "convert -c to raw" "$CIMG" convert -c -f raw -O raw src.raw c.raw
grep -q "Compression not supported" err.txt && pass "-c message" || fail "-c message: $(cat err.txt)"

# -C: copy offloading. Data of a raw source and the plain clusters of a qcow2
# source go through copy_file_range into a raw or qcow2 target (checked with
# strace when it is installed). The copies equal their sources and stay as
# sparse as qemu-img -C makes them (data is not scanned for zeroes: it is not
# read).
qemu-img convert -f raw -O qcow2 src.raw src-c.qcow2
for s in "raw src.raw" "qcow2 src-c.qcow2"; do
    set -- $s
    rm -f off.raw
    expect_rc 0 "convert -C from $1" "$CIMG" convert -C -m 4 -f "$1" -O raw "$2" off.raw
    expect_rc 0 "convert -C from $1: identical" qemu-img compare -f "$1" -F raw "$2" off.raw
    rm -f qoff.raw
    qemu-img convert -C -f "$1" -O raw "$2" qoff.raw
    [ "$(data_kib off.raw)" -le "$(data_kib qoff.raw)" ] && pass "convert -C from $1: sparse" ||
        fail "convert -C from $1: $(data_kib off.raw) KiB of data, qemu-img" \
            "$(data_kib qoff.raw) KiB"
    if command -v strace >/dev/null; then
        rm -f off.raw
        strace -f -e trace=copy_file_range -o trace.txt "$CIMG" convert -C -f "$1" -O raw "$2" \
            off.raw
        grep -q "copy_file_range(.*= [1-9]" trace.txt && pass "convert -C from $1 offloads" ||
            fail "convert -C from $1: no copy_file_range"
    fi
done
# Into qcow2: the driver allocates the clusters, the kernel fills them, then
# they are linked; partial clusters (a 2 MiB or extended-L2 target, 4 KiB
# clusters of a 64 KiB write) and ranges already allocated (-n) too.
for s in "raw src.raw" "qcow2 src-c.qcow2"; do
    set -- $s
    rm -f off.qcow2
    expect_rc 0 "convert -C from $1 to qcow2" "$CIMG" convert -C -f "$1" -O qcow2 "$2" off.qcow2
    expect_rc 0 "convert -C from $1 to qcow2: identical" qemu-img compare -f raw -F qcow2 \
        src.raw off.qcow2
    expect_rc 0 "convert -C from $1 to qcow2: check" qemu-img check -q off.qcow2
    if command -v strace >/dev/null; then
        rm -f off.qcow2
        strace -f -e trace=copy_file_range -o trace.txt "$CIMG" convert -C -f "$1" -O qcow2 \
            "$2" off.qcow2
        grep -q "copy_file_range(.*= [1-9]" trace.txt &&
            pass "convert -C from $1 to qcow2 offloads" ||
            fail "convert -C from $1 to qcow2: no copy_file_range"
    fi
done
for o in cluster_size=2M cluster_size=4k extended_l2=on compat=0.10; do
    rm -f off.qcow2
    qemu-img create -q -f qcow2 -o "$o" off.qcow2 "$(stat -c %s src.raw)"
    expect_rc 0 "convert -C -n to qcow2 $o" "$CIMG" convert -C -n -f raw -O qcow2 src.raw off.qcow2
    expect_rc 0 "convert -C -n to qcow2 $o: identical" qemu-img compare -f raw -F qcow2 \
        src.raw off.qcow2
    expect_rc 0 "convert -C -n to qcow2 $o: check" qemu-img check -q off.qcow2
done
qemu-io -f qcow2 -c 'write -P 0xee 0 1M' -c 'write -P 0xee 3M 2M' off.qcow2 >/dev/null
expect_rc 0 "convert -C -n over allocated qcow2" "$CIMG" convert -C -n -f raw -O qcow2 src.raw \
    off.qcow2
expect_rc 0 "convert -C -n over allocated qcow2: identical" qemu-img compare -f raw -F qcow2 \
    src.raw off.qcow2
expect_rc 0 "convert -C -n over allocated qcow2: check" qemu-img check -q off.qcow2
# compressed source clusters are read and written (no file offset to copy from)
qemu-img convert -c -f raw -O qcow2 src.raw srcz.qcow2
rm -f off.qcow2
expect_rc 0 "convert -C from compressed qcow2" "$CIMG" convert -C -f qcow2 -O qcow2 srcz.qcow2 \
    off.qcow2
expect_rc 0 "convert -C from compressed qcow2: identical" qemu-img compare -f raw -F qcow2 \
    src.raw off.qcow2
expect_rc 1 "convert -C -c refused" "$CIMG" convert -C -c -f raw -O qcow2 src.raw off.qcow2
grep -q "Cannot enable copy offloading when -c is used" err.txt && pass "convert -C -c message" ||
    fail "convert -C -c message: $(cat err.txt)"
# -n over a dirty raw target: zero ranges are still written
qemu-io -f raw -c 'write -P 0xff 0 8M' dirty.raw >/dev/null
expect_rc 0 "convert -C -n over dirty" "$CIMG" convert -C -n -f raw -O raw src.raw dirty.raw
expect_rc 0 "convert -C -n over dirty: identical" qemu-img compare -f raw -F raw src.raw dirty.raw

# In-order writes (no -W): a chunk hands the turn on as it issues its last
# write, so the writes queue in the target in claim order and a qcow2 target
# gets its clusters in guest order, although the source's clusters lie in
# reverse order and its chunks hold zero pieces between data (several writes
# per chunk). -n over a dirty target adds write-zeroes to the chunks.
if "$CIMG" --help | grep -q " qcow2"; then
    qemu-img create -q -f qcow2 shuf.qcow2 24M
    for i in $(seq 23 -1 0); do
        echo "write -q -P $((i + 1)) $((i * 1024))k 768k"
        echo "write -q -P 0 $((i * 1024 + 256))k 64k"
    done | qemu-io -f qcow2 shuf.qcow2 >/dev/null
    in_guest_order() {
        qemu-img map --output=json -f qcow2 "$1" |
            jq -e '[.[] | select(.data and .offset != null) | .offset] | . == sort' >/dev/null
    }
    for m in "" "-m 16" "-m 2"; do
        rm -f ord.qcow2
        "$CIMG" convert $m -f qcow2 -O qcow2 shuf.qcow2 ord.qcow2 &&
            qemu-img compare -q -f qcow2 -F qcow2 shuf.qcow2 ord.qcow2 &&
            qemu-img check -q ord.qcow2 && pass "convert in order ${m:--m 8}: identical" ||
            fail "convert in order ${m:--m 8} to qcow2"
        in_guest_order ord.qcow2 && pass "convert in order ${m:--m 8}: clusters in guest order" ||
            fail "convert in order ${m:--m 8}: clusters out of guest order"
    done
    qemu-io -f qcow2 -c 'write -P 0xff 0 24M' ord.qcow2 >/dev/null
    "$CIMG" convert -n -f qcow2 -O qcow2 shuf.qcow2 ord.qcow2 &&
        qemu-img compare -q -f qcow2 -F qcow2 shuf.qcow2 ord.qcow2 &&
        pass "convert in order -n over dirty qcow2" || fail "convert in order -n over dirty qcow2"
fi

# A null-co source converts to zeroes.
"$CIMG" convert --image-opts -O raw "driver=null-co,size=1M,read-zeroes=on" nul.raw
qemu-img create -q -f raw z1.raw 1M
cmp nul.raw z1.raw && pass "null-co source" || fail "null-co source"

# A streamOptimized vmdk written by coblk ends with an end-of-stream marker
# (a zero sector after the last grain), also after a second session appended
# grains (they go after the old marker, never over it); qemu-img reads both.
qemu-img create -q -f raw eos-src.raw 4M
qemu-io -f raw -c "write -P 0x5c 0 1M" -c "write -P 0x6d 3M 64k" eos-src.raw >/dev/null
eos() { python3 -c "import sys; d = open(sys.argv[1], 'rb').read(); \
sys.exit(0 if len(d) % 512 == 0 and d[-512:] == bytes(512) else 1)" "$1"; }
"$CIMG" convert -f raw -O vmdk -o subformat=streamOptimized eos-src.raw eos.vmdk &&
    eos eos.vmdk && pass "stream ends with an end-of-stream marker" || fail "no EOS marker"
expect_rc 0 "stream equals its source" qemu-img compare -f raw -F vmdk eos-src.raw eos.vmdk
"$CIO" -f vmdk -c "write -P 0x7e 2M 64k" eos.vmdk >/dev/null || fail "append to a stream"
qemu-io -f raw -c "write -P 0x7e 2M 64k" eos-src.raw >/dev/null
eos eos.vmdk && pass "EOS marker after appending" || fail "no EOS marker after appending"
expect_rc 0 "appended stream equals its source" qemu-img compare -f raw -F vmdk eos-src.raw \
    eos.vmdk
expect_rc 0 "appended stream checks" qemu-img check -q eos.vmdk

finish
