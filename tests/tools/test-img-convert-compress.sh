#!/usr/bin/env bash
# coblk-img convert -c: clusters compressed in parallel (several per write,
# on worker threads) with in-order (-m) and out-of-order (-W) writes, zlib and
# zstd, cluster sizes compressed inline (4k) and on threads (64k, 2M), a
# source whose size is not a cluster multiple. Each result passes qemu-img
# check, qemu-img compare finds it identical to the source, zero clusters
# stay unallocated, and coblk reads it back (parallel decompression through
# the decompressed-cluster cache) identical too.
. "$(dirname "$0")/lib.sh"

# 12 MiB + 3 KiB: compressible text, random bytes, zeroes, and a repeated pattern.
qemu-img create -q -f raw src.raw 12291k
python3 - src.raw <<'PY'
import os, sys
with open(sys.argv[1], 'r+b') as f:
    f.write(b''.join(b'line %08d of some compressible text\n' % i for i in range(50000))[:3 << 20])
    f.seek(3 << 20); f.write(os.urandom(2 << 20))
    f.seek(8 << 20); f.write(bytes(range(256)) * (3 << 12))
    f.seek(12 << 20); f.write(b'tail' * 768)
PY

for ct in zlib zstd; do
    for cl in 4k 64k 2M; do
        for m in "-m 1" "-m 8" "-m 16 -W"; do
            what="-c $m compression_type=$ct cluster_size=$cl"
            rm -f c.qcow2 back.raw
            if ! "$CIMG" convert -c $m -f raw -O qcow2 -o compression_type=$ct,cluster_size=$cl \
                src.raw c.qcow2; then
                fail "$what: convert failed"
                continue
            fi
            qemu-img check -q c.qcow2 && pass "$what: qemu-img check" ||
                fail "$what: qemu-img check"
            qemu-img compare -q -f raw -F qcow2 src.raw c.qcow2 && pass "$what: identical" ||
                fail "$what: qemu-img compare finds a difference"
            "$CIMG" convert $m -f qcow2 -O raw c.qcow2 back.raw && cmp -s src.raw back.raw &&
                pass "$what: coblk reads it back" || fail "$what: coblk read-back differs"
        done
        qemu-img check c.qcow2 | grep -Eq ' [1-9][0-9.]*% compressed' &&
            pass "$ct $cl: compressed clusters" || fail "$ct $cl: no compressed clusters"
        # the zero range 5M..8M is left unallocated (6M..8M: aligned for every cluster size)
        qemu-img map --output=json c.qcow2 |
            jq -e 'map(select(.start <= 6291456 and .start + .length >= 8388608 and
                              .data == false)) | length == 1' >/dev/null &&
            pass "$ct $cl: zero clusters unallocated" || fail "$ct $cl: zero clusters written"
    done
done

# A compressed image made by qemu-img reads back through coblk the same.
qemu-img convert -c -f raw -O qcow2 src.raw q.qcow2
"$CIMG" compare -f raw -F qcow2 src.raw q.qcow2 >/dev/null &&
    pass "coblk compare of a qemu-img -c image" || fail "coblk compare of a qemu-img -c image"
finish
