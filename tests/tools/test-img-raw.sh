#!/usr/bin/env bash
# coblk-img on raw images next to qemu-img on the same images: create sizes,
# info (human and JSON), map (human and JSON), compare exit codes, check's
# "not supported" exit 63, resize, dd, measure and bench.
. "$(dirname "$0")/lib.sh"

# create: sizes with suffixes, rounded up to whole sectors as qemu-img does
for sz in 1M 1.5k 100 0 64K 2G; do
    rm -f q.raw c.raw
    qemu-img create -q -f raw q.raw $sz
    "$CIMG" create -q -f raw c.raw $sz
    [ "$(stat -c %s q.raw)" = "$(stat -c %s c.raw)" ] && pass "create size $sz" ||
        fail "create size $sz: qemu $(stat -c %s q.raw), coblk $(stat -c %s c.raw)"
    # Both allocate the new file's first block (up to 4 KiB of zeroes), nothing else.
    qemu-img map -f raw --output=json q.raw >q.json
    qemu-img map -f raw --output=json c.raw >c.json
    same_output "create $sz: map of the new file" q.json c.json
done
qemu-img create -f raw q.raw 1M >q.txt
"$CIMG" create -f raw c.raw 1M >c.txt
sed -i 's/q\.raw/X/' q.txt; sed -i 's/c\.raw/X/' c.txt
same_output "create message" q.txt c.txt
qemu-img create -f raw -o size=4k q.raw >q.txt
"$CIMG" create -f raw -o size=4k c.raw >c.txt
sed -i 's/q\.raw/X/' q.txt; sed -i 's/c\.raw/X/' c.txt
same_output "create -o size message" q.txt c.txt
expect_rc 1 "create without size" "$CIMG" create -f raw x.raw
expect_rc 1 "create with size twice" "$CIMG" create -f raw -o size=4k x.raw 8k
expect_rc 1 "create bad size" "$CIMG" create -f raw x.raw 1Q
expect_rc 1 "create unknown format" "$CIMG" create -f nosuch x.raw 1M
expect_rc 1 "create bad option" "$CIMG" create -f raw -o bogus=1 x.raw 1M
expect_rc 0 "create -o help" "$CIMG" create -f raw -o help
grep -q '^  size=<size> ' out.txt && pass "-o help lists size" || fail "-o help lists size"

# An image with data, a hole and a written zero range, shared by both tools.
qemu-img create -q -f raw a.raw 1M
qemu-io -f raw -c 'write -P 0xab 64k 4k' -c 'write -P 0x11 200k 12k' -c 'write -z 512k 64k' \
    a.raw >/dev/null

qemu-img info -f raw --output=json a.raw >q.json
"$CIMG" info -f raw --output=json a.raw >c.json
same_json "info json (raw)" q.json c.json actual-size
qemu-img info -f raw --output=json --backing-chain a.raw | jq '.[0]' >q.json
"$CIMG" info -f raw --output=json --backing-chain a.raw | jq '.[0]' >c.json
same_json "info json --backing-chain (raw)" q.json c.json actual-size
qemu-img info -f raw a.raw | grep -v '^disk size' >q.txt
"$CIMG" info -f raw a.raw | grep -v '^disk size' >c.txt
same_output "info human (raw)" q.txt c.txt
"$CIMG" info -f raw a.raw | grep -qE '^disk size: [0-9.]+ KiB$' && pass "info disk size" ||
    fail "info disk size"

qemu-img map -f raw --output=json a.raw >q.json
"$CIMG" map -f raw --output=json a.raw >c.json
same_output "map json (raw)" q.json c.json
qemu-img map -f raw a.raw >q.txt
"$CIMG" map -f raw a.raw >c.txt
same_output "map human (raw)" q.txt c.txt
qemu-img map -f raw --output=json --start-offset=100k --max-length=200k a.raw >q.json
"$CIMG" map -f raw --output=json --start-offset=100k --max-length=200k a.raw >c.json
same_output "map json window (raw)" q.json c.json

# check: raw cannot be checked -> 63 and qemu-img's message
expect_rc 63 "check raw" "$CIMG" check -f raw a.raw
grep -q "This image format does not support checks" err.txt && pass "check message" ||
    fail "check message: $(cat err.txt)"
expect_rc 63 "check raw json" "$CIMG" check -f raw --output=json a.raw

# compare: exit codes and messages as qemu-img
cp a.raw b.raw
qemu-io -f raw -c 'write -P 0x12 300001 1' b.raw >/dev/null
for pair in "a.raw a.raw" "a.raw b.raw"; do
    set -- $pair
    qemu-img compare -f raw -F raw $1 $2 >q.txt; qr=$?
    "$CIMG" compare -f raw -F raw $1 $2 >c.txt; cr=$?
    [ $qr = $cr ] && pass "compare $1 $2 rc $cr" || fail "compare $1 $2: qemu rc $qr coblk rc $cr"
    same_output "compare $1 $2 output" q.txt c.txt
done
qemu-img create -q -f raw big.raw 2M
qemu-io -f raw -c 'write -P 1 1500000 1' big.raw >/dev/null
qemu-img create -q -f raw small.raw 1M
for flags in "" "-s"; do
    qemu-img compare $flags -f raw -F raw small.raw big.raw >q.txt; qr=$?
    "$CIMG" compare $flags -f raw -F raw small.raw big.raw >c.txt; cr=$?
    [ $qr = $cr ] && pass "compare $flags sizes rc $cr" || fail "compare $flags sizes: $qr vs $cr"
    same_output "compare $flags sizes output" q.txt c.txt
done
expect_rc 2 "compare missing file" "$CIMG" compare a.raw nosuch.raw
grep -q "nosuch.raw" err.txt && pass "compare error names the file" || fail "compare error text"

# resize
cp a.raw r1.raw; cp a.raw r2.raw
for spec in "+1M|" "512k|--shrink" "1M|" "1536k|--shrink" "-512k|--shrink"; do
    size=${spec%%|*}
    opt=${spec#*|}
    qemu-img resize -q -f raw $opt r1.raw -- $size 2>/dev/null; qr=$?
    "$CIMG" resize -q -f raw $opt r2.raw -- $size 2>/dev/null; cr=$?
    [ $qr = $cr ] && [ "$(stat -c %s r1.raw)" = "$(stat -c %s r2.raw)" ] &&
        pass "resize $opt $size" ||
        fail "resize $opt $size: rc $qr/$cr size $(stat -c %s r1.raw)/$(stat -c %s r2.raw)"
done
expect_rc 1 "resize shrink without --shrink" "$CIMG" resize -f raw r2.raw 4k
grep -q -- "--shrink" err.txt && pass "resize shrink message" || fail "resize shrink message"
expect_rc 1 "resize to zero" "$CIMG" resize -f raw r2.raw -- -100M
qemu-img compare -f raw -F raw r1.raw r2.raw >/dev/null && pass "resized images identical" ||
    fail "resized images differ"

# dd
qemu-img dd -f raw -O raw if=a.raw of=dq.raw bs=4k count=60 skip=10
"$CIMG" dd -f raw -O raw if=a.raw of=dc.raw bs=4k count=60 skip=10
cmp dq.raw dc.raw && pass "dd identical" || fail "dd output differs"
qemu-img dd -f raw -O raw if=a.raw of=dq.raw bs=3000 count=2
"$CIMG" dd -f raw -O raw if=a.raw of=dc.raw bs=3000 count=2
cmp dq.raw dc.raw && pass "dd odd bs identical" || fail "dd odd bs differs"
expect_rc 1 "dd without of=" "$CIMG" dd if=a.raw
expect_rc 1 "dd bad operand" "$CIMG" dd -f raw if=a.raw of=x.raw foo=1
expect_rc 1 "dd bs=0" "$CIMG" dd -f raw if=a.raw of=x.raw bs=0

# measure
for args in "-O raw --size 1G" "-O raw --output=json --size 3M" "-O raw -f raw a.raw"; do
    qemu-img measure $args >q.txt
    "$CIMG" measure $args >c.txt
    same_output "measure $args" q.txt c.txt
done
expect_rc 1 "measure without size or file" "$CIMG" measure -O raw

# bench: same first lines as qemu-img bench, the data written is the pattern
cp a.raw bq.raw
qemu-img bench -f raw -c 300 -d 4 -w --pattern=7 --flush-interval=100 bq.raw | head -2 >q.txt
"$CIMG" bench -f raw -c 300 -d 4 -w --pattern=7 --flush-interval=100 a.raw >c.txt
head -2 c.txt >c2.txt
same_output "bench header lines" q.txt c2.txt
grep -qE '^Run completed in [0-9]+\.[0-9]{3} seconds\.$' c.txt && pass "bench result line" ||
    fail "bench result line"
qemu-img compare -f raw -F raw a.raw bq.raw >/dev/null && pass "bench -w data" || fail "bench -w data"
"$CIMG" bench -f raw -c 200 -d 8 -s 8k -S 16k -o 4k a.raw >c.txt
qemu-img bench -f raw -c 200 -d 8 -s 8k -S 16k -o 4k a.raw >q.txt
same_output "bench read header" <(head -1 q.txt) <(head -1 c.txt)
expect_rc 1 "bench flush interval without -w" "$CIMG" bench -f raw --flush-interval=10 a.raw

finish
