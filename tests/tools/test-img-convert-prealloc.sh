#!/usr/bin/env bash
# coblk-img convert into raw files: on ext4/XFS the data ranges are
# preallocated ahead of the writes (tools/img/convert-prealloc.c). Whatever
# the filesystem and whether fallocate works, the target must equal
# qemu-img's: same bytes (qemu-img compare), same map, no more space.
# $3 is an LD_PRELOAD shim that records preallocating fallocate calls and
# makes them fail with $COBLK_TEST_FALLOCATE_ERRNO.
SHIM=$(realpath "$3")     # before lib.sh changes directory
. "$(dirname "$0")/lib.sh"
# An ASan build of coblk-img accepts a preloaded library only with this.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"

# 64 MiB qcow2: data, zeroes written as data (allocated: the copy leaves them
# out and must punch them again), a zero cluster, holes, data at the end.
qemu-img create -q -f qcow2 src.qcow2 64M
qemu-io -f qcow2 -c "write -P 0x11 0 1M" -c "write -P 0 2M 256k" -c "write -P 0x22 3M 2M" \
    -c "write -z 8M 1M" -c "write -P 0x33 20544k 64k" -c "write -P 0x44 63M 1M" \
    src.qcow2 >/dev/null || fail "building the source"
qemu-img create -q -f raw tail.raw 3M
qemu-io -f raw -c "write -P 0x55 1M 512k" tail.raw >/dev/null

fstype() { stat -f -c %T "$1"; }
blocks() { stat -c %b "$1"; }

# check <what> <dir> <prealloc expected: 1/0> [convert flags...]: coblk-img's
# target against qemu-img's, with the shim recording fallocate calls.
check() {
    local what=$1 dir=$2 want=$3
    shift 3
    rm -f "$dir"/c.raw "$dir"/q.raw mark
    qemu-img convert "$@" "$dir"/q.raw || { fail "$what: qemu-img convert"; return; }
    if ! LD_PRELOAD=$SHIM COBLK_TEST_FALLOCATE_MARK=$PWD/mark "$CIMG" convert "$@" \
        "$dir"/c.raw; then
        fail "$what: coblk-img convert failed"
        return
    fi
    qemu-img compare -q -f raw -F raw "$dir"/q.raw "$dir"/c.raw && pass "$what: identical" ||
        fail "$what: contents differ"
    qemu-img map --output=json -f raw "$dir"/q.raw >q.map
    qemu-img map --output=json -f raw "$dir"/c.raw >c.map
    same_output "$what: same map" q.map c.map
    sync
    # One extent-tree block (8 sectors) of slack: unwritten extents left over
    # (a zero piece not punched, 256 KiB = 512 sectors) would exceed it.
    local qb cb
    qb=$(blocks "$dir"/q.raw) cb=$(blocks "$dir"/c.raw)
    [ "$cb" -le $((qb + 8)) ] && pass "$what: no more space ($cb vs $qb sectors)" ||
        fail "$what: $cb sectors allocated, qemu-img's target $qb"
    if [ "$want" = 1 ]; then
        [ -e mark ] && pass "$what: preallocated" || fail "$what: no preallocation"
    else
        [ ! -e mark ] && pass "$what: not preallocated" || fail "$what: preallocated"
    fi
    rm -f "$dir"/c.raw "$dir"/q.raw
}

case $(fstype .) in
ext2/ext3|xfs) prealloc=1 ;;
*) prealloc=0; echo "note: $(fstype .) under ${TMPDIR:-/tmp}: no preallocation expected" ;;
esac
check "qcow2 to raw" . $prealloc -f qcow2 -O raw src.qcow2
check "qcow2 to raw -m 1 -W" . $prealloc -m 1 -W -f qcow2 -O raw src.qcow2
check "qcow2 to raw -S 0" . $prealloc -S 0 -f qcow2 -O raw src.qcow2
check "qcow2 to raw -S 64k" . $prealloc -S 64k -f qcow2 -O raw src.qcow2
check "two sources to raw" . $prealloc src.qcow2 tail.raw
# Not preallocated: copy offloading (-C) and a qcow2 target write their own way.
check "qcow2 to raw -C" . 0 -C -f qcow2 -O raw src.qcow2

# A target with space already allocated keeps it (no preallocation, no holes punched).
for m in falloc full; do
    rm -f pre.raw mark
    LD_PRELOAD=$SHIM COBLK_TEST_FALLOCATE_MARK=$PWD/mark "$CIMG" convert -f qcow2 -O raw \
        -o preallocation=$m src.qcow2 pre.raw &&
        qemu-img compare -q -f qcow2 -F raw src.qcow2 pre.raw && [ ! -e mark ] &&
        [ "$(blocks pre.raw)" -ge 131072 ] && pass "-o preallocation=$m kept" ||
        fail "-o preallocation=$m: $(blocks pre.raw) sectors allocated"
done

# A failing fallocate only stops preallocating: the copy goes on.
for e in 28 95 5; do
    export COBLK_TEST_FALLOCATE_ERRNO=$e
    check "fallocate fails with errno $e" . $prealloc -f qcow2 -O raw src.qcow2
    unset COBLK_TEST_FALLOCATE_ERRNO
done

# tmpfs zero-fills what it preallocates: left alone there.
if [ "$(fstype /dev/shm 2>/dev/null)" = tmpfs ] && [ -w /dev/shm ]; then
    S=$(mktemp -d /dev/shm/coblk-prealloc.XXXXXX)
    trap 'rm -rf "$T" "$S"' EXIT
    check "qcow2 to raw on tmpfs" "$S" 0 -f qcow2 -O raw src.qcow2
else
    echo "note: no writable tmpfs at /dev/shm, tmpfs case skipped"
fi

finish
