"""`vs-keep` command line: a thin dispatcher over one module per subcommand
(`vs_keep/cli/`, and `vs_keep.bench.main` for `bench`).

Each subcommand module defines `add_arguments(parser)` and `run(args) -> int`. Modules are imported only when
their command runs, so `vs-keep download` does not pay for torch-heavy imports it does not need. The CLI is the
only place (with scripts/) allowed to print to stdout.

Failures: every error ends the run with one line on stderr naming the file and the fix, and exit status 1
(`--debug` adds the traceback); Ctrl-C exits 130, SIGTERM 143. A command module that sets `OUTPUT = "<arg name>"`
(and `INPUTS = ("<arg name>", ...)`) has that output written atomically: the output may not be one of the inputs
(same file on disk), `run()` receives a temporary path in the output's folder in that argument, and it is renamed
to the real path only when `run()` returns 0; any failure or interrupt leaves nothing at the output path. A module
whose `writes_own_output(args)` is true commits the output itself, as atomically (`vs-keep restore` to a video file:
`vs_keep.resume`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Iterator

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


class _ExitStatus(Exception):
    """A command returned non-zero: its output must not be committed."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends (then they are delivered), so they cannot land between two steps
    that must both happen. Only in the main thread, where Python runs signal handlers."""
    held = {signal.SIGINT, signal.SIGTERM}
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _run(command: str, module, args: argparse.Namespace) -> int:
    from ..atomic import atomic_output
    from .safety import failure_line, refuse_overwriting_input

    prefix = f"vs-keep {command}"
    output_arg = getattr(module, "OUTPUT", None)
    final = getattr(args, output_arg, None) if output_arg else None
    tmp = None
    previous = signal.getsignal(signal.SIGTERM)
    with contextlib.suppress(ValueError):  # not the main thread (embedded use): leave signals alone
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with contextlib.ExitStack() as stack:
            if final is not None:
                inputs = [getattr(args, name) for name in getattr(module, "INPUTS", ()) if getattr(args, name, None)]
                refuse_overwriting_input(inputs, final)
                if not getattr(module, "writes_own_output", lambda _: False)(args):  # e.g. resumable restores
                    with _signals_held():  # a Ctrl-C between creating the temporary and registering its removal
                        tmp = stack.enter_context(atomic_output(final))
                    setattr(args, output_arg, str(tmp))
            code = int(module.run(args) or 0)
            if code != 0:
                raise _ExitStatus(code)
        if final is not None:
            logging.getLogger("vs_keep.cli").info("saved %s", final)
        return 0
    except _ExitStatus as exc:
        return int(exc.args[0])
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted" + (f"; nothing written to {final}" if final else ""), file=sys.stderr)
        return 130
    except _Terminated:
        print(f"{prefix}: terminated (SIGTERM)" + (f"; nothing written to {final}" if final else ""), file=sys.stderr)
        return 143
    except Exception as exc:  # noqa: BLE001 - the one place that turns any failure into one line
        if args.debug:
            traceback.print_exc(file=sys.stderr)
        line = failure_line(exc)
        if tmp is not None:
            line = line.replace(str(tmp), str(final))
        print(f"{prefix}: {line}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
