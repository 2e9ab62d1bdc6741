#!/usr/bin/env python3
"""Benchmark KEEP on this machine; JSON on stdout. Same code and options as `vs-keep bench` (see --help)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout without installing

from vs_keep.bench.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
