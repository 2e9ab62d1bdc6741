"""`vs-keep download NAME... [--dir DIR] [--all] [--list]`: fetch official weights into the cache, hash-checked.

`--list` writes its table to stdout (for scripts); everything about downloads goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import weights
from ..errors import InputError, VsKeepError

__all__ = ["EPILOG", "add_arguments", "run"]

EPILOG = f"""\
names: {", ".join(weights.names())}

environment:
  {weights.ENV_HOME}              weights cache folder (default: the user cache folder, see --list)
  {weights.ENV_MIRROR}    base URL(s) of a mirror tried before the official URLs; the file name
                            is appended (e.g. https://mirror.example/weights, file:///srv/weights)
  {weights.ENV_TIMEOUT}  network timeout in seconds (default {weights.DEFAULT_TIMEOUT:g})

Partial downloads are resumed. Files without a direct URL (Google Drive) are listed as "manual":
put them in the cache folder under the listed file name."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("names", nargs="*", metavar="NAME", help="registry names to download (see --list)")
    parser.add_argument("--dir", type=Path, default=None, help="download into DIR instead of the cache folder")
    parser.add_argument("--all", action="store_true", help="download every file that has a URL")
    parser.add_argument("--list", action="store_true", help="print the registry table (stdout) and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _size(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**20:.1f} MiB"


def _state(spec: weights.WeightSpec, folder: Path) -> str:
    if (folder / spec.filename).is_file():
        return "yes"
    return "manual" if not spec.urls else "no"


def _print_table(folder: Path) -> None:
    rows = [("NAME", "FILE", "SIZE", "LICENSE", "CACHED")]
    rows += [(s.name, s.filename, _size(s.size), s.license, _state(s, folder)) for s in weights.WEIGHTS]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print(f"\nfolder: {folder}")


def run(args: argparse.Namespace) -> int:
    folder = args.dir.expanduser() if args.dir is not None else weights.cache_dir()
    if args.list:
        _print_table(folder)
        return 0
    if args.all:
        specs = list(weights.WEIGHTS)
    elif args.names:
        specs = [weights.get(name) for name in args.names]  # unknown names fail before any download
    else:
        raise InputError("name the weights to download (e.g. `vs-keep download keep`), or use --all / --list")
    failed = 0
    for spec in specs:
        if args.all and _state(spec, folder) == "manual":
            print(f"skip {spec.name}: manual download ({spec.filename} -> {folder})", file=sys.stderr)
            continue
        try:
            path = weights.download(spec, folder, progress=not args.no_progress)
        except VsKeepError as exc:
            failed += 1
            print(f"vs-keep download: {spec.name}: {exc}", file=sys.stderr)
            continue
        print(f"ok {spec.name}: {path}", file=sys.stderr)
    return 1 if failed else 0
