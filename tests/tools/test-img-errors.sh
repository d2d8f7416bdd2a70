#!/usr/bin/env bash
# coblk-img's failure paths: missing files, bad options and arguments for
# every sub-command, formats without an operation, and I/O errors (writes
# past RLIMIT_FSIZE fail with EFBIG) that must make the command exit non-zero
# with a message naming the file or offset.
. "$(dirname "$0")/lib.sh"

qemu-img create -q -f raw a.raw 4M
qemu-io -f raw -c 'write -P 1 0 4M' a.raw >/dev/null

# Every sub-command has --help, and an unknown option fails.
for cmd in amend bench check commit compare compact convert create dd geometry info map \
           measure rebase resize setuuid snapshot; do
    "$CIMG" $cmd --help >out.txt 2>&1 && grep -q "^usage: coblk-img $cmd" out.txt &&
        pass "$cmd --help" || fail "$cmd --help"
    "$CIMG" $cmd --no-such-option a.raw >out.txt 2>&1
    [ $? -ne 0 ] && pass "$cmd bad option fails" || fail "$cmd bad option accepted"
done
# Every sub-command and flag in qemu-img's own synopsis is in coblk-img's usage line.
qemu-img --help | sed -n '/^Command syntax/,/^Command parameters/p' | grep '^  [a-z]' >syn.txt
[ -s syn.txt ] || fail "qemu-img --help printed no command syntax"
while read -r cmd rest; do
    "$CIMG" "$cmd" --help >out.txt 2>&1 || { fail "$cmd: no such sub-command"; continue; }
    missing=""
    for f in $(echo "$rest" | grep -oE '(--[a-z-]+|-[a-zA-Z])\b' | sort -u); do
        grep -q -- "$f\b" out.txt || missing="$missing $f"
    done
    [ -z "$missing" ] && pass "$cmd usage has qemu-img's flags" ||
        fail "$cmd usage lacks qemu-img's$missing"
    # ... and the option parser takes each (with a dummy argument where it has one).
    refused=""
    while read -r f a; do
        "$CIMG" "$cmd" $f ${a:+x} no-such-file >out.txt 2>&1
        grep -qE 'invalid option|unrecognized option|requires an argument' out.txt &&
            refused="$refused $f"
    done < <(echo "$rest" | grep -oE '(--[a-z-]+|-[a-zA-Z])\b([ =][a-z_]+)?' |
             sed -E 's/[ =]/ /' | sort -u)
    [ -z "$refused" ] && pass "$cmd takes qemu-img's flags" ||
        fail "$cmd refuses qemu-img's$refused"
done <syn.txt
expect_rc 0 "coblk-img --help" "$CIMG" --help
expect_rc 1 "unknown command" "$CIMG" frobnicate
expect_rc 1 "no command" "$CIMG"

# A missing file: exit 1 (2 for compare) and the name in the message.
for cmd in "info" "map" "check" "snapshot -l" "resize" "bench -c 1" "amend -o size=1M" \
           "commit" "rebase -u -b x -F raw" "convert -O raw" "dd of=x.raw if="; do
    case $cmd in
    resize) args="nosuch.img 1M" ;;
    "convert -O raw") args="nosuch.img out.raw" ;;
    "dd of=x.raw if=") args="" ; cmd="dd of=x.raw if=nosuch.img" ;;
    *) args="nosuch.img" ;;
    esac
    "$CIMG" $cmd $args >out.txt 2>err.txt; rc=$?
    [ $rc -eq 1 ] && grep -q "nosuch.img" err.txt && pass "$cmd on a missing file" ||
        fail "$cmd on a missing file: rc $rc, '$(cat err.txt)'"
done
expect_rc 2 "compare on a missing file" "$CIMG" compare a.raw nosuch.img

# Operations raw cannot do fail clearly instead of pretending.
expect_rc 1 "snapshot -c on raw" "$CIMG" snapshot -c s1 a.raw
grep -q "does not support" err.txt && pass "snapshot message" || fail "snapshot: $(cat err.txt)"
expect_rc 1 "amend on raw" "$CIMG" amend -f raw -o size=8M a.raw
grep -q "does not support" err.txt && pass "amend message" || fail "amend: $(cat err.txt)"
expect_rc 1 "commit on raw" "$CIMG" commit -f raw a.raw
grep -q "does not have a backing file" err.txt && pass "commit message" || fail "commit: $(cat err.txt)"
expect_rc 1 "rebase -u on raw" "$CIMG" rebase -f raw -u -b b.raw -F raw a.raw
grep -q "does not support" err.txt && pass "rebase message" || fail "rebase: $(cat err.txt)"
expect_rc 1 "setuuid on raw" "$CIMG" setuuid -f raw a.raw
expect_rc 1 "compact on raw" "$CIMG" compact -f raw a.raw
expect_rc 1 "geometry on raw" "$CIMG" geometry -f raw a.raw
expect_rc 1 "measure -O null-co" "$CIMG" measure -O null-co --size 1M
# --object: secrets are accepted (as qemu-img; no coblk driver uses one yet),
# bad objects refused with a message; tls-creds objects: tests/interop/nbd-tls.sh.
echo -n letmein >pw.txt
expect_rc 0 "info --object secret,data=" "$CIMG" info --object secret,id=s0,data=x -f raw a.raw
expect_rc 0 "info --object secret,file=" "$CIMG" info --object secret,id=s0,file=pw.txt \
    -f raw a.raw
expect_rc 1 "--object secret without data" "$CIMG" info --object secret,id=s0 -f raw a.raw
grep -q "exactly one of data= and file=" err.txt && pass "secret message" || fail "$(cat err.txt)"
expect_rc 1 "--object secret, no such file" "$CIMG" info --object secret,id=s0,file=nope \
    -f raw a.raw
grep -q "cannot read 'nope'" err.txt && pass "secret file message" || fail "$(cat err.txt)"
expect_rc 1 "--object of an unknown type" "$CIMG" info --object bogus,id=b -f raw a.raw
grep -q "object type 'bogus' is not supported" err.txt && pass "type message" ||
    fail "$(cat err.txt)"
expect_rc 1 "--object duplicate id" "$CIMG" convert --object secret,id=s,data=1 \
    --object secret,id=s,data=2 -f raw -O raw a.raw x.raw
expect_rc 1 "tls-creds=ID without the object" "$CIMG" info \
    --object secret,id=s0,data=x --image-opts driver=raw,file.driver=file,file.filename=a.raw,file.tls-creds=s0
grep -q "no tls-creds object with that id" err.txt && pass "tls-creds message" ||
    fail "$(cat err.txt)"
expect_rc 0 "coblk-io --object secret" "$CIO" --object secret,id=s0,data=x -f raw -c length a.raw
expect_rc 1 "coblk-io --object of an unknown type" "$CIO" --object bogus,id=b -f raw \
    -c length a.raw
expect_rc 1 "convert -C -c" "$CIMG" convert -C -c -f raw -O qcow2 a.raw x.qcow2
grep -q "Cannot enable copy offloading when -c is used" err.txt && pass "-C -c message" ||
    fail "-C -c: $(cat err.txt)"
expect_rc 1 "convert -C -S" "$CIMG" convert -C -S 4k -f raw -O raw a.raw x.raw
grep -q "Cannot enable copy offloading when -S is used" err.txt && pass "-C -S message" ||
    fail "-C -S: $(cat err.txt)"
expect_rc 1 "convert --bitmaps" "$CIMG" convert --bitmaps -f raw -O raw a.raw x.raw
expect_rc 0 "snapshot -l on raw lists nothing" "$CIMG" snapshot -l -f raw a.raw
[ ! -s out.txt ] && pass "snapshot -l raw output empty" || fail "snapshot -l raw printed"

# Bad values.
expect_rc 1 "info --output=xml" "$CIMG" info --output=xml a.raw
expect_rc 1 "check -r bogus" "$CIMG" check -r bogus a.raw
expect_rc 1 "convert -m 0" "$CIMG" convert -m 0 -f raw -O raw a.raw x.raw
expect_rc 1 "convert -m 17" "$CIMG" convert -m 17 -f raw -O raw a.raw x.raw
expect_rc 1 "convert -S bad" "$CIMG" convert -S 1x -f raw -O raw a.raw x.raw
expect_rc 1 "convert bad cache" "$CIMG" convert -t bogus -f raw -O raw a.raw x.raw
expect_rc 1 "convert -O unknown" "$CIMG" convert -f raw -O nosuch a.raw x.raw
expect_rc 1 "convert one file" "$CIMG" convert a.raw
expect_rc 1 "bench -c 0" "$CIMG" bench -c 0 a.raw
expect_rc 1 "bench -d 0" "$CIMG" bench -d 0 a.raw
expect_rc 1 "bench larger than image" "$CIMG" bench -f raw -s 8M a.raw
expect_rc 1 "map bad offset" "$CIMG" map --start-offset=x a.raw
expect_rc 1 "resize bad size" "$CIMG" resize -f raw a.raw 12Q
expect_rc 1 "resize preallocation bad" "$CIMG" resize -f raw --preallocation=bogus a.raw 8M
expect_rc 1 "-U with writes" "$CIMG" resize -U -f raw a.raw 8M
expect_rc 1 "image-opts and -f" "$CIMG" info --image-opts -f raw "driver=raw,file.filename=a.raw"
expect_rc 0 "image-opts" "$CIMG" info --image-opts "driver=raw,file.filename=a.raw"

# I/O errors: writes past RLIMIT_FSIZE (1 MiB) fail with EFBIG.
qemu-img create -q -f raw t1.raw 4M
qemu-img create -q -f raw t2.raw 4M
(
    trap '' XFSZ
    ulimit -f 1024
    "$CIMG" convert -n -f raw -O raw a.raw t1.raw >out1.txt 2>err1.txt; echo $? >rc1
    "$CIMG" dd -f raw -O raw if=a.raw of=nope.raw bs=64k >out2.txt 2>err2.txt; echo $? >rc2
    "$CIMG" bench -w -c 1000 -s 64k -f raw t2.raw >out3.txt 2>err3.txt; echo $? >rc3
    "$CIO" -f raw -c 'write 2M 4k' -c 'read 0 4k' t2.raw >out4.txt 2>err4.txt; echo $? >rc4
)
[ "$(cat rc1)" = 1 ] && grep -q "error while writing at byte" err1.txt &&
    pass "convert: I/O error exits 1" || fail "convert I/O error: rc $(cat rc1) $(cat err1.txt)"
[ "$(cat rc2)" = 1 ] && pass "dd: I/O error exits 1" || fail "dd I/O error: rc $(cat rc2)"
[ "$(cat rc3)" = 1 ] && grep -q "Failed request" err3.txt && pass "bench: I/O error exits 1" ||
    fail "bench I/O error: rc $(cat rc3) $(cat err3.txt)"
[ "$(cat rc4)" = 1 ] && grep -q "write failed: File too large" out4.txt &&
    grep -q "^read 4096/4096" out4.txt && pass "coblk-io: I/O error exits 1, later commands run" ||
    fail "coblk-io I/O error: rc $(cat rc4) $(cat out4.txt)"

# Read and block-status errors injected by blkdebug (sector 4096 = offset 2 MiB).
if "$CIMG" --help | grep -q blkdebug; then
    IMG="file.image.driver=file,file.image.filename=a.raw"
    E="driver=raw,file.driver=blkdebug,file.inject-error.0.event=none"
    RD="$E,file.inject-error.0.iotype=read,file.inject-error.0.sector=4096,$IMG"
    BS="$E,file.inject-error.0.iotype=block-status,$IMG"
    expect_rc 1 "convert: read error" "$CIMG" convert --image-opts "$RD" -O raw o.raw
    grep -q "error while reading at byte 2097152" err.txt && pass "convert read error message" ||
        fail "convert read error message: $(cat err.txt)"
    expect_rc 0 "convert --salvage" "$CIMG" convert --salvage --image-opts "$RD" -O raw o.raw
    qemu-io -f raw -c 'read -P 0 2M 512' -c 'read -P 1 0 2M' -c 'read -P 1 2097664 2096640' \
        o.raw | grep -q "Pattern verification failed" && fail "--salvage content" ||
        pass "--salvage zeroes only the bad sector"
    expect_rc 2 "compare: read error" "$CIMG" compare --image-opts "$RD" "driver=raw,file.filename=a.raw"
    grep -q "Error while reading offset 2097152 of $RD: Input/output error" err.txt &&
        pass "compare read error message" || fail "compare read error message: $(cat err.txt)"
    # The second image is read in an IOThread: its errors come back the same way.
    expect_rc 2 "compare: read error (second image)" "$CIMG" compare --image-opts \
        "driver=raw,file.filename=a.raw" "$RD"
    grep -q "Error while reading offset 2097152 of $RD: Input/output error" err.txt &&
        pass "compare read error message (second image)" ||
        fail "compare read error message (second image): $(cat err.txt)"
    expect_rc 2 "compare: block status error (second image)" "$CIMG" compare --image-opts \
        "driver=raw,file.filename=a.raw" "$BS"
    grep -q "Sector allocation test failed for $BS" err.txt &&
        pass "compare block status error message" ||
        fail "compare block status error message: $(cat err.txt)"
    expect_rc 1 "dd: read error" "$CIMG" dd --image-opts if="$RD" of=d.raw bs=1M
    expect_rc 1 "map: block status error" "$CIMG" map --image-opts "$BS"
    expect_rc 1 "convert: block status error" "$CIMG" convert --image-opts "$BS" -O raw o2.raw
    expect_rc 1 "coblk-io: read error" "$CIO" --image-opts -c 'read 0 4k' -c 'read 2M 4k' "$RD"
    grep -q "read failed: Input/output error" out.txt && pass "coblk-io read error message" ||
        fail "coblk-io read error message"
    expect_rc 1 "bench: read error" "$CIMG" bench -c 1000 -s 64k --image-opts "$RD"
else
    echo "blkdebug not built: skipping injected read errors"
fi

finish
