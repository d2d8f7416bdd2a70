#!/usr/bin/env bash
# coblk-io next to qemu-io: the same commands on copies of the same image give
# the same lines (timing lines normalised) and the same exit status, and the
# images end up identical.
. "$(dirname "$0")/lib.sh"

qemu-img create -q -f raw base.raw 1M

# run_both <description> <qemu-io/coblk-io arguments...> (the image is the last one)
run_both() {
    local what=$1
    shift
    cp base.raw q.raw
    cp base.raw c.raw
    qemu-io "$@" q.raw >q.out 2>q.err; local qr=$?
    "$CIO" "$@" c.raw >c.out 2>c.err; local cr=$?
    [ $qr = $cr ] && pass "$what: rc $cr" || fail "$what: qemu-io rc $qr, coblk-io rc $cr"
    norm_io q.out >q.n; norm_io c.out >c.n
    same_output "$what: output" q.n c.n
    cmp -s q.raw c.raw && pass "$what: images identical" || fail "$what: images differ"
}

run_both "write/read with pattern" -f raw -c 'write -P 0xab 0 4k' -c 'read -P 0xab 0 4k' \
    -c 'write -P 0x5a 4096 512' -c 'read -P 0x5a 4k 512' -c 'read -P 0 8k 4k'
run_both "pattern mismatch" -f raw -c 'write -P 1 0 4k' -c 'read -P 2 0 4k' -c 'length'
run_both "partial pattern -s -l" -f raw -c 'write -P 3 0 4k' -c 'write -P 4 1k 1k' \
    -c 'read -P 4 -s 1k -l 1k 0 4k' -c 'read -P 3 -s 0 -l 1k 0 4k'
run_both "hex dump" -f raw -c 'write -P 0x41 3 20' -c 'read -v 0 40'
run_both "zeroes, discard, flush" -f raw -c 'write -P 9 0 64k' -c 'write -z 8k 4k' \
    -c 'read -P 0 8k 4k' -c 'flush' -c 'discard 16k 4k' -c 'read -P 9 32k 4k'
run_both "vectored" -f raw -c 'writev -P 5 16k 512 1k 2k' -c 'readv -P 5 16k 512 3k' \
    -c 'readv -P 6 16k 1k'
run_both "aio" -f raw -c 'aio_write -P 7 32k 4k' -c 'aio_flush' -c 'aio_read -P 7 32k 4k' \
    -c 'aio_flush'
run_both "terse and quiet" -f raw -c 'write -C 0 512' -c 'read -q 0 512' -c 'read -C 0 512'
run_both "length info map alloc" -f raw -c 'length' -c 'info' -c 'map' -c 'alloc 0 64k' \
    -c 'alloc 4k'
run_both "truncate" -f raw -c 'truncate 2M' -c 'length' -c 'write -P 1 1536k 4k' \
    -c 'truncate 1M' -c 'length'
# Snapshot mode: writes go to a temporary overlay; the image is unchanged (the
# images must stay identical to base.raw, which run_both checks between them).
run_both "snapshot mode -s" -s -f raw -c 'write -P 8 0 8k' -c 'read -P 8 0 8k' \
    -c 'read -P 0 8k 4k' -c 'info' -c 'length'
cmp -s c.raw base.raw && pass "-s leaves the image unchanged" || fail "-s wrote the image"
run_both "snapshot mode -s -r" -s -r -f raw -c 'write -P 8 0 8k' -c 'read -P 0 0 8k'
cp base.raw q.raw
cp base.raw c.raw
qemu-io -c 'open -s -o driver=raw q.raw' -c 'write -P 2 0 4k' -c 'read -P 2 0 4k' -c 'close' \
    -c 'open -o driver=raw q.raw' -c 'read -P 0 0 4k' >q.out 2>&1
"$CIO" -c 'open -s -o driver=raw c.raw' -c 'write -P 2 0 4k' -c 'read -P 2 0 4k' -c 'close' \
    -c 'open -o driver=raw c.raw' -c 'read -P 0 0 4k' >c.out 2>&1
norm_io q.out >q.n; norm_io c.out >c.n
same_output "open -s: output" q.n c.n
grep -q 'Pattern verification failed' c.out && fail "open -s wrote the image" ||
    pass "open -s: the image reads back unchanged"
# Every qemu-io command exists, with the same help line; documented differences:
# open takes -i aio, read does not list -a (qemu-io refuses it too), sleep names
# its argument.
qemu-io -f raw -c help base.raw | awk 'NF {print $1}' | sort -u >qcmds.txt
[ -s qcmds.txt ] || fail "qemu-io -c help listed nothing"
bad=""
while read -r cmd; do
    case $cmd in open|read|sleep) continue ;; esac
    q=$(qemu-io -f raw -c "help $cmd" base.raw 2>/dev/null | head -1)
    c=$("$CIO" -f raw -c "help $cmd" base.raw 2>/dev/null | head -1)
    [ "$q" = "$c" ] || bad="$bad $cmd"
done <qcmds.txt
[ -z "$bad" ] && pass "help lines of qemu-io's commands" || fail "help lines differ:$bad"
run_both "sigraise SIGTERM" -f raw -c 'write -P 1 0 4k' -c 'sigraise 15' -c 'write -P 2 0 4k'
run_both "sigraise bad arguments" -f raw -c 'sigraise 999' -c 'sigraise abc' -c 'sigraise -1' \
    -c 'sigraise 65' -c 'sigraise 0' -c 'help sigraise' -c 'length'
run_both "read past the end" -f raw -c 'read 0 4M' -c 'read -q 0 4k' -c 'length'
# Past the end every command fails as qemu-io's (BlockBackend's -EIO), also
# when the request starts inside the image or exactly at its end.
run_both "write/zero/discard past the end" -f raw -c 'write -P 1 1020k 8k' -c 'write -z 1M 1' \
    -c 'discard 2M 1' -c 'read -P 0 1020k 4k' -c 'length'
run_both "vectored past the end" -f raw -c 'readv 1M 1' -c 'writev 1023k 512 1k' -c 'length'
run_both "aio_read past the end" -f raw -c 'aio_read 2M 4k' -c 'aio_flush' -c 'read 0 1'
run_both "aio_write past the end" -f raw -c 'aio_write -P 3 1020k 8k' -c 'aio_flush' \
    -c 'read -P 0 1020k 4k'
run_both "aio_write -z past the end" -f raw -c 'aio_write -z 1M 1' -c 'aio_flush' -c 'length'
run_both "aio_read pattern mismatch" -f raw -c 'aio_read -P 5 0 4k' -c 'aio_flush' -c 'length'
run_both "read/write ending at the end" -f raw -c 'write -P 2 1020k 4k' -c 'read -P 2 1020k 4k'
run_both "bad number" -f raw -c 'read 0 abc' -c 'read 1x 4'
run_both "bad argument count" -f raw -c 'read 0' -c 'write'
run_both "unknown command" -f raw -c 'bogus' -c 'length'
run_both "bad pattern" -f raw -c 'write -P 300 0 1' -c 'read -P x 0 1'
run_both "conflicting write options" -f raw -c 'write -z -P 1 0 4k'
run_both "read-only" -r -f raw -c 'write 0 4k' -c 'read 0 4k'
run_both "close then read" -f raw -c 'close' -c 'read 0 1'
run_both "sector-unaligned I/O" -f raw -c 'write -P 0x77 1000 3000' -c 'read -P 0x77 1000 3000' \
    -c 'read -P 0 0 1000'

run_both "reopen read-only and back" -f raw -c 'reopen -r' -c 'write 0 4k' -c 'reopen -w' \
    -c 'write -P 6 0 4k' -c 'reopen -c none' -c 'read -P 6 0 4k'
cp base.raw q.raw; cp base.raw c.raw
qemu-io -f raw -c 'write -P 7 0 4k' -c close -c 'open -r -o driver=raw q.raw' \
    -c 'read -P 7 0 4k' -c 'write 0 1' q.raw >q.out 2>q.err; qr=$?
"$CIO" -f raw -c 'write -P 7 0 4k' -c close -c 'open -r -o driver=raw c.raw' \
    -c 'read -P 7 0 4k' -c 'write 0 1' c.raw >c.out 2>c.err; cr=$?
norm_io q.out >q.n; norm_io c.out >c.n
[ $qr = $cr ] && pass "close and open: rc $cr" || fail "close and open: rc $qr/$cr"
same_output "close and open: output" q.n c.n

# blkdebug breakpoints: an aio_write stops at the pwritev event until resumed.
if "$CIMG" --help | grep -q blkdebug; then
    cp base.raw c.raw
    "$CIO" --image-opts -c 'break pwritev A' -c 'aio_write -P 5 0 4k' -c 'wait_break A' \
        -c 'read -P 0 0 4k' -c 'resume A' -c 'aio_flush' -c 'read -P 5 0 4k' \
        "driver=raw,file.driver=blkdebug,file.image.driver=file,file.image.filename=c.raw" \
        >c.out 2>&1; cr=$?
    [ $cr = 0 ] && ! grep -q "verification failed" c.out && pass "break / wait_break / resume" ||
        fail "break / wait_break / resume: rc $cr $(cat c.out)"
fi

# --image-opts needs the file name inside the option string.
cp base.raw q.raw; cp base.raw c.raw
qemu-io --image-opts -c 'write -P 8 0 4k' "driver=raw,file.filename=q.raw" >q.out 2>&1; qr=$?
"$CIO" --image-opts -c 'write -P 8 0 4k' "driver=raw,file.filename=c.raw" >c.out 2>&1; cr=$?
[ $qr = $cr ] && cmp -s q.raw c.raw && pass "--image-opts" || fail "--image-opts: rc $qr/$cr"

# Commands from stdin when there is no -c.
cp base.raw q.raw; cp base.raw c.raw
printf 'write -P 3 0 512\nread -P 3 0 512\nlength\n' | qemu-io -f raw q.raw >q.out 2>&1
printf 'write -P 3 0 512\nread -P 3 0 512\nlength\n' | "$CIO" -f raw c.raw >c.out 2>&1
sed -E 's/(qemu|coblk)-io> /PROMPT /g' q.out >q.p; sed -E 's/(qemu|coblk)-io> /PROMPT /g' c.out >c.p
norm_io q.p >q.n; norm_io c.p >c.n
same_output "stdin commands" q.n c.n

# Opening a missing file fails with exit 1 and names the file.
"$CIO" -c 'read 0 1' nosuch.raw >c.out 2>c.err; cr=$?
[ $cr = 1 ] && grep -q "nosuch.raw" c.err && pass "missing file" || fail "missing file: rc $cr"
"$CIO" --bogus-option c.raw >c.out 2>c.err; cr=$?
[ $cr = 1 ] && pass "bad option" || fail "bad option: rc $cr"

# coblk-io writes, qemu-io verifies (and the other way round) on a qcow2-free raw.
cp base.raw x.raw
"$CIO" -f raw -c 'write -P 0x66 100k 20k' x.raw >/dev/null
qemu-io -f raw -c 'read -P 0x66 100k 20k' x.raw | grep -q "^read 20480/20480" &&
    pass "qemu-io reads what coblk-io wrote" || fail "qemu-io reads what coblk-io wrote"

finish
