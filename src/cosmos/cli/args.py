"""The options and argparse types every verb module shares (``--profile``/``--config``/``--set``, numbers, ports).

Why a module of its own: the verb modules need these helpers and :mod:`cosmos.cli` needs the verb
modules (to build the parser). Kept here, below both, the import graph has no circle; ``cosmos.cli``
re-exports every name, so ``from cosmos.cli import add_config_args`` keeps working.
"""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cosmos.config import CosmosConfig


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


def config_from_args(args: argparse.Namespace) -> CosmosConfig:
    """The configuration ``--profile``, ``--config`` and ``--set`` describe (imported late: a verb's
    ``--help`` does not need the config machinery)."""
    from cosmos.config import load_config

    return load_config(args.profile, args.config, args.overrides)
