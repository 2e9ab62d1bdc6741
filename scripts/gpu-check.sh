#!/usr/bin/env bash
# One prepared command for a GPU machine lent briefly (~15 minutes in all): everything that needs a GPU, in under
# 8 minutes, results as one JSON file.
#
#   scripts/gpu-check.sh [OUT_DIR]        (default: ./gpu-check-out; the summary is OUT_DIR/gpu-check.json)
#
# Steps, each with its own time limit so one slow step cannot eat the others' time:
#   1. Python: the repository's .venv (created with scripts/setup.sh when missing); CuPy for torch's CUDA major
#      version installed when missing and reachable (without it the torch twins run and the JSON says so).
#   2. tests (<= 180 s): NVRTC compile of every kernel for sm_75..sm_90, the host harness, and every CUDA test
#      (`-m cuda`: CuPy kernels vs torch twins, self-check on this GPU, the GPU frame pipeline, TensorRT decoder).
#   3. engine path (<= 150 s): scripts/gpu_engine_fps.py, full-size KEEP, fp32 and fp16: fps on 512 crops and on
#      1080p frames with one face through build_engine + restore_stream (what `vs-keep restore` and the filter run).
#   4. `vs-keep bench --devices cuda` on the full model (<= 120 s): per-stage CUDA rows.
# Never stops early: a failed step is recorded in the JSON and the next one runs.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="$(mkdir -p "${1:-$root/gpu-check-out}" && cd "${1:-$root/gpu-check-out}" && pwd)"
say() { echo "gpu-check: $*" >&2; }
start=$(date +%s)

# -- 1. Python environment -------------------------------------------------------------------------------------
py="$root/.venv/bin/python"
if [ ! -x "$py" ]; then
  say "no .venv: creating it with scripts/setup.sh (test extras)"
  VS_KEEP_EXTRAS=test timeout 600 "$root/scripts/setup.sh" >&2 || say "setup.sh failed"
fi
[ -x "$py" ] || py="$(command -v python3)"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
cuda_major="$("$py" -c 'import torch; print((torch.version.cuda or "").split(".")[0])' 2>/dev/null)"
if ! "$py" -c 'import cupy' >/dev/null 2>&1 && [ -n "$cuda_major" ]; then
  say "installing cupy-cuda${cuda_major}x (for torch's CUDA ${cuda_major})"
  timeout 180 "$py" -m pip install -q --retries 0 --timeout 10 "cupy-cuda${cuda_major}x" >&2 || say "cupy-cuda${cuda_major}x not installed: the torch twins will run"
fi
if ! "$py" -c 'import cuda.bindings.nvrtc' >/dev/null 2>&1; then
  timeout 120 "$py" -m pip install -q --retries 0 --timeout 10 "cuda-bindings>=${cuda_major:-13},<$(( ${cuda_major:-13} + 1 ))" >&2 || say "cuda-bindings not installed: the NVRTC test will skip"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader > "$out/nvidia-smi.txt" 2>&1 || true

# -- 2. tests --------------------------------------------------------------------------------------------------
say "tests (NVRTC, host harness, -m cuda)"
t0=$(date +%s)
timeout 180 "$py" -m pytest -q -p no:cacheprovider --junitxml="$out/tests.xml" \
  tests/test_cuda_sources.py tests/test_kernel_harness.py \
  tests/test_kernels.py tests/test_gpu_path.py tests/test_onnx.py -m "cuda or not slow" -k "cuda or cupy or nvrtc or kernel or tensorrt or source" \
  > "$out/tests.log" 2>&1
echo "$? $(( $(date +%s) - t0 ))" > "$out/tests.rc"

# -- 3. engine path fps ----------------------------------------------------------------------------------------
say "engine path fps (full KEEP, fp32 and fp16, 512 crops and 1080p one face)"
t0=$(date +%s)
timeout 150 "$py" "$root/scripts/gpu_engine_fps.py" --device cuda --model full --precisions fp32,fp16 --chunk 10 --chunks 2 \
  --out "$out/engine.json" > /dev/null 2> "$out/engine.log"
echo "$? $(( $(date +%s) - t0 ))" > "$out/engine.rc"

# -- 4. bench --------------------------------------------------------------------------------------------------
say "vs-keep bench --devices cuda (full model)"
t0=$(date +%s)
timeout 120 "$py" -c 'import sys; from vs_keep.cli import main; sys.exit(main(sys.argv[1:]))' bench --devices cuda --model full \
  --precisions fp32,fp16 --repeats 1 --no-faces --no-memory --no-sweep --out "$out/bench.json" \
  > /dev/null 2> "$out/bench.log"
echo "$? $(( $(date +%s) - t0 ))" > "$out/bench.rc"

# -- summary ---------------------------------------------------------------------------------------------------
"$py" - "$out" "$start" <<'EOF'
import json, sys, time
import xml.etree.ElementTree as ET
from pathlib import Path

out, start = Path(sys.argv[1]), float(sys.argv[2])

def rc(name):
    try:
        code, secs = (out / f"{name}.rc").read_text().split()
        return {"exit": int(code), "seconds": int(secs), "timed_out": int(code) in (124, 137)}
    except Exception as exc:  # noqa: BLE001
        return {"error": repr(exc)}

def load(name):
    try:
        return json.loads((out / name).read_text())
    except Exception as exc:  # noqa: BLE001
        log = out / name.replace(".json", ".log")
        tail = log.read_text()[-2000:] if log.exists() else ""
        return {"error": f"{exc.__class__.__name__}: {exc}", "log_tail": tail}

tests = {"step": rc("tests")}
try:
    root = ET.parse(out / "tests.xml").getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    tests.update({k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")})
    tests["failed"] = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
                       if c.find("failure") is not None or c.find("error") is not None]
    tests["skipped_reasons"] = sorted({(c.find("skipped").get("message") or "")[:160] for c in suite.iter("testcase")
                                       if c.find("skipped") is not None})
except Exception as exc:  # noqa: BLE001
    tests["error"] = f"no junit report: {exc}"
    tests["log_tail"] = (out / "tests.log").read_text()[-3000:] if (out / "tests.log").exists() else ""
summary = {
    "gpu": (out / "nvidia-smi.txt").read_text().strip() if (out / "nvidia-smi.txt").exists() else None,
    "tests": tests,
    "engine_path": {"step": rc("engine"), **load("engine.json")},
    "bench": {"step": rc("bench"), "cuda": load("bench.json").get("cuda") if "error" not in load("bench.json") else load("bench.json")},
    "total_seconds": round(time.time() - start),
}
text = json.dumps(summary, indent=1)
(out / "gpu-check.json").write_text(text + "\n")
print(text)
EOF
