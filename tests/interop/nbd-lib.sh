# Shared by the NBD interop scripts: a scratch directory T, background
# servers killed on exit, waiting for sockets, and qemu-io pattern checks.
set -eu
T=$(mktemp -d "${TMPDIR:-/tmp}/nbd-interop.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

need() {
    for t in "$@"; do
        command -v "$t" >/dev/null || { echo "$t not installed: skipping"; exit 77; }
    done
}

# wait_sock PATH: the server is listening on PATH (10 s at most). The socket
# file appears at bind(), before listen(): a client connecting in between is
# refused. /proc/net/unix shows the listening state (flag __SO_ACCEPTCON,
# 00010000) without connecting, which a one-client server would count.
wait_sock() {
    for _ in $(seq 200); do
        if [ -S "$1" ] && awk -v p="$1" '$4 == "00010000" && $8 == p { f = 1 } END { exit !f }' \
            /proc/net/unix; then
            return 0
        fi
        sleep 0.05
    done
    fail "no socket listening at $1"
}

# wait_gone PID: the process has exited (5 s at most).
wait_gone() {
    for _ in $(seq 100); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.05
    done
    fail "process $1 did not exit"
}

# qio TARGET CMD...: runs qemu-io commands (raw) and fails on any error or mismatch.
qio() {
    local target=$1 out args=()
    shift
    for c in "$@"; do
        args+=(-c "$c")
    done
    out=$(qemu-io -f raw "${args[@]}" "$target" 2>&1) || fail "qemu-io on $target: $out"
    if grep -Eqi "fail|error|mismatch" <<<"$out"; then
        fail "qemu-io on $target: $out"
    fi
}
