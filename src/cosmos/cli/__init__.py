"""``cosmos`` command line: one module per verb group, each with ``register(subparsers)``.

Every user-facing error (``CosmosError``) becomes one clear line on stderr and a non-zero exit;
tracebacks are shown only with ``--debug``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

# The shared options and argparse types, re-exported for callers (``from cosmos.cli import add_config_args``);
# the verb modules import them from cosmos.cli.args, which is why this package can import the verb modules.
from cosmos.cli.args import add_config_args as add_config_args
from cosmos.cli.args import config_from_args as config_from_args
from cosmos.cli.args import data_location as data_location
from cosmos.cli.args import port_number as port_number
from cosmos.cli.args import positive_float as positive_float
from cosmos.cli.args import positive_int as positive_int
from cosmos.errors import CosmosError
from cosmos.logs import setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cosmos", description="COSMOS cross-modality domain adaptation (ceT1 -> hrT2)"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Imported here, not at the top: importing cosmos.cli (for main or one helper) does not load every verb's dependencies.
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
