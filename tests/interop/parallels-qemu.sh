#!/bin/bash
# parallels: images qemu-img makes and qemu-io writes (1 MiB, 64 KiB and 4 KiB
# clusters) read through coblk exactly as qemu-img converts them; coblk
# writes into them (random partial writes, 16 in flight) and qemu-img reads
# the same bytes and checks them clean; images coblk creates (also with
# preallocation=metadata) and writes pass qemu-img check and compare; an
# image left in use is reported by both checks and repaired by coblk;
# corrupt headers give errors naming the field; a BAT entry past the end of
# the file and a shared cluster are found by both checks and repaired by
# coblk's check -r all so that qemu-img check is clean again.
. "$(dirname "$0")/fmt-lib.sh"

for cs in 1M 64k 4k; do
    img=$T/q-$cs.prl
    qemu-img create -q -f parallels -o cluster_size=$cs "$img" 5M
    qemu-io -f parallels -c "write -P 0x11 0 64k" -c "write -P 0x22 1049088 3072" \
        -c "write -P 0x33 4M 1M" "$img" >/dev/null
    coblk_reads_as_qemu parallels "$img"
    cp "$T/qemu.raw" "$T/exp.raw"
    "$FMTIO" randwrite parallels "$img" 7 32 "$T/exp.raw" || fail "randwrite cluster $cs"
    qemu_reads_as parallels "$img" "$T/exp.raw"
    qemu-img check -q -f parallels "$img" || fail "qemu-img check cluster $cs"
    # qemu-io writes into coblk's writes; coblk still reads what qemu reads.
    qemu-io -f parallels -c "write -P 0x44 2M 100k" "$img" >/dev/null
    coblk_reads_as_qemu parallels "$img"
    "$FMTIO" check parallels "$img" >/dev/null || fail "coblk check cluster $cs"
done

for opts in "size=9M" "size=9M,cluster_size=4k" \
    "size=9M,cluster_size=64k,preallocation=metadata"; do
    img=$T/c.prl
    rm -f "$img"
    "$FMTIO" create parallels "$img" "$opts" || fail "create $opts"
    # qemu-img 7.2 reports leaks (rc 3) on its own new images whose BAT spans
    # more than one cluster (it takes the end of the first cluster as the end
    # of the image): a new coblk image must get the same verdict as qemu's.
    qopts=$(echo "$opts" | sed 's/size=9M,\{0,1\}//; s/,\{0,1\}preallocation=metadata//')
    rm -f "$T/qnew.prl"
    qemu-img create -q -f parallels ${qopts:+-o "$qopts"} "$T/qnew.prl" 9M
    qrc=0; qemu-img check -q -f parallels "$T/qnew.prl" >/dev/null 2>&1 || qrc=$?
    case "$opts" in *preallocation*) qrc=0 ;; esac
    crc=0; qemu-img check -q -f parallels "$img" >/dev/null 2>&1 || crc=$?
    [ $crc = $qrc ] || fail "qemu-img check of a new image ($opts): rc $crc, qemu's own: $qrc"
    : > "$T/exp.raw"; truncate -s 9M "$T/exp.raw"
    qemu_reads_as parallels "$img" "$T/exp.raw"
    "$FMTIO" randwrite parallels "$img" 42 64 "$T/exp.raw" || fail "randwrite $opts"
    qemu_reads_as parallels "$img" "$T/exp.raw"
    qemu-img check -q -f parallels "$img" || fail "qemu-img check after writes ($opts)"
    "$FMTIO" check parallels "$img" >/dev/null || fail "coblk check ($opts)"
    coblk_reads_as_qemu parallels "$img"
done

# An image left in use (a crash after the first write): both checks report it.
img=$T/u.prl
"$FMTIO" create parallels "$img" "size=4M"
"$FMTIO" crashwrite parallels "$img" 0 65536 0x66 || fail crashwrite
[ "$(od -An -tx4 -j44 -N4 "$img" | tr -d ' ')" = 746f6e59 ] || fail "in_use not set while open"
qemu-img check -q -f parallels "$img" >/dev/null 2>&1 && fail "qemu-img check missed in_use"
out=$("$FMTIO" check parallels "$img") && fail "coblk check missed in_use"
case "$out" in *"not closed correctly"*) ;; *) fail "check said: $out" ;; esac
"$FMTIO" write parallels "$img" 65536 512 0x67 2>/dev/null || fail "read-write open repairs"
qemu-img check -q -f parallels "$img" || fail "qemu-img check after the repair"
[ "$(od -An -tx4 -j44 -N4 "$img" | tr -d ' ')" = 312e3276 ] || fail "in_use not closed"
: > "$T/exp.raw"; truncate -s 4M "$T/exp.raw"
fill_range "$T/exp.raw" 0 65536 0x66
fill_range "$T/exp.raw" 65536 512 0x67
qemu_reads_as parallels "$img" "$T/exp.raw"

# Corrupt headers.
base=$T/base.prl
qemu-img create -q -f parallels -o cluster_size=64k "$base" 4M
qemu-io -f parallels -c "write -P 0x44 0 192k" "$base" >/dev/null
fresh() { cp "$base" "$T/bad.prl"; }
fresh; truncate -s 40 "$T/bad.prl"
must_fail_open parallels "$T/bad.prl" "too short for a parallels header"
fresh; poke "$T/bad.prl" 16 03000000
must_fail_open parallels "$T/bad.prl" "version 3"
fresh; poke "$T/bad.prl" 28 00000000
must_fail_open parallels "$T/bad.prl" "tracks (cluster size in sectors) 0"
fresh; poke "$T/bad.prl" 32 ffffffff
must_fail_open parallels "$T/bad.prl" "nb_bat_entries 4294967295"
fresh; poke "$T/bad.prl" 36 0000100000000000
must_fail_open parallels "$T/bad.prl" "nb_sectors"
fresh; poke "$T/bad.prl" 44 01020304
must_fail_open parallels "$T/bad.prl" "in_use 0x04030201"
fresh; poke "$T/bad.prl" 48 40000000
must_fail_open parallels "$T/bad.prl" "not a multiple of the cluster size"
fresh; poke "$T/bad.prl" 48 00100000
must_fail_open parallels "$T/bad.prl" "past the end of the file"
fresh; poke "$T/bad.prl" 56 0008000000000000
must_fail_open parallels "$T/bad.prl" "Format Extension (ext_off)"

# A BAT entry past the end of the file, and a shared cluster.
fresh; poke "$T/bad.prl" 68 00010000                       # entry 1 -> cluster 256
if "$FMTIO" dump parallels "$T/bad.prl" "$T/out.raw" 2>/dev/null; then
    fail "reading a cluster past the end of the file succeeded"
fi
qemu-img check -q -f parallels "$T/bad.prl" >/dev/null 2>&1 && fail "qemu-img check missed it"
out=$("$FMTIO" check parallels "$T/bad.prl") && fail "coblk check missed it"
case "$out" in *"cluster 1 is outside the image"*) ;; *) fail "check said: $out" ;; esac
"$FMTIO" check parallels "$T/bad.prl" all >/dev/null || fail "check -r all"
qemu-img check -q -f parallels "$T/bad.prl" || fail "qemu-img check after the repair"
fresh; poke "$T/bad.prl" 72 01000000                       # entry 2 -> entry 0's cluster
out=$("$FMTIO" check parallels "$T/bad.prl") && fail "coblk check missed a shared cluster"
case "$out" in *"shares the cluster"*) ;; *) fail "check said: $out" ;; esac
"$FMTIO" check parallels "$T/bad.prl" all >/dev/null || fail "check -r all (shared)"
qemu-img check -q -f parallels "$T/bad.prl" || fail "qemu-img check after the shared repair"
# Base wrote 0x44 over clusters 0-2: the copy keeps entry 2's data the same.
qemu-img compare -q -f parallels -F parallels "$T/bad.prl" "$base" || fail "repaired data"

# Discard: whole clusters of an image qemu made unmap; qemu-img check accepts
# the result and qemu-img reads the discarded ranges as zeroes.
M=1048576
qemu-img create -q -f parallels "$T/d.prl" 16M
qemu-io -f parallels -c "write -P 0x2b 0 16M" "$T/d.prl" >/dev/null
qemu-img convert -f parallels -O raw "$T/d.prl" "$T/exp.raw"
len0=$(stat -c %s "$T/d.prl")
"$FMTIO" discard parallels "$T/d.prl" $((2 * M + 512)) $((4 * M)) || fail "discard middle"
zero_range "$T/exp.raw" $((3 * M)) $((3 * M))
"$FMTIO" discard parallels "$T/d.prl" $((14 * M)) $((2 * M)) || fail "discard the end"
zero_range "$T/exp.raw" $((14 * M)) $((2 * M))
qemu-img check -q -f parallels "$T/d.prl" || fail "qemu-img check after discard"
qemu_reads_as parallels "$T/d.prl" "$T/exp.raw"
coblk_reads_as_qemu parallels "$T/d.prl"
[ "$(stat -c %s "$T/d.prl")" -eq $((len0 - 2 * M)) ] || fail "the last clusters stay in the file"
qemu-io -f parallels -c "write -P 0x3c 4M 64k" "$T/d.prl" >/dev/null
fill_range "$T/exp.raw" $((4 * M)) 65536 0x3c
qemu_reads_as parallels "$T/d.prl" "$T/exp.raw"
qemu-img check -q -f parallels "$T/d.prl" || fail "qemu-img check after the rewrite"
echo "parallels interop: ok"
