#!/usr/bin/env bash
# libcoblk.so exports exactly the COBLK_API functions, versioned COBLK_0.1,
# and none of the internal helpers. Usage: check-exports.sh libcoblk.so include-dir
set -euo pipefail
lib=$1
inc=$2
exported=$(nm -D --defined-only "$lib" | awk '$2 == "T" { print $3 }' | sed 's/@.*//' | sort -u)
# aio-glib.h belongs to libcoblk-glib.
headers=$(ls "$inc"/coblk/*.h | grep -v aio-glib.h)
declared=$(grep -h 'COBLK_API' $headers | grep -v '#define' | grep -o 'COBLK_API[^(]*(' |
           sed -E 's/.*[ *]([A-Za-z_0-9]+)\($/\1/' | sort -u)
status=0
for s in $declared; do
    if ! grep -qx "$s" <<<"$exported"; then
        echo "declared but not exported: $s"
        status=1
    fi
done
for s in $exported; do
    if ! grep -qx "$s" <<<"$declared"; then
        echo "exported but not declared COBLK_API: $s"
        status=1
    fi
done
if ! nm -D --defined-only "$lib" | grep '@@COBLK_0.1' >/dev/null; then
    echo "symbols are not versioned COBLK_0.1"
    status=1
fi
soname=$(objdump -p "$lib" | awk '/SONAME/ { print $2 }')
if [ "$soname" != "libcoblk.so.0" ]; then
    echo "unexpected soname: $soname"
    status=1
fi
n=$(wc -w <<<"$declared")
if [ $status -eq 0 ]; then
    echo "1 passed, 0 failed: $n exported symbols match the public headers"
fi
exit $status
