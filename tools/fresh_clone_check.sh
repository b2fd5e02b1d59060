#!/usr/bin/env bash
# Verify README's quick start the way a new user meets it: clone the committed main into
# an empty directory (no venv, no build outputs) and run the two documented commands.
#   tools/fresh_clone_check.sh            # uses a temporary directory, removed afterwards
#   KEEP=1 tools/fresh_clone_check.sh     # keep it for inspection
set -euo pipefail
src=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
dir=$(mktemp -d /tmp/mmfs-fresh.XXXXXX)
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$dir"' EXIT
git clone --quiet "$src" "$dir/mmfs"
cd "$dir/mmfs"
command -v uv >/dev/null || python3 -m pip install --quiet uv
echo "== uv run mmfs demo (fresh clone in $dir/mmfs)"
uv run mmfs demo
echo "== uv run pytest"
uv run pytest -q -p no:cacheprovider
