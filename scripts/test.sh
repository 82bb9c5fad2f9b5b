#!/usr/bin/env bash
# The one test command, for a newcomer and for CI alike: set up what the tests need on a fresh
# machine (Debian's Chromium for the browser tests, the Python requirements), then run the suite,
# then run the numerics-sensitive tests again on other CPU kernels.
#
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh tests/test_x.py # extra arguments go to the first pytest run
#
# CI=true (set by .ci/run) makes a missing browser a failure instead of a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

have_browser() {
  for name in chromium chromium-browser google-chrome google-chrome-stable; do
    command -v "$name" >/dev/null && return 0
  done
  [ -x /usr/bin/chromium ]
}

# Debian's Chromium, never `playwright install` (which downloads a browser of its own).
if ! have_browser && command -v apt-get >/dev/null; then
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=(sudo -n); else sudo=(false); fi
  fi
  if [ "${sudo[0]:-}" = false ]; then
    echo "test.sh: no Chromium and no root or passwordless sudo to install it: the browser tests will be skipped" >&2
  else
    echo "test.sh: installing Debian's chromium for the browser tests"
    "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq chromium >/dev/null \
      || echo "test.sh: could not install chromium: the browser tests will be skipped (a failure under CI)" >&2
  fi
fi

# llama-cpp-python compiles llama.cpp (minutes on 2 cores); its multimodal library is not needed here.
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}"
python3 -m pip install -q -r requirements-dev.txt

# Which kernels this run exercises: results may differ in the last bits between CPU kinds, so the
# log says which machine produced them.
native=$(python3 -c "import torch; print(torch.backends.cpu.get_cpu_capability())")
model=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)
echo "test.sh: CPU ${model:-unknown}; PyTorch kernels: $native${ATEN_CPU_CAPABILITY:+ (ATEN_CPU_CAPABILITY=$ATEN_CPU_CAPABILITY)}"

python3 -m pytest -q "$@"

# The same numerics on the other vectorised kernel family: AVX2 on an AVX-512 machine; on an AVX2
# machine the first run already used AVX2, so use the plain (unvectorised) kernels instead.
second=avx2
[ "$native" = AVX512 ] || second=default
echo "test.sh: numerics-sensitive tests again with ATEN_CPU_CAPABILITY=$second"
ATEN_CPU_CAPABILITY=$second python3 -m pytest -q -m numerics
