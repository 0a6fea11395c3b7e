"""``cosmos`` command line: one module per verb group, each with ``register(subparsers)``.

Every user-facing error (``CosmosError``) becomes one clear line on stderr and a non-zero exit;
tracebacks are shown only with ``--debug``.
"""

from __future__ import annotations

import argparse
import logging
import sys

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
        serve_cmd,
        pipeline_cmds,
        benchmark_cmd,
        config_cmd,
    ):
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
        return int(rc or 0)
    except CosmosError as exc:
        if args.debug:
            raise
        print(f"cosmos: error: {exc}", file=sys.stderr)
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
    except Exception as exc:  # last resort: still one line, with a hint
        if args.debug:
            raise
        logging.getLogger("cosmos").debug("unexpected error", exc_info=True)
        print(
            f"cosmos: unexpected error: {type(exc).__name__}: {exc} (re-run with --debug for a traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
