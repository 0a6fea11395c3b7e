"""The segmenter registry: each self-training round's nnU-Net ensemble as an ``mlflow.pyfunc`` model.

One registered model, ``cfg.tracking.segmenter_model_name`` (``cosmos-segmenter``), gets one new
version per round (teacher = round 0, student k = round k); the alias ``champion`` points at the
final round. The code lives in one module per job; this module re-exports their names, so every
``cosmos.segmentation.registry.X`` written before the split still works:

* :mod:`cosmos.segmentation.inputs` -- which files to segment (checks, output names) and the
  fold-ensemble call on them (:func:`collect_nifti_inputs`, :func:`segment_files`).
* :mod:`cosmos.segmentation.pyfunc` -- :class:`CosmosSegmenter`, the pyfunc model and its
  input/output contract (how to use a registered model: see there).
* :mod:`cosmos.segmentation.registration` -- :func:`register_round`: what a version holds, its
  tags, signature, requirements and shipped code.
* :mod:`cosmos.segmentation.resolution` -- :func:`resolve_model`: ``models:/`` references and
  local folders to fold dirs plus the config they were trained with.

Why the re-export of :class:`CosmosSegmenter` matters beyond convenience: MLflow pickles the model
object by reference to its class, and versions registered before the split name it
``cosmos.segmentation.registry.CosmosSegmenter``; they load only while that name resolves.
"""

from __future__ import annotations

from cosmos.segmentation.inputs import _WRONG_MODALITY as _WRONG_MODALITY
from cosmos.segmentation.inputs import _check_file as _check_file
from cosmos.segmentation.inputs import _is_nifti_name as _is_nifti_name
from cosmos.segmentation.inputs import collect_nifti_inputs as collect_nifti_inputs
from cosmos.segmentation.inputs import output_name as output_name
from cosmos.segmentation.inputs import segment_files as segment_files
from cosmos.segmentation.pyfunc import CONFIG_ARTIFACT as CONFIG_ARTIFACT
from cosmos.segmentation.pyfunc import CosmosSegmenter as CosmosSegmenter
from cosmos.segmentation.pyfunc import _content_values as _content_values
from cosmos.segmentation.pyfunc import _flatten_paths as _flatten_paths
from cosmos.segmentation.pyfunc import _flatten_values as _flatten_values
from cosmos.segmentation.pyfunc import _fold_key as _fold_key
from cosmos.segmentation.pyfunc import _input_paths as _input_paths
from cosmos.segmentation.pyfunc import nifti_max_bytes as nifti_max_bytes
from cosmos.segmentation.registration import _FALLBACK_REQUIREMENTS as _FALLBACK_REQUIREMENTS
from cosmos.segmentation.registration import _SKIP_IN_MODEL as _SKIP_IN_MODEL
from cosmos.segmentation.registration import MODEL_ARTIFACT as MODEL_ARTIFACT
from cosmos.segmentation.registration import _code_paths as _code_paths
from cosmos.segmentation.registration import _fingerprint_digest as _fingerprint_digest
from cosmos.segmentation.registration import _pip_requirements as _pip_requirements
from cosmos.segmentation.registration import _signature as _signature
from cosmos.segmentation.registration import _stage_fold as _stage_fold
from cosmos.segmentation.registration import register_round as register_round
from cosmos.segmentation.resolution import _MODEL_URI as _MODEL_URI
from cosmos.segmentation.resolution import ResolvedModel as ResolvedModel
from cosmos.segmentation.resolution import _config_from_file as _config_from_file
from cosmos.segmentation.resolution import _find_config as _find_config
from cosmos.segmentation.resolution import _find_fold_dirs as _find_fold_dirs
from cosmos.segmentation.resolution import _fold_number as _fold_number
from cosmos.segmentation.resolution import log as log
from cosmos.segmentation.resolution import resolve_fold_dirs as resolve_fold_dirs
from cosmos.segmentation.resolution import resolve_model as resolve_model
