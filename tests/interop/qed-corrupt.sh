#!/bin/bash
# qed: corrupt images give a clear error naming the field, never a crash; bad
# table entries are found by check and dropped by check -r all.
. "$(dirname "$0")/fmt-lib.sh"

base=$T/base.qed
qemu-img create -q -f qed "$base" 4M
qemu-io -f qed -c "write -P 0x44 0 192k" "$base" >/dev/null
fresh() { cp "$base" "$T/bad.qed"; }

fresh; truncate -s 40 "$T/bad.qed"
must_fail_open qed "$T/bad.qed" "too short for a QED header"
fresh; poke "$T/bad.qed" 4 00000000
must_fail_open qed "$T/bad.qed" "cluster size 0 is not a power of two"
fresh; poke "$T/bad.qed" 4 00300000
must_fail_open qed "$T/bad.qed" "cluster size 12288"
fresh; poke "$T/bad.qed" 8 00000000
must_fail_open qed "$T/bad.qed" "table size 0"
fresh; poke "$T/bad.qed" 8 20000000
must_fail_open qed "$T/bad.qed" "table size 32"
fresh; poke "$T/bad.qed" 12 00000000
must_fail_open qed "$T/bad.qed" "header size 0 clusters"
fresh; poke "$T/bad.qed" 16 0800000000000000
must_fail_open qed "$T/bad.qed" "unsupported QED features 0x8"
fresh; poke "$T/bad.qed" 40 0000001000000000
must_fail_open qed "$T/bad.qed" "L1 table offset"
fresh; poke "$T/bad.qed" 40 0100010000000000
must_fail_open qed "$T/bad.qed" "L1 table offset 65537"
fresh; poke "$T/bad.qed" 48 ffffffffffff0000
must_fail_open qed "$T/bad.qed" "exceeds what the tables map"
fresh; poke "$T/bad.qed" 48 0102000000000000
must_fail_open qed "$T/bad.qed" "not a multiple of 512"
fresh; poke "$T/bad.qed" 16 0100000000000000; poke "$T/bad.qed" 56 00000100ff000000
must_fail_open qed "$T/bad.qed" "outside the header"

# An L2 entry past the end of the file: reads fail, check finds it (as does
# qemu-img check), check -r all drops it and qemu-img check is clean again.
fresh
l2=$(od -An -tu8 -j65536 -N8 "$base" | tr -d ' ')
poke "$T/bad.qed" $((l2 + 8)) 0000000001000000           # entry 1 -> 16 MiB
if "$FMTIO" dump qed "$T/bad.qed" "$T/out.raw" 2>/dev/null; then
    fail "reading a cluster past the end of the file succeeded"
fi
qemu-img check -q -f qed "$T/bad.qed" >/dev/null 2>&1 && fail "qemu-img check missed it"
out=$("$FMTIO" check qed "$T/bad.qed") && fail "coblk check missed it"
case "$out" in *"L2 entry 1"*"past the end"*) ;; *) fail "check said: $out" ;; esac
# The dropped entry's old cluster stays as a leak (QED has no free list; only
# leaks at the end of the file can be reclaimed), so both checks report one.
"$FMTIO" check qed "$T/bad.qed" all >/dev/null || true
out=$("$FMTIO" check qed "$T/bad.qed" || true)
case "$out" in *"corruptions 0 leaks 1"*) ;; *) fail "after repair: $out" ;; esac
rc=0; qemu-img check -q -f qed "$T/bad.qed" >/dev/null 2>&1 || rc=$?
[ $rc -eq 3 ] || fail "qemu-img check after repair: exit $rc (3 = leaks only)"
coblk_reads_as_qemu qed "$T/bad.qed"

# Two L2 entries share a cluster: reported as referenced twice.
fresh
first=$(od -An -tx1 -j$l2 -N8 "$base" | tr -d ' ')
poke "$T/bad.qed" $((l2 + 16)) "$first"
out=$("$FMTIO" check qed "$T/bad.qed") && fail "coblk check missed the shared cluster"
case "$out" in *"referenced twice"*) ;; *) fail "check said: $out" ;; esac
# A dirty image with a bad entry is repaired when opened read-write.
fresh
poke "$T/bad.qed" 16 0200000000000000
poke "$T/bad.qed" $((l2 + 8)) 0000000001000000
"$FMTIO" write qed "$T/bad.qed" 3M 512 0x09 || fail "dirty open with repair"
"$FMTIO" dump qed "$T/bad.qed" "$T/out.raw" || fail "read after the repair on open"
echo "qed corrupt images: ok"
