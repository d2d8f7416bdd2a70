#!/bin/bash
# qcow2 internal snapshots against Debian's qemu-img / qemu-io: snapshots made
# by either tool are listed identically, applied and deleted by the other,
# with the right data and a clean qemu-img check; corrupt snapshot tables give
# clear errors. usage: qcow2-snapshot.sh COBLK-IMG
set -u
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null || { echo "SKIP: qemu-img"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: python3"; exit 77; }
CIMG=$(realpath "$1")
E="$(cd "$(dirname "$0")" && pwd)/qcow2-edit.py"
T=$(mktemp -d "${TMPDIR:-/tmp}/coblk-qcow2-snap.XXXXXX")
trap 'rm -rf "$T"' EXIT
cd "$T"
FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
pass() { echo "ok: $*"; }
run() { local what=$1; shift; if "$@" >out.txt 2>&1; then pass "$what"; else fail "$what"; sed 's/^/  /' out.txt; fi; }
clean() {
    qemu-img check "$2" >ck.txt 2>&1 && pass "$1: qemu-img check clean" ||
        { fail "$1: qemu-img check"; sed 's/^/  /' ck.txt; }
}
# reads <image> <pattern> <offset> <len>...: qemu-io verifies the data
reads() {
    local img=$1 what=$2; shift 2
    local args=()
    while [ $# -gt 0 ]; do args+=(-c "read -P $1 $2 $3"); shift 3; done
    if qemu-io -r "${args[@]}" "$img" 2>&1 | grep -q -i "fail\|error\|mismatch"; then
        fail "$what: data"; qemu-io -r "${args[@]}" "$img" | grep -v ops | head -5
    else
        pass "$what: data"
    fi
}
same_list() {
    qemu-img snapshot -l "$2" >q.txt 2>&1; "$CIMG" snapshot -l "$2" >c.txt 2>&1
    if diff -u q.txt c.txt >d.txt; then pass "$1: snapshot -l identical"; else fail "$1: snapshot -l"; sed 's/^/  /' d.txt; fi
}

for opts in "compat=1.1,cluster_size=65536" "compat=0.10,cluster_size=4096" \
            "compat=1.1,cluster_size=512,refcount_bits=64"; do
    tag="[$opts]"
    # qemu makes snapshots, coblk lists / applies / deletes them
    rm -f a.qcow2
    qemu-img create -q -f qcow2 -o "$opts" a.qcow2 32M
    qemu-io -c "write -P 1 0 1M" -c "write -c -P 7 8M 64k" a.qcow2 >/dev/null
    qemu-img snapshot -c one a.qcow2
    qemu-io -c "write -P 2 0 64k" -c "write -z 8M 64k" a.qcow2 >/dev/null
    qemu-img snapshot -c two a.qcow2
    qemu-io -c "write -P 3 64k 64k" a.qcow2 >/dev/null
    same_list "$tag qemu snapshots" a.qcow2
    run "$tag coblk applies qemu's 'one'" "$CIMG" snapshot -a one a.qcow2
    clean "$tag after apply" a.qcow2
    reads a.qcow2 "$tag apply one" 1 0 1M 7 8M 64k
    run "$tag coblk applies qemu's '2' by id" "$CIMG" snapshot -a 2 a.qcow2
    reads a.qcow2 "$tag apply 2" 2 0 64k 1 64k 960k 0 8M 64k
    run "$tag coblk deletes 'one'" "$CIMG" snapshot -d one a.qcow2
    clean "$tag after delete" a.qcow2
    same_list "$tag after delete" a.qcow2
    qemu-io -c "write -P 4 0 64k" a.qcow2 >/dev/null
    run "$tag qemu applies 'two' after coblk's changes" qemu-img snapshot -a two a.qcow2
    reads a.qcow2 "$tag qemu apply two" 2 0 64k 1 64k 960k 0 8M 64k
    clean "$tag" a.qcow2

    # coblk makes snapshots, qemu lists / applies / deletes them
    rm -f b.qcow2
    qemu-img create -q -f qcow2 -o "$opts" b.qcow2 32M
    qemu-io -c "write -P 1 0 1M" -c "write -c -P 7 8M 64k" b.qcow2 >/dev/null
    run "$tag coblk creates 'alpha'" "$CIMG" snapshot -c alpha b.qcow2
    clean "$tag after create" b.qcow2
    qemu-io -c "write -P 2 0 64k" -c "write -P 9 16M 64k" b.qcow2 >/dev/null
    run "$tag coblk creates 'beta'" "$CIMG" snapshot -c beta b.qcow2
    run "$tag coblk creates 'gamma'" "$CIMG" snapshot -c gamma b.qcow2
    qemu-io -c "write -P 3 0 1M" b.qcow2 >/dev/null
    same_list "$tag coblk snapshots" b.qcow2
    if qemu-img snapshot -l b.qcow2 | awk 'NR>2 {print $1, $2}' | tr '\n' ' ' |
        grep -q "^1 alpha 2 beta 3 gamma $"; then pass "$tag ids and names"; else
        fail "$tag ids and names"; qemu-img snapshot -l b.qcow2; fi
    clean "$tag three snapshots" b.qcow2
    run "$tag qemu applies coblk's 'alpha'" qemu-img snapshot -a alpha b.qcow2
    reads b.qcow2 "$tag qemu apply alpha" 1 0 1M 7 8M 64k 0 16M 64k
    run "$tag qemu deletes coblk's 'beta'" qemu-img snapshot -d beta b.qcow2
    clean "$tag qemu delete" b.qcow2
    run "$tag coblk applies 'gamma'" "$CIMG" snapshot -a gamma b.qcow2
    reads b.qcow2 "$tag coblk apply gamma" 2 0 64k 1 64k 960k 9 16M 64k
    run "$tag coblk deletes 'alpha'" "$CIMG" snapshot -d alpha b.qcow2
    run "$tag coblk deletes 'gamma'" "$CIMG" snapshot -d gamma b.qcow2
    clean "$tag all deleted" b.qcow2
    reads b.qcow2 "$tag after deletes" 2 0 64k 1 64k 960k 9 16M 64k
    # OFLAG_COPIED is back: an overwrite does not allocate a new cluster
    qemu-io -c "write -P 5 0 64k" b.qcow2 >/dev/null
    clean "$tag rewrite in place" b.qcow2
done

# unknown snapshot
qemu-img create -q -f qcow2 c.qcow2 1M
if "$CIMG" snapshot -a nosuch c.qcow2 >out.txt 2>&1; then fail "apply unknown"; else
    grep -q "nosuch" out.txt && pass "apply unknown snapshot: error names it" || { fail "apply unknown msg"; cat out.txt; }
fi

# corrupt snapshot tables: a clear error, no crash
corrupt() {
    local what=$1 pat=$2; shift 2
    cp snap.qcow2 bad.qcow2; "$E" bad.qcow2 "$@"
    "$CIMG" info bad.qcow2 >out.txt 2>&1; local rc=$?
    if [ $rc -eq 1 ] && grep -qi "$pat" out.txt; then pass "$what: $(tail -1 out.txt)"; else
        fail "$what (rc $rc)"; sed 's/^/  /' out.txt; fi
}
qemu-img create -q -f qcow2 snap.qcow2 16M
qemu-io -c "write -P 1 0 64k" snap.qcow2 >/dev/null
qemu-img snapshot -c s snap.qcow2
# qemu-img leaves the last entry's padding past the end of the file
same_list "table at the end of the file" snap.qcow2
corrupt "absurd snapshot count" "snapshots" hdr32 60 100000
corrupt "snapshot table past EOF" "snapshot" hdr64 64 $((1 << 40))
corrupt "snapshot table unaligned" "snapshot" hdr64 64 $((0x30008))
corrupt "snapshot L1 too large" "L1" snap-l1size 0 $((1 << 30))
corrupt "count larger than the table" "snapshot" hdr32 60 5000

echo "$FAILS failure(s)"
[ "$FAILS" -eq 0 ]
