"""CPU settings section of `vs-keep bench`: every CPU setting on the same chunk, with speed and accuracy.

The reference (fp32 eager, default code path, default allocator), then each faster fp32 setting and the 16-bit
policies (timed where the CPU has native 16-bit GEMMs, accuracy by emulation elsewhere);
`pick_shipped` names the fastest setting that keeps accuracy.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from .common import progress, round_sig, timed
from .kernel_rule import kernel_rule_report, time_conv_shapes
from .parity import record

__all__ = [
    "EXACT_FP32", "bf16_summary", "cpu_bf16_runs", "cpu_runs", "default_vs_exact", "pick_shipped",
]


def cpu_runs(model: Any, frames: Any, golden: dict | None, repeats: int, precisions: list[str], quick: bool,
              workdir: Path, threads: int, sweep: bool = True) -> tuple[list[dict], list[dict], dict[str, Any]]:
    from ..runtime.cpu import optimize_cpu, restore_reference, tune_malloc
    from ..runtime.cpu_choice import NAMED
    from ..runtime.precision import FP32_STAGES, STAGE_MODULES, apply_precision, autocast_context, native_fp16_cpu
    from .emulation import EmulatedLowPrecision
    from .staged import StagedKeep

    size = int(model.face_size)
    runs: list[dict] = []
    lowp: list[dict] = []
    restore_reference(model)
    progress("cpu: reference (fp32 eager, default code path, default allocator)")
    ref = timed(StagedKeep(model), frames, repeats)
    runs.append(record("reference", "cpu", "fp32", ref, None, golden, size, {"note": "fp32 eager, default code path"}))
    malloc = tune_malloc(True)

    def add(name: str, res: dict[str, Any], note: str) -> None:
        runs.append(record(name, "cpu", "fp32", res, ref, golden, size, {"note": note, "malloc_tuned": malloc}))

    progress("cpu: reference + allocator tuning")
    add("reference+malloc", timed(StagedKeep(model), frames, repeats), "fp32 eager with runtime.cpu.tune_malloc")
    restore_reference(model)
    optimize_cpu(model, NAMED["reference"])
    progress("cpu: fp32-onednn (the reference rule: oneDNN for every convolution, fused SiLU, allocator tuning)")
    add("fp32-onednn", timed(StagedKeep(model), frames, repeats), "kernel rule 'reference' + tune_malloc")
    optimize_cpu(model, NAMED["winograd"])
    progress("cpu: fp32-winograd (the Winograd rule: Winograd >= 32², GEMM below, fused SiLU, allocator tuning)")
    add("fp32-winograd", timed(StagedKeep(model), frames, repeats), "kernel rule 'winograd' + tune_malloc")
    optimize_cpu(model, NAMED["gemm"])
    progress("cpu: fp32-gemm (the GEMM rule: oneDNN for 3x3 >= 32², GEMM below, fused SiLU, allocator tuning)")
    add("fp32-gemm", timed(StagedKeep(model), frames, repeats), "kernel rule 'gemm' + tune_malloc")
    optimize_cpu(model)
    progress("cpu: fp32-fast (shipped: the kernel rule of this CPU's ISA class, fused SiLU, allocator tuning)")
    add("fp32-fast", timed(StagedKeep(model), frames, repeats), "the engine's default: runtime.cpu.optimize_cpu() + tune_malloc")
    progress("cpu: timing every kernel per convolution shape (for the kernel rule report)")
    shapes = time_conv_shapes(model, frames)
    runs[-1]["kernel_rule"] = kernel_rule_report(shapes, runs)

    # fp16 (the CUDA policy's guard): real timings with native kernels, else accuracy by emulation (oneDNN's
    # reference kernels are ~100x slower)
    native = native_fp16_cpu()
    configs = {"shipped": FP32_STAGES["fp16"]} if "fp16" in precisions else {}
    if configs and not quick and sweep:  # the guard's evidence: all but the flow in fp16, then one stage at a time
        configs["all-but-flow"] = ("flow",)
        configs.update({f"only-{st}": tuple(x for x in STAGE_MODULES if x != st) for st in STAGE_MODULES if st != "flow"})
    for label, stages in configs.items():
        progress(f"cpu: fp16 ({label}: fp32 stages {', '.join(stages) or 'none'}; {'native' if native else 'emulated'})")
        restore_reference(model)
        apply_precision(model, "fp16", stages)
        runner = StagedKeep(model, autocast=lambda: autocast_context("cpu", "fp16"))
        with contextlib.nullcontext() if native else EmulatedLowPrecision():
            res = timed(runner, frames, repeats if native and label == "shipped" else 1)
        entry = record(f"fp16-{label}", "cpu", "fp16", res, ref, golden, size, {"fp32_stages": list(stages), "native": native})
        if not native:
            for key in ("per_frame_s", "fps", "speedup_vs_reference", "stages_s_per_frame"):
                entry.pop(key, None)
            entry["note"] = "accuracy only: emulated (no native fp16 GEMMs on this CPU, timings would be meaningless)"
            lowp.append(entry)
        else:
            runs.append(entry)
    apply_precision(model, "fp32")
    optimize_cpu(model)
    if "bf16" in precisions:
        runs.extend(cpu_bf16_runs(model, frames, golden, ref, repeats, workdir, threads))

    shipped = pick_shipped(runs, golden is not None)
    shipped["bf16_mode"] = bf16_summary(runs)
    return runs, lowp, shipped


def cpu_bf16_runs(model: Any, frames: Any, golden: dict | None, ref: dict[str, Any], repeats: int, workdir: Path,
                  threads: int) -> list[dict]:
    """The opt-in `cpu_precision="bf16"` (shipped fp32 path + OpenVINO bf16 decoder) next to the other ways to run
    the same stages: OpenVINO fp32 (the plumbing)."""
    from ..errors import InputError
    from ..runtime.cpu import optimize_cpu
    from ..runtime.onnx_export import export_decoder_onnx
    from ..runtime.openvino import BF16_STAGES, OpenVinoDecoder, check_bf16_cpu
    from .staged import StagedKeep

    size = int(model.face_size)
    try:
        check_bf16_cpu()
    except InputError as exc:
        return [{"setting": "bf16-openvino-decoder", "device": "cpu", "precision": "bf16", "skipped": str(exc)}]
    optimize_cpu(model)
    path, spec = export_decoder_onnx(model, workdir / "decoder.onnx")
    rows = []
    for precision, name in (("fp32", "fp32-fast+openvino-decoder"), ("bf16", "bf16-openvino-decoder")):
        progress(f"cpu: {name}")
        dec = OpenVinoDecoder(path, spec, precision=precision, threads=threads)
        res = timed(StagedKeep(model, decoder=dec), frames, repeats)
        note = ("the opt-in cpu_precision='bf16': fp32 shipped path, codebook decoder in OpenVINO bf16 (not bit-exact)"
                if precision == "bf16" else "codebook decoder in OpenVINO fp32")
        rows.append(record(name, "cpu", precision, res, ref, golden, size, {"note": note, "bf16_stages": list(BF16_STAGES) if precision == "bf16" else []}))
    return rows


def bf16_summary(runs: list[dict]) -> dict[str, Any]:
    """Speed-up of the opt-in CPU bf16 mode over the shipped fp32 default, and its accuracy, same run."""
    by = {r["setting"]: r for r in runs if "per_frame_s" in r}
    mode, fp32 = by.get("bf16-openvino-decoder"), by.get("fp32-fast")
    if mode is None or fp32 is None:
        skipped = next((r.get("skipped") for r in runs if r["setting"] == "bf16-openvino-decoder"), None)
        return {"available": False, "reason": skipped or "not measured (--precisions without bf16)"}
    out: dict[str, Any] = {
        "available": True, "setting": "bf16-openvino-decoder", "engine_option": "cpu_precision='bf16' / --cpu-bf16",
        "speedup_vs_fp32_default": round_sig(fp32["per_frame_s"] / mode["per_frame_s"], 3),
        "vs_reference": mode.get("vs_reference"), "vs_fixture": mode.get("vs_fixture"),
        "bit_exact": False,
    }
    return out


#: fp32 settings that run the same torch graph (only kernels and the allocator differ): the shipped default must
#: be at least as fast as the fastest of them on every CPU (issue 18)
EXACT_FP32 = ("reference", "reference+malloc", "fp32-onednn", "fp32-winograd", "fp32-gemm")


def default_vs_exact(runs: list[dict]) -> dict[str, Any]:
    """The shipped fp32 default against the fastest exact fp32 setting of the same run."""
    by = {r["setting"]: r for r in runs if "per_frame_s" in r}
    exact = [by[n] for n in EXACT_FP32 if n in by]
    if "fp32-fast" not in by or not exact:
        return {"error": "settings missing"}
    best = min(exact, key=lambda r: r["per_frame_s"])
    shipped = by["fp32-fast"]
    return {
        "best_exact_setting": best["setting"], "best_exact_s": best["per_frame_s"], "shipped_s": shipped["per_frame_s"],
        "shipped_speedup_vs_best_exact": round_sig(best["per_frame_s"] / shipped["per_frame_s"], 3),
        "shipped_not_slower": bool(shipped["per_frame_s"] <= best["per_frame_s"]),
        "note": "one timed pass per setting on a shared machine: differences of a few % are noise (see load_avg)",
    }


def pick_shipped(runs: list[dict], have_fixture: bool) -> dict[str, Any]:
    """Fastest CPU setting a user can select (`vs_keep.engine.EngineOptions`) whose accuracy holds: index agreement
    >= 99 % on the fixture (or vs the reference)."""
    ok = []
    for r in runs:
        if "fps" not in r or r["setting"] == "reference":
            continue
        acc = r.get("vs_fixture") if have_fixture else r.get("vs_reference")
        if acc and acc["index_agreement_min"] >= 0.99:
            ok.append(r)
    if not ok:
        return {"setting": None, "reason": "no setting kept index agreement >= 99 %",
                "fp32_default_vs_best_exact": default_vs_exact(runs)}
    best = max(ok, key=lambda r: r["fps"])
    acc = best.get("vs_fixture") if have_fixture else best.get("vs_reference")
    fp32 = [r for r in ok if r["setting"] == "fp32-fast"]
    return {
        "setting": best["setting"],
        "engine_default": "fp32-fast",
        "speedup_vs_reference": best.get("speedup_vs_reference"),
        "fps": best["fps"],
        "index_agreement_min": acc["index_agreement_min"],
        "output_rel_err_max": acc["output_rel_err_max"],
        "parity_ok": acc.get("parity_ok"),
        "fp32_fast_speedup": fp32[0].get("speedup_vs_reference") if fp32 else None,
        "fp32_fast_parity_ok": (fp32[0].get("vs_fixture") or {}).get("parity_ok") if fp32 else None,
        "target_2x_met": bool((best.get("speedup_vs_reference") or 0) >= 2.0),
        "fp32_default_vs_best_exact": default_vs_exact(runs),
    }

