"""`vs-keep` command line: a thin dispatcher over one module per subcommand
(`vs_keep/cli/`, and `vs_keep.bench.main` for `bench`).

Each subcommand module defines `add_arguments(parser)` and `run(args) -> int`. Modules are imported only when
their command runs, so `vs-keep download` does not pay for torch-heavy imports it does not need. The CLI is the
only place (with scripts/) allowed to print to stdout.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> (module, one-line help). One explicit, ordered list: grep shows every command.
COMMANDS: dict[str, tuple[str, str]] = {
    "restore": ("vs_keep.cli.restore", "restore faces in a video or image folder (PyAV in/out)"),
    "download": ("vs_keep.cli.download", "download official weights into the cache (hash-checked)"),
    "degrade": ("vs_keep.cli.degrade", "make a VFHQ/KEEP-style degraded copy of a video"),
    "eval": ("vs_keep.cli.evaluate", "fidelity / identity / temporal metrics of a restoration"),
    "bench": ("vs_keep.bench.main", "per-stage timings and fps (JSON)"),
    "build-engine": ("vs_keep.cli.build_engine", "pre-build the TensorRT decoder engine"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vs-keep", description="KEEP video face restoration")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    # Parse only the global options and the command name; the command's own parser takes the rest.
    known, rest = top.parse_known_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if known.verbose else logging.INFO,
        format="vs-keep: %(message)s",
        stream=sys.stderr,
    )
    if not known.command:
        top.print_help(sys.stderr)
        return 2
    module_name, help_text = COMMANDS[known.command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            print(f"vs-keep: command '{known.command}' is not available in this build", file=sys.stderr)
            return 2
        raise
    parser = argparse.ArgumentParser(prog=f"vs-keep {known.command}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    args.verbose = known.verbose
    from ..errors import VsKeepError

    try:
        return int(module.run(args) or 0)
    except VsKeepError as exc:
        print(f"vs-keep {known.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vs-keep: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
