#!/usr/bin/env bash
# Interleaved A/B of sequential allocating writes: for each round and each
# case, a fresh image (raw: a sparse file; other formats: coblk-img create, or
# MAKER=qemu for qemu-img create), synced, then coblk-blkbench writes it in
# 64 KiB requests at depth 16 (COUNT requests, default 16384 = 4 passes over
# 256 MiB). Prints each case's median run time (seconds).
#
#   bench/ab-seqwrite.sh BUILD_DIR ROUNDS LABEL:FMT[:ENV=VAL ...] ...
#   e.g. bench/ab-seqwrite.sh build 9 raw:raw vdi:vdi vhdx:vhdx
# The ENV part is passed to the bench (e.g. a test knob of a driver).
# Not a test: run it on an idle machine.
set -euo pipefail
build=$1 rounds=$2
shift 2
cbench=$build/bench/coblk-blkbench
mk=("$build/tools/img/coblk-img")
[ "${MAKER:-coblk}" = qemu ] && mk=(qemu-img)
dir=$(mktemp -d "${TMPDIR:-/tmp}/ab-seqwrite.XXXXXX")
trap 'rm -rf "$dir"' EXIT
img=$dir/w.img
for ((r = 0; r < rounds; r++)); do
    for spec in "$@"; do
        IFS=: read -r lab fmt envs <<<"$spec"
        rm -f "$img"
        if [ "$fmt" = raw ]; then
            truncate -s 256M "$img"
        else
            "${mk[@]}" create -q -f "$fmt" "$img" 256M >/dev/null
        fi
        sync "$img"
        t=$(env $envs "$cbench" -f "$fmt" -t writeback -d 16 -c "${COUNT:-16384}" -w -s 64k \
            "$img" | sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p')
        echo "$lab $t"
    done
done >"$dir/out"
for spec in "$@"; do
    lab=${spec%%:*}
    printf '%s median %s (%s)\n' "$lab" \
        "$(awk -v l="$lab" '$1 == l { print $2 }' "$dir/out" | sort -n |
           awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')" \
        "$(awk -v l="$lab" '$1 == l { printf "%s ", $2 }' "$dir/out")"
done
