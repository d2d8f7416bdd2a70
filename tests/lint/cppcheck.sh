#!/usr/bin/env bash
# Static analysis: cppcheck (Debian's 2.10) over the library, drivers, NBD
# code and tools with warnings and portability checks. Findings fail the
# test; the few reviewed false positives carry an inline
# "cppcheck-suppress <id>" comment with the reason on the line above.
# Usage: cppcheck.sh SOURCE_DIR BUILD_DIR (skips with 77 without cppcheck).
set -u
command -v cppcheck >/dev/null || { echo "SKIP: cppcheck missing"; exit 77; }
src=$1
build=$2
cd "$src" || exit 1
out=$(cppcheck -q -j2 --std=c11 --enable=warning,portability --inline-suppr \
      -D__linux__ -D_GNU_SOURCE -I include -I . -I "$build" \
      --suppress=missingIncludeSystem --error-exitcode=1 \
      aio coroutine block drivers nbd tools 2>&1)
rc=$?
if [ $rc -ne 0 ] || [ -n "$out" ]; then
    echo "$out"
    echo "cppcheck found problems (rc $rc)"
    exit 1
fi
echo "cppcheck: no findings"
