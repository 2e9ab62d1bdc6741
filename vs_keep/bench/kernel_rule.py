"""Does this machine agree with the shipped kernel rule of its ISA class (`runtime.cpu_choice.RULES`)?

The engine never times anything to choose a kernel (a timed choice made frames depend on machine load, issue 24);
the bench does it here instead, once per convolution shape of a real chunk: every kernel some named rule would
use, interleaved (one warm-up, best of two), weighted by how often the chunk calls the shape. With the whole-run
rows of each rule (`fp32-onednn`, `fp32-winograd`, `fp32-gemm`) it reports which rule this machine prefers and
warns when that is not the shipped one: a change of `RULES` is a decision made with these numbers, never a
silent one (it changes fp32 output on every machine of the class).
"""

from __future__ import annotations

import time
from typing import Any

from .common import log, round_sig

__all__ = ["RULE_ROWS", "kernel_rule_report", "time_conv_shapes"]

#: bench row that runs each named rule over the whole chunk
RULE_ROWS = {"reference": "fp32-onednn", "winograd": "fp32-winograd", "gemm": "fp32-gemm"}
#: a rule must be this much faster than the shipped one before the bench warns (timing noise should not)
MARGIN = 0.05


def time_conv_shapes(model: Any, frames: Any) -> dict[str, dict[str, Any]]:
    """Per distinct convolution shape of one forward pass over `frames`: how often it is called and the best of two
    interleaved timings (ms, one image) of each kernel a named rule would pick for it."""
    import torch

    from ..runtime import cpu_choice
    from ..runtime.cpu import FastConv2d, nnpack_available

    shapes: dict[str, dict[str, Any]] = {}

    def measure(module: FastConv2d, args: tuple) -> None:
        x = args[0]
        if x.ndim != 4 or x.dtype != torch.float32:
            return
        key = (f"conv{module.kernel_size[0]}x{module.kernel_size[1]}:{module.in_channels}>{module.out_channels}:"
               f"{x.shape[-2]}x{x.shape[-1]}")
        if key in shapes:
            shapes[key]["calls"] += int(x.shape[0])
            return
        one = x[:1].contiguous()
        kinds = sorted({cpu_choice.conv_kernel(r, module.kernel_size[0], module.padding[0], min(one.shape[-2:]),
                                               module._plain(), nnpack_available()) for r in cpu_choice.NAMED.values()})
        best = {k: float("inf") for k in kinds}
        for k in kinds:  # warm-up: primitive creation, weight reorders, NNPACK init
            module._run(k, one)
        for _ in range(2):
            for k in kinds:
                start = time.perf_counter()
                module._run(k, one)
                best[k] = min(best[k], time.perf_counter() - start)
        shapes[key] = {"calls": int(x.shape[0]), "ms": {k: round_sig(v * 1000) for k, v in best.items()},
                       "kernel": {name: cpu_choice.conv_kernel(r, module.kernel_size[0], module.padding[0],
                                                               min(one.shape[-2:]), module._plain(), nnpack_available())
                                  for name, r in cpu_choice.NAMED.items()}}

    hooks = [m.register_forward_pre_hook(measure) for m in model.modules() if isinstance(m, FastConv2d)]
    try:
        with torch.inference_mode():
            model(frames[:2])
    finally:
        for h in hooks:
            h.remove()
    return shapes


def kernel_rule_report(shapes: dict[str, dict[str, Any]], runs: list[dict]) -> dict[str, Any]:
    """The shipped rule of this CPU's class against the other named rules: per-shape conv time (weighted by calls)
    and whole-run seconds per frame of each rule's row; `warning` when this machine prefers another rule."""
    from ..runtime import cpu_choice

    shipped = cpu_choice.RULES[cpu_choice.isa_class()].name
    conv_ms = {name: round_sig(sum(s["calls"] * s["ms"][s["kernel"][name]] for s in shapes.values()))
               for name in cpu_choice.NAMED}
    by = {r["setting"]: r for r in runs if "per_frame_s" in r}
    run_s = {name: by[row]["per_frame_s"] for name, row in RULE_ROWS.items() if row in by}
    out: dict[str, Any] = {
        "isa_class": cpu_choice.isa_class(), "rule_version": cpu_choice.RULE_VERSION, "shipped_rule": shipped,
        "evidence": cpu_choice.EVIDENCE[cpu_choice.isa_class()], "conv_ms_per_chunk_by_rule": conv_ms,
        "per_frame_s_by_rule": run_s, "shapes": shapes,
    }
    faster = []
    for label, times in (("per-shape conv time", conv_ms), ("whole-run time", run_s)):
        if shipped in times and times:
            best = min(times, key=times.__getitem__)
            if best != shipped and times[shipped] > times[best] * (1 + MARGIN):
                faster.append(f"{label}: rule {best!r} {times[best]} vs shipped {shipped!r} {times[shipped]}")
    out["preferred_here"] = min(run_s or conv_ms, key=(run_s or conv_ms).__getitem__)
    if faster:
        out["warning"] = (f"this {out['isa_class']} CPU would prefer another kernel rule ({'; '.join(faster)}); the "
                          "engine keeps the shipped rule (runtime.cpu_choice.RULES), changing it changes fp32 output "
                          "on every machine of the class")
        log.warning("%s", out["warning"])
    return out
