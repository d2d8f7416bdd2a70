#!/usr/bin/env bash
# bench/run's plan: the quick matrix lists the fio and qemu-img bench rows, and
# the qcow2 rows appear exactly when this build's coblk has the qcow2 driver.
# Usage: test-bench-run.sh SOURCE_ROOT BUILD_DIR. Exit 77 without fio/qemu-img.
set -euo pipefail
src=$1
build=$2
for tool in fio qemu-img python3; do
    command -v $tool >/dev/null || { echo "$tool not found"; exit 77; }
done
out=$(python3 "$src/bench/run" --list --quick --build "$build")
echo "$out"
for row in "fio null 4k-randread-qd32" "fio raw-direct 4k-randread-qd32 io_uring" \
           "fio raw-direct 4k-randread-qd32 native" "fio raw-buffered 4k-randread-qd1 io_uring" \
           "qemu-img-bench null 4k-seqread-qd32"; do
    grep -qx -- "$row -\?" <<<"$out" || grep -qx -- "$row" <<<"$out" ||
        { echo "FAIL: missing row: $row"; exit 1; }
done
if "$build/bench/coblk-blkbench" --drivers | grep -qx qcow2; then
    grep -q "^fio qcow2-allocated " <<<"$out" || { echo "FAIL: qcow2 rows missing"; exit 1; }
    grep -q "^fio qcow2-backing8 " <<<"$out" || { echo "FAIL: backing rows missing"; exit 1; }
else
    ! grep -q qcow2 <<<"$(grep -v '^note' <<<"$out")" || { echo "FAIL: qcow2 rows"; exit 1; }
    grep -q "^note: qcow2 rows skipped" <<<"$out" || { echo "FAIL: no skip note"; exit 1; }
fi
# coblk-blkbench refuses an image smaller than offset + buffer (qemu-img bench
# divides by the image size there and dies of SIGFPE on an empty image).
tmp=$(mktemp -d)
: >"$tmp/empty.raw"
rc=0
msg=$("$build/bench/coblk-blkbench" -w -f raw -c 10 "$tmp/empty.raw" 2>&1) || rc=$?
rm -rf "$tmp"
[ "$rc" = 1 ] && grep -q "is smaller than offset + buffer size" <<<"$msg" ||
    { echo "FAIL: blkbench on an empty image: rc $rc: $msg"; exit 1; }
echo "ok: bench/run plan"
