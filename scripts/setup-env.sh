# Sourced by scripts/app.sh and scripts/test.sh: create .venv if needed and install a requirements file
# into it, skipping pip when that file has not changed since the last install.
# Usage: source scripts/setup-env.sh requirements.txt
set -euo pipefail
project_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
requirements="$project_root/$1"
venv="${VENV_DIR:-$project_root/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "Creating the virtual environment in $venv ..." >&2
  "$python" -m venv "$venv"
fi
stamp="$venv/.installed-$(basename "$requirements")"
wanted="$(cat "$requirements" "$project_root"/requirements*.txt | sha256sum | cut -d' ' -f1)"  # any pinned file, -r included
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "Installing $(basename "$requirements") into $venv (first time: a few minutes) ..." >&2
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -r "$requirements"
  echo "$wanted" > "$stamp"
fi
