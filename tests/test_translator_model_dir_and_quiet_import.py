"""Two frictions of issue 13: `cosmos translator convert --model` takes the folder that
`cosmos translator train --out` wrote, and importing the segmenter registry (every `cosmos
predict`) prints no MLflow type-hint warning."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from cosmos.errors import CosmosError
from cosmos.translation.model_io import TRAIN_MODEL_SUBDIR, load_model_dir, resolve_model, save_model_dir
from cosmos.translation.networks import Generator, GeneratorSpec
from cosmos.translation.slices import SliceGrid


def test_translator_model_resolves_from_the_train_output_folder(tmp_path):
    gen = Generator(GeneratorSpec(base_channels=4, levels=3))
    grid = SliceGrid(inplane_spacing=0.7, image_size=32, divisor=8)
    out = tmp_path / "translator-out"  # what `cosmos translator train --out` was given
    save_model_dir(gen, grid, out / TRAIN_MODEL_SUBDIR)
    (out / "samples").mkdir()
    for given in (out, out / TRAIN_MODEL_SUBDIR):
        loaded = resolve_model(str(given))
        x = torch.randn(1, 1, 32, 32)
        with torch.no_grad():
            assert torch.allclose(loaded.generator(x), gen.eval()(x))
    with pytest.raises(CosmosError, match="not a translator model directory"):
        load_model_dir(tmp_path)  # a folder with neither the files nor model/ holding them


def test_segmenter_registry_import_prints_no_mlflow_warning():
    code = "import cosmos.cli.predict_cmd, cosmos.segmentation.registry"
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )
    assert res.returncode == 0, res.stderr
    assert "type hint" not in res.stderr and "Warning" not in res.stderr, res.stderr
