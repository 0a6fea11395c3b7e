"""``cosmos config``: print the resolved configuration (profile + file + overrides) as YAML."""

from __future__ import annotations

from cosmos.cli.args import add_config_args, config_from_args


def register(sub) -> None:
    p = sub.add_parser("config", help="print the resolved configuration as YAML")
    add_config_args(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    print(config_from_args(args).to_yaml(), end="")
    return 0
