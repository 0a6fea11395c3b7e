"""Walk the CLI with bad values: no "unexpected error" and no traceback, whatever a user types.

Every verb that ``cosmos --help`` lists is run in-process (``cosmos.cli.main``) once per option and
bad value: empty strings, ``nan``, ``inf``, ``-1``, a path that does not exist, a folder where a file
goes, ``/dev/zero``, a non-UTF-8 file, a text file where a database or NIfTI goes. Every other
argument is one that fails early (a missing input folder, a missing model), so no case trains,
downloads or serves anything. A case passes when the command ends with an exit code (argparse's
usage error counts) and its output holds neither "unexpected error" nor "Traceback"; a bad value
that is accepted where it is harmless (``--seed -1``) passes too, as long as nothing crashes.
The test also fails when a verb is added to the CLI without an entry in :data:`WALK`.
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from cosmos.cli import build_parser, main
from cosmos.data import nifti

BAD_TEXT = ["", "nan", "inf", "-1"]


class _TooSlow(BaseException):
    """A case ran past its time limit: a bad value was not refused early."""


def _paths(tmp: Path) -> dict[str, Path]:
    """The bad files and folders every case may use, made once per test."""
    (tmp / "a_folder").mkdir(exist_ok=True)
    (tmp / "non_utf8.yaml").write_bytes(b"\xff\xfe\x80 profile: [\x81\x82\n")
    (tmp / "notes.txt").write_text("not a database, not a NIfTI\n")
    return {
        "missing": tmp / "does" / "not" / "exist",
        "folder": tmp / "a_folder",
        "devzero": Path("/dev/zero"),
        "binary": tmp / "non_utf8.yaml",
        "text": tmp / "notes.txt",
    }


def bad_values(tmp: Path) -> list[str]:
    return [*BAD_TEXT, *(str(p) for p in _paths(tmp).values())]


def _scan(tmp: Path) -> Path:
    """A small valid hrT2-like scan (air, a grey head, bright fluid), so predict reaches its model step."""
    path = tmp / "scans" / "patient.nii.gz"
    if not path.exists():
        rng = np.random.default_rng(0)
        data = np.abs(rng.normal(0, 3, (24, 24, 12))).astype(np.float32)  # air
        data[2:22, 2:22, 1:11] = 100 + rng.normal(0, 5, (20, 20, 10))  # the head
        data[8:16, 8:16, 4:8] = 600.0  # fluid brighter than 3x the median
        nifti.save(path, data, affine=np.diag([0.5, 0.5, 1.0, 1.0]))
    return path


def _cet1_folder(tmp: Path) -> Path:
    """A flat folder with one ceT1 case and its label: translator convert reaches its model step."""
    folder = tmp / "cet1"
    if not folder.exists():
        rng = np.random.default_rng(1)
        data = (rng.random((16, 16, 8)) * 100).astype(np.float32)
        lab = np.zeros((16, 16, 8), np.uint8)
        lab[4:8, 4:8, 2:5] = 1
        nifti.save(folder / "crossmoda_1_ceT1.nii.gz", data, affine=np.diag([0.6, 0.6, 1.5, 1.0]))
        nifti.save(folder / "crossmoda_1_Label.nii.gz", lab, affine=np.diag([0.6, 0.6, 1.5, 1.0]), label=True)
    return folder


# verb -> (base argv builder, options walked). The base fails early (or does tiny work); each walked option
# is replaced (or added) with every bad value in turn.
Base = Callable[[Path], list[str]]
CONFIG = ["--profile", "--config", "--set"]
WALK: dict[str, tuple[Base, list[str]]] = {
    "phantom": (
        lambda t: [str(t / "ph"), "--n-source", "1", "--n-target", "1", "--n-val", "0", "--no-preview"],
        ["OUT", "--n-source", "--n-target", "--n-val", "--seed", *CONFIG],
    ),
    "validate": (lambda t: [str(t / "a_folder")], ["DATA", "--val-labels"]),
    "evaluate": (lambda t: [str(t / "a_folder"), str(t / "a_folder")], ["PRED", "LABELS", "--json"]),
    "translator train": (
        lambda t: ["--data", str(t / "no_data"), "--out", str(t / "tt")],
        ["--data", "--out", "--tracking-uri", *CONFIG],
    ),
    "translator convert": (
        lambda t: ["--model", str(t / "no_model"), "--input", str(_cet1_folder(t)), "--out", str(t / "conv")],
        ["--model", "--input", "--out", "--tracking-uri", *CONFIG],
    ),
    "selftrain": (
        lambda t: ["--pseudo", str(t / "no_pseudo"), "--target", str(t / "no_target"), "--out", str(t / "st")],
        ["--pseudo", "--target", "--out", "--val", "--val-labels", "--rounds", "--folds", "--tracking-uri"],
    ),
    "predict": (
        lambda t: [str(_scan(t)), "--model", str(t / "no_model"), "-o", str(t / "pred")],
        ["INPUTS", "--model", "-o", "--tracking-uri", "--growth-threshold", "--prior", *CONFIG],
    ),
    "compare": (lambda t: [str(t / "no_prior"), str(t / "no_current")], ["PRIOR", "CURRENT", "--growth-threshold"]),
    # serve: parse-level flags only (a serve that parses starts its HTTP server and loads the model in the
    # background; its bad requests are tests/test_serving.py's)
    "serve": (lambda t: ["--model", str(t / "no_model")], ["--port", "--max-mb", "--max-concurrent"]),
    "run": (lambda t: ["--data", str(t / "no_data"), "--out", str(t / "run")], ["--data", "--val-labels", *CONFIG]),
    "compile": (
        lambda t: ["-o", str(t / "pkg.yaml"), "--rounds", "0"],
        ["--image", "--folds", "--parallelism", "--shm-size", "--fold-retries", "--gpu-limit", "--secret"],
    ),
    "submit": (lambda t: ["--host", ""], ["--host", "--rounds"]),
    "retry": (lambda t: ["r-1", "--host", ""], ["RUN_ID", "--host"]),
    "benchmark": (
        lambda t: ["--data", str(t / "no_data"), "--out", str(t / "bench")],
        ["--data", "--rows", "--seeds", "--out"],
    ),
    "config": (lambda t: [], CONFIG),
}
# Positional names (upper case above) -> their index in the base argv.
POSITIONAL = {"OUT": 0, "DATA": 0, "PRED": 0, "LABELS": 1, "INPUTS": 0, "PRIOR": 0, "CURRENT": 1, "RUN_ID": 0}
# Options walked with fewer values: where an accepted value does real work (``submit --host`` contacts the host), or
# to keep the walk short. (an empty folder as --data starts the pipeline, whose ingest stage refuses it: slow, and
# covered by the catalogue; a blank --data is refused when parsing)
NOT_A_DATASET = ["", "missing", "devzero", "binary", "text"]
ONLY: dict[tuple[str, str], list[str]] = {
    ("run", "--data"): NOT_A_DATASET,
    ("benchmark", "--data"): NOT_A_DATASET,
    ("submit", "--host"): [""],
    **{("compile", o): BAD_TEXT for o in WALK["compile"][1]},
    **{("serve", o): [*BAD_TEXT, "folder"] for o in WALK["serve"][1]},
}


def _verbs() -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    names: set[str] = set()
    for name, sp in sub.choices.items():
        nested = [a for a in sp._actions if isinstance(a, argparse._SubParsersAction)]
        names |= {f"{name} {n}" for n in nested[0].choices} if nested else {name}
    return names


def test_every_verb_is_walked():
    assert _verbs() <= set(WALK), f"verbs without bad-value cases: {sorted(_verbs() - set(WALK))}"


def _argv(verb: str, base: list[str], option: str, value: str) -> list[str]:
    argv = list(base)
    if option in POSITIONAL:
        argv[POSITIONAL[option]] = value
    elif option in argv:
        argv[argv.index(option) + 1] = value
    else:
        argv += [option, value]
    if verb == "predict" and option == "--tracking-uri":  # reach the registry with the bad URI
        argv[argv.index("--model") + 1] = "models:/cosmos-segmenter@champion"
    return [*verb.split(), *argv]


def _run(argv: list[str], capsys, limit: int = 60) -> tuple[int | str, str]:
    def too_slow(signum, frame):
        raise _TooSlow()

    old = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(limit)
    try:
        rc: int | str = main(argv)
    except SystemExit as exc:  # argparse's usage error: one usage line and one error line
        rc = exc.code if isinstance(exc.code, int) else str(exc.code)
    except _TooSlow:
        rc = "timeout"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    out, err = capsys.readouterr()
    return rc, out + err


@pytest.mark.parametrize("verb", sorted(WALK))
def test_bad_values_never_crash(verb, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a bad value taken as a relative path lands here
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("COSMOS_LOG_LEVEL", "WARNING")
    build, options = WALK[verb]
    values = bad_values(tmp_path)
    if verb == "predict":
        values.append(f"sqlite:///{_paths(tmp_path)['text']}")  # a tracking URI that is not a database
    named = {k: str(v) for k, v in _paths(tmp_path).items()}
    failures = []
    for option in options:
        for value in [named.get(v, v) for v in ONLY.get((verb, option), values)]:
            argv = _argv(verb, build(tmp_path), option, value)
            rc, text = _run(argv, capsys)
            if rc == "timeout" or "unexpected error" in text or "Traceback" in text or rc == 0 and "error" in text:
                failures.append(f"cosmos {' '.join(argv)} -> {rc}: {text.strip()[-400:]}")
    assert not failures, "\n".join(failures)
