#!/bin/bash
# qcow2 amend / measure / commit (make_empty) through coblk-img against
# Debian's qemu-img: amended images pass qemu-img check with the same data and
# the options qemu-img info reports; measure prints what qemu-img measure
# prints. usage: qcow2-amend.sh COBLK-IMG
set -u
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null || { echo "SKIP: qemu-img"; exit 77; }
CIMG=$(realpath "$1")
T=$(mktemp -d "${TMPDIR:-/tmp}/coblk-qcow2-amend.XXXXXX")
trap 'rm -rf "$T"' EXIT
cd "$T"
FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
pass() { echo "ok: $*"; }
info_has() {
    if qemu-img info "$2" | grep -q "$3"; then pass "$1: info has '$3'"; else
        fail "$1: info lacks '$3'"; qemu-img info "$2" | sed 's/^/  /'; fi
}
clean_same() {
    if ! qemu-img check "$2" >ck.txt 2>&1; then fail "$1: qemu-img check"; sed 's/^/  /' ck.txt; return; fi
    if qemu-img compare -q ref.raw "$2"; then pass "$1: clean, same data"; else fail "$1: data differs"; fi
}
amend_ok() {
    local what=$1; shift
    if "$CIMG" amend "$@" >out.txt 2>&1; then pass "$what"; else fail "$what"; sed 's/^/  /' out.txt; fi
}
amend_refused() {
    local what=$1 pat=$2; shift 2
    if "$CIMG" amend "$@" >out.txt 2>&1; then fail "$what: accepted"; elif grep -q "$pat" out.txt; then
        pass "$what: $(head -1 out.txt)"; else fail "$what: message"; sed 's/^/  /' out.txt; fi
}

# --- amend ---------------------------------------------------------------
qemu-img create -q -f qcow2 a.qcow2 64M
qemu-io -c "write -P 1 0 1M" -c "write -c -P 2 8M 64k" a.qcow2 >/dev/null
qemu-img snapshot -c s1 a.qcow2
qemu-io -c "write -P 3 0 64k" a.qcow2 >/dev/null
qemu-img convert -O raw a.qcow2 ref.raw
for rb in 2 8 64 16; do
    amend_ok "refcount_bits=$rb" -o refcount_bits=$rb a.qcow2
    info_has "refcount_bits=$rb" a.qcow2 "refcount bits: $rb"
    clean_same "refcount_bits=$rb" a.qcow2
done
amend_refused "refcount_bits=1 with a snapshot" "refcount_bits=1" -o refcount_bits=1 a.qcow2
clean_same "after the refused refcount_bits=1" a.qcow2
amend_ok "compat=0.10" -o compat=0.10 a.qcow2
info_has "compat=0.10" a.qcow2 "compat: 0.10"
clean_same "compat=0.10" a.qcow2
qemu-img snapshot -a s1 a.qcow2 && pass "qemu applies the snapshot of the downgraded image"
qemu-img convert -O raw a.qcow2 ref.raw
amend_ok "compat=1.1,lazy_refcounts=on" -o compat=1.1,lazy_refcounts=on a.qcow2
info_has "compat=1.1" a.qcow2 "compat: 1.1"
info_has "lazy on" a.qcow2 "lazy refcounts: true"
clean_same "compat=1.1 lazy" a.qcow2
amend_ok "lazy_refcounts=off" -o lazy_refcounts=off a.qcow2
info_has "lazy off" a.qcow2 "lazy refcounts: false"
amend_refused "lazy_refcounts with compat=0.10" "lazy" -o compat=0.10,lazy_refcounts=on a.qcow2
amend_refused "cluster_size change" "cluster_size" -o cluster_size=4096 a.qcow2
qemu-io -c "write -z 4M 64k" a.qcow2 >/dev/null
amend_refused "downgrade with zero clusters" "zero clusters" -o compat=0.10 a.qcow2
qemu-img create -q -f qcow2 -o extended_l2=on x.qcow2 1M
amend_refused "downgrade with extended_l2" "extended L2" -o compat=0.10 x.qcow2

# backing file
qemu-img create -q -f raw base.raw 64M
qemu-io -f raw -c "write -P 9 0 64M" base.raw >/dev/null
qemu-img create -q -f qcow2 top.qcow2 64M
qemu-io -c "write -P 4 1M 64k" top.qcow2 >/dev/null
amend_ok "backing_file" -o backing_file=base.raw,backing_fmt=raw top.qcow2
info_has "backing_file" top.qcow2 "backing file: base.raw"
info_has "backing_fmt" top.qcow2 "backing file format: raw"
if qemu-io -r -c "read -P 9 0 1M" -c "read -P 4 1M 64k" top.qcow2 | grep -q -i "fail\|mismatch"; then
    fail "data through the new backing file"; else pass "data through the new backing file"; fi

# commit: make_empty empties the top after committing into the base
qemu-img create -q -f qcow2 cb.qcow2 16M
qemu-io -c "write -P 1 0 4M" cb.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b cb.qcow2 -F qcow2 ct.qcow2
qemu-io -c "write -P 2 1M 1M" -c "write -z 3M 64k" ct.qcow2 >/dev/null
if "$CIMG" commit ct.qcow2 >out.txt 2>&1; then pass "commit"; else fail "commit"; cat out.txt; fi
qemu-img check ct.qcow2 >/dev/null && qemu-img check cb.qcow2 >/dev/null && pass "commit: both clean" || fail "commit: check"
if [ "$(qemu-img map --output=json ct.qcow2 | grep -c '"depth": 0')" = 0 ]; then pass "commit: top emptied"; else
    fail "commit: top still has data"; qemu-img map ct.qcow2; fi
if qemu-io -r -c "read -P 1 0 1M" -c "read -P 2 1M 1M" -c "read -P 0 3M 64k" ct.qcow2 | grep -q -i "fail\|mismatch"; then
    fail "commit: data"; else pass "commit: data through the chain"; fi

# --- measure ---------------------------------------------------------------
mdiff=0
for cs in 512 4096 65536 2M; do
    for sz in 0 1 1M 100M 1G 3T; do
        for extra in "" ",refcount_bits=1" ",refcount_bits=64" ",extended_l2=on" ",preallocation=full"; do
            [ "$extra" = ",extended_l2=on" ] && [ "$cs" = 512 -o "$cs" = 4096 ] && continue
            q=$(qemu-img measure -O qcow2 -o "cluster_size=$cs$extra" --size $sz 2>&1 | sed 's/^qemu-img: //')
            c=$("$CIMG" measure -O qcow2 -o "cluster_size=$cs$extra" --size $sz 2>&1 | sed 's/^coblk-img: //')
            if [ "$q" != "$c" ] && ! { echo "$q" | grep -q "too large" && echo "$c" | grep -q "too large"; }; then
                fail "measure cs=$cs size=$sz$extra"; echo "  qemu: $q"; echo "  coblk: $c"; mdiff=1
            fi
        done
    done
done
[ $mdiff = 0 ] && pass "measure --size: 4 cluster sizes x 6 sizes x 5 option sets identical"
qemu-img create -q -f qcow2 m.qcow2 100M
qemu-io -c "write -P 1 0 1M" -c "write -P 2 5000000 3000" -c "write -z 20M 1M" \
    -c "write -c -P 3 40M 64k" m.qcow2 >/dev/null
qemu-img create -q -f raw m.raw 50M
qemu-io -f raw -c "write -P 1 1M 100k" -c "write -P 1 30M 8k" m.raw >/dev/null
for f in m.qcow2 m.raw; do
    for cs in 512 65536 1M; do
        q=$(qemu-img measure -O qcow2 -o cluster_size=$cs $f 2>&1)
        c=$("$CIMG" measure -O qcow2 -o cluster_size=$cs $f 2>&1)
        if [ "$q" = "$c" ]; then pass "measure $f cs=$cs"; else
            fail "measure $f cs=$cs"; echo "  qemu: $q"; echo "  coblk: $c"; fi
    done
done

echo "$FAILS failure(s)"
[ "$FAILS" -eq 0 ]
