#!/bin/bash
# bochs, cloop and dmg (read-only formats qemu-img reads but cannot create):
# images built by mk-ro-images.py read back as the raw disk they hold, in
# coblk (fmt-io dump, coblk-img convert, coblk-io reads) and in qemu-img; the
# map coblk-img reports is true to the bytes; writes are refused with a clear
# error; every corrupt image fails to open (or to read) with an error naming
# the field.
#   ro-formats.sh FMT-IO BUILD-DIR COBLK-IMG COBLK-IO
. "$(dirname "$0")/fmt-lib.sh"
CIMG=$3
CIO=$4
HERE=$(cd "$(dirname "$0")" && pwd)
command -v python3 >/dev/null || { echo "python3 missing: skipping"; exit 77; }
python3 "$HERE/mk-ro-images.py" "$T" || fail "mk-ro-images.py"
cd "$T"

# qemu_can_read FMT IMG: qemu-img reads it (Debian's qemu lacks the dmg bzip2
# module unless qemu-block-extra is installed).
qemu_can_read() {
    qemu-img convert -f "$1" -O raw "$2" q.raw 2>/dev/null
}

# map_is_true IMG RAW MAP: every "zero" range of MAP is zero in RAW, and every
# range with an offset has RAW's bytes at that offset of IMG.
map_is_true() {
    python3 - "$@" <<'PY' || fail "map of $1 does not match its bytes"
import json, sys
img, raw = open(sys.argv[1], 'rb').read(), open(sys.argv[2], 'rb').read()
m = json.load(open(sys.argv[3]))
end = 0
for e in m:
    s, n = e['start'], e['length']
    assert s == end, ('gap', e)
    end = s + n
    if e['zero']:
        assert raw[s:s + n] == bytes(n), ('not zero', e)
    if 'offset' in e and e.get('depth', 0) == 0:
        assert img[e['offset']:e['offset'] + n] == raw[s:s + n], ('bytes differ', e)
assert end == len(raw), ('map ends at', end)
PY
}

# ok: probed and read; okx: footer images, read with an explicit format only.
while IFS=$'\t' read -r kind fmt file words; do
    [ "$kind" = ok ] || [ "$kind" = okx ] || continue
    raw=${file%.*}.raw
    if ! "$FMTIO" dump "$fmt" "$file" c.raw 2>err.txt; then
        if grep -q "built without liblzma" err.txt; then
            echo "note: $file has xz blocks and this coblk has no liblzma: skipped"
            continue
        fi
        fail "coblk could not read $file: $(cat err.txt)"
    fi
    same_bytes c.raw "$raw"
    if qemu_can_read "$fmt" "$file"; then
        qemu_reads_as "$fmt" "$file" "$raw"
        same_bytes q.raw "$raw"
    else
        echo "note: qemu-img cannot read $file here (missing module): coblk checked alone"
    fi
    "$CIMG" convert -f "$fmt" -O raw "$file" conv.raw || fail "coblk-img convert $file"
    same_bytes conv.raw "$raw"
    "$CIMG" convert -f "$fmt" -O qcow2 "$file" conv.qcow2 || fail "convert $file to qcow2"
    qemu-img compare -f qcow2 -F raw conv.qcow2 "$raw" >/dev/null || fail "qcow2 copy of $file"
    probe=
    [ "$kind" = ok ] || probe="-f $fmt"
    "$CIMG" info --output=json $probe "$file" >info.json || fail "coblk-img info $file"
    python3 -c "import json,sys,os
i=json.load(open('info.json'))
assert i['format']=='$fmt' and i['virtual-size']==os.path.getsize('$raw'), i" ||
        fail "info of $file (${probe:-probed}): $(cat info.json)"
    "$CIMG" map --output=json -f "$fmt" "$file" >map.json || fail "coblk-img map $file"
    map_is_true "$file" "$raw" map.json
    echo "ok: $file reads as $raw (dump, convert, info, map)"
done <manifest.tsv

# Reads at unaligned offsets, across chunk / extent / block boundaries: the
# same lines from coblk-io and qemu-io.
io_same() { # FMT IMG COMMANDS...
    local fmt=$1 img=$2
    shift 2
    local args=()
    for c in "$@"; do args+=(-c "$c"); done
    qemu-io -r -f "$fmt" "${args[@]}" "$img" >q.out 2>/dev/null
    "$CIO" -r -f "$fmt" "${args[@]}" "$img" >c.out 2>c.err || fail "coblk-io: $(cat c.err)"
    sed -E 's/^[0-9.]+ (bytes|KiB|MiB), .*$/T/' q.out >q.n
    sed -E 's/^[0-9.]+ (bytes|KiB|MiB), .*$/T/' c.out >c.n
    diff -u q.n c.n || fail "coblk-io and qemu-io read $img differently"
}
io_same bochs bochs-growing.bochs 'read -v 1000 100' 'read -v 65530 20' 'read -v 196600 600'
io_same bochs bochs-big-extent.bochs 'read -v 2097100 200' 'read -v 4194300 16' \
    'read -v 4196000 10'
io_same cloop cloop-v2.cloop 'read -v 16380 8' 'read -v 81910 20' 'read -v 327670 10'
io_same dmg dmg-zlib.dmg 'read -v 131060 30' 'read -v 655350 20' 'read -v 1048570 10' \
    'read -v 2097140 12'
echo "ok: unaligned reads match qemu-io"

# Probing: bochs and cloop by their magic, dmg by the file name.
for f in bochs-growing.bochs cloop-v2.cloop dmg-zlib.dmg; do
    "$FMTIO" dump probe "$f" p.raw || fail "probing $f"
    same_bytes p.raw "${f%.*}.raw"
    "$CIMG" info "$f" | grep -q "^file format: ${f##*.}$" || fail "coblk-img info guessed $f"
done
cp dmg-zlib.dmg renamed.img
if "$FMTIO" dump probe renamed.img p.raw 2>/dev/null && cmp -s p.raw dmg-zlib.raw; then
    fail "a dmg not named .dmg was guessed as dmg"
fi
echo "ok: probing"

# Read-only: read-write opens are refused naming the format, writes to a
# read-only open fail; the files are unchanged.
for f in bochs-growing.bochs cloop-v2.cloop dmg-zlib.dmg; do
    fmt=${f##*.}
    sum=$(md5sum <"$f")
    out=$("$FMTIO" write "$fmt" "$f" 0 512 1 2>&1) && fail "a read-write open of $f worked"
    case "$out" in *"the $fmt format is read-only"*) ;; *) fail "rw open of $f: $out" ;; esac
    out=$("$CIO" -f "$fmt" -c 'write 0 512' "$f" 2>&1) && fail "coblk-io wrote $f"
    case "$out" in *"the $fmt format is read-only"*) ;; *) fail "coblk-io rw $f: $out" ;; esac
    out=$("$CIO" -r -f "$fmt" -c 'write 0 512' "$f" 2>&1) && fail "coblk-io -r wrote $f"
    case "$out" in *"read-only"*) ;; *) fail "coblk-io -r write $f: $out" ;; esac
    [ "$(md5sum <"$f")" = "$sum" ] || fail "$f changed"
    out=$("$CIMG" create -f "$fmt" "new.$fmt" 1M 2>&1) && fail "coblk-img created a $fmt image"
    case "$out" in *"does not support image creation"*) ;; *) fail "create $fmt: $out" ;; esac
    rc=0; "$CIMG" check -f "$fmt" "$f" >/dev/null 2>&1 || rc=$?
    [ $rc = 63 ] || fail "coblk-img check $f: exit $rc, qemu-img says 63 (no checks)"
done
echo "ok: read-only"

# Corrupt images: open fails naming the field (or, for a damaged compressed
# stream, the read fails); never a crash.
while IFS=$'\t' read -r kind fmt file words; do
    case $kind in
    open) must_fail_open "$fmt" "$file" "$words" ;;
    read)
        "$FMTIO" open "$fmt" "$file" || fail "$file should open"
        out=$("$FMTIO" dump "$fmt" "$file" x.raw 2>&1) && fail "reading $file worked"
        case "$out" in *"Input/output error"*) echo "ok: $file: read fails" ;;
        *) fail "reading $file: $out" ;; esac
        ;;
    esac
done <manifest.tsv
echo "read-only formats: ok"
