"""Per-stage benchmarks (functions returning timing dicts; `scripts/bench.py` / `vs-keep bench` print them)."""
