#!/usr/bin/env bash
# coblk-img, coblk-io and coblk-nbd with the sample xor plugin: loaded by
# --plugin, by the plugin=PATH open option and from $COBLK_PLUGIN_DIR; bytes
# converted to raw, written by coblk-io and written and read through
# coblk-nbd (by Debian's qemu-img / qemu-io as NBD clients) are checked
# against the file; a bad plugin fails the tool with its reason.
# Usage: check-plugin-tools.sh coblk-img coblk-io libcoblk-xor.so MODULE_DIR coblk-nbd
set -euo pipefail
img=$1 io=$2 xor=$3 mods=$4 nbd=$5
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

# The plugin=PATH open option: --image-opts with no --plugin.
"$img" convert --image-opts -O raw \
    "plugin=$xor,driver=xor,file.driver=file,file.filename=$t/disk.xor" "$t/opt.raw"
python3 - "$t/opt.raw" <<'PY' || fail "convert through plugin=PATH"
import sys
f = open(sys.argv[1], "rb").read()
assert f[4096:4096 + 8192] == bytes([0xab]) * 8192 and f[4095] == (4095 * 7) & 0xff
PY
"$io" --image-opts -c 'read -P 0xab 4096 8192' \
    "plugin=$xor,driver=xor,file.driver=file,file.filename=$t/disk.xor" |
    grep -q "read 8192/8192" || fail "coblk-io read through plugin=PATH"
if "$img" info --image-opts "plugin=$mods/plugin-no-entry.so,driver=raw,file.filename=$t/x" \
    2>"$t/err"; then
    fail "plugin=PATH accepted a plugin without entry"
fi
grep -q "no entry symbol coblk_plugin_init" "$t/err" || fail "message: $(cat "$t/err")"

# coblk-nbd --plugin: an NBD client reads the guest bytes and writes through.
if command -v qemu-img >/dev/null && command -v qemu-io >/dev/null; then
    sock="$t/nbd.sock"
    "$nbd" --plugin "$xor" -f xor -k "$sock" -t --fork --pid-file "$t/nbd.pid" "$t/disk.xor"
    trap '[ -f "$t/nbd.pid" ] && kill "$(cat "$t/nbd.pid")" 2>/dev/null; rm -rf "$t"' EXIT
    qemu-io -f raw -c 'write -P 0xcd 65536 4096' "nbd+unix:///?socket=$sock" >/dev/null ||
        fail "qemu-io write through coblk-nbd --plugin"
    qemu-img convert -f raw -O raw "nbd+unix:///?socket=$sock" "$t/nbd.raw" ||
        fail "qemu-img read through coblk-nbd --plugin"
    kill "$(cat "$t/nbd.pid")"
    rm -f "$t/nbd.pid"
    python3 - "$t/nbd.raw" "$t/disk.xor" <<'PY' || fail "bytes through coblk-nbd --plugin"
import sys
r, x = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
assert len(r) == 1 << 20, len(r)
assert r[65536:65536 + 4096] == bytes([0xcd]) * 4096
assert x[512 + 65536:512 + 65536 + 4096] == bytes([0xcd ^ 0x5a]) * 4096
assert r[4096:4096 + 8192] == bytes([0xab]) * 8192
assert r[:4096] == bytes((i * 7) & 0xff for i in range(4096))
PY
    if "$nbd" --plugin "$mods/plugin-bad-version.so" -f xor -k "$sock" "$t/disk.xor" \
        2>"$t/err"; then
        fail "coblk-nbd accepted a plugin for API 2.0"
    fi
    grep -q "built for plugin API 2.0" "$t/err" || fail "message: $(cat "$t/err")"
else
    echo "note: qemu-img/qemu-io missing: coblk-nbd --plugin not checked"
fi
echo "plugin tools: ok"
