#!/usr/bin/env bash
# coblk-img convert with COBLK_CONVERT_MAP=1 takes cached source data from a
# read-only mapping of the source file instead of reading it into a buffer
# (tools/img/convert-map.c); without it, nothing is mapped.
# Whatever the path, the target must equal qemu-img's: same bytes (qemu-img
# compare), same map (zeroes inside data left out, holes kept), a clean
# qemu-img check. Sources: qcow2 (data, zeroes written as data, zero and
# compressed clusters, data at the very end of the file, a backing chain),
# raw, several joined; cache.direct sources, filters and the default must not
# map. With strace installed, the mapped path is seen to be taken (madvise
# MADV_POPULATE_READ) or not.
. "$(dirname "$0")/lib.sh"

qemu-img create -q -f qcow2 base.qcow2 16M
qemu-io -f qcow2 -c "write -P 0x77 0 3M" -c "write -P 0x78 12M 4M" base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 src.qcow2 16M
qemu-io -f qcow2 -c "write -P 0x11 1M 1M" -c "write -P 0 2M 256k" -c "write -P 0x22 2304k 3m" \
    -c "write -z 6M 1M" -c "write -P 0x33 7M 4k" -c "write -P 0x34 7172k 512" \
    -c "write -P 0x44 15M 1M" src.qcow2 >/dev/null || fail "building the source"
# compressed clusters (no OFFSET_VALID: read normally) and a plain one
# (qemu-img's raw targets have their first block allocated, coblk's do not:
# the raw sources start with data so that the maps compare)
qemu-img create -q -f raw c.raw 1M
qemu-io -f raw -c "write -P 0x55 0 64k" -c "write -P 0x56 128k 64k" c.raw >/dev/null
qemu-img convert -c -f raw -O qcow2 c.raw comp.qcow2
qemu-io -f qcow2 -c "write -P 0x57 512k 64k" comp.qcow2 >/dev/null
qemu-img create -q -f raw plain.raw 5M
qemu-io -f raw -c "write -P 0x66 0 1M" -c "write -P 0 2M 1M" -c "write -P 0x67 5116k 4k" \
    plain.raw >/dev/null
cat src.qcow2 base.qcow2 comp.qcow2 plain.raw >/dev/null     # cached: the mapped path applies
export COBLK_CONVERT_MAP=1

HAVE_STRACE=0
command -v strace >/dev/null && strace -f -o /dev/null true 2>/dev/null && HAVE_STRACE=1

# populate_calls <command...>: how many MADV_POPULATE_READ the command made (-1 without strace).
populate_calls() {
    if [ "$HAVE_STRACE" = 0 ]; then
        "$@" >/dev/null
        echo -1
        return
    fi
    strace -f -qq -e trace=madvise -o trace.txt "$@" >/dev/null || echo "command failed" >&2
    grep -c 'MADV_POPULATE_READ' trace.txt
}

# check <what> <mapped: 1/0> <target fmt> <convert args (sources last)...>
check() {
    local what=$1 want=$2 fmt=$3
    shift 3
    rm -f q.out c.out
    qemu-img convert -O "$fmt" "$@" q.out || { fail "$what: qemu-img convert"; return; }
    local n
    n=$(populate_calls "$CIMG" convert -O "$fmt" "$@" c.out)
    [ -e c.out ] || { fail "$what: coblk-img convert failed"; return; }
    qemu-img compare -q -F "$fmt" -f "$fmt" q.out c.out && pass "$what: identical" ||
        fail "$what: contents differ"
    qemu-img map --output=json -f "$fmt" q.out >q.map
    qemu-img map --output=json -f "$fmt" c.out >c.map
    if [ "$fmt" = raw ]; then
        same_output "$what: same map" q.map c.map
    else
        # host offsets may differ between the tools; allocation and zeroes must not
        same_json "$what: same map" <(jq -c 'map(del(.offset))' q.map) \
            <(jq -c 'map(del(.offset))' c.map)
        qemu-img check -q -f "$fmt" c.out && pass "$what: check clean" ||
            fail "$what: qemu-img check finds errors"
    fi
    if [ "$n" -lt 0 ]; then
        echo "note: strace missing, mapped path not observed"
    elif [ "$want" = 1 ]; then
        [ "$n" -gt 0 ] && pass "$what: read in place ($n ranges)" ||
            fail "$what: the mapped path was not taken"
    else
        [ "$n" -eq 0 ] && pass "$what: not mapped" || fail "$what: $n ranges mapped"
    fi
}

check "qcow2 chain -> raw" 1 raw -f qcow2 src.qcow2
check "qcow2 chain -> qcow2" 1 qcow2 -f qcow2 src.qcow2
check "qcow2 -> qcow2 -B base" 1 qcow2 -B base.qcow2 -F qcow2 -f qcow2 src.qcow2
check "compressed and plain clusters -> raw" 1 raw -f qcow2 comp.qcow2
check "raw -> qcow2" 1 qcow2 -f raw plain.raw
check "raw -> raw -W -m 16" 1 raw -W -m 16 -f raw plain.raw
check "joined sources -> qcow2" 1 qcow2 -f raw plain.raw c.raw plain.raw
check "-S 64k -> raw" 1 raw -S 64k -f qcow2 src.qcow2
check "-S 0 -> raw (no block status, no mapping)" 0 raw -S 0 -f qcow2 src.qcow2
check "-T none (O_DIRECT source) -> raw" 0 raw -T none -f qcow2 src.qcow2
if "$CIMG" --help | grep -q blkdebug; then
    check "raw under blkdebug (a filter: reads go through it)" 0 raw --image-opts \
        "driver=raw,file.driver=blkdebug,file.image.driver=file,file.image.filename=plain.raw"
fi
COBLK_CONVERT_MAP= check "default (no COBLK_CONVERT_MAP) -> qcow2" 0 qcow2 -f qcow2 src.qcow2

# A compressed target reads into buffers (it compresses them there).
rm -f q.out c.out
n=$(populate_calls "$CIMG" convert -c -O qcow2 -f qcow2 src.qcow2 c.out)
qemu-img compare -q -f qcow2 -F qcow2 src.qcow2 c.out && pass "-c: identical" ||
    fail "-c: contents differ"
[ "$n" -le 0 ] && pass "-c: not mapped" || fail "-c: $n ranges mapped"
finish
