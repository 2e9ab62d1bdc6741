"""CUDA section of `vs-keep bench`: the CUDA settings on the golden chunk (reference at torch's TF32 default, the
shipped fp32 with TF32 off, torch vs CuPy kernels per precision, TensorRT decoder rows) and 1080p with one face
end to end. The section's bookkeeping also runs on CPU (`device="cpu"`) so it is tested without a GPU."""

from __future__ import annotations

import os
from typing import Any

from .common import chunk_frames, progress, round_sig, safe, timed
from .kernels import kernels_section
from .parity import record

__all__ = ["cuda_section"]


def cuda_section(model_size: str, repeats: int, precisions: list[str], golden: dict | None, chunk: int,
                 device: str = "cuda") -> dict[str, Any]:
    """CUDA settings, all on the golden chunk: the reference (fp32, torch kernels, torch's default TF32 convolutions,
    like an unmodified official run), then what the engine ships: fp32 with TF32 off and CuPy kernels, the 16-bit
    policies, and the TensorRT decoder (fp32 and fp16 engines). Plus 1080p with one face end to end: MTCNN on the
    GPU, crop, the fastest accurate setting, paste. `device` is "cuda" except in the test of this section's logic."""
    import torch

    from ..kernels.select import cupy_available
    from ..runtime.backends import TensorRTBackend
    from ..runtime.precision import apply_precision, autocast_context
    from .face import face_stage_timings
    from .staged import StagedKeep
    from ..models.synthetic import build_synthetic_keep

    model = build_synthetic_keep(model_size).to(device)
    frames = chunk_frames(model, golden, chunk).to(device)
    gold = golden if golden is not None and int(model.face_size) == int(golden["input"].shape[-1]) else None
    size = int(model.face_size)
    runs: list[dict] = []
    env_before = os.environ.get("VS_KEEP_KERNELS")
    tf32_default = bool(torch.backends.cudnn.allow_tf32)

    def run(kernels: str, precision: str, decoder: Any = None, tf32: bool = False) -> dict[str, Any]:
        os.environ["VS_KEEP_KERNELS"] = kernels
        torch.backends.cudnn.allow_tf32 = tf32
        apply_precision(model, precision)
        runner = StagedKeep(model, decoder=decoder, autocast=lambda: autocast_context(device, precision))
        return timed(runner, frames, repeats)

    try:
        progress("cuda: reference (fp32, torch kernels, TF32 convolutions at torch's default)")
        ref = run("torch", "fp32", tf32=tf32_default)
        runs.append(record("reference", device, "fp32", ref, None, gold, size, {"kernels": "torch", "tf32": tf32_default}))
        for precision in [p for p in ("fp32", "fp16") if p in precisions]:  # bf16 is CPU-only (OpenVINO)
            for kernels in ("torch", "cupy"):
                name = f"{precision}+{'cupy' if kernels == 'cupy' else 'torch-kernels'}"
                progress(f"cuda: {name}")
                res = safe(f"cuda {name}", lambda p=precision, k=kernels: run(k, p))
                if "error" in res:
                    runs.append({"setting": name, "device": device, **res})
                    continue
                runs.append(record(name, device, precision, res, ref, gold, size, {"kernels": kernels, "tf32": False}))
        for precision in [p for p in ("fp32", "fp16") if p in precisions]:
            name = f"{precision}+cupy+trt-decoder"
            progress(f"cuda: {name} (builds the engine on first use)")
            if not str(device).startswith("cuda"):  # the bookkeeping run on CPU: no engine is built for a CPU model
                runs.append({"setting": name, "device": device, "error": "the TensorRT decoder runs on CUDA only"})
                continue
            dec = safe(f"tensorrt {precision} decoder", lambda p=precision: TensorRTBackend(precision=p).decoder(model))
            if isinstance(dec, dict):  # TensorRT missing or failed: its error is the record
                runs.append({"setting": name, "device": device, **dec})
                continue
            res = run("cupy" if cupy_available() else "torch", precision, dec)
            runs.append(record(name, device, precision, res, ref, gold, size, {"decoder": "TrtDecoder", "tf32": False}))
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
        progress("cuda: 1080p with one face (MTCNN on the GPU, crop, restore, paste)")
        k = safe("cuda kernels 1080p", lambda: kernels_section(repeats, device))
        det = safe("cuda face stages 1080p", lambda: face_stage_timings(1080, 1920, repeats=max(repeats, 3), face_size=size,
                                                                          device=device))
        if "error" not in k:
            detect_ms = float(det.get("detect_ms_min_face_20", 0.0)) + float(det.get("track_smooth_ms", 0.0)) if "error" not in det else 0.0
            total = best["per_frame_s"] + (k["crop_512_from_1080p_ms"] + k["paste_512_into_1080p_ms"] + detect_ms) / 1000
            one_face = {"kernels": k, "face_stages_ms": det, "setting": best["setting"],
                        "fps_1080p_1_face": round_sig(1 / total), "includes_detection": "error" not in det,
                        "fps_512_crops": best["fps"]}
    return {
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else device, "runs": runs, "1080p": one_face,
        "tf32_convolutions_reference": tf32_default, "tf32_convolutions_shipped": False,
    }


