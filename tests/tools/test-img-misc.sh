#!/usr/bin/env bash
# coblk-img on protocol nodes and odd inputs: null-co through --image-opts
# (info, map, compare, bench), JSON well-formedness of every --output=json,
# an empty image, and the man pages' presence in the source tree.
. "$(dirname "$0")/lib.sh"

NULL="driver=null-co,size=2M,read-zeroes=on"
"$CIMG" info --image-opts --output=json "$NULL" >c.json
jq -e '.["virtual-size"] == 2097152 and .format == "null-co"' c.json >/dev/null &&
    pass "info json null-co" || fail "info json null-co: $(cat c.json)"
qemu-img info --image-opts --output=json "$NULL" >q.json
same_json "info json null-co like qemu-img" q.json c.json actual-size filename
"$CIMG" map --image-opts --output=json "$NULL" | jq -e 'length >= 1' >/dev/null &&
    pass "map json null-co" || fail "map json null-co"
qemu-img create -q -f raw z.raw 2M
expect_rc 0 "compare null-co with zero raw" "$CIMG" compare --image-opts "$NULL" \
    "driver=raw,file.filename=z.raw"
expect_rc 0 "bench on null-co" "$CIMG" bench -c 2000 --image-opts "$NULL"

# An empty image.
qemu-img create -q -f raw e.raw 0
for out in human json; do
    qemu-img map -f raw --output=$out e.raw >q.txt
    "$CIMG" map -f raw --output=$out e.raw >c.txt
    same_output "map $out of an empty image" q.txt c.txt
done
qemu-img info -f raw --output=json e.raw >q.json
"$CIMG" info -f raw --output=json e.raw >c.json
same_json "info json of an empty image" q.json c.json actual-size
qemu-img compare -f raw -F raw e.raw e.raw >q.txt
"$CIMG" compare -f raw -F raw e.raw e.raw >c.txt
same_output "compare empty images" q.txt c.txt

# compare: the first difference is reported, also when later segments (compared
# on a worker thread while the next is read) differ too; data against zeroes.
qemu-img create -q -f raw c1.raw 16M
qemu-io -f raw -c 'write -P 7 0 12M' c1.raw >/dev/null
qemu-img convert -f raw -O qcow2 c1.raw c2.qcow2
qemu-io -f qcow2 -c 'write -P 8 9M 4k' -c 'write -P 9 5242880 1' -c 'write -z 11M 64k' \
    c2.qcow2 >/dev/null
qemu-img convert -f raw -O qcow2 c1.raw c3.qcow2
qemu-io -f qcow2 -c 'write -P 1 14M 4k' c3.qcow2 >/dev/null
for args in "c1.raw c2.qcow2" "c2.qcow2 c1.raw" "c1.raw c3.qcow2" "c1.raw c1.raw" \
            "-s c1.raw c2.qcow2"; do
    qemu-img compare $args >q.txt 2>&1; qr=$?
    "$CIMG" compare $args >c.txt 2>&1; cr=$?
    [ $qr = $cr ] && pass "compare $args: rc $cr" || fail "compare $args: rc $cr, qemu-img $qr"
    same_output "compare $args: output" q.txt c.txt
done

# Image locking: info works on an image another process has open for writing
# (as qemu-img info); map without -U is refused, with -U it works.
qemu-img create -q -f raw lk.raw 1M
qemu-io -f raw -c 'sleep 120000' lk.raw &
holder=$!
# Wait (up to 60 s on a loaded machine) until qemu-io holds the lock: seen held
# three times in a row, not in a passing state of its open.
held=0
for i in $(seq 600); do
    if "$CIMG" map -f raw lk.raw >/dev/null 2>&1; then held=0; else held=$((held + 1)); fi
    [ $held -ge 3 ] && break
    sleep 0.1
done
expect_rc 0 "info on an image in use" "$CIMG" info -f raw lk.raw
expect_rc 1 "map on an image in use" "$CIMG" map -f raw lk.raw
grep -q "lock" err.txt && pass "lock error message" || fail "lock error message: $(cat err.txt)"
expect_rc 0 "map -U on an image in use" "$CIMG" map -U -f raw lk.raw
expect_rc 1 "coblk-io write on an image in use" "$CIO" -f raw -c 'write 0 4k' lk.raw
kill $holder 2>/dev/null
wait $holder 2>/dev/null

# Every JSON output parses.
qemu-img create -q -f raw a.raw 1M
for c in "info --output=json" "info --output=json --backing-chain" "map --output=json" \
         "measure -O raw --output=json"; do
    "$CIMG" $c -f raw a.raw | jq . >/dev/null && pass "$c is JSON" || fail "$c is not JSON"
done

# Man pages exist and are valid roff (man -l renders them when man is there).
src=$TESTDIR/../../tools/man
for m in coblk-img.1 coblk-io.1; do
    [ -s "$src/$m" ] && pass "man page $m" || fail "man page $m missing"
done

# convert -l / measure -l: an internal snapshot as the source (by name, id or
# snapshot.id=/snapshot.name=), after the image grew past the snapshot's size.
qemu-img create -q -f qcow2 sn.qcow2 16M
qemu-io -c 'write -P 1 0 1M' -c 'write -P 3 8M 64k' sn.qcow2 >/dev/null
qemu-img snapshot -c snap1 sn.qcow2
qemu-io -c 'write -P 2 0 512k' sn.qcow2 >/dev/null
qemu-img resize -q sn.qcow2 32M
for l in snap1 1 snapshot.name=snap1 snapshot.id=1 snapshot.id=1,snapshot.name=snap1; do
    qemu-img convert -l "$l" -O raw sn.qcow2 q.raw
    "$CIMG" convert -l "$l" -O raw sn.qcow2 c.raw
    cmp -s q.raw c.raw && pass "convert -l $l like qemu-img" || fail "convert -l $l"
done
qemu-img measure --output=json -l snap1 -O qcow2 sn.qcow2 >q.json
"$CIMG" measure --output=json -l snap1 -O qcow2 sn.qcow2 >c.json
same_json "measure -l like qemu-img" q.json c.json
expect_rc 1 "convert -l of a missing snapshot" "$CIMG" convert -l nope -O raw sn.qcow2 c.raw
grep -q "Failed to load snapshot" err.txt && pass "missing snapshot message" ||
    fail "missing snapshot: $(cat err.txt)"
expect_rc 1 "convert -l with a bad parameter" "$CIMG" convert -l snapshot.foo=1 -O raw \
    sn.qcow2 c.raw
expect_rc 1 "convert -l of a raw image" "$CIMG" convert -l s1 -f raw -O raw q.raw c2.raw

finish
