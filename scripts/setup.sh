#!/usr/bin/env bash
# Installs what lmsample's build, tests and Python package need on Debian 12 / Ubuntu 24.04,
# and nothing that is already there (a second run installs nothing). Sourced or run by
# scripts/demo.sh and scripts/test.sh; run it alone to set a machine up.
#
#   apt (only the missing ones, `apt-get update` only when something is missing):
#     cmake g++ make git pkg-config libgtest-dev libgmock-dev libbenchmark-dev libcli11-dev
#     nlohmann-json3-dev, and with --test also clang-format python3 python3-venv python3-dev
#   pip, into the virtual environment .venv/ of the checkout (with --test only):
#     scikit-build-core, nanobind, numpy, pytest (the versions below)
#
# Root runs apt-get directly; another user through sudo. LMSAMPLE_NO_INSTALL=1 installs nothing
# (and fails with the list of what is missing).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
want_python=0
for a in "$@"; do
  case "$a" in
    --test) want_python=1 ;;
    *) echo "setup.sh: unknown argument '$a' (only --test)" >&2; exit 2 ;;
  esac
done

packages=(cmake g++ make git pkg-config libgtest-dev libgmock-dev libbenchmark-dev libcli11-dev
          nlohmann-json3-dev)
if [ "$want_python" = 1 ]; then packages+=(clang-format python3 python3-venv python3-dev); fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    # a tool may be there without its Debian package (a pyenv python3, a pip cmake)
    case "$p" in
      python3) command -v python3 >/dev/null 2>&1 && continue ;;
      python3-venv|python3-dev)
        command -v python3 >/dev/null 2>&1 &&
          [ "$(command -v python3)" != /usr/bin/python3 ] && continue ;;
    esac
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "${LMSAMPLE_NO_INSTALL:-0}" = 1 ]; then
    echo "setup.sh: missing Debian packages: ${missing[*]} (LMSAMPLE_NO_INSTALL=1)" >&2
    exit 1
  fi
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  echo "== setup: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$want_python" = 1 ]; then
  venv="$root/.venv"
  if [ ! -x "$venv/bin/python" ]; then
    echo "== setup: python3 -m venv .venv"
    python3 -m venv "$venv"
  fi
  # pinned floors; pip is asked only when one is missing
  pip_wants=("scikit-build-core>=0.10" "nanobind>=2.2" "numpy>=1.24" "pytest>=7")
  if ! "$venv/bin/python" - "${pip_wants[@]}" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version, PackageNotFoundError
import re
for want in sys.argv[1:]:
    name, floor = re.match(r"([A-Za-z0-9_.-]+)>=(.*)", want).groups()
    try:
        have = version(name)
    except PackageNotFoundError:
        sys.exit(1)
    def key(v):
        return [int(x) for x in re.findall(r"\d+", v)[:3]]
    if key(have) < key(floor):
        sys.exit(1)
PY
    if [ "${LMSAMPLE_NO_INSTALL:-0}" = 1 ]; then
      echo "setup.sh: missing Python packages in .venv (LMSAMPLE_NO_INSTALL=1)" >&2
      exit 1
    fi
    echo "== setup: pip install ${pip_wants[*]} (into .venv)"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "${pip_wants[@]}"
  fi
fi
