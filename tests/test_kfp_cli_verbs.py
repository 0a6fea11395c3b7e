"""The docs' ``kfp`` commands (README.md, docs/*.md) exist in the installed kfp CLI, with these exact options.

Offline: each command line is parsed by kfp's own click command tree (``kfp.cli.cli.cli``) with
``make_context``, which checks subcommands, option names and required options but invokes
nothing, so no KFP server is contacted. That the server then accepts the run is NOT tested here.
"""

from __future__ import annotations

import re
import shlex
import warnings
from pathlib import Path

import click
import pytest

REPO = Path(__file__).resolve().parents[1]


def _readme_kfp_commands() -> list[list[str]]:
    """Every ``kfp ...`` line inside a fenced code block of the README or a page under docs/."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    blocks = [b for page in pages for b in re.findall(r"```(?:bash|sh)?\n(.*?)```", page.read_text(), re.S)]
    commands = []
    for block in blocks:
        for line in block.splitlines():
            line = line.strip()
            if line.startswith("kfp "):
                commands.append(shlex.split(line))
    return commands


def _rest(ctx: click.Context) -> list[str]:
    """The tokens a group left for its subcommand (click < 9 keeps the first in protected_args)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return list(ctx.protected_args) + list(ctx.args)


def _parse(argv: list[str]) -> tuple[list[str], click.Context]:
    """Resolve ``kfp GROUP COMMAND ...`` down to the leaf command; return its path and context."""
    from kfp.cli.cli import cli

    assert argv[0] == "kfp"
    ctx = cli.make_context("kfp", argv[1:], resilient_parsing=False)
    path, command, args = [], cli, _rest(ctx)
    while isinstance(command, click.Group):
        name, args = args[0], args[1:]
        sub = command.get_command(ctx, name)
        assert sub is not None, f"kfp has no command {' '.join(path + [name])}"
        path.append(sub.name)
        ctx = sub.make_context(name, list(args), parent=ctx)
        command = sub
        args = _rest(ctx) if isinstance(sub, click.Group) else []
    return path, ctx


@pytest.fixture(autouse=True)
def _package_file(tmp_path, monkeypatch):
    """``pipeline create(-version)`` require the package file to exist: an empty one in the cwd."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cosmos-pipeline.yaml").write_text("")


def test_the_readme_shows_each_kfp_verb_once_at_least():
    verbs = {
        tuple(_parse(argv)[0]) + (argv[argv.index("run") + 1] if "run" in argv else "",)
        for argv in _readme_kfp_commands()
    }
    assert ("pipeline", "create", "") in verbs
    assert ("pipeline", "create-version", "") in verbs
    assert ("run", "create", "create") in verbs
    assert ("run", "create", "submit") in verbs  # submit resolves to create: the deprecated alias


@pytest.mark.parametrize("argv", _readme_kfp_commands(), ids=lambda a: " ".join(a[3:5]))
def test_each_readme_kfp_command_parses_with_kfps_own_cli(argv, capsys):
    path, ctx = _parse(argv)
    assert ctx.parent.parent.params["endpoint"] == "URL"  # kfp --endpoint URL ...
    if path[0] == "run":
        assert ctx.params["experiment_name"] == "cosmos"
        assert ctx.params["pipeline_name"] == "cosmos-pipeline"
        # kfp run create rejects positional arguments that are not key=value (at run time)
        assert ctx.params["args"] and all("=" in a for a in ctx.params["args"])
    if path == ["pipeline", "create-version"]:
        assert ctx.params["pipeline_name"] == "cosmos-pipeline" and ctx.params["pipeline_version"]


def test_run_submit_is_a_deprecated_alias_of_run_create(capsys):
    from kfp.cli.cli import cli

    ctx = click.Context(cli)
    run = cli.get_command(ctx, "run")
    rctx = click.Context(run, parent=ctx)
    assert "submit" not in run.list_commands(rctx)  # not a command of its own ...
    assert run.get_command(rctx, "submit") is run.get_command(rctx, "create")  # ... but create under another name
    assert "'submit' is deprecated, use 'create' instead" in capsys.readouterr().err


def test_the_design_cards_bare_form_is_not_a_valid_kfp_command():
    """``kfp run submit cosmos-pipeline`` lacks the required -e; the README explains the real form."""
    with pytest.raises(click.UsageError):
        _parse(["kfp", "--endpoint", "URL", "run", "submit", "cosmos-pipeline"])
