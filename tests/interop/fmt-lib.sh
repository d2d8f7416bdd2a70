# Shared by the format interop scripts: sourced with "$@" = FMT_IO BUILD_DIR.
# Sets FMTIO and T (a scratch directory removed on exit); exits 77 without qemu-img.
set -eu
FMTIO=$1
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null || {
    echo "qemu-img / qemu-io not installed: skipping"
    exit 77
}
T=$(mktemp -d "${2:-/tmp}/fmt-interop.XXXXXX")
trap 'rm -rf "$T"' EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# same_bytes A B: the two raw files are identical.
same_bytes() {
    cmp "$1" "$2" || fail "$1 and $2 differ"
}

# coblk_reads_as_qemu FMT IMG: coblk's dump equals qemu-img convert -O raw.
coblk_reads_as_qemu() {
    qemu-img convert -f "$1" -O raw "$2" "$T/qemu.raw"
    "$FMTIO" dump "$1" "$2" "$T/coblk.raw" || fail "coblk could not read $2"
    same_bytes "$T/qemu.raw" "$T/coblk.raw"
}

# qemu_reads_as FMT IMG RAW: qemu-img finds IMG identical to RAW.
qemu_reads_as() {
    qemu-img compare -f "$1" -F raw "$2" "$3" >/dev/null || fail "qemu-img compare $2 $3"
}

# zero_range RAW OFF LEN: zeroes bytes of the expected raw file.
zero_range() {
    dd if=/dev/zero of="$1" bs=1 seek="$2" count=0 conv=notrunc 2>/dev/null
    python3 -c "import sys
f=open(sys.argv[1],'r+b'); f.seek(int(sys.argv[2])); f.write(bytes(int(sys.argv[3])))" "$1" "$2" "$3"
}

# fill_range RAW OFF LEN BYTE
fill_range() {
    python3 -c "import sys
f=open(sys.argv[1],'r+b'); f.seek(int(sys.argv[2])); f.write(bytes([int(sys.argv[4],0)])*int(sys.argv[3]))" "$1" "$2" "$3" "$4"
}

# must_fail_open FMT IMG WORDS: opening fails with a message containing WORDS.
must_fail_open() {
    local out
    if out=$("$FMTIO" open "$1" "$2" 2>&1); then
        fail "opening corrupt $2 succeeded"
    fi
    case "$out" in
    *"$3"*) echo "ok: $out" ;;
    *) fail "opening $2: expected '$3', got '$out'" ;;
    esac
}

# poke FILE OFF HEXBYTES: writes bytes into a file in place.
poke() {
    python3 -c "import sys
f=open(sys.argv[1],'r+b'); f.seek(int(sys.argv[2],0)); f.write(bytes.fromhex(sys.argv[3]))" "$1" "$2" "$3"
}
