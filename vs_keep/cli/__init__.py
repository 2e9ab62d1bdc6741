"""`vs-keep` command line: a thin dispatcher over one module per subcommand
(`vs_keep/cli/`, and `vs_keep.bench.main` for `bench`).

Each subcommand module defines `add_arguments(parser)` and `run(args) -> int`. Modules are imported only when
their command runs, so `vs-keep download` does not pay for torch-heavy imports it does not need. The CLI is the
only place (with scripts/) allowed to print to stdout.

Failures: every error ends the run with one line on stderr naming the file and the fix, and exit status 1
(`--debug` adds the traceback); Ctrl-C exits 130, SIGTERM 143. A command module that sets `OUTPUT = "<arg name>"`
writes that output atomically itself (`vs_keep.atomic`, `vs_keep.resume`); the line of an interrupt says that
nothing was written to it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import signal
import sys
import traceback

__all__ = ["COMMANDS", "build_parser", "main"]

# name -> (module, one-line help). One explicit, ordered list: grep shows every command.
COMMANDS: dict[str, tuple[str, str]] = {
    "restore": ("vs_keep.cli.restore", "restore faces in a video or image folder (PyAV in/out)"),
    "download": ("vs_keep.cli.download", "download official weights into the cache (hash-checked)"),
    "degrade": ("vs_keep.cli.degrade", "make a VFHQ/KEEP-style degraded copy of a video"),
    "eval": ("vs_keep.cli.evaluate", "fidelity / identity / temporal metrics of a restoration"),
    "bench": ("vs_keep.bench.main", "per-stage timings and fps (JSON)"),
    "build-trt": ("vs_keep.cli.build_trt", "pre-build the TensorRT engine of KEEP's decoder (decoder='tensorrt')"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vs-keep", description="KEEP video face restoration")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    parser.add_argument("--debug", action="store_true", help="on failure, print the traceback too")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C while the command's modules are still importing
        print("vs-keep: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
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
    parser.add_argument("--debug", action="store_true", help="on failure, print the traceback too")
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    args.verbose = known.verbose
    args.debug = args.debug or known.debug
    if args.debug:
        logging.getLogger().setLevel(logging.DEBUG)
    return _run(known.command, module, args)


class _Terminated(BaseException):
    """SIGTERM as an exception, so cleanups (temporary outputs) run as they do for Ctrl-C."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


def _run(command: str, module, args: argparse.Namespace) -> int:
    from .safety import failure_line

    prefix = f"vs-keep {command}"
    final = getattr(args, module.OUTPUT) if hasattr(module, "OUTPUT") else None
    nothing = f"; nothing written to {final}" if final is not None else ""
    previous = signal.getsignal(signal.SIGTERM)
    with contextlib.suppress(ValueError):  # not the main thread (embedded use): leave signals alone
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = int(module.run(args) or 0)
        if final is not None and code == 0:
            logging.getLogger("vs_keep.cli").info("saved %s", final)
        return code
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted{nothing}", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"{prefix}: terminated (SIGTERM){nothing}", file=sys.stderr)
        return 143
    except Exception as exc:  # noqa: BLE001 - the one place that turns any failure into one line
        if args.debug:
            traceback.print_exc(file=sys.stderr)
        print(f"{prefix}: {failure_line(exc)}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
