#!/usr/bin/env bash
# Install langchain-outprofile (editable) with the extras named in $1 (default: dev = everything).
#
# llama-cpp-python (the `local` extra) compiles from source. pip's default build is tuned to
# the build machine's CPU and was seen to segfault on its first decode here, and pip caches a
# built wheel whatever CMAKE_ARGS were, so a bad wheel keeps coming back. This script builds a
# portable wheel (-DGGML_NATIVE=OFF) once into its own wheelhouse and installs from there.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1:-dev}"
llama_version="0.3.36"
wheelhouse="${OUTPROFILE_WHEELHOUSE:-$HOME/.cache/outprofile-wheelhouse/portable}"
mkdir -p "$wheelhouse"

if [[ "$extras" == *dev* || "$extras" == *local* ]] &&
   ! ls "$wheelhouse"/llama_cpp_python-"$llama_version"-*.whl >/dev/null 2>&1; then
  echo "building a portable llama-cpp-python $llama_version wheel (about 4 min on 2 cores)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF" FORCE_CMAKE=1 python -m pip wheel --no-deps --no-cache-dir \
    --no-binary llama-cpp-python "llama-cpp-python==$llama_version" -w "$wheelhouse"
fi

# --only-binary: take llama-cpp-python from the portable wheel above, never compile it (a
# compile here would be the CPU-tuned build, and pip would cache it).
python -m pip install --find-links "$wheelhouse" --only-binary llama-cpp-python -e ".[$extras]"
