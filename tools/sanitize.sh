#!/usr/bin/env bash
# Run the test suite against kernels built with AddressSanitizer (and, with DEBUG=1, with
# Cython's bounds checks on too), in a throw-away clone so the working build is untouched.
#   tools/sanitize.sh [pytest args...]      (default: the whole tests/ folder)
set -euo pipefail
src=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
dir=$(mktemp -d /tmp/mmfs-asan.XXXXXX)
trap 'rm -rf "$dir"' EXIT
git clone --quiet "$src" "$dir/mmfs"
cd "$dir/mmfs"
uv sync --quiet
MMFS_DEBUG=${DEBUG:-0} CFLAGS="-fsanitize=address -fno-omit-frame-pointer" \
    LDFLAGS="-fsanitize=address" uv run --no-sync python setup.py -q build_ext --inplace --force -j 2
# Python itself is not instrumented: preload the runtime, and skip leak reports (the
# interpreter keeps memory alive at exit on purpose).
ASAN_OPTIONS=detect_leaks=0:verify_asan_link_order=0 LD_PRELOAD="$(gcc -print-file-name=libasan.so)" \
    .venv/bin/python -m pytest -q -p no:cacheprovider "${@:-tests}"
