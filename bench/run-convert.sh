#!/usr/bin/env bash
# coblk-img convert / compare / map next to qemu-img on the same images, in the
# same run: interleaved rounds, best wall time of each, and the ratio
# coblk/qemu (< 1 means coblk is faster). Not a test.
#
#   bash bench/run-convert.sh [build-dir] [image-dir]
#   CONVERT_SIZE_MB=1024 CONVERT_ROUNDS=3 CONVERT_FLAGS="-m 8"
#
# The source is CONVERT_SIZE_MB of raw, every other 64 MiB random data and the
# rest sparse; a qcow2 copy of it (made by qemu-img) is also used when coblk
# has the qcow2 driver. Targets are written to image-dir (default /dev/shm,
# tmpfs, so the figures are CPU and memory bound, not disk bound).
set -euo pipefail
BUILD=$(realpath "${1:-build}")
DIR=${2:-/dev/shm}/coblk-convert.$$
SIZE=${CONVERT_SIZE_MB:-1024}
ROUNDS=${CONVERT_ROUNDS:-3}
FLAGS=${CONVERT_FLAGS:--m 8}
CIMG=$BUILD/tools/img/coblk-img
command -v qemu-img >/dev/null || { echo "qemu-img missing"; exit 77; }
mkdir -p "$DIR"
trap 'rm -rf "$DIR"' EXIT
cd "$DIR"

qemu-img create -q -f raw src.raw ${SIZE}M
for ((i = 0; i < SIZE / 64; i += 2)); do
    dd if=/dev/urandom of=src.raw bs=1M count=64 seek=$((i * 64)) conv=notrunc status=none
done
FORMATS=$("$CIMG" --help | sed -n 's/^Supported formats://p')
have() { case " $FORMATS " in *" $1 "*) return 0 ;; esac; return 1; }
have qcow2 && qemu-img convert -f raw -O qcow2 src.raw src.qcow2


declare -A T C
# run key command...: keeps the best wall time and the best CPU time (user + sys)
run() {
    local key=$1
    shift
    rm -f out.*
    /usr/bin/time -f "%e %U %S" -o time.txt "$@" >/dev/null
    local w c
    read -r w u s <time.txt
    c=$(echo "$u + $s" | bc -l)
    if [ -z "${T[$key]:-}" ] || (( $(echo "$w < ${T[$key]}" | bc -l) )); then
        T[$key]=$w
    fi
    if [ -z "${C[$key]:-}" ] || (( $(echo "$c < ${C[$key]}" | bc -l) )); then
        C[$key]=$c
    fi
}

CASES=("raw->raw|-f raw -O raw src.raw out.raw")
if have qcow2; then
    CASES+=("qcow2->raw|-f qcow2 -O raw src.qcow2 out.raw"
            "raw->qcow2|-f raw -O qcow2 src.raw out.qcow2"
            "qcow2->qcow2|-f qcow2 -O qcow2 src.qcow2 out.qcow2"
            "raw->qcow2 -c|-c -f raw -O qcow2 src.raw out.qcow2")
fi
for ((r = 0; r < ROUNDS; r++)); do
    for c in "${CASES[@]}"; do
        name=${c%%|*}
        args=${c#*|}
        run "qemu $name" qemu-img convert $FLAGS $args
        run "coblk $name" "$CIMG" convert $FLAGS $args
    done
    cp src.raw other.raw
    run "qemu compare" qemu-img compare -f raw -F raw src.raw other.raw
    run "coblk compare" "$CIMG" compare -f raw -F raw src.raw other.raw
    run "qemu map" qemu-img map -f raw --output=json src.raw
    run "coblk map" "$CIMG" map -f raw --output=json src.raw
    if have qcow2; then
        run "qemu map qcow2" qemu-img map -f qcow2 --output=json src.qcow2
        run "coblk map qcow2" "$CIMG" map -f qcow2 --output=json src.qcow2
        run "qemu compare qcow2" qemu-img compare -f qcow2 -F raw src.qcow2 src.raw
        run "coblk compare qcow2" "$CIMG" compare -f qcow2 -F raw src.qcow2 src.raw
    fi
done

printf "%-22s %9s %9s %6s   %9s %9s %6s\n" "case ($SIZE MiB)" "qemu wall" "coblk" "ratio" \
    "qemu cpu" "coblk" "ratio"
for c in "${CASES[@]}" "compare|" "map|" "map qcow2|" "compare qcow2|"; do
    name=${c%%|*}
    [ -n "${T[qemu $name]:-}" ] || continue
    printf "%-22s %8.3fs %8.3fs %6.2f   %8.3fs %8.3fs %6.2f\n" "$name" "${T[qemu $name]}" \
        "${T[coblk $name]}" "$(echo "${T[coblk $name]} / ${T[qemu $name]}" | bc -l)" \
        "${C[qemu $name]}" "${C[coblk $name]}" \
        "$(echo "${C[coblk $name]} / (${C[qemu $name]} + 0.0001)" | bc -l)"
done
echo "flags: $FLAGS; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
