#!/usr/bin/env bash
# Install what the tests need (first run only) and run them: bash scripts/test.sh [pytest options]
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
exec "$venv/bin/python" -m pytest "$@"
