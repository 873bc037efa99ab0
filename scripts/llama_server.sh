#!/usr/bin/env bash
# A local OpenAI-compatible server (llama.cpp through llama-cpp-python) for a GGUF model: the
# optional fast backend of docs/llama_server.md (`make llama-server`).
#
#   scripts/llama_server.sh VENV GGUF_PATH [PORT]    install if needed, then serve (port 8080)
#   scripts/llama_server.sh --build-only VENV        install if needed, do not serve
#
#   VENV       virtual environment to install llama-cpp-python[server]==0.3.36 into
#   GGUF_PATH  the model file to serve
#   PORT       loopback port (default 8080); the endpoint is http://127.0.0.1:PORT/v1
#
# Environment: LLAMA_THREADS, else GRAVITY_TORCH_THREADS, else the number of cores: threads for
# generation and prompt processing. LLAMA_MODEL_ALIAS: the model name requests use (default: the
# GGUF's file name without .gguf). LLAMA_N_CTX: context length (default 4096). LLAMA_CACHE_MB:
# memory for saved prompt prefixes (default 2048; 0 turns the cache off): the server runs through
# tasks/llm/llama_serve.py, whose RAM cache keeps one prefix per reader and counts the bytes it
# really holds (about 28 KB a token for the 1.5B), so interleaved readers do not re-read their
# reviews on every scored request.
#
# No prebuilt wheel exists for 0.3.36: it is built from source once (10-18 minutes on 2 cores)
# into .gravity/wheels/<cpu>/ and reused from there. The build targets the instruction sets this
# CPU reports in /proc/cpuinfo, named explicitly: a native build (GGML_NATIVE=ON, the default)
# segfaults on the first generation on CPUs with AMX, in its weight repacking, so AMX is always
# off; AVX-512 and its extensions are on only where the CPU has them (a wheel built with AVX-512
# dies with SIGILL on an AVX2-only CPU). The wheel folder is named after that instruction set, so
# a .gravity/ carried to another kind of CPU builds again instead of crashing.
#   scripts/llama_server.sh --print-build VENV   print the folder name and CMAKE_ARGS, then exit
# LLAMA_CMAKE_ARGS replaces the derived CMake arguments (then the folder is named "custom-<hash>").
# LLAMA_CPUINFO reads the CPU flags from another file (tests).

usage() { echo "usage: $0 VENV GGUF_PATH [PORT] | $0 --build-only VENV | $0 --print-build VENV" >&2; exit 2; }

VERSION=0.3.36
repo="$(cd "$(dirname "$0")/.." && pwd)"
common_args="-DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"

# "<folder name> <cmake args...>" for this CPU. x86-64: each instruction set ggml can use is on
# exactly when the CPU lists it; AMX stays off. Elsewhere (aarch64...): ggml's native build.
build_target() {
    local cpuinfo="${LLAMA_CPUINFO:-/proc/cpuinfo}" flags name args f
    if [ -n "${LLAMA_CMAKE_ARGS:-}" ]; then
        echo "custom-$(printf '%s' "$LLAMA_CMAKE_ARGS" | sha256sum | cut -c1-12) $LLAMA_CMAKE_ARGS"
        return
    fi
    flags=" $(grep -m1 -E '^flags[[:space:]]*:' "$cpuinfo" 2>/dev/null | cut -d: -f2-) "
    local arch="$(uname -m)"
    [ -n "${LLAMA_CPUINFO:-}" ] && arch=x86_64
    if [ "$arch" != x86_64 ] || [ -z "${flags// /}" ]; then
        echo "native-$(uname -m) -DGGML_NATIVE=ON $common_args"
        return
    fi
    name="x86_64"; args="-DGGML_NATIVE=OFF"
    # cpuinfo flag -> ggml CMake option (the order is the folder name's)
    for f in sse4_2:SSE42 avx:AVX f16c:F16C fma:FMA avx2:AVX2 bmi2:BMI2 avx_vnni:AVX_VNNI \
             avx512f:AVX512 avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16; do
        if [[ "$flags" == *" ${f%%:*} "* ]]; then
            args="$args -DGGML_${f#*:}=ON"; name="$name-${f%%:*}"
        else
            args="$args -DGGML_${f#*:}=OFF"
        fi
    done
    echo "$name $args -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF $common_args"
}

build_only=0
read -r target cmake_args <<< "$(build_target)"
wheels="$repo/.gravity/wheels/$target"
if [ "${1:-}" = "--print-build" ]; then
    echo "wheels: $wheels"
    echo "CMAKE_ARGS: $cmake_args"
    exit 0
fi
if [ "${1:-}" = "--build-only" ]; then build_only=1; shift; fi
[ $# -ge 1 ] || usage
venv="$1"
python="$venv/bin/python"
[ -x "$python" ] || { echo "llama_server: no python in $venv (run make install first)" >&2; exit 1; }

find_wheel() { ls "$wheels"/llama_cpp_python-"$VERSION"-*.whl 2>/dev/null | head -n 1; }

install_llama_cpp() {
    local wheel
    wheel="$(find_wheel)"
    if [ -z "$wheel" ]; then
        echo "llama_server: building llama-cpp-python $VERSION from source into $wheels (10-18 min on 2 cores)"
        echo "llama_server: CMAKE_ARGS=$cmake_args"
        mkdir -p "$wheels"
        local started=$SECONDS
        CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
            "$python" -m pip wheel --no-deps --wheel-dir "$wheels" "llama-cpp-python==$VERSION"
        wheel="$(find_wheel)"
        [ -n "$wheel" ] || { echo "llama_server: the build produced no wheel" >&2; exit 1; }
        echo "llama_server: built $wheel in $(( SECONDS - started )) s"
    else
        echo "llama_server: reusing $wheel"
    fi
    # The server extras (uvicorn, fastapi, sse-starlette, starlette-context, pydantic-settings)
    # under the project's constraints: Prefect breaks with a newer fastapi.
    echo "llama_server: installing $(basename "$wheel") with the server extras into $venv"
    PIP_CONSTRAINT="$repo/constraints.txt" "$python" -m pip install --quiet \
        --find-links "$wheels" "llama-cpp-python[server]==$VERSION"
}

if "$python" -c "import llama_cpp.server.app" 2>/dev/null; then
    echo "llama_server: llama-cpp-python[server] is already installed in $venv"
else
    install_llama_cpp
    "$python" -c "import llama_cpp.server.app"
    echo "llama_server: llama-cpp-python $("$python" -c 'import llama_cpp; print(llama_cpp.__version__)') ready"
fi
[ "$build_only" = 1 ] && exit 0

[ $# -ge 2 ] && [ $# -le 3 ] || usage
gguf="$2"
port="${3:-8080}"
[ -f "$gguf" ] || { echo "llama_server: no GGUF at $gguf" >&2; exit 1; }
threads="${LLAMA_THREADS:-${GRAVITY_TORCH_THREADS:-$(nproc)}}"
alias_name="${LLAMA_MODEL_ALIAS:-$(basename "$gguf" .gguf)}"
cache_mb="${LLAMA_CACHE_MB:-2048}"
[[ "$cache_mb" =~ ^[0-9]+$ ]] || { echo "llama_server: LLAMA_CACHE_MB must be a whole number of MB, not '$cache_mb'" >&2; exit 2; }
cache_args=()
if [ "$cache_mb" -gt 0 ]; then
    cache_args=(--cache true --cache_type ram --cache_size $(( cache_mb * 1024 * 1024 )))
fi
echo "llama_server: serving $gguf as model '$alias_name' at http://127.0.0.1:$port/v1 ($threads threads, prompt cache ${cache_mb} MB)"
exec "$python" -m tasks.llm.llama_serve --model "$gguf" --host 127.0.0.1 --port "$port" \
    --n_threads "$threads" --n_threads_batch "$threads" --n_ctx "${LLAMA_N_CTX:-4096}" \
    --model_alias "$alias_name" "${cache_args[@]}"
