"""Run the whole bad-input catalogue (docs/bad-input.md) against the CLI and print "N kinds, N handled".

Each kind builds its own small bad input (a copy of a 1+1+1-case phantom, a NIfTI with an edited
header, a fake S3 bucket on an in-process moto server, ...) and runs the ``cosmos`` command line on it:
``cosmos.cli.main`` in this process by default (a few seconds per kind), or the installed ``cosmos``
executable with ``--subprocess`` (slower: one interpreter start per call). A kind is *handled* when:

* the exit code is not 0, or, for a kind documented as a warning or as accepted, it is 0 with the
  documented warning;
* the output holds the documented phrase (the user's path or the problem's words);
* no traceback and no ``unexpected error`` anywhere; at most one ``cosmos: error:`` line;
* the sha256 of every input file is unchanged.

Five kinds are not re-run here because they need a finished or killed pipeline (24, 32, 33), an S3
server that lists a forged key (25) or a signal during a command (59); each is covered by its own test
(listed in the output). Usage:
``python benchmarks/bad_input_catalogue.py [--subprocess] [--only 40 41] [--keep DIR]`` (about two
minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np

from cosmos.data import nifti
from cosmos.data.phantom import make_phantom

AFFINE = np.diag([0.475, 0.475, 1.0, 1.0])


@dataclass
class Case:
    """One invocation: argv, extra environment, the inputs whose sha256 must not change, what to expect."""

    argv: list[str]
    expect: str  # regex the combined output must match
    inputs: list[Path] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    ok_exit: bool = False  # a warning or an accepted input: exit 0 expected


@dataclass
class Kind:
    number: int
    title: str
    build: Callable[[Path], list[Case]]


# ------------------------------------------------------------------------------ building blocks
class World:
    """The shared raw material: one tiny phantom dataset, copied per kind."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.base = make_phantom(work / "base", n_source=1, n_target=1, n_val=1, preview=False)

    def dataset(self, tmp: Path) -> Path:
        root = tmp / "data"
        shutil.copytree(self.base, root)
        (root / "phantom.json").unlink(missing_ok=True)
        return root

    def hrt2(self) -> Path:
        return self.base / "target_validation" / "crossmoda_3_hrT2.nii.gz"

    def cet1(self) -> Path:
        return self.base / "source_training" / "crossmoda_1_ceT1.nii.gz"

    def label(self) -> Path:
        return self.base / "source_training" / "crossmoda_1_Label.nii.gz"


def _image(path: Path, data: np.ndarray | None = None, edit: Callable | None = None, dtype=None) -> Path:
    """A NIfTI written with nibabel as a user's tool would (header edits applied raw)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is None:
        rng = np.random.default_rng(0)
        data = np.abs(rng.normal(0, 3, (20, 18, 10))).astype(np.float32)
        data[2:18, 2:16, 1:9] = 100 + rng.normal(0, 5, (16, 14, 8))
        data[6:12, 6:12, 3:7] = 600
    img = nib.Nifti1Image(data if dtype is None else data.astype(dtype), AFFINE)
    if edit is not None:
        edit(img)
    nib.save(img, str(path))
    return path


def _predict(scan: Path, tmp: Path, *extra: str) -> list[str]:
    return ["predict", str(scan), "-o", str(tmp / "pred_out"), "--model", "models:/cosmos-segmenter@champion", *extra]


def _replace_validation_image(world: World, tmp: Path, make: Callable[[Path], object]) -> tuple[Path, Path]:
    root = world.dataset(tmp)
    target = root / "target_validation" / "crossmoda_3_hrT2.nii.gz"
    target.unlink()
    make(target)
    return root, target


def _validate(root: Path, expect: str, **kw) -> Case:
    return Case(["validate", str(root)], expect, [root], **kw)


# ------------------------------------------------------------------------------ the kinds
def kinds(world: World) -> list[Kind]:  # noqa: C901 - one table, one entry per documented kind
    K: list[Kind] = []

    def kind(number: int, title: str):
        def register(fn: Callable[[Path], list[Case]]):
            K.append(Kind(number, title, fn))
            return fn

        return register

    @kind(1, "data root missing, not a folder, symlink loop")
    def _(t):
        (t / "file").write_text("x")
        (t / "loop").symlink_to(t / "loop")
        return [
            Case(["validate", str(t / "missing")], r"missing: does not exist|missing"),
            Case(["validate", str(t / "file")], r"file: .*not a (directory|folder)"),
            Case(["validate", str(t / "loop")], r"loop: .*symlink loop"),
        ]

    @kind(2, "a required domain folder missing or empty")
    def _(t):
        root = world.dataset(t)
        shutil.rmtree(root / "target_training")
        return [_validate(root, r"target_training")]

    @kind(3, "a sub-folder inside a domain folder")
    def _(t):
        root = world.dataset(t)
        (root / "source_training" / "extra").mkdir()
        return [_validate(root, r"extra: unexpected sub-folder")]

    @kind(4, "a file name outside the crossMoDA naming")
    def _(t):
        root = world.dataset(t)
        shutil.copy(world.cet1(), root / "source_training" / "patient_ceT1.nii.gz")
        return [_validate(root, r"patient_ceT1\.nii\.gz")]

    @kind(5, "a modality in the wrong folder")
    def _(t):
        root = world.dataset(t)
        shutil.copy(world.hrt2(), root / "source_training" / "crossmoda_9_hrT2.nii.gz")
        return [_validate(root, r"crossmoda_9_hrT2\.nii\.gz")]

    @kind(6, "a label in the unannotated target_training")
    def _(t):
        root = world.dataset(t)
        shutil.copy(world.label(), root / "target_training" / "crossmoda_2_Label.nii.gz")
        return [_validate(root, r"target_validation_labels")]

    @kind(7, "the same case id twice")
    def _(t):
        root = world.dataset(t)
        img = nib.load(str(root / "source_training" / "crossmoda_1_ceT1.nii.gz"))
        nib.save(img, str(root / "source_training" / "crossmoda_1_ceT1.nii"))
        return [_validate(root, r"duplicate case id")]

    @kind(8, "an image without its label")
    def _(t):
        root = world.dataset(t)
        (root / "source_training" / "crossmoda_1_Label.nii.gz").unlink()
        return [_validate(root, r"crossmoda_1")]

    @kind(9, "validation labels in two places")
    def _(t):
        root = world.dataset(t)
        shutil.copy(
            root / "target_validation_labels" / "crossmoda_3_Label.nii.gz",
            root / "target_validation" / "crossmoda_3_Label.nii.gz",
        )
        return [_validate(root, r"one place|both")]

    @kind(10, "a dangling symlink")
    def _(t):
        root = world.dataset(t)
        (root / "target_training" / "crossmoda_9_hrT2.nii.gz").symlink_to(t / "gone.nii.gz")
        return [_validate(root, r"dangling symlink")]

    @kind(11, "a corrupt gzip stream (one flipped bit)")
    def _(t):
        def flip(p: Path) -> None:
            raw = bytearray(world.hrt2().read_bytes())
            raw[len(raw) // 2] ^= 0x10
            p.write_bytes(bytes(raw))

        root, target = _replace_validation_image(world, t, flip)
        return [_validate(root, r"corrupt"), Case(_predict(target, t), r"corrupt", [root])]

    @kind(12, "a truncated file")
    def _(t):
        root, target = _replace_validation_image(
            world, t, lambda p: p.write_bytes(world.hrt2().read_bytes()[: world.hrt2().stat().st_size // 2])
        )
        return [_validate(root, r"truncated|corrupt"), Case(_predict(target, t), r"truncated|corrupt", [root])]

    @kind(13, "not a NIfTI at all")
    def _(t):
        root, target = _replace_validation_image(world, t, lambda p: p.write_bytes(gzip.compress(b"hello" * 100)))
        (t / "empty.nii.gz").write_bytes(b"")
        return [
            _validate(root, r"not a NIfTI|truncated"),
            Case(_predict(t / "empty.nii.gz", t), r"empty file", [t / "empty.nii.gz"]),
        ]

    @kind(14, "a header claiming more voxels than the file holds")
    def _(t):
        def forged(p: Path) -> None:
            hdr = nib.Nifti1Header()
            hdr.set_data_shape((1200, 1200, 1200))
            hdr.set_data_dtype(np.float32)
            p.write_bytes(gzip.compress(hdr.binaryblock + b"\x00" * 4 + b"\x00" * 4000))

        scan = t / "forged.nii.gz"
        forged(scan)
        return [Case(_predict(scan, t), r"forged|impossible|limit", [scan])]

    @kind(15, "a scan larger than COSMOS_MAX_NIFTI_BYTES")
    def _(t):
        scan = _image(t / "scan.nii.gz")
        return [Case(_predict(scan, t), r"COSMOS_MAX_NIFTI_BYTES", [scan], env={"COSMOS_MAX_NIFTI_BYTES": "1000"})]

    @kind(16, "2D or 4D data")
    def _(t):
        s2 = t / "flat.nii.gz"
        nib.save(nib.Nifti1Image(np.ones((10, 10), np.float32), np.eye(4)), str(s2))
        s4 = t / "series.nii.gz"
        nib.save(nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 4, 3)).astype(np.float32), np.eye(4)), str(s4))
        return [Case(_predict(s2, t), r"expected a 3D volume", [s2]), Case(_predict(s4, t), r"expected a 3D", [s4])]

    @kind(17, "NaN or Inf voxels")
    def _(t):
        data = np.random.default_rng(0).random((12, 10, 6)).astype(np.float32)
        data[0, 0, 0] = np.nan
        scan = _image(t / "scan.nii.gz", data)
        return [Case(_predict(scan, t), r"NaN or inf", [scan])]

    @kind(18, "a NaN or singular affine")
    def _(t):
        hdr = nib.Nifti1Image(np.ones((8, 8, 4), np.float32), AFFINE).header
        hdr["srow_x"][:] = np.nan  # the header as a broken tool writes it
        scan = t / "scan.nii.gz"
        rng = np.random.default_rng(0)
        nib.save(nib.Nifti1Image(rng.random((8, 8, 4)).astype(np.float32), None, hdr), str(scan))
        return [Case(_predict(scan, t), r"NaN or inf|singular", [scan])]

    @kind(19, "an all-constant image")
    def _(t):
        scan = _image(t / "scan.nii.gz", np.zeros((10, 10, 6), np.float32))
        return [Case(_predict(scan, t), r"image is constant", [scan])]

    @kind(20, "label values outside {0, 1, 2}")
    def _(t):
        root = world.dataset(t)
        lab = root / "source_training" / "crossmoda_1_Label.nii.gz"
        vol = nifti.load(lab, label=True)
        data = vol.data.copy()
        data[0, 0, 0] = 7
        nib.save(nib.Nifti1Image(data, vol.affine, vol.header), str(lab))
        return [_validate(root, r"7")]

    @kind(21, "a label on another grid than its image")
    def _(t):
        root = world.dataset(t)
        lab = root / "source_training" / "crossmoda_1_Label.nii.gz"
        vol = nifti.load(lab, label=True)
        nib.save(nib.Nifti1Image(vol.data[:-1], vol.affine), str(lab))
        return [_validate(root, r"grid differs|shape")]

    @kind(22, "a source label with no foreground (warning)")
    def _(t):
        root = world.dataset(t)
        lab = root / "source_training" / "crossmoda_1_Label.nii.gz"
        vol = nifti.load(lab, label=True)
        nifti.save(lab, np.zeros_like(vol.data), like=vol, label=True)
        return [_validate(root, r"warning: .*no foreground", ok_exit=True)]

    @kind(23, "uncompressed .nii files (accepted)")
    def _(t):
        root = world.dataset(t)
        src = root / "target_training" / "crossmoda_2_hrT2.nii.gz"
        nib.save(nib.load(str(src)), str(root / "target_training" / "crossmoda_2_hrT2.nii"))
        src.unlink()
        return [_validate(root, r": OK", ok_exit=True)]

    @kind(25, "an S3 key with '..'")
    def _(t):
        return []  # needs an S3 listing with a forged key (tests/test_data_storage.py)

    @kind(26, "an S3 URI with no bucket, an empty prefix, no endpoint answering")
    def _(t):
        env = {"AWS_ENDPOINT_URL": _moto(), "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
        return [
            Case(["validate", "s3://"], r"bucket", env=env),
            Case(["validate", "s3://cosmos-empty/none"], r"s3://cosmos-empty/none", env=env),
        ]

    @kind(27, "an S3 endpoint that accepts connections and never answers")
    def _(t):
        port = _silent_server()
        env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
            "COSMOS_S3_READ_TIMEOUT": "1",
            "COSMOS_S3_CONNECT_TIMEOUT": "1",
            "COSMOS_S3_MAX_ATTEMPTS": "2",
        }
        return [Case(["validate", "s3://bucket/data"], r"timeout|timed out", env=env)]

    @kind(28, "transient S3 errors (5xx)")
    def _(t):
        port = _failing_server()
        env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
            "COSMOS_S3_MAX_ATTEMPTS": "2",
        }
        return [Case(["validate", "s3://bucket/data"], r"s3://bucket/data", env=env)]

    @kind(29, "a credential inside a URI")
    def _(t):
        return [Case(["config", "--set", "tracking.tracking_uri=http://user:secretpw@host"], r"Secret|credential")]

    @kind(30, "an output path that is an existing file")
    def _(t):
        scan = _image(t / "in" / "scan.nii.gz")
        (t / "out.txt").write_text("mine")
        return [Case(["predict", str(scan), "-o", str(t / "out.txt"), "--model", "x"], r"out\.txt: is a file", [t])]

    @kind(31, "a bad stage input during cosmos run")
    def _(t):
        root = world.dataset(t)
        (root / "target_training" / "crossmoda_2_hrT2.nii.gz").write_bytes(b"not a nifti")
        return [Case(["run", "--data", str(root), "--out", str(t / "run")], r"crossmoda_2_hrT2\.nii\.gz", [root])]

    @kind(34, "a ceT1, pseudo-hrT2 or label file given to predict")
    def _(t):
        return [Case(_predict(world.cet1(), t), r"wrong modality", [world.cet1()])]

    @kind(35, "a missing prediction in evaluate (exit 1)")
    def _(t):
        gt = t / "gt"
        shutil.copy(world.label(), gt.mkdir() or gt / "crossmoda_1_Label.nii.gz")
        (t / "pred").mkdir()
        return [Case(["evaluate", str(t / "pred"), str(gt)], r"crossmoda_1", [gt])]

    @kind(36, "predict DIR -o DIR")
    def _(t):
        d = t / "d"
        shutil.copy(world.hrt2(), d.mkdir() or d / "crossmoda_3_hrT2.nii.gz")
        shutil.copy(world.label(), d / "crossmoda_3_Label.nii.gz")
        return [Case(["predict", str(d), "-o", str(d), "--model", "x"], r"is the input folder", [d])]

    @kind(37, "a file in -o named like a prediction that predict did not write")
    def _(t):
        scan = _image(t / "in" / "scan.nii.gz")
        (t / "out").mkdir()
        (t / "out" / "scan_seg.nii.gz").write_bytes(b"mine")
        return [
            Case(["predict", str(scan), "-o", str(t / "out"), "--model", "x"], r"not written by cosmos predict", [t])
        ]

    @kind(38, "evaluate --json onto a prediction")
    def _(t):
        pred = t / "pred"
        shutil.copy(world.label(), pred.mkdir() or pred / "crossmoda_1_Label.nii.gz")
        gt = t / "gt"
        shutil.copy(world.label(), gt.mkdir() or gt / "crossmoda_1_Label.nii.gz")
        argv = ["evaluate", "--json", str(pred / "crossmoda_1_Label.nii.gz"), str(pred), str(gt)]
        return [Case(argv, r"NIfTI suffix|inside the prediction folder", [pred, gt])]

    @kind(39, "compile --image ''")
    def _(t):
        return [Case(["compile", "--image", "", "-o", str(t / "p.yaml")], r"not a container image")]

    def geometry(number: int, title: str, edit: Callable, expect: str) -> None:
        @kind(number, title)
        def _(t):
            root, target = _replace_validation_image(world, t, lambda p: _image(p, edit=edit))
            return [_validate(root, expect), Case(_predict(target, t), expect, [root])]

    def pixdim(values):
        def edit(img):
            img.header["pixdim"][1:4] = values

        return edit

    def big(img):
        a = np.diag([50.0, 50.0, 50.0, 1.0])
        img.set_sform(a, 1)
        img.set_qform(a, 1)

    def sheared(img):
        a = AFFINE.copy()
        a[0, 1] = 0.3
        img.set_sform(a, 1)
        img.header["pixdim"][1:4] = np.linalg.norm(a[:3, :3], axis=0)

    geometry(
        40, "pixdim disagreeing with the sform (5 mm vs 0.475 mm)", pixdim([5.0, 5.0, 5.0]), r"voxel size disagrees"
    )
    geometry(41, "a zero pixdim beside a valid sform", pixdim([0.0, 0.0, 0.0]), r"pixdim gives a voxel size of 0")
    geometry(42, "50 mm voxels", big, r"outside the plausible MRI range")
    geometry(43, "a sheared sform", sheared, r"not orthogonal")

    @kind(44, "evaluate: label values outside {0, 1, 2}")
    def _(t):
        vol = nifti.load(world.label(), label=True)
        pred, gt = t / "pred", t / "gt"
        data = vol.data.copy()
        data[data == 1] = 3
        nifti.save(pred / "crossmoda_1_Label.nii.gz", data, like=vol, label=True)
        shutil.copy(world.label(), gt.mkdir() or gt / "crossmoda_1_Label.nii.gz")
        return [Case(["evaluate", str(pred), str(gt)], r"outside \{0, 1, 2\}", [pred, gt])]

    @kind(45, "a complex-valued image")
    def _(t):
        scan = _image(t / "scan.nii.gz", np.ones((8, 8, 4), np.complex64) * (1 + 2j))
        return [Case(_predict(scan, t), r"complex", [scan])]

    @kind(46, "an RGB24 image")
    def _(t):
        rgb = np.zeros((8, 8, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
        scan = t / "rgb.nii.gz"
        nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(scan))
        return [Case(_predict(scan, t), r"RGB|non-scalar", [scan])]

    @kind(47, "--config /dev/zero")
    def _(t):
        return [Case(["config", "--config", "/dev/zero"], r"not a regular file")]

    @kind(48, "config values: nan, out of range, wrong shape")
    def _(t):
        return [
            Case(["config", "--set", "translator.lr=nan"], r"translator\.lr"),
            Case(["config", "--set", "segmentation.tile_step_size=0"], r"tile_step_size"),
            Case(["config", "--set", "segmentation.patch_size=[1,2]"], r"patch_size"),
            Case(["config", "--set", "roi.margin_mm=-50"], r"margin_mm"),
        ]

    @kind(49, "translator convert --out into the input folder, or over files it did not write")
    def _(t):
        src = t / "cet1"
        src.mkdir()
        shutil.copy(world.cet1(), src / "crossmoda_1_ceT1.nii.gz")
        shutil.copy(world.label(), src / "crossmoda_1_Label.nii.gz")
        (t / "out").mkdir()
        (t / "out" / "crossmoda_1_Label.nii.gz").write_bytes(b"mine")
        base = ["translator", "convert", "--model", str(t / "m"), "--input", str(src)]
        return [
            Case([*base, "--out", str(src)], r"input", [src]),
            Case([*base, "--out", str(t / "out")], r"not written by cosmos translator convert", [src, t / "out"]),
        ]

    @kind(50, "phantom into a folder holding files it did not write")
    def _(t):
        f = t / "ph" / "source_training" / "crossmoda_1_ceT1.nii.gz"
        f.parent.mkdir(parents=True)
        f.write_bytes(b"mine")
        return [
            Case(
                ["phantom", str(t / "ph"), "--n-source", "1", "--n-target", "1"],
                r"not written by cosmos phantom",
                [t / "ph"],
            )
        ]

    @kind(51, "a failed write (a read-only output folder standing in for a full disk)")
    def _(t):
        pred, gt = t / "pred", t / "gt"
        shutil.copy(world.label(), pred.mkdir() or pred / "crossmoda_1_Label.nii.gz")
        shutil.copy(world.label(), gt.mkdir() or gt / "crossmoda_1_Label.nii.gz")
        ro = t / "ro"
        ro.mkdir()
        (ro / "placeholder").write_text("")
        ro.chmod(0o555)
        cases = [
            Case(
                ["evaluate", str(pred), str(gt), "--json", str(ro / "r.json")],
                r"r\.json: cannot write it",
                [pred, gt, ro],
            )
        ]
        if os.geteuid() == 0:  # root ignores permissions: simulate with a file in place of the folder
            ro.chmod(0o755)
            cases = [
                Case(
                    ["evaluate", str(pred), str(gt), "--json", str(t / "placeholder.d" / "r.json")],
                    r"r\.json",
                    [pred, gt],
                )
            ]
            (t / "placeholder.d").write_text("a file where the folder goes")
        return cases

    @kind(52, "a scan needing more memory than COSMOS_MAX_WORK_BYTES (from the header)")
    def _(t):
        scan = _image(t / "scan.nii.gz")
        return [Case(_predict(scan, t), r"COSMOS_MAX_WORK_BYTES", [scan], env={"COSMOS_MAX_WORK_BYTES": "10000"})]

    @kind(53, "a label map renamed as a scan")
    def _(t):
        scan = t / "patientA.nii.gz"
        shutil.copy(world.label(), scan)
        return [Case(_predict(scan, t), r"looks like a label map", [scan])]

    @kind(54, "a ceT1 renamed as a plain scan (warning)")
    def _(t):
        scan = t / "patientA.nii.gz"
        shutil.copy(world.cet1(), scan)
        # the warning comes before the model is resolved; the missing model then ends the run
        return [Case(_predict(scan, t, "--model", str(t / "no_model")), r"warning: .*looks like a ceT1", [scan])]

    @kind(55, "a non-UTF-8 or invalid YAML config")
    def _(t):
        (t / "bin.yaml").write_bytes(b"\xff\xfe\x80 a: [")
        (t / "bad.yaml").write_text("a: [1,\n")
        return [
            Case(["config", "--config", str(t / "bin.yaml")], r"not UTF-8"),
            Case(["config", "--config", str(t / "bad.yaml")], r"not valid YAML"),
        ]

    @kind(56, "a tracking URI that is not a database")
    def _(t):
        (t / "notes.txt").write_text("not a database\n")
        scan = _image(t / "in" / "scan.nii.gz")
        argv = _predict(scan, t, "--tracking-uri", f"sqlite:///{t / 'notes.txt'}")
        return [Case(argv, r"not a usable database", [t / "notes.txt", scan])]

    @kind(57, "serve --max-mb nan, --port 70000, --max-concurrent 0")
    def _(t):
        return [
            Case(["serve", "--max-mb", "nan"], r"--max-mb: expected a finite number above 0"),
            Case(["serve", "--port", "70000"], r"--port: expected a port number"),
            Case(["serve", "--max-concurrent", "0"], r"--max-concurrent: expected a whole number"),
        ]

    @kind(58, "phantom --seed -1")
    def _(t):
        return [Case(["phantom", str(t / "ph"), "--seed", "-1"], r"seed must be a non-negative integer")]

    return K


NOT_RERUN = {
    24: "needs a finished cosmos run (tests/test_data_storage.py)",
    25: "needs an S3 listing with a forged key (tests/test_data_storage.py)",
    32: "needs a cosmos run killed with kill -9 (tests/test_no_orphan_processes.py)",
    33: "needs a run killed while MLflow builds its store (tests/test_tracking_failures.py)",
    59: "needs a signal during a command (tests/test_bad_input_round_two.py::test_sigterm_during_predict_*)",
}


# ------------------------------------------------------------------------------ servers for the S3 kinds
_MOTO: list[str] = []


def _moto() -> str:
    if not _MOTO:
        from moto.server import ThreadedMotoServer

        port = _free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        _MOTO.append(f"http://127.0.0.1:{port}")
        import boto3

        s3 = boto3.client(
            "s3", endpoint_url=_MOTO[0], aws_access_key_id="k", aws_secret_access_key="s", region_name="us-east-1"
        )
        s3.create_bucket(Bucket="cosmos-empty")
    return _MOTO[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _silent_server() -> int:
    """Accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []

    def loop() -> None:
        while True:
            conn, _ = sock.accept()
            held.append(conn)

    threading.Thread(target=loop, daemon=True).start()
    return int(sock.getsockname()[1])


def _failing_server() -> int:
    """Answers every request with HTTP 503."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        def _fail(self) -> None:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = do_PUT = do_POST = _fail

        def log_message(self, *a) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return int(server.server_address[1])


# ------------------------------------------------------------------------------ running
def sha(paths: list[Path]) -> dict[str, str]:
    out = {}
    for base in paths:
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file() and not p.is_symlink())
        for p in files:
            with contextlib.suppress(OSError):
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_cli(argv: list[str], env: dict[str, str], use_subprocess: bool, cwd: Path) -> tuple[int, str]:
    if use_subprocess:
        exe = shutil.which("cosmos") or str(Path(sys.executable).with_name("cosmos"))
        proc = subprocess.run(
            [exe, *argv], capture_output=True, text=True, env={**os.environ, **env}, cwd=cwd, timeout=600
        )
        return proc.returncode, proc.stdout + proc.stderr
    from cosmos.cli import main

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    buf = io.StringIO()
    here = os.getcwd()
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            try:
                rc = main(argv)
            except SystemExit as exc:  # argparse's usage error
                rc = exc.code if isinstance(exc.code, int) else 2
            except BaseException:  # a crash is what this catalogue looks for: record it as such
                import traceback

                traceback.print_exc()
                rc = 99
    finally:
        os.chdir(here)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return rc, buf.getvalue()


def check(case: Case, rc: int, text: str, before: dict[str, str]) -> str | None:
    """None when handled, else why not."""
    if "Traceback" in text or "unexpected error" in text:
        return "traceback or unexpected error"
    if case.ok_exit and rc != 0:
        return f"exit {rc}, expected 0"
    if not case.ok_exit and rc == 0:
        return "exit 0"
    if len([ln for ln in text.splitlines() if ln.startswith("cosmos: error:")]) > 1:
        return "more than one error line"
    if not re.search(case.expect, text):
        return f"output lacks /{case.expect}/"
    if sha(case.inputs) != before:
        return "an input file changed"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subprocess", action="store_true", help="run the installed cosmos executable per case")
    ap.add_argument("--only", type=int, nargs="*", default=None, help="kind numbers to run")
    ap.add_argument("--keep", default=None, help="work folder to keep (default: a temporary one)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each case's output")
    args = ap.parse_args(argv)
    os.environ.setdefault("COSMOS_LOG_LEVEL", "WARNING")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="cosmos-catalogue-"))
    work.mkdir(parents=True, exist_ok=True)
    handled = total = 0
    failures: list[str] = []
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            world = World(work)
        for k in kinds(world):
            if args.only and k.number not in args.only:
                continue
            tmp = work / f"kind{k.number}"
            tmp.mkdir()
            cases = k.build(tmp)
            if not cases:
                continue
            total += 1
            t0 = time.monotonic()
            why = None
            for case in cases:
                before = sha(case.inputs)
                rc, text = run_cli(case.argv, case.env, args.subprocess, tmp)
                if args.verbose:
                    print(f"  $ cosmos {' '.join(case.argv)} -> {rc}\n    " + text.strip().replace("\n", "\n    "))
                why = check(case, rc, text, before)
                if why:
                    failures.append(
                        f"kind {k.number} ({k.title}): cosmos {' '.join(case.argv)} -> {rc}: {why}\n{text[-600:]}"
                    )
                    break
            handled += why is None
            print(f"{'ok  ' if why is None else 'FAIL'} {k.number:>2} {k.title} ({time.monotonic() - t0:.1f} s)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    for f in failures:
        print(f, file=sys.stderr)
    skipped = sorted(n for n in NOT_RERUN if not args.only or n in args.only)
    for n in skipped:
        print(f"not re-run here: kind {n}: {NOT_RERUN[n]}")
    print(f"{total} kinds, {handled} handled")
    return 0 if handled == total else 1


if __name__ == "__main__":
    raise SystemExit(main())
