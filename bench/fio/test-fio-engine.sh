#!/usr/bin/env bash
# Runs fio with libcoblk-fio.so briefly, checking data integrity:
#  1. random writes through coblk with --verify=crc32c (fio reads back through
#     coblk and checks every block);
#  2. fio's own psync engine re-verifies the same file with --verify_only, so
#     the data is where fio put it, not only self-consistent through coblk;
#  3. the coroutine-pool mode (coblk_coroutines=4) with batched submission;
#  4. trim and sync requests through the engine;
#  5. a null-co image named only by coblk_opts;
#  6. two reading jobs share one image (read-only opens share its lock);
#  7. a missing image and bad coblk_opts fail the job with coblk's message;
#  8. --direct=1 (O_DIRECT through coblk) with verify;
#  9. when coblk has the qcow2 driver: random writes into a qcow2 image made by
#     qemu-img, verified through coblk, then `qemu-img check` accepts the image
#     and fio's psync engine verifies `qemu-img convert`'s raw copy of it.
# Usage: test-fio-engine.sh ENGINE_SO WORKDIR BLKBENCH. Exit 77 when fio is missing.
set -euo pipefail
so=$1
dir=$2
blkbench=$3
command -v fio >/dev/null || { echo "fio not found"; exit 77; }
img="$dir/fio-engine-test.raw"
qimg="$dir/fio-engine-test.qcow2"
qraw="$dir/fio-engine-test-q.raw"
trap 'rm -f "$img" "$qimg" "$qraw"' EXIT
rm -f "$img"
truncate -s 32M "$img"

cd "$dir" # fio writes verify state files to its working directory
engine=(--ioengine="external:$so" --verify_state_save=0)
# No --norandommap: with it, two queued writes may hit one block and verify
# would race (fio's documentation says so); the random map writes each block once.
common=(--name=t --filename="$img" --bs=4k --size=32M --io_size=8M --randrepeat=1
        --randseed=1234 --verify=crc32c --verify_fatal=1 --verify_state_save=0)

check() { # label, then the fio command line
    local label=$1 out
    shift
    if ! out=$("$@" 2>&1); then
        echo "$out"
        echo "FAIL: $label (fio exit code)"
        exit 1
    fi
    if ! grep -q "err= 0" <<<"$out"; then
        echo "$out"
        echo "FAIL: $label (fio reported an error)"
        exit 1
    fi
    echo "ok: $label"
}

check "randwrite qd16 batched, verify through coblk" \
    fio "${engine[@]}" "${common[@]}" --rw=randwrite --iodepth=16 --iodepth_batch_submit=8 \
    --iodepth_batch_complete_min=1 --coblk_opts=file.aio=io_uring
check "the same data re-verified by fio's psync engine" \
    fio --ioengine=psync "${common[@]}" --rw=randwrite --verify_only=1
check "coblk_coroutines=4, seq write 64k, verify" \
    fio "${engine[@]}" --name=c --filename="$img" --bs=64k --size=32M --rw=write \
    --iodepth=8 --verify=crc32c --verify_fatal=1 --coblk_coroutines=4 --coblk_poll=0
check "randtrim + fsync through the engine" \
    fio "${engine[@]}" --name=tr --filename="$img" --bs=64k --size=32M --io_size=4M \
    --rw=randtrim --iodepth=4 --coblk_opts=discard=unmap
check "fsync every 4 writes" \
    fio "${engine[@]}" --name=fs --filename="$img" --bs=4k --size=32M --io_size=2M \
    --rw=randwrite --iodepth=8 --fsync=4
check "null-co named by coblk_opts only" \
    fio "${engine[@]}" --name=n --filename=null --bs=4k --io_size=16M --rw=randread \
    --iodepth=32 --coblk_opts=driver=null-co,size=1G
check "--direct=1: O_DIRECT through coblk, verify" \
    fio "${engine[@]}" "${common[@]}" --rw=randwrite --iodepth=8 --direct=1

if "$blkbench" --drivers | grep -qx qcow2 && command -v qemu-img >/dev/null; then
    qemu-img create -q -f qcow2 "$qimg" 32M
    # fio keeps the first --filename: swap it in the common options instead.
    qcommon=("${common[@]/#--filename=*/--filename=$qimg}")
    rcommon=("${common[@]/#--filename=*/--filename=$qraw}")
    check "qcow2: randwrite qd16 through coblk, verify" \
        fio "${engine[@]}" "${qcommon[@]}" --rw=randwrite --iodepth=16 \
        --coblk_opts=driver=qcow2
    qemu-img check -q "$qimg" || { echo "FAIL: qemu-img check"; exit 1; }
    echo "ok: qemu-img check accepts the image"
    qemu-img convert -f qcow2 -O raw "$qimg" "$qraw"
    check "qcow2 data re-verified by fio's psync engine on qemu-img's raw copy" \
        fio --ioengine=psync "${rcommon[@]}" --rw=randwrite --verify_only=1
else
    echo "skip: qcow2 rows (no qcow2 driver in this build)"
fi
check "two jobs reading one image" \
    fio "${engine[@]}" --name=r2 --filename="$img" --bs=4k --size=32M --io_size=4M \
    --rw=randread --iodepth=8 --numjobs=2

fails() { # label, expected message, then the fio command line
    local label=$1 msg=$2 out
    shift 2
    if out=$("$@" 2>&1); then
        echo "$out"
        echo "FAIL: $label (fio succeeded)"
        exit 1
    fi
    if ! grep -q -- "$msg" <<<"$out"; then
        echo "$out"
        echo "FAIL: $label (no '$msg' in the output)"
        exit 1
    fi
    echo "ok: $label"
}

fails "missing image" "Could not open" \
    fio "${engine[@]}" --name=m --filename="$dir/fio-engine-missing.raw" --bs=4k --size=1M \
    --rw=read
fails "bad coblk_opts" "coblk_opts" \
    fio "${engine[@]}" --name=b --filename="$img" --bs=4k --size=1M --rw=read \
    --coblk_opts="=x"
