#!/bin/bash
# qcow2 check / repair against Debian's qemu-img check: images with leaks and
# corruptions made by editing metadata (qcow2-edit.py); both tools must give
# the same report (stdout), the same exit code, and after "-r leaks" /
# "-r all" by coblk, qemu-img check must agree with coblk's double check.
# usage: qcow2-check.sh COBLK-IMG
set -u
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null || { echo "SKIP: qemu-img"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: python3"; exit 77; }
CIMG=$(realpath "$1")
E="$(cd "$(dirname "$0")" && pwd)/qcow2-edit.py"
T=$(mktemp -d "${TMPDIR:-/tmp}/coblk-qcow2-check.XXXXXX")
trap 'rm -rf "$T"' EXIT
cd "$T"
FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
pass() { echo "ok: $*"; }

# same_check <what> <image> [repair]: coblk and qemu-img check agree (on copies).
same_check() {
    local what=$1 img=$2 rep=${3:-}
    cp "$img" q.img; cp "$img" c.img
    qemu-img check ${rep:+-r $rep} q.img >q.out 2>q.err; local q=$?
    "$CIMG" check ${rep:+-r $rep} c.img >c.out 2>c.err; local c=$?
    if [ "$q" != "$c" ]; then
        fail "$what${rep:+ -r $rep}: exit code qemu-img $q, coblk $c"
        sed 's/^/  qemu: /' q.out q.err; sed 's/^/  coblk: /' c.out c.err
        return
    fi
    if [ -z "$rep" ] && ! diff -u q.out c.out >d.txt; then
        fail "$what: reports differ"; sed 's/^/  /' d.txt; return
    fi
    if [ -n "$rep" ] && [ -z "${FIXED_COUNTS_DIFFER:-}" ]; then
        # the same "found and repaired" counts
        sed -n '/following/,/Double/p' q.out >qf.txt; sed -n '/following/,/Double/p' c.out >cf.txt
        if ! diff -u qf.txt cf.txt >d.txt; then
            fail "$what -r $rep: repaired counts differ"; sed 's/^/  /' d.txt; return
        fi
    fi
    if [ -n "$rep" ]; then
        # the repaired images: both clean (or equally broken) for qemu-img
        qemu-img check q.img >q2.out 2>&1; local q2=$?
        qemu-img check c.img >c2.out 2>&1; local c2=$?
        if [ "$q2" != "$c2" ]; then
            fail "$what -r $rep: qemu-img check after repair: qemu's $q2, coblk's $c2"
            sed 's/^/  /' c2.out; return
        fi
        if [ -n "${EXPECT_DATA:-}" ] && ! qemu-img compare -q q.img c.img; then
            fail "$what -r $rep: repaired data differs"; return
        fi
    fi
    pass "$what${rep:+ -r $rep} (rc $c)"
}

all_modes() {
    same_check "$1" "$2"
    same_check "$1" "$2" leaks
    same_check "$1" "$2" all
}

refc() { "$E" "$1" getref "$2"; }
# host cluster index of the data mapping a guest offset
host_cluster() {
    local e; e=$("$E" "$1" l2 "$2"); echo $(( (e & 0xfffffffffe00) >> $3 ))
}

for cs in 65536 4096; do
    cb=16; [ $cs = 4096 ] && cb=12
    qemu-img create -q -f qcow2 -o cluster_size=$cs base.qcow2 64M
    qemu-io -c "write -P 1 0 256k" -c "write -P 2 8M 64k" -c "write -c -P 3 16M 64k" \
        base.qcow2 >/dev/null
    all_modes "cs=$cs clean" base.qcow2

    # leak: an extra cluster at the end with refcount 1
    cp base.qcow2 leak.qcow2
    size=$(stat -c %s leak.qcow2); c=$(( (size + cs - 1) / cs ))
    truncate -s $(( (c + 2) * cs )) leak.qcow2
    "$E" leak.qcow2 setref $c 1; "$E" leak.qcow2 setref $((c + 1)) 3
    EXPECT_DATA=1 all_modes "cs=$cs leaks" leak.qcow2

    # refcount too high on a used data cluster (leak + OFLAG_COPIED error)
    cp base.qcow2 high.qcow2
    h=$(host_cluster high.qcow2 0 $cb); "$E" high.qcow2 setref $h 2
    EXPECT_DATA=1 all_modes "cs=$cs refcount 2 on a data cluster" high.qcow2

    # refcount 0 on a used data cluster (rebuild)
    cp base.qcow2 zero.qcow2
    h=$(host_cluster zero.qcow2 8388608 $cb); "$E" zero.qcow2 setref $h 0
    EXPECT_DATA=1 all_modes "cs=$cs refcount 0 on a data cluster" zero.qcow2

    # OFLAG_COPIED missing on an L2 entry and on an L1 entry
    cp base.qcow2 copied.qcow2
    "$E" copied.qcow2 l2-uncopy 0; "$E" copied.qcow2 l1-uncopy 0
    EXPECT_DATA=1 all_modes "cs=$cs OFLAG_COPIED cleared" copied.qcow2

    # L2 entry pointing past the end of the file
    cp base.qcow2 eof.qcow2
    "$E" eof.qcow2 l2 65536 $(( (1 << 63) | (1 << 30) ))
    all_modes "cs=$cs data cluster past EOF" eof.qcow2

    # refcount table entry pointing past the end of the file
    cp base.qcow2 rt.qcow2
    "$E" rt.qcow2 reftable 1 $(( 1 << 32 ))
    # qemu-img grows the file to the block, coblk rebuilds the refcount
    # structure: both clean afterwards, the repaired counts differ (2 vs 1)
    FIXED_COUNTS_DIFFER=1 all_modes "cs=$cs refcount block past EOF" rt.qcow2

    # snapshots: refcount 1 on a cluster shared with a snapshot
    cp base.qcow2 snap.qcow2
    qemu-img snapshot -c s1 snap.qcow2
    qemu-io -c "write -P 4 0 64k" snap.qcow2 >/dev/null
    all_modes "cs=$cs snapshot clean" snap.qcow2
    h=$(host_cluster snap.qcow2 131072 $cb); "$E" snap.qcow2 setref $h 1
    EXPECT_DATA=1 all_modes "cs=$cs refcount 1 on a shared cluster" snap.qcow2
done

# refcount_bits 1 and 64
for rb in 1 8 64; do
    qemu-img create -q -f qcow2 -o refcount_bits=$rb rb.qcow2 16M
    qemu-io -c "write -P 1 0 192k" rb.qcow2 >/dev/null
    all_modes "refcount_bits=$rb clean" rb.qcow2
done

# other layouts: clean images from qemu-io must stay clean for coblk
for o in "extended_l2=on" "extended_l2=on,cluster_size=2M" "compression_type=zstd" \
         "data_file=ext.raw" "lazy_refcounts=on" "cluster_size=512"; do
    rm -f ext.raw
    qemu-img create -q -f qcow2 -o "$o" lay.qcow2 32M
    qemu-io -c "write -P 1 0 300k" -c "write -P 2 5M 4k" -c "write -z 6M 64k" lay.qcow2 >/dev/null
    case $o in data_file*) ;; *) qemu-io -c "write -c -P 3 8M 64k" lay.qcow2 >/dev/null;; esac
    qemu-img snapshot -c s lay.qcow2 2>/dev/null
    qemu-io -c "write -P 4 0 4k" lay.qcow2 >/dev/null
    same_check "[$o] clean" lay.qcow2
done

# v2 image
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 16M
qemu-io -c "write -P 1 64k 128k" v2.qcow2 >/dev/null
all_modes "compat=0.10 clean" v2.qcow2

echo "$FAILS failure(s)"
[ "$FAILS" -eq 0 ]
