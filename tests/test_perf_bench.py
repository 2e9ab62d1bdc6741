"""`scripts/bench.py --quick` (= `vs-keep bench --quick`): runs end to end and prints JSON of the expected schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vs_keep.bench.cpu import EXACT_FP32, bf16_summary

ROOT = Path(__file__).resolve().parents[1]
STAGES = {"flow", "encoders", "gains", "warp", "transformer", "decoder"}


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    env = dict(os.environ, VS_KEEP_HOME=str(tmp_path_factory.mktemp("home")))  # the CPU kernel table goes there
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--memory-frames", "20,60"],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.lstrip().startswith("{")  # stdout is JSON only; progress went to stderr
    assert "bench: cpu: reference" in proc.stderr
    return json.loads(proc.stdout)


def test_environment_and_model(report: dict) -> None:
    assert report["schema"] == "vs-keep-bench/1"
    env = report["env"]
    for key in ("torch", "cpu", "cpu_capability", "threads", "load_avg_start", "load_avg_end", "native_fp16_cpu", "quick"):
        assert key in env, key
    assert env["quick"] is True
    kind = env["cpu_kind"]  # the CPU kind the kernel rule is keyed on (through its ISA class)
    assert kind["model"] == env["cpu"] and isinstance(kind["flags"], list) and kind["capability"] == env["cpu_capability"]
    assert report["model"]["face_size"] == 32 and report["model"]["parameters"] > 1_000_000  # the tiny synthetic KEEP


def test_runs_have_stages_fps_and_speedups(report: dict) -> None:
    runs = {r["setting"]: r for r in report["runs"]}
    assert {"reference", "reference+malloc", "fp32-onednn", "fp32-winograd", "fp32-gemm", "fp32-fast"} <= set(runs)
    rule = runs["fp32-fast"]["kernel_rule"]  # the shipped rule of this CPU's class against the other named rules
    assert rule["isa_class"] == report["env"]["numerics"]["isa_class"] and rule["shipped_rule"] in rule["per_frame_s_by_rule"]
    assert set(rule["conv_ms_per_chunk_by_rule"]) == {"reference", "winograd", "gemm"} and len(rule["shapes"]) > 5
    assert rule["preferred_here"] in rule["per_frame_s_by_rule"] and isinstance(rule.get("warning", ""), str)
    assert report["env"]["numerics"]["torch_threads"] == report["env"]["threads"]
    ref = runs["reference"]
    assert set(ref["stages_s_per_frame"]) == STAGES and ref["precision"] == "fp32" and ref["device"] == "cpu"
    for r in report["runs"]:
        if "error" in r or "skipped" in r:  # e.g. the bf16 rows on a CPU without bf16: the reason instead of timings
            assert isinstance(r.get("error", r.get("skipped")), str) and "fps" not in r
            continue
        assert _number(r["fps"]) and r["fps"] > 0 and _number(r["per_frame_s"])
        assert all(_number(v) and v >= 0 for v in r["stages_s_per_frame"].values())
        if r["setting"] != "reference":
            assert _number(r["speedup_vs_reference"]) and r["speedup_vs_reference"] > 0
            acc = r["vs_reference"]
            assert len(acc["index_agreement"]) == report["model"]["chunk_frames"]
            assert 0.0 <= acc["index_agreement_min"] <= 1.0
    assert runs["reference+malloc"]["vs_reference"]["index_agreement_min"] == 1.0  # allocator settings change no math


def test_precision_and_shipped(report: dict) -> None:
    names = {e["setting"] for e in report["precision_accuracy"]} | {r["setting"] for r in report["runs"]}
    assert "fp16-shipped" in names  # the guard configuration of the fp16 policy
    assert all("openvino" in n for n in names if n.startswith("bf16"))  # bf16: OpenVINO's decoder only, no torch bf16
    for e in report["precision_accuracy"]:
        assert e["native"] is False and "fps" not in e and 0.0 <= e["vs_reference"]["index_agreement_min"] <= 1.0
    shipped = report["shipped_cpu"]
    assert "setting" in shipped and "target_2x_met" in shipped
    bf16 = shipped["bf16_mode"]  # the opt-in CPU bf16: measured where the CPU has it, else why not
    if bf16["available"]:
        assert _number(bf16["speedup_vs_fp32_default"]) and bf16["bit_exact"] is False
        assert {"fp32-fast+openvino-decoder", "bf16-openvino-decoder"} <= {r["setting"] for r in report["runs"]}
    else:
        assert "cpu_precision" in bf16["reason"] or "openvino" in bf16["reason"]
    cmp = shipped["fp32_default_vs_best_exact"]
    assert cmp["best_exact_setting"] in EXACT_FP32
    assert _number(cmp["shipped_speedup_vs_best_exact"]) and isinstance(cmp["shipped_not_slower"], bool)


def test_kernels_and_memory(report: dict) -> None:
    assert _number(report["kernels_cpu"]["crop_512_from_1080p_ms"])
    mem = report["memory"]
    assert mem["frames_20"]["frames"] == 20 and mem["frames_60"]["frames"] == 60
    assert _number(mem["peak_rss_ratio_long_vs_short"]) and isinstance(mem["flat"], bool)
    assert report["faces"] == {"skipped": "--quick"}
    assert "available" in report["cuda"] or "runs" in report["cuda"]


def test_cli_dispatch_has_bench() -> None:
    proc = subprocess.run([sys.executable, "-m", "vs_keep", "bench", "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and "--quick" in proc.stdout


def test_gpu_section_logic_on_cpu() -> None:
    """The CUDA section only runs where a GPU is lent, so its bookkeeping is exercised here on the CPU: every
    setting recorded with speed and accuracy vs the reference, results moved to CPU for the metrics, the TensorRT
    rows saying why they are missing, and the 1080p one-face estimate including detection."""
    from vs_keep.bench.cuda import cuda_section

    section = cuda_section("tiny", 1, ["fp32"], None, 2, device="cpu")
    rows = {r["setting"]: r for r in section["runs"]}
    assert set(rows) == {"reference", "fp32+torch-kernels", "fp32+cupy", "fp32+cupy+trt-decoder"}
    for name in ("fp32+torch-kernels", "fp32+cupy"):
        assert _number(rows[name]["fps"]) and rows[name]["vs_reference"]["index_agreement_min"] == 1.0
    assert "error" in rows["fp32+cupy+trt-decoder"]
    one = section["1080p"]
    assert one["includes_detection"] and _number(one["fps_1080p_1_face"]) and one["fps_1080p_1_face"] < one["fps_512_crops"]
    assert section["tf32_convolutions_shipped"] is False


def test_bf16_rows_skipped_on_a_cpu_without_bf16() -> None:
    """The other side of the bf16 branch, on any machine: what a CPU without AVX512-BF16/AMX reports."""
    from vs_keep.errors import InputError
    from vs_keep.runtime.openvino import check_bf16_cpu

    avx2 = {"model": "AMD EPYC 7B12", "flags": ["avx2", "fma"]}
    with pytest.raises(InputError, match="cpu_precision") as exc:
        check_bf16_cpu(avx2)
    runs = [{"setting": "fp32-fast", "per_frame_s": 1.0, "fps": 1.0},
            {"setting": "bf16-openvino-decoder", "device": "cpu", "precision": "bf16", "skipped": str(exc.value)}]
    summary = bf16_summary(runs)
    assert summary["available"] is False and "cpu_precision" in summary["reason"]
