#!/bin/bash
# CI smoke run of one fuzz-image format:
#   smoke.sh FUZZ-IMAGE FORMAT CORPUS-ROOT SECONDS
# Replays every file of CORPUS-ROOT/FORMAT and CORPUS-ROOT/crashes/FORMAT
# (seeds and crash reproducers: a regression suite), then mutates the seeds
# for SECONDS in a scratch copy (the committed corpus is never modified).
# Exit 77 when the format is not built in.
set -u
bin=$1 fmt=$2 root=$3 secs=$4
export COBLK_FUZZ_FORMAT=$fmt
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
opts=(-rss_limit_mb=1024 -timeout=20)
seeds=()
for d in "$root/$fmt" "$root/crashes/$fmt"; do
    [ -d "$d" ] && seeds+=("$d")
done
if [ ${#seeds[@]} -gt 0 ]; then
    # -runs=0 on directories runs each file once, whole (seeds are < 1.3 MB).
    "$bin" "${opts[@]}" -max_len=1300000 -runs=0 "${seeds[@]}" || exit $?
else
    "$bin" "${opts[@]}" -runs=1 || exit $?
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" "${opts[@]}" -max_len=65536 -seed=1 -max_total_time="$secs" -artifact_prefix="$work/" \
    "$work" "${seeds[@]}"
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
    ls "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* 2>/dev/null
fi
exit $rc
