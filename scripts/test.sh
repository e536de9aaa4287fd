#!/usr/bin/env bash
# Install what the tests need (first run only), check style and the import contract, and run the tests:
# bash scripts/test.sh [pytest options]
# The tests read Fashion-MNIST from $FASHION_MNIST_DIR (default: ../shared/data/fashion-mnist if it
# exists, else the Keras cache or a download). The browser test needs Debian's chromium: installed here
# with apt-get when it is missing and we may.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup-env.sh" requirements-dev.txt
cd "$project_root"
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt_get=(apt-get); elif command -v sudo >/dev/null; then apt_get=(sudo apt-get); else apt_get=(); fi
  if [ ${#apt_get[@]} -gt 0 ]; then
    echo "Installing Debian's chromium for the browser test ..." >&2
    "${apt_get[@]}" update -qq && DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq chromium >/dev/null
  fi
fi
if [ -z "${FASHION_MNIST_DIR:-}" ] && [ -d "$project_root/../shared/data/fashion-mnist" ]; then
  export FASHION_MNIST_DIR="$project_root/../shared/data/fashion-mnist"
fi
# Style and the layer contract first (a second or two): a wrong import fails here, before any test runs.
echo "ruff check, ruff format --check, lint-imports (pyproject.toml) ..." >&2
"$venv/bin/ruff" check --quiet .
"$venv/bin/ruff" format --check --quiet .
if ! contracts="$("$venv/bin/lint-imports" --no-cache --no-logo 2>&1)"; then echo "$contracts" >&2; exit 1; fi
grep -E "KEPT|Contracts:" <<<"$contracts" >&2
exec "$venv/bin/python" -m pytest "$@"
