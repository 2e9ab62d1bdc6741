"""`vs-keep bench` (= scripts/bench.py): per-stage times, fps, accuracy and memory of KEEP here, as JSON on stdout.

In one run: the reference path (fp32 eager, the default code path = official op order) and every faster setting,
each with its speed-up over the reference and its accuracy (codebook-index agreement and output error against
the golden fixture, when the full model is benchmarked and the fixture is found, and against the reference run);
bf16/fp16 accuracy (emulated where the CPU has no native 16-bit GEMMs); the CPU options tried; face-stage timings
at 720p/1080p with 1 and 3 faces; peak RSS for a short and a long stream (fresh processes). Progress goes to
stderr. Timings on a shared machine are noisy: the load average is recorded next to them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

SCHEMA = "vs-keep-bench/1"
STAGE_KEYS = ("flow", "encoders", "gains", "warp", "transformer", "decoder")

log = logging.getLogger("vs_keep.bench")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="CI smoke run: tiny model, one repeat, short memory runs, no faces")
    parser.add_argument("--model", choices=("full", "small", "tiny"), help="synthetic KEEP size (default: full; --quick: tiny)")
    parser.add_argument("--devices", default="auto", help="comma list of cpu,cuda (default: cpu, plus cuda when available)")
    parser.add_argument("--precisions", default="fp32,bf16,fp16", help="comma list of fp32,bf16,fp16")
    parser.add_argument("--repeats", type=int, help="timed runs per setting, the fastest is kept (default 2; --quick 1)")
    parser.add_argument("--chunk", type=int, help="frames per timed chunk (default: the fixture's 3 for full, 4 otherwise)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default 2; --quick 1)")
    parser.add_argument("--fixture", help="golden_keep_synth.pt (default: $VS_KEEP_SHARED/fixtures or ../shared/fixtures)")
    parser.add_argument("--frames", type=int, help="memory-only mode: stream N small frames with the tiny model, print peak RSS")
    parser.add_argument("--memory-frames", default=None, help="short,long stream lengths for the RSS comparison (default 100,2000)")
    parser.add_argument("--no-faces", action="store_true", help="skip the 720p/1080p face-stage timings")
    parser.add_argument("--no-memory", action="store_true", help="skip the RSS comparison")
    parser.add_argument("--no-options", action="store_true", help="skip the CPU option measurements")
    parser.add_argument("--no-sweep", action="store_true", help="skip the one-stage-at-a-time 16-bit accuracy sweep")
    parser.add_argument("--compile", action="store_true", help="also try torch.compile on the encoder (minutes of compiling)")
    parser.add_argument("--out", help="also write the JSON to this file")


# ---- helpers -----------------------------------------------------------------------------------------------------


def _progress(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def _load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _round(x: float | None, n: int = 4) -> float | None:
    return None if x is None else float(f"{x:.{n}g}")


def _safe(section: str, fn: Callable[[], Any]) -> Any:
    """Run one bench section; an exception becomes {"error": ...} so one broken part does not lose the others."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reported in the JSON, the run continues
        log.debug("bench section %s failed", section, exc_info=True)
        _progress(f"{section}: {exc.__class__.__name__}: {exc}")
        return {"error": f"{exc.__class__.__name__}: {exc}"}


def _env(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    import torch

    from ..runtime.cpu import nnpack_available
    from ..runtime.precision import native_lowp_supported

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16_cpu": native_lowp_supported("cpu", "bf16"),
        "native_fp16_cpu": native_lowp_supported("cpu", "fp16"),
        "nnpack": nnpack_available(),
        "threads": threads,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_avg_start": _load(),
        "quick": bool(args.quick),
        "note": "wall-clock times, fastest of the repeats; other processes on a shared machine inflate them (see load_avg)",
    }
    for mod in ("onnxruntime", "onnxscript", "tensorrt", "cupy"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional packages
            env[mod] = None
    return env


def _chunk_frames(model: Any, golden: dict | None, t: int) -> Any:
    """The fixture's frames (full model), else a smooth moving pattern of t frames in [-1, 1]."""
    import torch

    if golden is not None and int(model.face_size) == int(golden["input"].shape[-1]):
        return golden["input"][0][:t]
    s = int(model.face_size)
    g = torch.Generator().manual_seed(1234)
    base = torch.rand(1, 3, s // 8 + 4, s // 8 + 4, generator=g) * 2 - 1
    big = torch.nn.functional.interpolate(base, size=(s + 32, s + 32), mode="bicubic", align_corners=False).clamp(-1, 1)
    return torch.cat([big[..., 2 * k : 2 * k + s, 3 * k : 3 * k + s] for k in range(t)])


def _timed(runner: Any, frames: Any, repeats: int) -> dict[str, Any]:
    """Run the chunk `repeats` times; keep the fastest total, the fastest time of each stage and the first outputs."""
    import torch

    best_total, best_stage = float("inf"), {k: float("inf") for k in STAGE_KEYS}
    out = traces = chunk = None
    for r in range(max(1, repeats)):
        runner.reset_times()
        trace_list: list[dict] = []
        start = time.perf_counter()
        result = runner(frames, trace_list)
        total = time.perf_counter() - start
        best_total = min(best_total, total)
        for k in STAGE_KEYS:
            best_stage[k] = min(best_stage[k], runner.times.get(k, 0.0))
        if r == 0:
            out, traces, chunk = result, trace_list, runner.last_chunk
    t = frames.shape[0]
    idx = torch.cat([tr["idx"] for tr in traces])
    return {  # accuracy is computed on CPU against the fixture: bring the (GPU) results over once, after timing
        "per_frame_s": best_total / t,
        "stages_s_per_frame": {k: _round(v / t) for k, v in best_stage.items()},
        "out": _to_cpu(out),
        "idx": _to_cpu(idx),
        "traces": _to_cpu(traces),
        "chunk": _to_cpu(chunk),
    }


def _to_cpu(value: Any) -> Any:
    """Tensors (also inside lists, dicts and dataclasses such as `Chunk`) moved to the CPU."""
    import dataclasses

    import torch

    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: _to_cpu(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init})
    return value


def _fixture_metrics(res: dict[str, Any], golden: dict) -> dict[str, Any]:
    """Accuracy against the official outputs, and the engine's parity rule (tests/test_keep.py, end to end):
    z_obs < 1e-4, gains < 1e-5, flow max < 0.1 px and mean < 5e-3 px, logits < 2e-2, frame 0 output <= 1e-3;
    codes may flip only where the official top-1/top-2 margin is < 1e-4, agreement >= 99.8 %, and frames before
    the first flip within 2e-2 (a flip legitimately changes everything after it through the recurrence)."""
    from ..runtime.measure import accuracy

    t = res["out"].shape[0]
    out = res["out"].float()
    acc = accuracy(res["idx"], out, golden["top_idx"][:t, :, 0], golden["output"][0][:t]).as_dict()
    chunk = res["chunk"]
    z_err = float((chunk.z_obs.float() - golden["z_codes"][:t]).abs().max())
    g_err = float((chunk.gains.float() - golden["gains"][:t]).abs().max())
    flow_err = (chunk.flows.float() - golden["flows"][: t - 1]).abs() if chunk.flows is not None else None
    logit_err, flips_ok, first_flip = 0.0, True, t
    for i, tr in enumerate(res["traces"]):
        logits = golden["logits"][i][:, 0]
        logit_err = max(logit_err, float((tr["logits"].float()[0] - logits).abs().max()))
        top2 = logits.topk(2, dim=1).values
        same = tr["idx"][0] == golden["top_idx"][i][:, 0]
        flips_ok = flips_ok and bool(((top2[:, 0] - top2[:, 1])[~same] < 1e-4).all())
        if not bool(same.all()):
            first_flip = min(first_flip, i)
    errs = acc["output_rel_err"]
    metrics = {
        **acc,
        "z_obs_max_abs_err": _round(z_err),
        "gains_max_abs_err": _round(g_err),
        "flow_max_abs_err_px": _round(float(flow_err.max())) if flow_err is not None else None,
        "flow_mean_abs_err_px": _round(float(flow_err.mean())) if flow_err is not None else None,
        "logits_max_abs_err": _round(logit_err),
        "flips_only_at_knife_edge_codes": flips_ok,
    }
    metrics["parity_ok"] = bool(
        z_err < 1e-4 and g_err < 1e-5 and (flow_err is None or (float(flow_err.max()) < 0.1 and float(flow_err.mean()) < 5e-3))
        and logit_err < 2e-2 and errs[0] <= 1e-3 and flips_ok and sum(acc["index_agreement"]) / t >= 0.998
        and all(e <= 2e-2 for e in errs[:first_flip])
    )
    return metrics


def _record(name: str, device: str, precision: str, res: dict[str, Any], ref: dict[str, Any] | None, golden: dict | None,
            face_size: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    from ..runtime.measure import accuracy

    entry: dict[str, Any] = {
        "setting": name,
        "device": device,
        "precision": precision,
        "face_size": face_size,
        "per_frame_s": _round(res["per_frame_s"]),
        "fps": _round(1.0 / res["per_frame_s"]),
        "stages_s_per_frame": res["stages_s_per_frame"],
        "load_avg": _load(),
    }
    if ref is not None:
        entry["speedup_vs_reference"] = _round(ref["per_frame_s"] / res["per_frame_s"], 3)
        entry["vs_reference"] = accuracy(res["idx"], res["out"], ref["idx"], ref["out"].float()).as_dict()
    if golden is not None:
        entry["vs_fixture"] = _fixture_metrics(res, golden)
    entry.update(extra or {})
    return entry


# ---- CPU ---------------------------------------------------------------------------------------------------------


def _cpu_runs(model: Any, frames: Any, golden: dict | None, repeats: int, precisions: list[str], quick: bool,
              workdir: Path, threads: int, sweep: bool = True) -> tuple[list[dict], list[dict], dict[str, Any]]:
    import torch

    from ..runtime.cpu import CpuOptions, optimize_cpu, restore_reference, tune_malloc
    from ..runtime.precision import (
        FP32_STAGES, STAGE_MODULES, EmulatedLowPrecision, apply_precision, autocast_context, native_lowp_supported,
    )
    from ..runtime.staged import StagedKeep

    size = int(model.face_size)
    runs: list[dict] = []
    lowp: list[dict] = []
    restore_reference(model)
    _progress("cpu: reference (fp32 eager, default code path, default allocator)")
    ref = _timed(StagedKeep(model), frames, repeats)
    runs.append(_record("reference", "cpu", "fp32", ref, None, golden, size, {"note": "fp32 eager, default code path"}))
    malloc = tune_malloc(True)
    results = {"reference": ref}

    def add(name: str, res: dict[str, Any], note: str) -> None:
        results[name] = res
        runs.append(_record(name, "cpu", "fp32", res, ref, golden, size, {"note": note, "malloc_tuned": malloc}))

    _progress("cpu: reference + allocator tuning")
    add("reference+malloc", _timed(StagedKeep(model), frames, repeats), "fp32 eager with runtime.cpu.tune_malloc")
    optimize_cpu(model)
    _progress("cpu: fp32-fast (Winograd/GEMM convolutions, fused SiLU, allocator tuning)")
    add("fp32-fast", _timed(StagedKeep(model), frames, repeats), "runtime.cpu.optimize_cpu defaults + tune_malloc")
    if not quick:
        optimize_cpu(model, CpuOptions(onnx_flow=True))
        _progress("cpu: fp32-fast+ort-flow (GMFlow in onnxruntime; exporting and checking the graph first)")
        warm = _safe("onnxruntime flow", lambda: _warm_flow(model, frames))
        if warm is True:
            add("fp32-fast+ort-flow", _timed(StagedKeep(model), frames, repeats),
                "fast convs + GMFlow through onnxruntime (torch.export-based ONNX)")
        else:
            runs.append({"setting": "fp32-fast+ort-flow", "device": "cpu", "precision": "fp32",
                         **(warm if isinstance(warm, dict) else {"error": "onnxruntime flow unavailable"})})
        optimize_cpu(model)
    dec_fn = _safe("ort-decoder export", lambda: _ort_decoder(model, workdir, threads))
    name = "fp32-fast+ort-decoder"
    if isinstance(dec_fn, dict):
        runs.append({"setting": name, "device": "cpu", "precision": "fp32", **dec_fn})
    else:
        _progress(f"cpu: {name}")
        add(name, _timed(StagedKeep(model, decoder=dec_fn), frames, repeats), "codebook decoder through onnxruntime")

    # 16-bit: real timings with native kernels, else accuracy by emulation (oneDNN's reference kernels are ~100x slower)
    for precision in [p for p in precisions if p != "fp32"]:
        native = native_lowp_supported("cpu", precision)
        configs = {"shipped": FP32_STAGES[precision]}
        if not quick:  # the guard's evidence: everything but the flow in 16 bits, then one stage at a time
            configs["all-but-flow"] = ("flow",)
            if sweep:
                configs.update({f"only-{st}": tuple(x for x in STAGE_MODULES if x != st) for st in STAGE_MODULES if st != "flow"})
        for label, stages in configs.items():
            _progress(f"cpu: {precision} ({label}: fp32 stages {', '.join(stages) or 'none'}; {'native' if native else 'emulated'})")
            restore_reference(model)
            apply_precision(model, precision, stages)
            runner = StagedKeep(model, autocast=lambda p=precision: autocast_context("cpu", p))
            ctx = contextlib.nullcontext() if native else EmulatedLowPrecision()
            with ctx:
                res = _timed(runner, frames, repeats if native else 1)
            entry = _record(f"{precision}-{label}", "cpu", precision, res, ref, golden, size,
                            {"fp32_stages": list(stages), "native": native})
            if not native:
                for key in ("per_frame_s", "fps", "speedup_vs_reference", "stages_s_per_frame"):
                    entry.pop(key, None)
                entry["note"] = "accuracy only: emulated (no native 16-bit GEMMs on this CPU, timings would be meaningless)"
                lowp.append(entry)
            else:
                runs.append(entry)
        apply_precision(model, "fp32")
    optimize_cpu(model)

    shipped = _pick_shipped(runs, golden is not None)
    return runs, lowp, shipped


def _pick_shipped(runs: list[dict], have_fixture: bool) -> dict[str, Any]:
    """Fastest CPU setting a user can select (`vs_keep.engine.EngineOptions`) whose accuracy holds: index agreement
    >= 99 % on the fixture (or vs the reference). The onnxruntime flow is a measurement only (not an engine option)."""
    ok = []
    for r in runs:
        if "fps" not in r or r["setting"] == "reference" or "ort-flow" in r["setting"]:
            continue
        acc = r.get("vs_fixture") if have_fixture else r.get("vs_reference")
        if acc and acc["index_agreement_min"] >= 0.99:
            ok.append(r)
    if not ok:
        return {"setting": None, "reason": "no setting kept index agreement >= 99 %"}
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
    }


def _warm_flow(model: Any, frames: Any) -> bool:
    """Trigger the (cached) GMFlow export outside the timed runs; True when onnxruntime serves the flow."""
    import torch

    from ..runtime.cpu import OrtFlowNet

    if type(model.flownet) is not OrtFlowNet:
        return False
    with torch.inference_mode():
        model.compute_flows(frames[:2])
    return any(v is not None for v in model.flownet._ort_flows.values())


def _ort_decoder(model: Any, workdir: Path, threads: int) -> Any:
    from ..runtime.onnx_export import OrtDecoder, export_decoder_onnx

    path, spec = export_decoder_onnx(model, workdir / "decoder.onnx")
    return OrtDecoder(path, spec, threads=threads)


def _bench_fn(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _cpu_options(model: Any, repeats: int, threads: int, compile_: bool, workdir: Path) -> dict[str, Any]:
    """Single-stage measurements of the CPU options (encoder on one face; decoder on one frame)."""
    import torch

    from ..runtime.cpu import optimize_cpu, restore_reference
    from ..runtime.decoder import CodebookDecoder, decoder_spec

    s = int(model.face_size)
    x = torch.rand(1, 3, s, s, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out: dict[str, Any] = {"encoder_s": {}, "decoder_s": {}, "load_avg": _load()}
    enc = model.encoder
    with torch.inference_mode():
        restore_reference(model)
        ref, _ = enc(x)
        out["encoder_s"]["eager_nchw"] = _round(_bench_fn(lambda: enc(x), repeats))
        enc.to(memory_format=torch.channels_last)
        xcl = x.contiguous(memory_format=torch.channels_last)
        out["encoder_s"]["eager_channels_last"] = _round(_bench_fn(lambda: enc(xcl), repeats))
        enc.to(memory_format=torch.contiguous_format)
        optimize_cpu(model)
        fast, _ = enc(x)
        out["encoder_s"]["fast"] = _round(_bench_fn(lambda: enc(x), repeats))
        out["encoder_fast_rel_err"] = _round(float((fast - ref).norm() / ref.norm()))
        for n in sorted({1, threads}):
            torch.set_num_threads(n)
            out["encoder_s"][f"fast_threads_{n}"] = _round(_bench_fn(lambda: enc(x), repeats))
        torch.set_num_threads(threads)
        spec = decoder_spec(model)
        args = spec.example_inputs(n_codes=int(model.quantize.embedding.weight.shape[0]))
        dec = CodebookDecoder(model)
        restore_reference(model)
        out["decoder_s"]["eager"] = _round(_bench_fn(lambda: dec(*args), repeats))
        optimize_cpu(model)
        out["decoder_s"]["fast"] = _round(_bench_fn(lambda: dec(*args), repeats))

    def ort_time() -> float | None:
        path = workdir / "decoder.onnx"
        if not path.exists():
            return None
        from ..runtime.onnx_export import OrtDecoder

        d = OrtDecoder(path, spec, threads=threads)
        feeds = {n: a.numpy() for n, a in zip(spec.input_names, args)}
        return _round(_bench_fn(lambda: d.session.run(None, feeds), repeats))

    out["decoder_s"]["onnxruntime"] = _safe("ort decoder timing", ort_time)
    if compile_:
        def compiled() -> dict[str, Any]:
            restore_reference(model)
            start = time.perf_counter()
            c = torch.compile(enc)
            with torch.inference_mode():
                c(x)
                first = time.perf_counter() - start
                t = _bench_fn(lambda: c(x), repeats)
            optimize_cpu(model)
            return {"compile_s": _round(first), "run_s": _round(t)}

        out["encoder_s"]["torch_compile"] = _safe("torch.compile", compiled)
    else:
        out["encoder_s"]["torch_compile"] = {"skipped": "pass --compile (inductor needs minutes to compile here)"}
    return out


# ---- faces, CUDA, memory -----------------------------------------------------------------------------------------


def _faces(per_face_s: float | None, face_size: int, repeats: int, device: str = "cpu") -> dict[str, Any]:
    """720p/1080p face stages from vs_keep.bench.face (two faces per frame), scaled to 1 and 3 faces, plus the
    restoration time per face of the shipped setting -> end-to-end fps estimates."""
    try:
        from ..bench.face import face_stage_timings
    except ImportError as exc:
        return {"skipped": f"face stage benchmark unavailable ({exc})"}
    out: dict[str, Any] = {"method": "face stages measured with 2 faces per frame, scaled per face; restore = shipped setting"}
    for h, w in ((720, 1280), (1080, 1920)):
        st = face_stage_timings(h, w, repeats=repeats, face_size=face_size, device=device)
        n = max(int(st.get("faces", 0)), 1)
        fixed_ms = float(st.get("detect_ms_min_face_20", 0.0)) + float(st.get("track_smooth_ms", 0.0))
        per_face_ms = (float(st.get("align_ms", 0.0)) + float(st.get("paste_ms", 0.0))) / n
        entry: dict[str, Any] = {"stages_ms": st}
        for faces in (1, 3):
            total_ms = fixed_ms + faces * per_face_ms + (faces * per_face_s * 1000 if per_face_s else 0.0)
            entry[f"fps_{faces}_face{'s' if faces > 1 else ''}"] = _round(1000.0 / total_ms) if total_ms > 0 else None
        out[f"{h}p"] = entry
    return out


def _kernels_cpu(repeats: int) -> dict[str, Any]:
    """Torch-kernel crop and paste of one 512 face from a 1080p uint8 frame (the GPU path's reference kernels)."""
    import numpy as np
    import torch

    from ..face.align import BORDER_RGB, alignment_matrix
    from ..kernels import affine_crop, paste_face

    frame = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8))
    lm = np.array([[900, 500], [1000, 502], [950, 560], [910, 620], [990, 622]], np.float32)
    m = alignment_matrix(lm, 512)
    face = torch.rand(3, 512, 512)
    crop_s = _bench_fn(lambda: affine_crop(frame, m, 512, border=BORDER_RGB, scale=2 / 255, offset=-1.0), repeats)
    paste_s = _bench_fn(lambda: paste_face(frame.clone(), face, m, unit=255.0), repeats)
    return {"crop_512_from_1080p_ms": _round(crop_s * 1000), "paste_512_into_1080p_ms": _round(paste_s * 1000)}


def _memory(lengths: tuple[int, int], threads: int) -> dict[str, Any]:
    """Peak RSS of fresh processes streaming `lengths` frames (tiny synthetic KEEP, 48x48 frames, chunks of 20)."""
    out: dict[str, Any] = {"method": "fresh process per length; streaming aligned-mode engine, tiny synthetic KEEP"}
    peaks = []
    for n in lengths:
        _progress(f"memory: streaming {n} frames in a fresh process")
        cmd = [sys.executable, "-m", "vs_keep", "bench", "--frames", str(n), "--threads", "1"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
        res = json.loads(proc.stdout)
        out[f"frames_{n}"] = res
        peaks.append(res["peak_rss_mb"])
    out["peak_rss_ratio_long_vs_short"] = _round(peaks[1] / peaks[0], 4)
    out["flat"] = bool(peaks[1] <= 1.1 * peaks[0])
    return out


def _cuda(args: argparse.Namespace | None, model_size: str, repeats: int, precisions: list[str], golden: dict | None, chunk: int,
          device: str = "cuda") -> dict[str, Any]:
    """CUDA settings, all on the golden chunk: the reference (fp32, torch kernels, torch's default TF32 convolutions,
    like an unmodified official run), then what the engine ships: fp32 with TF32 off and CuPy kernels, the 16-bit
    policies, and the TensorRT decoder (fp32 and fp16 engines). Plus 1080p with one face end to end: MTCNN on the
    GPU, crop, the fastest accurate setting, paste. `device` is "cuda" except in the test of this section's logic."""
    import torch

    from ..runtime.backends import TensorRTBackend
    from ..runtime.measure import build_synthetic_keep
    from ..runtime.precision import apply_precision, autocast_context
    from ..runtime.staged import StagedKeep

    model = build_synthetic_keep(model_size).to(device)
    frames = _chunk_frames(model, golden, chunk).to(device)
    gold = golden if golden is not None and int(model.face_size) == int(golden["input"].shape[-1]) else None
    size = int(model.face_size)
    runs: list[dict] = []
    env_before = os.environ.get("VS_KEEP_KERNELS")
    tf32_default = bool(torch.backends.cudnn.allow_tf32)

    def timed(kernels: str, precision: str, decoder: Any = None, tf32: bool = False) -> dict[str, Any]:
        os.environ["VS_KEEP_KERNELS"] = kernels
        torch.backends.cudnn.allow_tf32 = tf32
        apply_precision(model, precision)
        runner = StagedKeep(model, decoder=decoder, autocast=lambda: autocast_context(device, precision))
        return _timed(runner, frames, repeats)

    try:
        _progress("cuda: reference (fp32, torch kernels, TF32 convolutions at torch's default)")
        ref = timed("torch", "fp32", tf32=tf32_default)
        runs.append(_record("reference", device, "fp32", ref, None, gold, size, {"kernels": "torch", "tf32": tf32_default}))
        for precision in precisions:
            for kernels in ("torch", "auto"):
                name = f"{precision}+{'cupy' if kernels == 'auto' else 'torch-kernels'}"
                _progress(f"cuda: {name}")
                res = _safe(f"cuda {name}", lambda p=precision, k=kernels: timed(k, p))
                if "error" in res:
                    runs.append({"setting": name, "device": device, **res})
                    continue
                runs.append(_record(name, device, precision, res, ref, gold, size, {"kernels": kernels, "tf32": False}))
        for precision in [p for p in ("fp32", "fp16") if p in precisions]:
            name = f"{precision}+cupy+trt-decoder"
            _progress(f"cuda: {name} (builds the engine on first use)")
            dec = _safe(f"tensorrt {precision} decoder", lambda p=precision: TensorRTBackend(precision=p).decoder(model))
            if isinstance(dec, dict) or type(dec).__name__ != "TrtDecoder":
                runs.append({"setting": name, "device": device, **(dec if isinstance(dec, dict) else {"error": "TensorRT unavailable"})})
                continue
            res = timed("auto", precision, dec)
            runs.append(_record(name, device, precision, res, ref, gold, size, {"decoder": "TrtDecoder", "tf32": False}))
    finally:
        apply_precision(model, "fp32")
        torch.backends.cudnn.allow_tf32 = tf32_default
        if env_before is None:
            os.environ.pop("VS_KEEP_KERNELS", None)
        else:
            os.environ["VS_KEEP_KERNELS"] = env_before
    accurate = [r for r in runs if "fps" in r and r["setting"] != "reference"
                and ((r.get("vs_fixture") or r.get("vs_reference") or {}).get("index_agreement_min", 0) >= 0.99)]
    best = max(accurate, key=lambda r: r["fps"], default=None)
    one_face = None
    if best is not None:
        _progress("cuda: 1080p with one face (MTCNN on the GPU, crop, restore, paste)")
        k = _safe("cuda kernels 1080p", lambda: _kernels_cuda(repeats, device))
        det = _safe("cuda face stages 1080p", lambda: _cuda_face_stages(size, max(repeats, 3), device))
        if "error" not in k:
            detect_ms = float(det.get("detect_ms_min_face_20", 0.0)) + float(det.get("track_smooth_ms", 0.0)) if "error" not in det else 0.0
            total = best["per_frame_s"] + (k["crop_512_from_1080p_ms"] + k["paste_512_into_1080p_ms"] + detect_ms) / 1000
            one_face = {"kernels": k, "face_stages_ms": det, "setting": best["setting"],
                        "fps_1080p_1_face": _round(1 / total), "includes_detection": "error" not in det,
                        "fps_512_crops": best["fps"]}
    return {
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else device, "runs": runs, "1080p": one_face,
        "tf32_convolutions_reference": tf32_default, "tf32_convolutions_shipped": False,
    }


def _cuda_face_stages(face_size: int, repeats: int, device: str = "cuda") -> dict[str, Any]:
    from ..bench.face import face_stage_timings

    return face_stage_timings(1080, 1920, repeats=repeats, face_size=face_size, device=device)


def _kernels_cuda(repeats: int, device: str = "cuda") -> dict[str, Any]:
    import numpy as np
    import torch

    from ..face.align import BORDER_RGB, alignment_matrix
    from ..kernels import affine_crop, paste_face

    frame = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)).to(device)
    m = alignment_matrix(np.array([[900, 500], [1000, 502], [950, 560], [910, 620], [990, 622]], np.float32), 512)
    face = torch.rand(3, 512, 512, device=device)

    def sync(fn: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
        return run

    out = {}
    for mode in ("torch", "cupy"):
        os.environ["VS_KEEP_KERNELS"] = mode if mode == "torch" else "auto"
        out[f"crop_512_from_1080p_ms_{mode}"] = _round(1000 * _bench_fn(sync(lambda: affine_crop(frame, m, 512, border=BORDER_RGB)), repeats))
        out[f"paste_512_into_1080p_ms_{mode}"] = _round(1000 * _bench_fn(sync(lambda: paste_face(frame.clone(), face, m, unit=255.0)), repeats))
    os.environ.pop("VS_KEEP_KERNELS", None)
    out["crop_512_from_1080p_ms"] = min(out["crop_512_from_1080p_ms_torch"], out["crop_512_from_1080p_ms_cupy"])
    out["paste_512_into_1080p_ms"] = min(out["paste_512_into_1080p_ms_torch"], out["paste_512_into_1080p_ms_cupy"])
    return out


# ---- entry -------------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    import torch

    threads = args.threads or (1 if args.quick else 2)
    torch.set_num_threads(threads)
    if args.frames:  # memory child: nothing but the stream, so its peak RSS is the stream's
        from ..runtime.cpu import tune_malloc
        from ..runtime.measure import streaming_memory_run

        tune_malloc(True)
        print(json.dumps(streaming_memory_run(int(args.frames))))
        return 0
    from ..runtime.measure import build_synthetic_keep, default_fixture

    quick = bool(args.quick)
    size = args.model or ("tiny" if quick else "full")
    repeats = args.repeats or (1 if quick else 2)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.devices == "auto" else args.devices.split(",")
    fixture = Path(args.fixture) if args.fixture else default_fixture()
    golden = torch.load(fixture, weights_only=True) if fixture is not None and size == "full" else None
    chunk = args.chunk or (3 if size == "full" else 4)
    mem_lengths = tuple(int(v) for v in (args.memory_frames or ("20,60" if quick else "100,2000")).split(","))

    report: dict[str, Any] = {"schema": SCHEMA, "env": _env(args, threads)}
    _progress(f"building the synthetic {size} KEEP")
    model = build_synthetic_keep(size)
    frames = _chunk_frames(model, golden, chunk)
    report["model"] = {
        "size": size, "face_size": int(model.face_size), "parameters": sum(p.numel() for p in model.parameters()),
        "chunk_frames": int(frames.shape[0]), "repeats": repeats,
        "fixture": str(fixture) if golden is not None else None,
    }
    with tempfile.TemporaryDirectory(prefix="vs-keep-bench-") as tmp:
        workdir = Path(tmp)
        if "cpu" in devices:
            runs, lowp, shipped = _cpu_runs(model, frames, golden, repeats, precisions, quick, workdir, threads, not args.no_sweep)
            report["runs"] = runs
            report["precision_accuracy"] = lowp
            report["shipped_cpu"] = shipped
            report["cpu_options"] = {"skipped": "--no-options"} if args.no_options else _safe(
                "cpu options", lambda: _cpu_options(model, repeats, threads, args.compile, workdir))
            report["kernels_cpu"] = _safe("kernels", lambda: _kernels_cpu(repeats))
            best = next((r for r in runs if r["setting"] == shipped.get("setting")), None)
            per_face = best["per_frame_s"] if best else None
        else:
            report["runs"], report["precision_accuracy"], report["shipped_cpu"], per_face = [], [], {}, None
        if args.no_faces or quick:
            report["faces"] = {"skipped": "--quick" if quick else "--no-faces"}
        else:
            _progress("faces: 720p / 1080p stage timings")
            report["faces"] = _safe("faces", lambda: _faces(per_face, int(model.face_size), max(repeats, 3)))
        report["cuda"] = _safe("cuda", lambda: _cuda(args, size, repeats, precisions, golden, chunk)) if "cuda" in devices else {
            "available": False, "reason": "no CUDA device here" if not torch.cuda.is_available() else "not requested"}
    report["memory"] = {"skipped": "--no-memory"} if args.no_memory else _safe("memory", lambda: _memory(mem_lengths, 1))
    report["env"]["load_avg_end"] = _load()
    for r in report.get("runs", []):  # tensors are not JSON
        r.pop("out", None)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for scripts/bench.py: same code as `vs-keep bench`."""
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="bench: %(message)s", stream=sys.stderr)
    return run(parser.parse_args(argv))
