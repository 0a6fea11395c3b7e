"""``cosmos`` command line: one module per verb group, each with ``register(subparsers)``.

Every user-facing error (``CosmosError``) becomes one clear line on stderr and a non-zero exit;
tracebacks are shown only with ``--debug``.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading

from cosmos.errors import CosmosError
from cosmos.logs import setup_logging


def add_config_args(p: argparse.ArgumentParser, default_profile: str = "tiny") -> None:
    """The shared --profile / --config / --set options."""
    p.add_argument("--profile", default=default_profile, help="named profile: tiny | small | paper")
    p.add_argument("--config", default=None, help="YAML file merged over the profile")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, e.g. --set translator.epochs=3 (repeatable)",
    )


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0 (``--max-mb nan`` or ``-1`` is refused when parsing, in one line)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number above 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def data_location(text: str) -> str:
    """argparse type: a data folder or URI that is not blank (``--data ""`` would otherwise mean "no data" and start
    the whole phantom pipeline; leaving the flag out is how to ask for the phantom)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "empty; give a folder or s3:// URI, or leave --data out for the built-in phantom"
        )
    return text


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0-65535 (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number between 0 and 65535, got {text!r}")
    return value


def config_from_args(args: argparse.Namespace):
    from cosmos.config import load_config

    return load_config(args.profile, args.config, args.overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cosmos", description="COSMOS cross-modality domain adaptation (ceT1 -> hrT2)"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Imported here, not at the top: each verb module imports add_config_args from this package.
    from cosmos.cli import (
        benchmark_cmd,
        compare_cmd,
        config_cmd,
        data_cmds,
        evaluate_cmd,
        pipeline_cmds,
        predict_cmd,
        selftrain_cmd,
        serve_cmd,
        translator_cmds,
    )

    for mod in (
        data_cmds,
        evaluate_cmd,
        translator_cmds,
        selftrain_cmd,
        predict_cmd,
        compare_cmd,
        serve_cmd,
        pipeline_cmds,
        benchmark_cmd,
        config_cmd,
    ):
        mod.register(sub)
    return parser


def one_line(text: str) -> str:
    """A message on one line: a library's multi-line text (a YAML parser's caret, an SQL statement)
    joined with spaces, so every error stays the single ``cosmos: error:`` line users and scripts read."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip()) or text


def _library_error(exc: Exception) -> str | None:
    """One line for a library error that a user's value causes, or None.

    The tracking store: ``--tracking-uri sqlite:///notes.txt`` (a file that is not a database) made
    SQLAlchemy print a multi-line SQL error with a link; MLflow's own errors carry a long text too.
    """
    module = type(exc).__module__ or ""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if module.startswith("sqlalchemy"):
        cause = first.split(") ", 1)[-1] if first.startswith("(") else first
        return (
            f"the MLflow tracking store is not a usable database ({cause}): check --tracking-uri "
            "or $MLFLOW_TRACKING_URI"
        )
    if module.startswith("mlflow"):
        return f"MLflow: {first[:300]}: check --tracking-uri, $MLFLOW_TRACKING_URI and the model reference"
    return None


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so ``with`` blocks run: temporary folders (``/tmp/cosmos-*``)
    and half-written temporary files are removed, as on Ctrl-C."""


# Verbs that handle SIGTERM themselves: serve (graceful shutdown) and run (its task processes; cosmos.process_guard).
_OWN_SIGTERM = ("serve", "run")


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    previous = None
    if args.command not in _OWN_SIGTERM and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        rc = args.func(args)
        return int(rc or 0)
    except Terminated:
        print("cosmos: terminated (SIGTERM); temporary files removed", file=sys.stderr)
        return 143
    except CosmosError as exc:
        if args.debug:
            raise
        print(f"cosmos: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cosmos: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a path problem (symlink loop, dangling link, file where a folder goes): one line
        if args.debug:
            raise
        from cosmos.errors import describe_os_error

        print(f"cosmos: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        if args.debug:
            raise
        print(
            "cosmos: error: out of memory: the input is larger than this machine can hold "
            "(see docs/bad-input.md for the size caps)",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:  # last resort: still one line, with a hint
        if args.debug:
            raise
        known = _library_error(exc)
        if known is not None:
            print(f"cosmos: error: {known}", file=sys.stderr)
            return 2
        logging.getLogger("cosmos").debug("unexpected error", exc_info=True)
        print(
            f"cosmos: unexpected error: {type(exc).__name__}: {one_line(str(exc))} "
            "(re-run with --debug for a traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
