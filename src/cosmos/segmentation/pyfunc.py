"""The registered segmenter as an ``mlflow.pyfunc`` model: :class:`CosmosSegmenter`.

Why a module of its own: this class is what MLflow unpickles when anyone loads a registered
version, so it is the one piece with an external contract (below) and a compatibility duty. It is
pickled by reference to its class; versions registered before the registry was split into modules
name it ``cosmos.segmentation.registry.CosmosSegmenter``, which that module still re-exports, and
later versions name ``cosmos.segmentation.pyfunc.CosmosSegmenter``. A loader finds either in the
code the model ships (``code_paths``, see :mod:`cosmos.segmentation.registration`) or in an
installed ``cosmos``. Its helpers turn the many shapes a pyfunc input arrives in into paths or
NIfTI contents; the checking, naming and predicting are :mod:`cosmos.segmentation.inputs`'.

Using a registered model::

    import mlflow, pandas as pd
    model = mlflow.pyfunc.load_model("models:/cosmos-segmenter@champion")
    out = model.predict(pd.DataFrame({"path": ["/data/crossmoda_211_hrT2.nii.gz"]}),
                        params={"output_dir": "/tmp/seg", "mirroring": True})
    out["output"][0]  # '/tmp/seg/crossmoda_211_Label.nii.gz' (uint8, the input's exact grid)

pyfunc contract:

* input, by file path: a DataFrame with a string column ``path`` (one NIfTI file per row; a
  folder of images also works), or the dict ``{"path": [...]}``.
* input, by content (what a REST server such as ``mlflow models serve`` or MLServer can pass): a
  DataFrame with a string column ``nifti`` holding base64 of a .nii/.nii.gz file (or an ``s3://``
  URI), the dict ``{"nifti": [...]}``, or a tensor (numpy array / list) of such strings or raw
  file bytes. The signature declares both columns as optional; each row uses one.
* params: ``output_dir`` (string; "" = a new temporary folder), ``mirroring`` (bool; flip
  test-time augmentation, default = the training config's value).
* output: a DataFrame with ``input`` and ``output`` (path of the label NIfTI written) per case,
  and for content input also ``label``: base64 of that label file (uint8, the input's grid).
  Outputs are named ``crossmoda_{k}_Label.nii.gz`` for crossMoDA inputs, ``<stem>_seg.nii.gz``
  otherwise.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, Mapping

from cosmos.errors import CosmosError
from cosmos.segmentation.inputs import collect_nifti_inputs, segment_files
from cosmos.segmentation.resolution import _config_from_file

try:  # the pyfunc base class; mlflow (and with it pandas) is a hard dependency of the package
    import pandas as pd
    from mlflow.pyfunc import PythonModel as _PythonModel
except ImportError:  # pragma: no cover
    _PythonModel = object  # type: ignore[misc,assignment]

CONFIG_ARTIFACT = "cosmos_config"  # key of the config YAML among the pyfunc artifacts


def _flatten_paths(values: Any) -> list[str]:
    if isinstance(values, (str, Path)):
        return [str(values)]
    if hasattr(values, "tolist") and not isinstance(values, (list, tuple)):
        values = values.tolist()
    if isinstance(values, (list, tuple)):
        return [p for v in values for p in _flatten_paths(v)]
    return [str(values)]


def _input_paths(model_input: Any) -> list[str]:
    """DataFrame[path] | {"path": [...]} | list[str] | str -> list of path strings (nested lists,
    as MLflow's schema enforcement sometimes produces from a dict, are flattened)."""
    try:
        import pandas as pd

        if isinstance(model_input, pd.DataFrame):
            col = "path" if "path" in model_input.columns else model_input.columns[0]
            return _flatten_paths(model_input[col].tolist())
    except ImportError:  # pragma: no cover
        pass
    if isinstance(model_input, Mapping):
        return _flatten_paths(model_input.get("path", next(iter(model_input.values()), [])))
    return _flatten_paths(model_input)


def _content_values(model_input: Any) -> list | None:
    """The base64/bytes NIfTI values of a content input, or None for a path input."""
    if isinstance(model_input, pd.DataFrame):
        if "nifti" not in model_input.columns or model_input["nifti"].isna().all():
            return None
        if "path" in model_input.columns and model_input["path"].notna().any():
            raise CosmosError("give either path or nifti values in one call, not both")
        return _flatten_values(model_input["nifti"].dropna().tolist())
    if isinstance(model_input, Mapping):
        return _flatten_values(model_input["nifti"]) if "nifti" in model_input else None
    if isinstance(model_input, (str, Path)):
        return None
    values = _flatten_values(model_input)  # a tensor (numpy array or list)
    if all(isinstance(v, (str, Path)) and not str(v).startswith("s3://") and Path(v).exists() for v in values):
        return None  # existing local paths: the path contract
    return values


def _flatten_values(values: Any) -> list:
    if hasattr(values, "tolist") and not isinstance(values, (bytes, str)):
        values = values.tolist()
    if isinstance(values, (list, tuple)):
        return [x for v in values for x in _flatten_values(v)]
    return [values]


class CosmosSegmenter(_PythonModel):
    """pyfunc wrapper of the nnU-Net fold ensemble (see the module docstring for the contract)."""

    def load_context(self, context) -> None:
        arts = dict(context.artifacts)
        self.fold_dirs = [Path(arts[k]) for k in sorted(arts, key=_fold_key) if k.startswith("fold_")]
        self.cfg = _config_from_file(Path(arts[CONFIG_ARTIFACT])) if CONFIG_ARTIFACT in arts else None

    # The pandas hint is what MLflow expects of a DataFrame model (it validates nothing then); without
    # a hint, MLflow warns at every import of this module, i.e. on every `cosmos predict`.
    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from cosmos.config import load_config

        params = dict(params or {})
        if not getattr(self, "fold_dirs", None):
            self.load_context(context)
        cfg = self.cfg or load_config("tiny")
        out_dir = params.get("output_dir") or tempfile.mkdtemp(prefix="cosmos-segmenter-")
        mirroring = params.get("mirroring")
        mirroring = None if mirroring is None else bool(mirroring)
        contents = _content_values(model_input)
        if contents is None:
            files = collect_nifti_inputs(_input_paths(model_input))
            outputs = segment_files(self.fold_dirs, files, out_dir, cfg, mirroring=mirroring)
            return pd.DataFrame({"input": [str(f) for f in files], "output": [str(o) for o in outputs]})
        import base64

        from cosmos.data.scans import scan_from_value, write_scans

        if not contents:
            raise CosmosError("no nifti values to segment")
        scans = [scan_from_value(v, f"nifti[{i}]") for i, v in enumerate(contents)]
        with tempfile.TemporaryDirectory(prefix="cosmos-segmenter-in-") as tmp:
            files = write_scans(scans, Path(tmp), max_bytes=nifti_max_bytes())
            collect_nifti_inputs(files)
            outputs = segment_files(self.fold_dirs, files, out_dir, cfg, mirroring=mirroring)
        return pd.DataFrame(
            {
                "input": [f"nifti[{i}]" for i in range(len(files))],
                "output": [str(o) for o in outputs],
                "label": [base64.b64encode(o.read_bytes()).decode("ascii") for o in outputs],
            }
        )


def nifti_max_bytes() -> int:
    from cosmos.data.nifti import max_bytes

    return max_bytes()


def _fold_key(name: str):
    m = re.search(r"(\d+)$", name)
    return (int(m.group(1)) if m else 1 << 30, name)
