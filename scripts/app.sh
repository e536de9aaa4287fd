#!/usr/bin/env bash
# Install what the app needs (first run only) and start it: bash scripts/app.sh [streamlit options]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup-env.sh" requirements.txt
cd "$project_root"
exec "$venv/bin/python" -m streamlit run streamlit_app.py "$@"
