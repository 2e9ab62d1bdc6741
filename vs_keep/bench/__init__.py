"""`vs-keep bench`: one module per section, all bench-only code in one place (the engine never imports it).

- `main`: options, the report (JSON on stdout), the `vs-keep bench` / scripts/bench.py entry point
- `cpu`: CPU settings (reference, kernel rules, fp16, OpenVINO bf16) on the golden chunk, with `kernel_rule` (every
  kernel per convolution shape against the shipped rule); `parity`: accuracy against
  the fixture and the reference run; `face`: face stages at 720p/1080p; `kernels`: crop/paste; `memory`: peak RSS
  of short and long streams; `cuda`: the CUDA settings and 1080p end to end
- building blocks: `common` (timing, progress), `staged` (KEEP stage by stage with timers), `emulation` (16-bit
  accuracy on CPUs without 16-bit GEMMs); the synthetic models come from `vs_keep.models.synthetic`
"""

__all__ = []
