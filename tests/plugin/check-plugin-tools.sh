#!/usr/bin/env bash
# coblk-img and coblk-io with the sample xor plugin: loaded by --plugin and
# from $COBLK_PLUGIN_DIR; bytes converted to raw and written by coblk-io are
# checked against the file; a bad plugin fails the tool with its reason.
# Usage: check-plugin-tools.sh coblk-img coblk-io libcoblk-xor.so MODULE_DIR
set -euo pipefail
img=$1 io=$2 xor=$3 mods=$4
command -v python3 >/dev/null || { echo "python3 missing"; exit 77; }
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# An xor image of 1 MiB (key 0x5a) and the raw bytes it holds.
python3 - "$t/disk.xor" "$t/expect.raw" <<'PY'
import struct, sys
size = 1 << 20
data = bytes((i * 7 + i // 4096) & 0xff for i in range(size))
hdr = b"COBLKXOR" + struct.pack("<Q", size) + bytes([0x5a])
open(sys.argv[1], "wb").write(hdr.ljust(512, b"\0") + bytes(b ^ 0x5a for b in data))
open(sys.argv[2], "wb").write(data)
PY

"$img" --plugin "$xor" convert -f xor -O raw "$t/disk.xor" "$t/out.raw"
cmp "$t/out.raw" "$t/expect.raw" || fail "convert through --plugin differs"

mkdir "$t/plugins"
ln -s "$xor" "$t/plugins/"
COBLK_PLUGIN_DIR="$t/plugins" "$img" info "$t/disk.xor" >"$t/info"
grep -q "^file format: xor$" "$t/info" || fail "probe through COBLK_PLUGIN_DIR: $(cat "$t/info")"
"$img" --plugin="$xor" formats >"$t/formats"
grep -E "^xor +format +\.xor +write.* plugin=$xor$" "$t/formats" ||
    fail "formats: $(grep xor "$t/formats")"

"$io" --plugin "$xor" -f xor -c 'write -P 0xab 4096 8192' "$t/disk.xor" >/dev/null
python3 - "$t/disk.xor" <<'PY' || fail "coblk-io write did not land XORed"
import sys
f = open(sys.argv[1], "rb").read()
assert f[512 + 4096:512 + 4096 + 8192] == bytes([0xab ^ 0x5a]) * 8192
assert f[512 + 4095] == ((4095 * 7) & 0xff) ^ 0x5a
PY
"$io" --plugin "$xor" -f xor -c 'read -P 0xab 4096 8192' "$t/disk.xor" | grep -q "read 8192/8192" ||
    fail "coblk-io read back"

if "$img" --plugin "$mods/plugin-bad-version.so" info "$t/disk.xor" 2>"$t/err"; then
    fail "a plugin for API 2.0 was accepted"
fi
grep -q "plugin-bad-version.so': built for plugin API 2.0, this coblk supports 1.x" "$t/err" ||
    fail "message: $(cat "$t/err")"
if "$io" --plugin "$mods/plugin-no-entry.so" -c quit 2>"$t/err"; then
    fail "coblk-io accepted a plugin without entry"
fi
grep -q "no entry symbol coblk_plugin_init" "$t/err" || fail "message: $(cat "$t/err")"
echo "plugin tools: ok"
