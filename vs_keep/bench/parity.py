"""Parity section of `vs-keep bench`: the golden fixture, and accuracy of a run against it or another run.

Accuracy is codebook-index agreement and relative output error per frame; `fixture_metrics` adds the engine's
end-to-end parity rule (the one tests/test_keep.py checks) so every bench row says whether it keeps parity.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import Tensor

from .common import load_avg, round_sig

__all__ = ["accuracy", "default_fixture", "fixture_metrics", "record"]


def default_fixture() -> Path | None:
    """The golden KEEP fixture: $VS_KEEP_SHARED/fixtures, else ../shared/fixtures next to a source checkout."""
    candidates = []
    if os.environ.get("VS_KEEP_SHARED"):
        candidates.append(Path(os.environ["VS_KEEP_SHARED"]) / "fixtures" / "golden_keep_synth.pt")
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "golden_keep_synth.pt")
    return next((p for p in candidates if p.exists()), None)


def accuracy(idx: Tensor, out: Tensor, ref_idx: Tensor, ref_out: Tensor) -> dict[str, Any]:
    """Codebook-index agreement and output error of one run against a reference run, per frame: idx (T, L) vs
    ref_idx (T, L); out (T, 3, S, S) vs ref_out, relative L2 error."""
    agree = [round(float(a), 5) for a in (idx.reshape(ref_idx.shape) == ref_idx).float().mean(dim=1)]
    err = [float(f"{float((o.float() - r).norm() / r.norm()):.3g}") for o, r in zip(out, ref_out)]
    return {"index_agreement": agree, "index_agreement_min": min(agree), "output_rel_err": err,
            "output_rel_err_max": max(err)}


def fixture_metrics(res: dict[str, Any], golden: dict) -> dict[str, Any]:
    """Accuracy against the official outputs, and the engine's parity rule (tests/test_keep.py, end to end):
    z_obs < 1e-4, gains < 1e-5, flow max < 0.1 px and mean < 5e-3 px, logits < 2e-2, frame 0 output <= 1e-3;
    codes may flip only where the official top-1/top-2 margin is < 1e-4, agreement >= 99.8 %, and frames before
    the first flip within 2e-2 (a flip legitimately changes everything after it through the recurrence)."""
    t = res["out"].shape[0]
    out = res["out"].float()
    acc = accuracy(res["idx"], out, golden["top_idx"][:t, :, 0], golden["output"][0][:t])
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
        "z_obs_max_abs_err": round_sig(z_err),
        "gains_max_abs_err": round_sig(g_err),
        "flow_max_abs_err_px": round_sig(float(flow_err.max())) if flow_err is not None else None,
        "flow_mean_abs_err_px": round_sig(float(flow_err.mean())) if flow_err is not None else None,
        "logits_max_abs_err": round_sig(logit_err),
        "flips_only_at_knife_edge_codes": flips_ok,
    }
    metrics["parity_ok"] = bool(
        z_err < 1e-4 and g_err < 1e-5 and (flow_err is None or (float(flow_err.max()) < 0.1 and float(flow_err.mean()) < 5e-3))
        and logit_err < 2e-2 and errs[0] <= 1e-3 and flips_ok and sum(acc["index_agreement"]) / t >= 0.998
        and all(e <= 2e-2 for e in errs[:first_flip])
    )
    return metrics


def record(name: str, device: str, precision: str, res: dict[str, Any], ref: dict[str, Any] | None, golden: dict | None,
            face_size: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One bench row: speed of `res` (a `common.timed` result), its speed-up and accuracy against `ref`, and the
    fixture's parity metrics when there is a fixture."""
    entry: dict[str, Any] = {
        "setting": name,
        "device": device,
        "precision": precision,
        "face_size": face_size,
        "per_frame_s": round_sig(res["per_frame_s"]),
        "fps": round_sig(1.0 / res["per_frame_s"]),
        "stages_s_per_frame": res["stages_s_per_frame"],
        "load_avg": load_avg(),
    }
    if ref is not None:
        entry["speedup_vs_reference"] = round_sig(ref["per_frame_s"] / res["per_frame_s"], 3)
        entry["vs_reference"] = accuracy(res["idx"], res["out"], ref["idx"], ref["out"].float())
    if golden is not None:
        entry["vs_fixture"] = fixture_metrics(res, golden)
    entry.update(extra or {})
    return entry
