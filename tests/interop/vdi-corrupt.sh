#!/bin/bash
# vdi: corrupt images give a clear error (or, for block map damage, a check
# that finds it and a repair that qemu-img check accepts), never a crash.
. "$(dirname "$0")/fmt-lib.sh"

base=$T/base.vdi
qemu-img create -q -f vdi "$base" 4M
qemu-io -f vdi -c "write -P 0x44 0 4M" "$base" >/dev/null
fresh() { cp "$base" "$T/bad.vdi"; }

fresh; truncate -s 100 "$T/bad.vdi"
must_fail_open vdi "$T/bad.vdi" "too short for a VDI header"
fresh; poke "$T/bad.vdi" 0x180 ffffffff                 # blocks in image
must_fail_open vdi "$T/bad.vdi" "blocks in image 4294967295 exceeds the limit"
fresh; poke "$T/bad.vdi" 0x180 00000100                 # 1M blocks: map past EOF
must_fail_open vdi "$T/bad.vdi" "inside the file"
fresh; poke "$T/bad.vdi" 0x178 00000000                 # block size 0
must_fail_open vdi "$T/bad.vdi" "block size 0"
fresh; poke "$T/bad.vdi" 0x154 00f00000                 # block map offset past EOF
must_fail_open vdi "$T/bad.vdi" "block map at"
fresh; poke "$T/bad.vdi" 0x170 0000000001000000         # disk size 4 GiB > 4 blocks
must_fail_open vdi "$T/bad.vdi" "disk size 4294967296 exceeds"
fresh; poke "$T/bad.vdi" 0x184 09000000                 # allocated 9 > 4 blocks
must_fail_open vdi "$T/bad.vdi" "blocks allocated 9 exceeds"
fresh; poke "$T/bad.vdi" 0x4c 04000000                  # differencing
must_fail_open vdi "$T/bad.vdi" "differencing images are not supported"
fresh; poke "$T/bad.vdi" 0x44 00000000                  # version 0.0
must_fail_open vdi "$T/bad.vdi" "unsupported VDI version"
fresh; poke "$T/bad.vdi" 0x168 00100000                 # sector size 4096
must_fail_open vdi "$T/bad.vdi" "sector size 4096"
fresh; poke "$T/bad.vdi" 0x48 10000000                  # header size 16
must_fail_open vdi "$T/bad.vdi" "header size 16 out of range"

# Map entry past the allocated blocks: reads fail, check finds it, -r all frees it.
fresh; poke "$T/bad.vdi" 0x204 07000000
"$FMTIO" open vdi "$T/bad.vdi" || fail "open with a bad map entry"
if "$FMTIO" dump vdi "$T/bad.vdi" "$T/out.raw" 2>/dev/null; then
    fail "reading a block with an out-of-range entry succeeded"
fi
out=$("$FMTIO" check vdi "$T/bad.vdi") && fail "check missed the bad entry"
case "$out" in *"past the end of the allocated blocks"*) ;; *) fail "check said: $out" ;; esac
"$FMTIO" check vdi "$T/bad.vdi" all >/dev/null || fail "check -r all"
"$FMTIO" check vdi "$T/bad.vdi" >/dev/null || fail "still corrupt after repair"
qemu-img check -q -f vdi "$T/bad.vdi" || fail "qemu-img check after repair"
# Block 1 lost its data (freed: reads zero); the others kept theirs.
"$FMTIO" dump vdi "$T/bad.vdi" "$T/out.raw" || fail "read after repair"
qemu-img convert -f vdi -O raw "$T/bad.vdi" "$T/qemu.raw"
same_bytes "$T/out.raw" "$T/qemu.raw"

# Two blocks share a data block: check reports it and -r all repairs it.
fresh; poke "$T/bad.vdi" 0x208 00000000
out=$("$FMTIO" check vdi "$T/bad.vdi") && fail "check missed the shared block"
case "$out" in *"both point to data block 0"*) ;; *) fail "check said: $out" ;; esac
"$FMTIO" check vdi "$T/bad.vdi" all >/dev/null || fail "check -r all (shared)"
qemu-img check -q -f vdi "$T/bad.vdi" || fail "qemu-img check after repairing a shared block"
[ "$(stat -c %s "$T/bad.vdi")" -eq $((1024 + 3 * 1048576)) ] || fail "leaked block not reclaimed"
echo "vdi corrupt images: ok"
