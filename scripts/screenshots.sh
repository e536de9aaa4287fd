#!/usr/bin/env bash
# Regenerate the README's screenshots (docs/*.png) from the browser tests: bash scripts/screenshots.sh
# The tests themselves write their screenshots to test-artifacts/ (git-ignored), so a test run leaves the
# checkout clean; this is the one deliberate way to change the images in docs/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SCREENSHOT_DIR="$(pwd)/docs" exec bash scripts/test.sh tests/test_browser.py "$@"
