#!/bin/bash
# qcow (version 1): corrupt and encrypted images give a clear error naming
# the field, never a crash.
. "$(dirname "$0")/fmt-lib.sh"

base=$T/base.qcow
qemu-img create -q -f qcow "$base" 4M
qemu-io -f qcow -c "write -P 0x44 0 64k" "$base" >/dev/null
fresh() { cp "$base" "$T/bad.qcow"; }

fresh; truncate -s 30 "$T/bad.qcow"
must_fail_open qcow "$T/bad.qcow" "too short for a qcow header"
fresh; poke "$T/bad.qcow" 32 00
must_fail_open qcow "$T/bad.qcow" "cluster_bits 0 out of range"
fresh; poke "$T/bad.qcow" 32 20
must_fail_open qcow "$T/bad.qcow" "cluster_bits 32 out of range"
fresh; poke "$T/bad.qcow" 33 1f
must_fail_open qcow "$T/bad.qcow" "l2_bits 31 out of range"
fresh; poke "$T/bad.qcow" 24 0000000000000000
must_fail_open qcow "$T/bad.qcow" "size 0 out of range"
fresh; poke "$T/bad.qcow" 24 7fffffffffffffff
must_fail_open qcow "$T/bad.qcow" "size 9223372036854775807 out of range"
fresh; poke "$T/bad.qcow" 24 0000400000000000        # 64 TiB: a 128 MiB L1 table
must_fail_open qcow "$T/bad.qcow" "L1 table"
fresh; poke "$T/bad.qcow" 40 0000000100000000        # L1 past EOF
must_fail_open qcow "$T/bad.qcow" "lies outside the file"
fresh; poke "$T/bad.qcow" 8 0000000000000030; poke "$T/bad.qcow" 16 00010000
must_fail_open qcow "$T/bad.qcow" "backing file name (65536 bytes at 48)"
fresh; poke "$T/bad.qcow" 36 00000001
must_fail_open qcow "$T/bad.qcow" "encrypted with AES (crypt_method 1)"
fresh; poke "$T/bad.qcow" 36 00000007
must_fail_open qcow "$T/bad.qcow" "encrypted with an unknown method (crypt_method 7)"
if qemu-img create -q -f qcow --object secret,id=s0,data=123456 \
        -o encrypt.format=aes,encrypt.key-secret=s0 "$T/aes.qcow" 1M 2>/dev/null; then
    must_fail_open qcow "$T/aes.qcow" "encrypted with AES"
fi

# An L2 entry past the end of the file: the read fails with an error.
fresh
l2=$(od -An -tx1 -j48 -N8 "$base" | tr -d ' ')
poke "$T/bad.qcow" $((16#$l2)) 0000000100000000
if "$FMTIO" dump qcow "$T/bad.qcow" "$T/out.raw" 2>/dev/null; then
    fail "reading a cluster past the end of the file succeeded"
fi
out=$("$FMTIO" check qcow "$T/bad.qcow") && fail "check missed the bad L2 entry"
case "$out" in *"L2 entry 0"*"past the end"*) ;; *) fail "check said: $out" ;; esac
"$FMTIO" check qcow "$T/bad.qcow" all >/dev/null || fail "check -r all"
"$FMTIO" check qcow "$T/bad.qcow" >/dev/null || fail "still corrupt after repair"
"$FMTIO" dump qcow "$T/bad.qcow" "$T/out.raw" || fail "read after repair"
coblk_reads_as_qemu qcow "$T/bad.qcow"
# Two L2 entries share a cluster: reported.
fresh
first=$(od -An -tx1 -j$((16#$l2)) -N8 "$base" | tr -d ' ')
poke "$T/bad.qcow" $((16#$l2 + 8 * 20)) "$first"
out=$("$FMTIO" check qcow "$T/bad.qcow") && fail "check missed the shared cluster"
case "$out" in *"referenced twice"*) ;; *) fail "check said: $out" ;; esac
# An L1 entry past the end of the file: the same.
fresh; poke "$T/bad.qcow" 48 0000000100000000
if "$FMTIO" dump qcow "$T/bad.qcow" "$T/out.raw" 2>/dev/null; then
    fail "reading through an L2 table past the end of the file succeeded"
fi
# A compressed cluster whose data is not deflate: an error, no crash.
fresh; poke "$T/bad.qcow" $((16#$l2)) 8000000000001000
if "$FMTIO" dump qcow "$T/bad.qcow" "$T/out.raw" 2>/dev/null; then
    fail "reading a broken compressed cluster succeeded"
fi
echo "qcow corrupt images: ok"
