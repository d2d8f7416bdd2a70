#!/bin/bash
# vpc (VHD): corrupt images give a clear error naming the field, never a crash.
. "$(dirname "$0")/fmt-lib.sh"

base=$T/base.vhd
qemu-img create -q -f vpc "$base" 9M
qemu-io -f vpc -c "write -P 0x44 0 3M" "$base" >/dev/null
fresh() { cp "$base" "$T/bad.vhd"; }
# reseal: recomputes the checksums of both footers and the dynamic header.
reseal() {
    python3 - "$T/bad.vhd" <<'PY'
import sys, struct
f = open(sys.argv[1], 'r+b'); d = bytearray(f.read())
def seal(off, size, at):
    b = d[off:off + size]; b[at:at + 4] = b'\0\0\0\0'
    d[off + at:off + at + 4] = struct.pack('>I', (~sum(b)) & 0xffffffff)
seal(0, 512, 64); seal(len(d) - 512, 512, 64); seal(512, 1024, 36)
f.seek(0); f.write(d)
PY
}

# poke_footer OFF HEX: changes a field in both copies of the footer.
poke_footer() {
    poke "$T/bad.vhd" "$1" "$2"
    poke "$T/bad.vhd" $(($(stat -c %s "$T/bad.vhd") - 512 + $1)) "$2"
}

fresh; truncate -s 100 "$T/bad.vhd"
must_fail_open vpc "$T/bad.vhd" "too short for a VHD footer"
fresh; poke "$T/bad.vhd" 0x40 00000000
truncate -s -512 "$T/bad.vhd"
must_fail_open vpc "$T/bad.vhd" "footer checksum"
fresh; poke "$T/bad.vhd" 0x224 00000000                 # dynamic header checksum
must_fail_open vpc "$T/bad.vhd" "dynamic header checksum"
fresh; poke "$T/bad.vhd" 0x220 00000000; reseal         # block size 0
must_fail_open vpc "$T/bad.vhd" "block size 0 is not a power of two"
fresh; poke "$T/bad.vhd" 0x220 00300000; reseal         # block size 3 MiB
must_fail_open vpc "$T/bad.vhd" "block size 3145728"
fresh; poke "$T/bad.vhd" 0x21c ffffffff; reseal         # huge BAT
must_fail_open vpc "$T/bad.vhd" "BAT entries 4294967295 out of range"
fresh; poke "$T/bad.vhd" 0x21c 00400000; reseal         # 4M entries: past EOF
must_fail_open vpc "$T/bad.vhd" "lies past the end of the file"
fresh; poke "$T/bad.vhd" 0x210 0000000100000000; reseal # BAT offset past EOF
must_fail_open vpc "$T/bad.vhd" "BAT at 4294967296"
fresh; poke "$T/bad.vhd" 0x600 00100000                 # BAT entry past EOF
must_fail_open vpc "$T/bad.vhd" "BAT entry 0 (block at 536870912) lies past the end"
fresh; poke "$T/bad.vhd" 0x600 00000001                 # block over the BAT
must_fail_open vpc "$T/bad.vhd" "lies over the BAT"
fresh; poke_footer 0x10 0000000100000000; reseal  # dynamic header past EOF
must_fail_open vpc "$T/bad.vhd" "dynamic header offset 4294967296"
fresh; poke_footer 0x3c 00000007; reseal          # disk type 7
must_fail_open vpc "$T/bad.vhd" "unknown VHD disk type 7"
fresh; poke_footer 0x1c 77696e20; poke_footer 0x30 0000100000000000; reseal
must_fail_open vpc "$T/bad.vhd" "exceeds the maximum"
fresh; poke "$T/bad.vhd" 0x200 0000000000000000; reseal # no cxsparse
must_fail_open vpc "$T/bad.vhd" "cxsparse"
# A differencing disk whose locators point past the end of the file.
"$FMTIO" create vpc "$T/p.vhd" size=4M
"$FMTIO" create vpc "$T/bad.vhd" backing_file=p.vhd
poke "$T/bad.vhd" 0x450 0000000100000000; reseal
must_fail_open vpc "$T/bad.vhd" "parent locator 0"
# No cookie in either footer.
fresh; poke_footer 0x0 0000000000000000
must_fail_open vpc "$T/bad.vhd" "has no VHD footer"
# A differencing disk with no parent name and eight empty locators (no platform code).
"$FMTIO" create vpc "$T/bad.vhd" backing_file=p.vhd
poke "$T/bad.vhd" 0x240 "$(printf '0%.0s' $(seq 1408))"; reseal
must_fail_open vpc "$T/bad.vhd" "without a usable parent locator"
# A fixed disk whose footer claims more than its file holds.
qemu-img create -q -f vpc -o subformat=fixed,force_size=on "$T/bad.vhd" 4M
poke "$T/bad.vhd" $((4 * 1024 * 1024 + 0x30)) 0000000001000000
python3 - "$T/bad.vhd" <<'PY'
import sys, struct
f = open(sys.argv[1], 'r+b'); d = bytearray(f.read()); o = len(d) - 512
b = d[o:o + 512]; b[64:68] = b'\0\0\0\0'
d[o + 64:o + 68] = struct.pack('>I', (~sum(b)) & 0xffffffff)
f.seek(0); f.write(d)
PY
must_fail_open vpc "$T/bad.vhd" "fixed disk of 16777216 bytes is larger than its file"
# A differencing disk whose parent is missing.
"$FMTIO" create vpc "$T/bad.vhd" backing_file=p.vhd
rm "$T/p.vhd"
must_fail_open vpc "$T/bad.vhd" "Could not open backing file"
echo "vpc corrupt images: ok"
