#!/usr/bin/env python3
"""Measure `overlap=` (seamless chunks) and `stabilize=` (low-band stabilizer); JSON to --out (and stderr log).

Sections:
- flicker: real photos (astronaut, Grace Hopper) as aligned 512 faces with per-frame geometry, tone, colour and
  shading jitter plus noise; restorer = identity, through the engine's run objects (ClipRun -> StabilizedRun).
  flicker_engine: the same measures through the whole engine (detection, alignment, paste) on the test scene.
  Warping error (`vs-keep eval`'s, x1e-3) and high-frequency energy (Laplacian variance inside the face) of
  the input and of the stabilized output. Acceptance: warping error down >= 2x, HF energy within 10 %.
- seams: the test scene (two real faces moving, tests/data/face_scenes.py) through `FaceEngine` with
  the small synthetic KEEP: mean |delta| (0..255) between consecutive frames inside the always-visible face,
  at chunk boundaries vs inside chunks, for overlap 0 / k and the stabilizer; input as the motion baseline.
- cost: seconds and model steps per frame of each setting, stabilizer ms per 512 face.

Run from a checkout: `PYTHONPATH=$PWD .venv/bin/python scripts/temporal_bench.py --out temporal.json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the real-photo material the tests use

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from vs_keep.evaluation.flicker import jittered_frames  # noqa: E402

log = logging.getLogger("temporal_bench")


def _u8(f: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(f * 255.0), 0, 255).astype(np.uint8)


def photos() -> dict[str, np.ndarray]:
    """Face regions of the test photos (Grace Hopper only when available), RGB uint8."""
    from data.face_scenes import ASTRONAUT_FACE, GRACE_FACE, astronaut, grace_hopper

    out = {"astronaut": astronaut()[ASTRONAUT_FACE[1]:ASTRONAUT_FACE[3], ASTRONAUT_FACE[0]:ASTRONAUT_FACE[2]]}
    try:
        out["grace"] = grace_hopper()[GRACE_FACE[1]:GRACE_FACE[3], GRACE_FACE[0]:GRACE_FACE[2]]
    except BaseException as exc:  # noqa: BLE001 - pytest.skip outside pytest: the photo is not available
        log.warning("Grace Hopper photo unavailable (%s); astronaut only", exc)
    return out


def flicker_video(photo: np.ndarray, count: int, seed: int, size: int = 512) -> list[np.ndarray]:
    """Per frame: rotation ±0.4°, scale ±0.4 %, shift ±1 px plus a slow drift; gain ±5 %, per-channel ±2 %,
    offset ±0.02, a linear shading ramp ±0.05; Gaussian noise σ 0.01 (all σ, [0, 1] scale)."""
    face = cv2.resize(photo, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255.0
    return jittered_frames(face, count, seed, shift=1.0, drift=(0.3, 0.1))


def warping_error(frames: list[np.ndarray]) -> float:
    from vs_keep.evaluation.temporal import WarpingError

    w = WarpingError()
    for f in frames:
        w.update(_u8(f))
    return float(np.nanmean(w.values))


def hf_energy(frames: list[np.ndarray]) -> float:
    """Mean over frames of the Laplacian variance of the grey uint8 face inside an ellipse (the face, no border)."""
    size = frames[0].shape[0]
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, (size // 2, int(size * 0.53)), (int(size * 0.29), int(size * 0.37)), 0, 0, 360, 1, -1)
    inside = mask.astype(bool)
    vals = [cv2.Laplacian(cv2.cvtColor(_u8(f), cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F)[inside].var() for f in frames]
    return float(np.mean(vals))


def stabilized(frames: list[np.ndarray], strength: float) -> tuple[list[np.ndarray], float]:
    """Identity restorer through the engine's objects: ClipRun (whole run) -> StabilizedRun; seconds per face."""
    from vs_keep.face.restorers import ClipRun, identity_restorer
    from vs_keep.face.stabilize import StabilizedRun

    clip = torch.from_numpy(np.stack([f.transpose(2, 0, 1) for f in frames])) * 2.0 - 1.0
    run = StabilizedRun(ClipRun(identity_restorer, clip), strength)
    run.run.frame(0)  # the identity "restoration" itself is not the stabilizer's cost
    t0 = time.process_time()  # CPU time of this process: less sensitive to other load on a shared machine
    out = [((run.frame(k).clamp(-1, 1) + 1) * 0.5).numpy().transpose(1, 2, 0) for k in range(len(frames))]
    return out, (time.process_time() - t0) / len(frames)


def flicker_section(count: int, strengths: list[float]) -> dict:
    rows = []
    for seed, (name, photo) in enumerate(photos().items()):
        frames = flicker_video(photo, count, seed)
        we_in, hf_in = warping_error(frames), hf_energy(frames)
        for s in strengths:
            out, sec = stabilized(frames, s)
            we_out, hf_out = warping_error(out), hf_energy(out)
            row = {
                "photo": name, "frames": count, "stabilize": s,
                "warping_error_in": round(we_in, 4), "warping_error_out": round(we_out, 4),
                "warping_error_reduction": round(we_in / we_out, 3),
                "hf_energy_in": round(hf_in, 2), "hf_energy_out": round(hf_out, 2),
                "hf_energy_ratio": round(hf_out / hf_in, 4),
                "stabilizer_cpu_ms_per_face": round(sec * 1000, 2),
                "accepted": bool(we_in / we_out >= 2 and abs(hf_out / hf_in - 1) <= 0.1),
            }
            log.info("flicker %s", row)
            rows.append(row)
    return {"rows": rows}


class _Access:
    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames, self.num_frames = frames, len(frames)

    def frame(self, n: int) -> np.ndarray:
        return self.frames[n]

    def scene_start(self, n: int) -> bool:
        return False


def _face_box(placement, pad: int = 4) -> tuple[int, int, int, int]:
    from data.face_scenes import ASTRONAUT_FACE

    s, x, y = placement
    w, h = (ASTRONAUT_FACE[2] - ASTRONAUT_FACE[0]) * s, (ASTRONAUT_FACE[3] - ASTRONAUT_FACE[1]) * s
    return int(x) + pad, int(y) + pad, int(x + w) - pad, int(y + h) - pad


def seam_stats(images: list[np.ndarray], places: list, chunk: int) -> dict:
    """Mean |delta| (0..255) inside the astronaut's face (box common to both frames) per consecutive pair, at chunk
    starts vs inside chunks; `_low` the same on Gaussian-blurred frames (σ 3 px: tone and shading jumps, without
    the texture change that motion causes)."""
    pairs: dict[str, list[float]] = {"boundary": [], "inside": [], "boundary_low": [], "inside_low": []}
    for n in range(1, len(images)):
        a, b = _face_box(places[n - 1]), _face_box(places[n])
        x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
        cur, prev = (images[m].astype(np.float32) for m in (n, n - 1))
        where = "boundary" if n % chunk == 0 else "inside"
        pairs[where].append(float(np.abs(cur - prev)[y0:y1, x0:x1].mean()))
        low = np.abs(cv2.GaussianBlur(cur, (0, 0), 3) - cv2.GaussianBlur(prev, (0, 0), 3))[y0:y1, x0:x1]
        pairs[where + "_low"].append(float(low.mean()))
    out: dict = {k: (round(float(np.mean(v)), 3) if v else None) for k, v in pairs.items()}
    for suffix in ("", "_low"):
        b, i = out["boundary" + suffix], out["inside" + suffix]
        out["ratio" + suffix] = round(b / i, 3) if b is not None and i else None
    out["boundary_pairs"] = len(pairs["boundary"])
    return out


class CachedDetector:
    """MTCNN once per distinct frame: every setting sees the same detections, timings are restoration only."""

    def __init__(self, detector) -> None:
        self.detector, self._seen = detector, {}

    def detect(self, image: np.ndarray):
        key = hash(image.tobytes())
        if key not in self._seen:
            self._seen[key] = self.detector.detect(image)
        return self._seen[key]


class RecurrentToy:
    """A restorer with KEEP's recurrence and nothing else: out_0 = x_0 (cold start: observation only, like KEEP's
    first frame z_hat = z_obs), out_t = K·x_t + (1 - K)·out_{t-1} (a fixed Kalman gain K). On flickering input
    it smooths inside a run and restarts raw at every run start: the chunk seam, without random-weight noise."""

    def __init__(self, gain: float = 0.25) -> None:
        self.gain = gain

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        out = [clip[0]]
        for x in clip[1:]:
            out.append(self.gain * x + (1 - self.gain) * out[-1])
        return torch.stack(out)


def tone_flicker(frames: list[np.ndarray], seed: int = 7) -> list[np.ndarray]:
    """Per-frame gain ±6 %, per-channel ±2 %, offset ±5/255 on whole frames (what a flickering source shows)."""
    rng = np.random.default_rng(seed)
    out = []
    for f in frames:
        g = (1 + rng.normal(0, 0.06)) * (1 + rng.normal(0, 0.02, 3))
        out.append(np.clip(np.rint(f.astype(np.float32) * g + rng.normal(0, 5)), 0, 255).astype(np.uint8))
    return out


def seams_section(name: str, factory, frames: list[np.ndarray], places: list, chunk: int,
                  settings: list[tuple[int, float]], detector) -> dict:
    from vs_keep.face_engine import FaceEngine
    from vs_keep.stream import restore_stream

    count = len(frames)
    t0 = time.perf_counter()
    for f in frames:
        detector.detect(f)
    detect_sec = (time.perf_counter() - t0) / count
    rows = [{"setting": "input", **seam_stats(frames, places, chunk)}]
    for overlap, stab in settings:
        eng = FaceEngine(restorer_factory=factory, detector=detector, chunk=chunk, overlap=overlap, stabilize=stab)
        t0, c0 = time.perf_counter(), time.process_time()
        images = [r.image for r in restore_stream(eng, frames, count)]
        sec, cpu = (time.perf_counter() - t0) / count, (time.process_time() - c0) / count
        row = {"setting": f"overlap={overlap} stabilize={stab:g}", "overlap": overlap, "stabilize": stab,
               **seam_stats(images, places, chunk), "seconds_per_frame": round(sec, 3),
               "cpu_seconds_per_frame": round(cpu, 3),
               "model_steps_per_frame": round(eng.stats["model_steps"] / count, 3)}
        log.info("seams %s %s", name, row)
        rows.append(row)
    return {"restorer": name, "frames": count, "chunk": chunk, "rows": rows,
            "detection_seconds_per_frame": round(detect_sec, 3),
            "note": "seconds_per_frame: restoration, alignment, stabilizer, paste (detections cached, 2 faces)"}


def engine_flicker_section(frames: list[np.ndarray], places: list, strengths: list[float], detector) -> dict:
    """The whole engine (MTCNN, tracks, alignment, stabilizer, paste) with the identity restorer on the test scene
    with whole-frame tone flicker: warping error and Laplacian energy of a 48x60 crop at the astronaut's face
    centre (ground truth), in the output frames."""
    from vs_keep.face.restorers import SharedRestorerFactory, identity_restorer
    from vs_keep.face_engine import FaceEngine
    from vs_keep.stream import restore_stream

    def crops(images: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for img, pl in zip(images, places):
            x0, y0, x1, y1 = _face_box(pl)
            cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
            out.append(img[cy - 30:cy + 30, cx - 24:cx + 24].astype(np.float32) / 255.0)
        return out

    def lap(seq: list[np.ndarray]) -> float:
        return float(np.mean([cv2.Laplacian(cv2.cvtColor(_u8(c), cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F).var() for c in seq]))

    base = crops(frames)
    rows = [{"stabilize": "input", "warping_error": round(warping_error(base), 4), "hf_energy": round(lap(base), 2)}]
    for s in strengths:
        eng = FaceEngine(restorer_factory=SharedRestorerFactory(identity_restorer, 512), detector=detector,
                                   chunk=20, stabilize=s)
        out = crops([r.image for r in restore_stream(eng, frames, len(frames))])
        rows.append({"stabilize": s, "warping_error": round(warping_error(out), 4), "hf_energy": round(lap(out), 2)})
        log.info("engine flicker %s", rows[-1])
    return {"frames": len(frames), "chunk": 20, "restorer": "identity (512 px aligned faces)", "rows": rows}


def main(argv: list[str] | None = None) -> int:
    from vs_keep.bench.common import load_avg
    from vs_keep.runtime.cpu_choice import cpu_kind

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="temporal_bench.json", help="JSON file to write")
    p.add_argument("--flicker-frames", type=int, default=24)
    p.add_argument("--seam-frames", type=int, default=96)
    p.add_argument("--chunk", type=int, default=6, help="chunk for the seam section (several boundaries in a short clip)")
    p.add_argument("--overlaps", default="0,2,6", help="overlap values for the seam section")
    p.add_argument("--keep-frames", type=int, default=12, help="frames through the synthetic KEEP (cost rows)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    overlaps = [int(v) for v in args.overlaps.split(",")]
    from data.face_scenes import two_face_scene
    from vs_keep.face import create_detector, restorer_factory
    from vs_keep.face.restorers import SharedRestorerFactory
    from vs_keep.models import load
    from vs_keep.models.synthetic import write_synthetic_checkpoint

    result: dict = {"cpu": cpu_kind()["model"], "threads": args.threads, "load_before": load_avg(), "torch": torch.__version__,
                    "opencv": cv2.__version__}
    t0 = time.perf_counter()
    result["flicker"] = flicker_section(args.flicker_frames, [0.5, 1.0])
    detector = CachedDetector(create_detector("mtcnn", "cpu", min_face_size=20.0))
    scene = two_face_scene(n=args.seam_frames)
    places = scene.placements["astronaut"]
    result["flicker_engine"] = engine_flicker_section(tone_flicker(scene.frames[:24]), places[:24], [0.0, 0.5, 1.0], detector)
    toy = [(k, 0.0) for k in overlaps] + [(0, 1.0), (max(overlaps), 1.0)]
    result["seams_recurrent_toy"] = seams_section(
        "RecurrentToy(K=0.25) on tone-flickered frames, 128 px faces", SharedRestorerFactory(RecurrentToy(), 128),
        tone_flicker(scene.frames), places, args.chunk, toy, detector)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        net = load(write_synthetic_checkpoint(Path(tmp) / "keep_small.pth", "keep", "small"))
    n = args.keep_frames
    result["seams_keep_synthetic"] = seams_section(
        "synthetic small KEEP (128 px faces, random weights: consecutive outputs differ by ~85/255 even on a static "
        "face, which swamps any seam; read this section for cost)", restorer_factory(net), scene.frames[:n],
        places[:n], args.chunk, [(0, 0.0), (max(overlaps), 0.0), (0, 1.0)], detector)
    result["load_after"] = load_avg()
    result["seconds"] = round(time.perf_counter() - t0, 1)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
