#!/bin/bash
# Generates the seed corpora of fuzz-image: tiny valid images made by
# qemu-img create + qemu-io writes, and corrupt variants (the field damage
# the driver tests use: zero / huge / out-of-file sizes and offsets).
#   make-corpus.sh [OUT-DIR]     (default: tests/fuzz/corpus next to this script)
# One directory per format; "probe" gets one seed of each. Seeds above
# 1.2 MiB are dropped (the committed corpus stays under 2 MB); formats that
# qemu-img cannot create are skipped. Deterministic apart from the UUIDs and
# timestamps qemu-img writes.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/corpus}
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null || {
    echo "make-corpus: qemu-img / qemu-io not installed" >&2
    exit 77
}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

poke() { # FILE OFF HEXBYTES
    python3 -c "import sys
f=open(sys.argv[1],'r+b'); f.seek(int(sys.argv[2],0)); f.write(bytes.fromhex(sys.argv[3]))" "$@"
}

# keep FMT NAME FILE: adds FILE to the corpus of FMT if small enough.
keep() {
    local size
    size=$(stat -c %s "$3")
    if [ "$size" -gt 1258291 ]; then
        echo "make-corpus: $1/$2 is $size bytes: not kept" >&2
        return 0
    fi
    mkdir -p "$out/$1"
    cp "$3" "$out/$1/$2"
}

# mk FMT NAME SIZE [create-opts] [qemu-io commands...]
mk() {
    local fmt=$1 name=$2 size=$3 opts=$4
    shift 4
    rm -f "$T/img"
    qemu-img create -q -f "$fmt" ${opts:+-o "$opts"} "$T/img" "$size" 2>/dev/null || return 0
    for c in "$@"; do
        qemu-io -f "$fmt" -c "$c" "$T/img" >/dev/null 2>&1 || return 0
    done
    keep "$fmt" "$name" "$T/img"
}

# bad FMT NAME BASE OFF HEX: a copy of corpus seed BASE with bytes poked.
bad() {
    [ -f "$out/$1/$3" ] || return 0
    cp "$out/$1/$3" "$T/bad"
    poke "$T/bad" "$4" "$5"
    keep "$1" "$2" "$T/bad"
}

rm -rf "$out"
mkdir -p "$out"

# raw: anything is a raw image.
printf 'coblk raw seed\n' >"$T/raw"
keep raw small "$T/raw"

# vdi (block size 1 MiB: one written block makes a 1 MiB file)
mk vdi empty 4M ""

mk vdi data 2M "" "write -P 0x5a 0 4k"
# The block's tail is zeroes: cut it (reads past the end of the file are zero).
[ -f "$out/vdi/data" ] && truncate -s $((1024 + 4096)) "$out/vdi/data"
bad vdi bad-blocks-huge empty 0x180 ffffffff
bad vdi bad-map-past-eof empty 0x180 00000100
bad vdi bad-blocksize-0 empty 0x178 00000000
bad vdi bad-mapoff empty 0x154 00f00000
bad vdi bad-disksize empty 0x170 0000000001000000
bad vdi bad-allocated empty 0x184 09000000
bad vdi bad-sector-size empty 0x168 00100000
bad vdi bad-header-size empty 0x48 10000000
bad vdi bad-map-entry empty 0x200 07000000

# vpc (checksums are not verified in fuzzing builds)
mk vpc empty 4M ""
mk vpc fixed 64K "subformat=fixed"
bad vpc bad-blocksize-0 empty 0x220 00000000
bad vpc bad-blocksize-3m empty 0x220 00300000
bad vpc bad-bat-huge empty 0x21c ffffffff
bad vpc bad-bat-past-eof empty 0x210 0000000100000000
bad vpc bad-bat-entry empty 0x600 00100000
bad vpc bad-disk-type empty 0x3c 00000007

# vmdk
mk vmdk sparse 1M "" "write -P 0x11 0 4k"
mk vmdk stream 1M "subformat=streamOptimized" "write -P 0x33 0 64k"
mk vmdk empty-gt 4M "" 
bad vmdk bad-grain-0 empty-gt 0x14 0000000000000000
bad vmdk bad-capacity empty-gt 0xc ffffffffffffff7f
bad vmdk bad-gte-per-gt empty-gt 0x2c 00000100
bad vmdk bad-gd-offset empty-gt 0x38 ffffffff00000000
printf '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 2048 FLAT "x-flat.vmdk" 0\n' >"$T/desc"
keep vmdk descriptor-flat "$T/desc"

# Formats whose drivers land later (seeds are ready for them).
mk qcow2 empty 4M "cluster_size=512"
mk qcow2 data 4M "cluster_size=512" "write -P 0x44 0 8k" "write -P 0x45 1M 4k"
mk qcow2 compat010 1M "compat=0.10,cluster_size=512" "write -P 0x46 0 4k"
mk qcow2 compressed 1M "cluster_size=4096" "write -c -P 0x47 0 4k" "write -c -P 0x48 8k 8k"
mk qcow2 compressed-zstd 1M "cluster_size=4096,compression_type=zstd" "write -c -P 0x49 0 4k" \
    "write -c -P 0x4a 8k 8k"
bad qcow2 bad-cluster-bits empty 0x14 0000001f
bad qcow2 bad-l1-size empty 0x24 7fffffff
bad qcow2 bad-refcount-table empty 0x30 00000000ffffffff
bad qcow2 bad-incompat empty 0x48 0000000000000080
mk qed empty 4M "cluster_size=4096"
mk qed data 4M "cluster_size=4096" "write -P 0x47 0 8k"
bad qed bad-cluster-size empty 0x8 00000000
mk qcow empty 4M ""
mk qcow data 1M "" "write -P 0x48 0 4k"
bad qcow bad-cluster-bits empty 0x20 3f
mk parallels empty 4M "cluster_size=4096"
mk parallels data 1M "cluster_size=4096" "write -P 0x49 0 4k"
bad parallels bad-tracks-0 empty 0x1c 00000000
bad parallels bad-tracks-huge empty 0x1c ffffff00
bad parallels bad-bat-huge empty 0x20 ffffffff
bad parallels bad-nb-sectors empty 0x24 ffffffffffffffff
bad parallels bad-inuse empty 0x2c 01020304
bad parallels bad-data-off empty 0x30 ffffff00
bad parallels bad-ext-off empty 0x38 0000010000000000
bad parallels bad-bat-entry data 0x40 ffff0000
bad parallels inuse-open data 0x2c 596e6f74
# vhdx regions are 1 MiB aligned: keep the header area (file identifier,
# both headers, both region tables) of a fresh image; the rest reads as zeroes.
rm -f "$T/img"
if qemu-img create -q -f vhdx "$T/img" 4M 2>/dev/null; then
    truncate -s $((320 << 10)) "$T/img"
    keep vhdx head "$T/img"
fi

# Read-only formats qemu-img cannot create: tiny images from the interop
# generator, and corrupt variants (header fields of bochs and cloop; the dmg
# trailer's plist length and sector count, a chunk type).
rm -rf "$T/ro"
if python3 "$here/../interop/mk-ro-images.py" "$T/ro" small >/dev/null; then
    keep bochs small "$T/ro/bochs-growing.bochs"
    keep cloop small "$T/ro/cloop-v2.cloop"
    keep dmg small "$T/ro/dmg-zlib.dmg"
    keep dmg rsrc "$T/ro/dmg-rsrc.dmg"
    keep dmg bzip2 "$T/ro/dmg-bzip2.dmg"
fi
bad bochs bad-extent-0 small 0x50 00000000
bad bochs bad-catalog-huge small 0x48 ffffffff
bad bochs bad-bitmap-0 small 0x4c 00000000
bad bochs bad-entry small 0x204 00100000
bad cloop bad-blocksize-0 small 0x80 00000000
bad cloop bad-nblocks-huge small 0x84 ffffffff
bad cloop bad-offset small 0x90 00000000ffffffff
if [ -f "$out/dmg/small" ]; then
    k=$(( $(stat -c %s "$out/dmg/small") - 512 ))
    bad dmg bad-plist-len small $((k + 224)) 00000000ffffffff
    bad dmg bad-sectors small $((k + 492)) 4000000000000000
    bad dmg bad-koly small $k 6b6f6c78
fi

# probe: one valid seed of each format
mkdir -p "$out/probe"
for d in "$out"/*/; do
    f=$(basename "$d")
    [ "$f" = probe ] && continue
    case $f in nbd-*) continue ;; esac
    for s in empty small; do
        if [ -f "$d/$s" ]; then
            cp "$d/$s" "$out/probe/$f-$s"
            break
        fi
    done
done
du -sb "$out"

# NBD server (fuzz-nbd-server): whole client conversations.
mkdir -p "$out/nbd-server"
python3 - "$out/nbd-server" <<'PY'
import struct, sys
d = sys.argv[1]
IHAVEOPT = 0x49484156454F5054
def opt(o, data=b''):
    return struct.pack('>QII', IHAVEOPT, o, len(data)) + data
def name(s):
    return struct.pack('>I', len(s)) + s
def go(o, export, infos=()):
    return opt(o, name(export) + struct.pack('>H', len(infos)) +
               b''.join(struct.pack('>H', i) for i in infos))
def meta(o, export, queries):
    return opt(o, name(export) + struct.pack('>I', len(queries)) +
               b''.join(name(q) for q in queries))
def req(t, off, ln, flags=0, cookie=1, data=b''):
    return struct.pack('>IHHQQI', 0x25609513, flags, t, cookie, off, ln) + data
READ, WRITE, DISC, FLUSH, TRIM, CACHE, ZERO, STATUS = 0, 1, 2, 3, 4, 5, 6, 7
seeds = {
    'full': struct.pack('>I', 3) + opt(8) + meta(10, b'', [b'base:allocation']) +
            opt(3) + go(6, b'ro', [0, 1, 2, 3]) + go(7, b'', [3]) +
            req(WRITE, 0, 4096, data=b'\x5a' * 4096) + req(READ, 0, 4096, cookie=2) +
            req(STATUS, 0, 1 << 20, cookie=3) + req(TRIM, 8192, 4096, cookie=4) +
            req(ZERO, 0, 65536, flags=1, cookie=5) + req(FLUSH, 0, 0, cookie=6) +
            req(READ, 512, 100, flags=4, cookie=7) + req(CACHE, 0, 4096, cookie=8) +
            req(STATUS, 0, 4096, flags=8, cookie=9) + req(DISC, 0, 0),
    'export-name': struct.pack('>I', 1) + opt(1, b'ro') + req(READ, 0, 4096) +
                   req(WRITE, 0, 512, cookie=2, data=bytes(512)) + req(DISC, 0, 0),
    'simple': struct.pack('>I', 3) + go(7, b'') + req(READ, 0, 1024) +
              req(WRITE, 4096, 1024, flags=1, cookie=2, data=b'\x11' * 1024) + req(DISC, 0, 0),
    'depth': struct.pack('>I', 3) + opt(8) +
             meta(9, b'ro', [b'qemu:']) +
             meta(10, b'ro', [b'base:allocation', b'qemu:allocation-depth']) +
             go(7, b'ro') + req(STATUS, 0, 1 << 20) + req(DISC, 0, 0),
    'starttls-abort': struct.pack('>I', 3) + opt(5) + opt(99, b'xyz') + opt(2),
}
for k, v in seeds.items():
    open(d + '/' + k, 'wb').write(v)
PY
du -sb "$out"
# NBD client (fuzz-nbd-client): whole server conversations, for the
# harness's fixed request sequence (read 0+4k, block status 0+1M, write
# 0+4k, flush, read 4k+8k; cookies slot | generation << 16).
mkdir -p "$out/nbd-client"
python3 - "$out/nbd-client" <<'PY'
import struct, sys
d = sys.argv[1]
IHAVEOPT, REP = 0x49484156454F5054, 0x3e889045565a9
ACK, INFO, META, UNSUP = 1, 3, 4, (1 << 31) | 1
greet = b'NBDMAGIC' + struct.pack('>QH', IHAVEOPT, 3)
def rep(opt, t, data=b''):
    return struct.pack('>QIII', REP, opt, t, len(data)) + data
tflags = 1 | 4 | 8 | 32 | 64 | 128
export = struct.pack('>HQH', 0, 1 << 20, tflags)
def chunk(cookie, t, payload, flags=1):
    return struct.pack('>IHHQI', 0x668e33ef, flags, t, cookie, len(payload)) + payload
def simple(cookie, err=0, data=b''):
    return struct.pack('>IIQ', 0x67446698, err, cookie) + data
c = lambda n: n << 16
structured = (greet + rep(8, ACK) + rep(10, META, struct.pack('>I', 1) + b'base:allocation') +
              rep(10, ACK) + rep(7, INFO, export) + rep(7, ACK) +
              chunk(c(1), 1, struct.pack('>Q', 0) + b'\x5a' * 4096) +
              chunk(c(2), 5, struct.pack('>IIIII', 1, 65536, 0, 983040, 3)) +
              chunk(c(3), 0, b'') + simple(c(4)) +
              chunk(c(5), 2, struct.pack('>QI', 4096, 4096), flags=0) +
              chunk(c(5), 1, struct.pack('>Q', 8192) + b'\x11' * 4096))
errors = (greet + rep(8, ACK) + rep(10, ACK) + rep(7, INFO, export) + rep(7, ACK) +
          chunk(c(1), (1 << 15) + 1, struct.pack('>IH', 5, 4) + b'oops') +
          chunk(c(2), (1 << 15) + 2, struct.pack('>IHQ', 22, 0, 0)) +
          simple(c(3), 28) + simple(c(4), 5) + simple(c(5), 0, bytes(8192)))
simple_only = (greet + rep(8, UNSUP) + rep(7, INFO, export) + rep(7, ACK) +
               simple(c(1), 0, b'\x22' * 4096) + simple(c(2)) + simple(c(3)) +
               simple(c(4), 0, bytes(8192)))
export_name = (greet + rep(8, UNSUP) + rep(7, UNSUP) + struct.pack('>QH', 1 << 20, 1 | 4) +
               simple(c(1), 0, bytes(4096)))
for k, v in {'structured': structured, 'errors': errors, 'simple': simple_only,
             'export-name': export_name}.items():
    open(d + '/' + k, 'wb').write(v)
PY
du -sb "$out"
