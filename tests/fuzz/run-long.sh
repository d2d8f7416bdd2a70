#!/bin/bash
# Runs the fuzz targets for a while each (local use, not CI):
#   run-long.sh BUILD-DIR SECONDS [TARGET...]
# TARGET is "opts", "nbd-server", "nbd-client" or an image format of fuzz-image (vdi, vpc, vmdk, probe,
# qcow2, ...); default: opts and every format fuzz-image has built in.
# BUILD-DIR is a clang build (CC=clang meson setup BUILD-DIR). The working
# corpus of each target grows in BUILD-DIR/fuzz-work/<target>/ (seeded from
# tests/fuzz/corpus/<target>); crashes, leaks, timeouts and OOMs are saved
# there as crash-*/leak-*/timeout-*/oom-* and listed at the end: copy a
# reproducer to tests/fuzz/corpus/crashes/<target>/ once fixed, so CI
# replays it. One job at a time (-jobs=1): the machine's cores are shared.
set -u
build=$1 secs=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
img=$build/tests/fuzz/fuzz-image
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(opts nbd-server nbd-client probe raw vdi vpc vmdk qcow2 qed qcow vhdx parallels
             bochs cloop dmg)
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
summary=()
for t in "${targets[@]}"; do
    work=$build/fuzz-work/$t
    mkdir -p "$work/corpus"
    seeds=()
    for d in "$here/corpus/$t" "$here/corpus/crashes/$t"; do
        [ -d "$d" ] && seeds+=("$d")
    done
    if [ "$t" = opts ]; then
        cmd=("$build/tests/fuzz/fuzz-opts" -max_len=4096)
    elif [ "$t" = nbd-server ] || [ "$t" = nbd-client ]; then
        cmd=("$build/tests/fuzz/fuzz-$t")
    else
        cmd=(env COBLK_FUZZ_FORMAT="$t" "$img")
    fi
    if [ "$t" = vhdx ] && command -v qemu-img >/dev/null; then
        # vhdx regions are 1 MiB aligned: a whole image (4 MiB) is too big to
        # commit, so a seed is made here, in the working corpus.
        s=$work/corpus/seed-qemu-img
        if [ ! -f "$s" ] && qemu-img create -q -f vhdx -o log_size=1M,block_size=1M "$s" 4M
        then
            truncate -s 4M "$s"
        fi
        cmd+=(-max_len=4194304)
    fi
    "${cmd[@]}" -runs=0 >/dev/null 2>&1
    if [ $? -eq 77 ]; then
        summary+=("$t: not built in, skipped")
        continue
    fi
    echo "== $t for ${secs}s"
    "${cmd[@]}" -rss_limit_mb=1024 -timeout=20 -max_total_time="$secs" -print_final_stats=1 \
        -artifact_prefix="$work/" "$work/corpus" "${seeds[@]}" 2>"$work/log"
    rc=$?
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/log" | grep -o '[0-9]*$')
    cov=$(grep -o 'cov: [0-9]*' "$work/log" | tail -1)
    found=$(ls "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* 2>/dev/null | wc -l)
    summary+=("$t: exit $rc, ${runs:-?} inputs, $cov edges, $found findings, ${secs}s")
done
printf '%s\n' "${summary[@]}"
