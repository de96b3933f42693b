#!/usr/bin/env bash
# jaxserve vs llama.cpp's llama-server on the same machine, the same model file and the same load.
#
#   benchmarks/compare_llamacpp.sh                       # levels 1 4 16 64, 64 output tokens, 100-word prompts
#   LEVELS="1 16" REQUESTS=16 benchmarks/compare_llamacpp.sh
#
# 1. Builds llama-server and llama-quantize from the llama.cpp sources vendored in the llama-cpp-python
#    sdist (pip download --no-binary), with CMake and native CPU flags, into $CACHE (once).
# 2. Converts the default GGUF (the one jaxserve serves) to F32 and Q8_0 with llama-quantize.
# 3. Runs llama-server (-t = cores, --parallel = the highest level, continuous batching) on each file and
#    jaxserve (float32 against F32, --quantization int8 against Q8_0 when this jaxserve has it) with the
#    same load generator (jaxserve/bench/load_generator.py: streamed chat, ignore_eos, fixed lengths). The
#    two servers of a pair are up together and take turns level by level (see run_pair).
# 4. Prints each run's table and the ratio table jaxserve / llama-server per level and precision.
# Nothing is downloaded at jaxserve's run time; this script needs the package index once, for the sdist.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
CACHE="${CACHE:-$HOME/.cache/jaxserve-bench}"
LLAMA_CPP_PYTHON_VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
LEVELS="${LEVELS:-1 4 16 64}"
REQUESTS="${REQUESTS:-}"          # per level; default max(8, 2*C)
MAX_TOKENS="${MAX_TOKENS:-64}"
PROMPT_WORDS="${PROMPT_WORDS:-100}"
CORES="$(nproc)"
OUT="${OUT:-$CACHE/results/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$CACHE" "$OUT"

max_level=0
for level in $LEVELS; do (( level > max_level )) && max_level=$level; done
requests_args=()
[[ -n "$REQUESTS" ]] && requests_args=(--requests "$REQUESTS")

# ---------------------------------------------------------------- 1. build llama.cpp (cached)
# AMX is off by default: on a VM that advertises amx_tile but faults on it (seen on a 2-core AVX-512
# Firecracker guest, although arch_prctl grants the tile state), the native build's Q8_0 kernels die with
# SIGILL at `tilezero`. GGML_NATIVE's -march=native turns AMX on whatever GGML_AMX_* say, so the compiler
# is told -mno-amx-*, which wins over -march. LLAMA_CPU_FLAGS="" builds with whatever -march=native finds.
# The build is redone when these flags change.
LLAMA_CPU_FLAGS="${LLAMA_CPU_FLAGS--mno-amx-tile -mno-amx-int8 -mno-amx-bf16}"
LLAMA_DIR="$CACHE/llama-cpp-python-$LLAMA_CPP_PYTHON_VERSION"
LLAMA_BIN="$LLAMA_DIR/build/bin"
LLAMA_STAMP="$LLAMA_DIR/build/jaxserve-cmake-args"
if [[ ! -x "$LLAMA_BIN/llama-server" || ! -x "$LLAMA_BIN/llama-quantize" \
      || "$(cat "$LLAMA_STAMP" 2>/dev/null)" != "$LLAMA_CPU_FLAGS" ]]; then
  echo "== building llama.cpp from the llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist into $LLAMA_DIR"
  sdist="$CACHE/sdist/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
  if [[ ! -f "$sdist" ]]; then
    "$PY" -m pip download --quiet --no-deps --no-binary :all: \
      "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$CACHE/sdist"
  fi
  rm -rf "$LLAMA_DIR" && mkdir -p "$LLAMA_DIR"
  tar -xzf "$sdist" -C "$LLAMA_DIR" --strip-components=1
  cmake -S "$LLAMA_DIR/vendor/llama.cpp" -B "$LLAMA_DIR/build" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON -DCMAKE_C_FLAGS="$LLAMA_CPU_FLAGS" -DCMAKE_CXX_FLAGS="$LLAMA_CPU_FLAGS" \
    >"$LLAMA_DIR/cmake.log"
  cmake --build "$LLAMA_DIR/build" -j "$CORES" --target llama-server llama-quantize >"$LLAMA_DIR/build.log"
  printf '%s' "$LLAMA_CPU_FLAGS" >"$LLAMA_STAMP"
fi

# ---------------------------------------------------------------- 2. model files
MODEL="$("$PY" -c 'from jaxserve.modeling.default_model import default_model_path; print(default_model_path())')"
for precision in F32 Q8_0; do
  target="$CACHE/models/$(basename "$MODEL" .gguf)-$precision.gguf"
  if [[ ! -f "$target" ]]; then
    mkdir -p "$CACHE/models"
    "$LLAMA_BIN/llama-quantize" --allow-requantize "$MODEL" "$target" "$precision" >"$OUT/quantize-$precision.log" 2>&1
  fi
done

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_healthy() {  # url pid log
  for _ in $(seq 1 3600); do
    if ! kill -0 "$2" 2>/dev/null; then echo "server exited; log:"; tail -30 "$3"; return 1; fi
    if curl -sf "$1/health" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "server not healthy; log:"; tail -30 "$3"; return 1
}

load() {  # url json-path level first-request
  # shellcheck disable=SC2086
  "$PY" -m jaxserve.bench.load_generator --base-url "$1" --concurrency "$3" "${requests_args[@]}" \
    --max-tokens "$MAX_TOKENS" --prompt-words "$PROMPT_WORDS" --ignore-eos --json "$2" --first-request "$4"
}

merge_levels() {  # out-json level-json...: one file with every level, as one load run writes it
  "$PY" -c '
import json, sys
runs = [json.load(open(path)) for path in sys.argv[2:]]
merged = dict(runs[0], levels=[level for run in runs for level in run["levels"]])
json.dump(merged, open(sys.argv[1], "w"), indent=1)
' "$@"
}

start_llama() {  # precision -> LLAMA_URL, LLAMA_PID
  local port
  port="$(free_port)"
  echo "== llama-server $1 (-t $CORES --parallel $max_level)"
  "$LLAMA_BIN/llama-server" -m "$CACHE/models/$(basename "$MODEL" .gguf)-$1.gguf" \
    --host 127.0.0.1 --port "$port" -t "$CORES" --parallel "$max_level" --cont-batching \
    -c $(( max_level * 1024 )) >"$OUT/llama-server-$1.log" 2>&1 &
  LLAMA_PID=$!
  LLAMA_URL="http://127.0.0.1:$port"
}

start_jaxserve() {  # name serve-args... -> JAX_URL, JAX_PID
  local name="$1" port
  shift
  port="$(free_port)"
  echo "== jaxserve $name ($*)"
  "$PY" -m jaxserve.cli serve --host 127.0.0.1 --port "$port" --max-num-seqs "$max_level" "$@" \
    >"$OUT/jaxserve-$name.log" 2>&1 &
  JAX_PID=$!
  JAX_URL="http://127.0.0.1:$port"
}

# ---------------------------------------------------------------- 3. the runs, level by level
# Both servers of a pair are up at once (the idle one sleeps), and each level runs on one and then at once
# on the other, first llama-server and then jaxserve, then the other way round at the next level: this
# machine's speed drifts by tens of percent within an hour, and a level's two runs minutes apart see
# about the same machine.
run_pair() {  # llama-precision jaxserve-name serve-args...
  local precision="$1" name="$2" level first=llama
  shift 2
  start_llama "$precision"
  start_jaxserve "$name" "$@"
  wait_healthy "$LLAMA_URL" "$LLAMA_PID" "$OUT/llama-server-$precision.log"
  wait_healthy "$JAX_URL" "$JAX_PID" "$OUT/jaxserve-$name.log"
  local llama_files=() jax_files=() first_request=0
  for level in $LEVELS; do
    for server in $first $([[ $first == llama ]] && echo jaxserve || echo llama); do
      if [[ $server == llama ]]; then
        echo "-- llama-server $precision, concurrency $level"
        load "$LLAMA_URL" "$OUT/llama-server-$precision-c$level.json" "$level" "$first_request"
        llama_files+=("$OUT/llama-server-$precision-c$level.json")
      else
        echo "-- jaxserve $name, concurrency $level"
        load "$JAX_URL" "$OUT/jaxserve-$name-c$level.json" "$level" "$first_request"
        jax_files+=("$OUT/jaxserve-$name-c$level.json")
      fi
    done
    first=$([[ $first == llama ]] && echo jaxserve || echo llama)
    # The next level's prompts follow this one's, as in one run of the load generator over every level:
    # no prompt is repeated, so no prefix cache holds one. The load generator records where it stopped.
    first_request=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["next_request"])' \
      "$OUT/llama-server-$precision-c$level.json")
  done
  kill "$LLAMA_PID"; kill -TERM "$JAX_PID"
  wait "$LLAMA_PID" "$JAX_PID" 2>/dev/null || true
  merge_levels "$OUT/llama-server-$precision.json" "${llama_files[@]}"
  merge_levels "$OUT/jaxserve-$name.json" "${jax_files[@]}"
}

run_pair F32 F32
if "$PY" -m jaxserve.cli serve --help | grep -q -- "--quantization"; then
  run_pair Q8_0 INT8 --quantization int8
fi

# ---------------------------------------------------------------- 4. ratio table
"$PY" "$ROOT/benchmarks/compare_tables.py" "$OUT"
echo "results and logs: $OUT"
