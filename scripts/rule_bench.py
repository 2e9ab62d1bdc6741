"""Full-size KEEP per frame: plain eager fp32 against each CPU kernel rule, timed round-robin in one process.

Why round-robin: on a shared machine the load drifts during a run; timing every setting once per round (fastest
of the rounds kept) exposes them all to the same drift, unlike `vs-keep bench`, which times one setting after the
other. Prints JSON (CPU, ISA class, seconds per frame, speed-ups over plain eager, output agreement with it).
Usage: python scripts/rule_bench.py [--rounds 2] [--chunk 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="full", choices=("full", "small", "tiny"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from vs_keep.bench.common import chunk_frames, load_avg
    from vs_keep.models.synthetic import build_synthetic_keep
    from vs_keep.numerics import numerics_identity
    from vs_keep.runtime import cpu_choice
    from vs_keep.runtime.cpu import optimize_cpu, restore_reference, tune_malloc

    model = build_synthetic_keep(args.model)
    frames = chunk_frames(model, None, args.chunk)
    settings = {
        "plain-eager": lambda: (restore_reference(model), tune_malloc(False)),
        "rule-reference": lambda: (restore_reference(model), optimize_cpu(model, cpu_choice.NAMED["reference"]), tune_malloc(True)),
        "rule-winograd": lambda: (optimize_cpu(model, cpu_choice.NAMED["winograd"]), tune_malloc(True)),
        "rule-gemm": lambda: (optimize_cpu(model, cpu_choice.NAMED["gemm"]), tune_malloc(True)),
    }
    best = {k: float("inf") for k in settings}
    outs: dict[str, torch.Tensor] = {}
    load = [load_avg()]
    for _ in range(args.rounds):
        for name, apply in settings.items():
            apply()
            start = time.perf_counter()
            with torch.inference_mode():
                outs[name] = model(frames)
            best[name] = min(best[name], (time.perf_counter() - start) / frames.shape[0])
        load.append(load_avg())
    plain = best["plain-eager"]
    ref = outs["plain-eager"]
    report = {
        "cpu": cpu_choice.cpu_kind()["model"], "cpu_kind": cpu_choice.cpu_kind(), "numerics": numerics_identity("cpu", "fp32", args.threads),
        "model": args.model, "chunk": int(frames.shape[0]), "rounds": args.rounds, "load_avg_per_round": load,
        "per_frame_s": {k: round(v, 3) for k, v in best.items()},
        "speedup_vs_plain_eager": {k: round(plain / v, 3) for k, v in best.items()},
        "max_abs_diff_vs_plain_eager": {k: float((o - ref).abs().max()) for k, o in outs.items()},
        "shipped_rule": cpu_choice.RULES[cpu_choice.isa_class()].name, "pid": os.getpid(),
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
