# Sourced by scripts/demo and scripts/test: a virtual environment in .venv
# with the project installed (editable) and the extras named in $EXTRAS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
  exit 2
fi
# Another install into this .venv (a second terminal, an editor) may be running:
# wait for it rather than fail half way through.
exec 9>.venv.lock
if ! flock -n 9; then
  echo "waiting for another install into .venv to finish ..." >&2
  flock 9
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)-${EXTRAS:-none}
if [ ! -e "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  if ! .venv/bin/python -m pip install --quiet -e ".${EXTRAS:+[$EXTRAS]}"; then
    echo "error: could not install the project${EXTRAS:+ with its [$EXTRAS] extra} (pip's message above names the package)" >&2
    exit 1
  fi
  touch "$stamp"
fi
flock -u 9
export PATH="$PWD/.venv/bin:$PATH"
