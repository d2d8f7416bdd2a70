#!/usr/bin/env bash
# The sample plugin (examples/plugin/xor.c) built out of tree against the
# installed headers and coblk.pc (pkg-config --cflags, plugindir), then
# loaded by a program linked to the installed libcoblk.so and by the
# installed coblk-img through the plugin directory; bytes are checked.
# Usage: tests/install/check-plugin.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
command -v python3 >/dev/null || { echo "python3 missing"; exit 77; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
DESTDIR="$root" meson install -C "$build" --quiet --no-rebuild
pc=$(find "$root" -name coblk.pc | head -n 1)
[ -n "$pc" ] || { echo "coblk.pc was not installed"; exit 1; }
prefix=$(sed -n 's/^prefix=//p' "$pc")
export PKG_CONFIG_PATH=$(dirname "$pc")
pcv() { pkg-config --define-variable=prefix="$root$prefix" "$@" coblk; }
[ -f "$root$prefix/include/coblk/plugin.h" ] || { echo "coblk/plugin.h not installed"; exit 1; }
plugindir=$(pcv --variable=plugindir)
[ -d "$plugindir" ] || { echo "plugindir $plugindir was not installed"; exit 1; }
libdir=$(pcv --variable=libdir)

# shellcheck disable=SC2046 # flags are several words
cc -std=c11 -Wall -Wextra -Wno-unused-parameter -Werror -shared -fPIC -o "$root/libcoblk-xor.so" \
    "$src/examples/plugin/xor.c" $(pcv --cflags)
python3 - "$root/disk.xor" <<'PY'
import struct, sys
data = bytes((i * 3 + 1) & 0xff for i in range(65536))
hdr = b"COBLKXOR" + struct.pack("<Q", len(data)) + bytes([0x21])
open(sys.argv[1], "wb").write(hdr.ljust(512, b"\0") + bytes(b ^ 0x21 for b in data))
PY
cat >"$root/host.c" <<'C'
#include <stdio.h>
#include <string.h>
#include <coblk/plugin.h>
int main(int argc, char **argv)
{
    Error *err = NULL;
    BlockBackend *blk;
    unsigned char buf[256];

    if (coblk_plugin_load(argv[1], &err) < 0) {
        fprintf(stderr, "%s\n", error_get_pretty(err));
        return 1;
    }
    blk = blk_new_open(argv[2], NULL, 0, &err);
    if (!blk) {
        fprintf(stderr, "%s\n", error_get_pretty(err));
        return 1;
    }
    if (strcmp(bdrv_get_format_name(blk_bs(blk)), "xor") != 0 ||
        blk_pread(blk, 1000, sizeof(buf), buf, 0) < 0) {
        return 1;
    }
    for (int i = 0; i < 256; i++) {
        if (buf[i] != (unsigned char)((1000 + i) * 3 + 1)) {
            fprintf(stderr, "byte %d: %u\n", 1000 + i, buf[i]);
            return 1;
        }
    }
    blk_unref(blk);
    puts("host: xor bytes ok");
    return 0;
}
C
# shellcheck disable=SC2046
cc -std=c11 -Wall -Werror -o "$root/host" "$root/host.c" $(pcv --cflags --libs)
LD_LIBRARY_PATH="$libdir" "$root/host" "$root/libcoblk-xor.so" "$root/disk.xor"

# The installed coblk-img finds it through the (installed) plugin directory.
cp "$root/libcoblk-xor.so" "$plugindir/"
COBLK_PLUGIN_DIR="$plugindir" LD_LIBRARY_PATH="$libdir" \
    "$root$prefix/bin/coblk-img" info "$root/disk.xor" | grep -q "^file format: xor$"
echo "plugin install: ok"
