#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run it.
# Real peers come from Debian packages (dcmtk, Orthanc, Chromium, a CJK font); Python
# packages from PyPI (torch is pinned to 2.13.0, whose CPU wheel is on disk here).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  need=()
  command -v storescu >/dev/null 2>&1 || need+=(dcmtk)
  command -v Orthanc >/dev/null 2>&1 || need+=(orthanc)
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  [ -d /usr/share/fonts/opentype/noto ] || need+=(fonts-noto-cjk)
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing Debian packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

python3 -m pip install -q --disable-pip-version-check "torch==2.13.0"
python3 -m pip install -q --disable-pip-version-check -e ".[dev,training]"

python3 -m pytest -m "not slow and not gpu" "$@"
