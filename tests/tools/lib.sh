# Shared helpers of the tool tests: sourced with $1 = coblk-img, $2 = coblk-io.
set -u
TESTDIR=$(cd "$(dirname "$0")" && pwd)
CIMG=$(realpath "$1")
CIO=$(realpath "$2")
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null || { echo "SKIP: qemu-img/qemu-io missing"; exit 77; }
command -v jq >/dev/null || { echo "SKIP: jq missing"; exit 77; }
T=$(mktemp -d "${TMPDIR:-/tmp}/coblk-tools.XXXXXX")
trap 'rm -rf "$T"' EXIT
cd "$T"
FAILS=0

fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
pass() { echo "ok: $*"; }

# expect_rc <rc> <description> <command...>
expect_rc() {
    local want=$1 what=$2
    shift 2
    "$@" >out.txt 2>err.txt
    local rc=$?
    if [ "$rc" -eq "$want" ]; then
        pass "$what (rc $rc)"
    else
        fail "$what: rc $rc, expected $want"
        sed 's/^/  stdout: /' out.txt
        sed 's/^/  stderr: /' err.txt
    fi
}

# same_output <description> <file-a> <file-b>
same_output() {
    if diff -u "$2" "$3" >diff.txt; then
        pass "$1"
    else
        fail "$1"
        sed 's/^/  /' diff.txt
    fi
}

# Same JSON document (keys in any order), ignoring the listed top-level keys.
same_json() {
    local what=$1 a=$2 b=$3
    shift 3
    local del='.'
    for k in "$@"; do
        del="$del | del(.\"$k\")"
    done
    if diff -u <(jq -S "$del" "$a") <(jq -S "$del" "$b") >diff.txt; then
        pass "$what"
    else
        fail "$what"
        sed 's/^/  /' diff.txt
    fi
}

# qemu-io's timing lines vary; replace them with a fixed token.
norm_io() {
    sed -E -e 's/^[0-9.]+ (bytes|KiB|MiB|GiB|TiB), [0-9]+ ops; .*$/TIMING/' \
           -e 's/^[0-9]+,[0-9]+,[0-9]+:[0-9]+:[0-9.]+,[0-9.]+,[0-9.]+$/TERSE/' \
           -e 's/^(qemu|coblk)-io: /IO: /' "$1"
}

finish() {
    if [ "$FAILS" -ne 0 ]; then
        echo "$FAILS check(s) failed"
        exit 1
    fi
    echo "all checks passed"
    exit 0
}
