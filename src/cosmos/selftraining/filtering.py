"""Pseudo-label filtering between self-training rounds.

COSMOS keeps a teacher's prediction on a real hrT2 scan as a training label only when it contains
every structure of interest: a case whose prediction lacks VS or lacks the cochlea entirely is
dropped, because an absent structure is almost always a miss (every crossMoDA scan has both), and
training a student on it would teach the student to miss it too.

Three refinements, each optional (defaults = the paper's filter):

* ``min_component_voxels`` (one per required label): a structure whose LARGEST 3D connected
  component (26-connectivity) is smaller counts as missing -- one stray voxel is not a cochlea.
* ``previous_kept_dir`` (the previous round's kept folder): a case rejected now keeps its last
  accepted pseudo-label instead of leaving the training set (``carried_over``). Without it a
  student loses every case its teacher got wrong, which the previous round had right.
* ``mode="pixel"``: besides the case-level filter, voxels whose ensemble max softmax probability is
  below ``confidence_threshold`` get nnU-Net's ignore label (:data:`IGNORE_LABEL`; excluded from
  Dice and CE). Needs the ``<name>.npz`` probabilities ``inference.predict(save_probabilities=True)``
  writes next to each label. The case-level check runs on the prediction itself (before marking),
  so pixel mode drops exactly the cases image mode drops. The student's dataset.json must then
  declare ``"ignore": 3`` (``prepare_round`` does when ``selftraining.filter=pixel``).

If the filter leaves no label at all the next student sees only the labelled pseudo-hrT2 again,
i.e. self-training silently degenerates to re-training the teacher. That is logged at ERROR level
and recorded in the result (and by the loop as an MLflow tag) so it can never go unnoticed.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from cosmos.config import SelfTrainingConfig
from cosmos.data.layout import IGNORE_LABEL, LABELS, case_sort_key, label_name, parse_prediction_name
from cosmos.data.nifti import Volume, load, save
from cosmos.errors import CosmosError

log = logging.getLogger(__name__)

SUMMARY_FILE = "filter_summary.json"
MODES = ("image", "pixel")

NONE_KEPT_ALERT = (
    "pseudo-label filter kept NO case: every prediction lacks a required structure {labels}; "
    "the next student trains on labelled pseudo-hrT2 alone, so self-training degenerates to the teacher"
)


@dataclass
class FilterResult:
    """Which pseudo-labelled cases survive the filter (case ids, e.g. ``crossmoda_106``).

    ``kept``: accepted this round (their new label is in ``out_dir``). ``dropped``: rejected this
    round (``reasons`` says why); those of them in ``carried_over`` are in ``out_dir`` with their
    last accepted label (from ``previous_kept_dir``). ``training_cases`` = kept + carried_over.
    """

    kept: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # dropped case -> what it lacks
    out_dir: Path | None = None
    alert: str | None = None  # set when nothing was kept
    carried_over: list[str] = field(default_factory=list)
    mode: str = "image"
    ignore_label: int | None = None  # IGNORE_LABEL in pixel mode
    ignored_fraction: dict[str, float] = field(default_factory=dict)  # pixel mode: kept case -> share ignored
    largest_component: dict[str, dict[str, int]] = field(default_factory=dict)  # case -> structure -> voxels

    @property
    def carried(self) -> list[str]:
        """Alias of ``carried_over``."""
        return self.carried_over

    @property
    def training_cases(self) -> list[str]:
        return sorted(self.kept + self.carried_over, key=case_sort_key)

    @property
    def degenerate(self) -> bool:
        """True when no pseudo-label is left for the student (it can only repeat the teacher)."""
        return not self.kept and not self.carried_over

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir) if self.out_dir is not None else None
        return d


def _prediction_files(pred_dir: Path) -> dict[str, Path]:
    if not pred_dir.is_dir():
        raise CosmosError(f"{pred_dir}: prediction folder not found")
    found: dict[str, Path] = {}
    for p in sorted(pred_dir.iterdir()):
        if not p.is_file():
            continue
        case = parse_prediction_name(p.name)
        if case is None:
            continue
        if case in found:
            raise CosmosError(f"{pred_dir}: two predictions for case {case}: {found[case].name} and {p.name}")
        found[case] = p
    if not found:
        raise CosmosError(
            f"{pred_dir}: no predictions named crossmoda_<id>_Label.nii.gz (or crossmoda_<id>.nii.gz) to filter"
        )
    return found


def largest_component_size(mask: np.ndarray) -> int:
    """Voxels in the largest 3D connected component of ``mask`` (26-connectivity); 0 when empty."""
    from scipy import ndimage

    if not mask.any():
        return 0
    labelled, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    if n == 1:
        return int(mask.sum())
    return int(np.bincount(labelled.ravel())[1:].max())


def case_problems(data: np.ndarray, required: Sequence[int], min_voxels: Sequence[int]) -> tuple[str | None, dict]:
    """Why a label map fails the case-level filter (None = it passes), and the largest components."""
    sizes: dict[str, int] = {}
    missing, small = [], []
    for value, minimum in zip(required, min_voxels):
        name = LABELS.get(value, f"label {value}")
        size = largest_component_size(data == value)
        sizes[name] = size
        if size == 0:
            missing.append(name)
        elif size < minimum:
            small.append(f"{name} too small (largest component {size} < {minimum} voxels)")
    parts = (["lacks " + " and ".join(missing)] if missing else []) + small
    return ("; ".join(parts) or None), sizes


def _probabilities_file(prediction: Path) -> Path:
    name = prediction.name
    stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else prediction.stem
    return prediction.with_name(f"{stem}.npz")


def confident_label(
    data: np.ndarray, probabilities: np.ndarray, threshold: float, ignore_label: int = IGNORE_LABEL
) -> np.ndarray:
    """``data`` with every voxel whose max class probability is below ``threshold`` set to ``ignore_label``."""
    if probabilities.shape[1:] != data.shape:
        raise ValueError(f"probabilities {probabilities.shape[1:]} and label {data.shape} differ in shape")
    out = np.asarray(data, dtype=np.uint8).copy()
    out[probabilities.max(axis=0).astype(np.float32) < threshold] = ignore_label
    return out


def _pixel_filtered(prediction: Path, threshold: float) -> tuple[np.ndarray, Volume, float]:
    vol = load(prediction, label=True)
    npz = _probabilities_file(prediction)
    if not npz.is_file():
        raise CosmosError(f"{npz}: probabilities missing for the pixel filter (predict with save_probabilities=True)")
    try:
        probs = np.load(npz)["probabilities"]
        out = confident_label(vol.data, probs, threshold)
    except (KeyError, ValueError, OSError) as exc:
        raise CosmosError(f"{npz}: unusable probabilities for {prediction.name} ({exc})") from None
    return out, vol, float((out == IGNORE_LABEL).mean())


def filter_pseudo_labels(
    pred_dir: str | Path,
    out_dir: str | Path,
    required_labels: Iterable[int] | SelfTrainingConfig = (1, 2),
    *,
    min_component_voxels: Sequence[int] | None = None,
    previous_kept_dir: str | Path | None = None,
    mode: str = "image",
    confidence_threshold: float = 0.9,
) -> FilterResult:
    """Copy the predictions of ``pred_dir`` that contain every label in ``required_labels`` to
    ``out_dir`` (as ``crossmoda_{k}_Label.nii.gz``) and report kept/dropped/carried-over case ids.

    ``required_labels`` may be the ``selftraining`` config section instead: then its
    ``required_labels``, ``min_component_voxels``, ``filter`` and ``confidence_threshold`` are used.
    ``min_component_voxels``: one minimum per required label (None/[] = 1 voxel, the paper).
    ``previous_kept_dir``: the previous round's ``out_dir``; a rejected case whose label is there
    is carried over. ``mode``/``confidence_threshold``: see the module docstring.

    ``out_dir`` ends up holding exactly the training labels (stale labels from an earlier run are
    removed), plus ``filter_summary.json`` with the result, so a re-run is idempotent.
    """
    pred_dir, out_dir = Path(pred_dir), Path(out_dir)
    if isinstance(required_labels, SelfTrainingConfig):
        st = required_labels
        required_labels, min_component_voxels = st.required_labels, st.min_component_voxels
        mode, confidence_threshold = st.filter, st.confidence_threshold
    required = [int(v) for v in required_labels]
    minimum = [int(v) for v in (min_component_voxels or [])] or [1] * len(required)
    if len(minimum) != len(required):
        raise CosmosError(f"min_component_voxels {list(minimum)} needs one entry per required label {required}")
    if mode not in MODES:
        raise CosmosError(f"pseudo-label filter mode must be one of {MODES}, got {mode!r}")
    prev = Path(previous_kept_dir) if previous_kept_dir is not None else None
    if prev is not None and not prev.is_dir():
        raise CosmosError(f"{prev}: previous round's kept pseudo-label folder not found")
    if prev is not None and prev.resolve() == out_dir.resolve():
        raise CosmosError(f"{out_dir}: the output folder cannot also be the previous round's kept folder")
    files = _prediction_files(pred_dir)
    result = FilterResult(out_dir=out_dir, mode=mode, ignore_label=IGNORE_LABEL if mode == "pixel" else None)
    for case in sorted(files, key=case_sort_key):
        data = load(files[case], label=True).data
        problem, sizes = case_problems(data, required, minimum)
        result.largest_component[case] = sizes
        if problem:
            result.dropped.append(case)
            result.reasons[case] = problem
            if prev is not None and (prev / label_name(case)).is_file():
                result.carried_over.append(case)
        else:
            result.kept.append(case)

    out_dir.mkdir(parents=True, exist_ok=True)
    keep_names = {label_name(c) for c in result.training_cases}
    for stale in out_dir.glob("*.nii*"):
        if stale.name not in keep_names:
            stale.unlink()
    for case in result.kept:
        target = out_dir / label_name(case)
        if mode == "pixel":
            arr, vol, frac = _pixel_filtered(files[case], confidence_threshold)
            save(target, arr, like=vol, label=True)
            result.ignored_fraction[case] = round(frac, 6)
        else:
            shutil.copy2(files[case], target)
    for case in result.carried_over:
        shutil.copy2(prev / label_name(case), out_dir / label_name(case))  # type: ignore[operator]

    log.info(
        "pseudo-label filter (%s): kept %d of %d cases: %s",
        mode,
        len(result.kept),
        len(files),
        ", ".join(result.kept) or "-",
    )
    if result.dropped:
        log.info(
            "pseudo-label filter: dropped %d: %s",
            len(result.dropped),
            ", ".join(f"{c} ({result.reasons[c]})" for c in result.dropped),
        )
    if result.carried_over:
        log.info(
            "pseudo-label filter: %d dropped case(s) keep their last accepted label from %s: %s",
            len(result.carried_over),
            prev,
            ", ".join(result.carried_over),
        )
    if result.ignored_fraction:
        log.info(
            "pixel filter: %.2f%% of kept voxels below confidence %.2f -> ignore label %d",
            100 * float(np.mean(list(result.ignored_fraction.values()))),
            confidence_threshold,
            IGNORE_LABEL,
        )
    if result.degenerate:
        names = "/".join(LABELS.get(v, str(v)) for v in required)
        result.alert = NONE_KEPT_ALERT.format(labels=names)
        log.error("%s (predictions in %s)", result.alert, pred_dir)
    elif not result.kept:
        log.warning(
            "pseudo-label filter accepted no new label; the student's real cases are all carried over from %s", prev
        )
    (out_dir / SUMMARY_FILE).write_text(json.dumps(result.to_dict(), indent=2))
    return result


def filter_from_config(
    pred_dir: str | Path, out_dir: str | Path, cfg, previous_kept_dir: str | Path | None = None
) -> FilterResult:
    """:func:`filter_pseudo_labels` with the ``selftraining`` section's settings."""
    return filter_pseudo_labels(pred_dir, out_dir, cfg.selftraining, previous_kept_dir=previous_kept_dir)


def label_change(previous_kept_dir: str | Path, kept_dir: str | Path, labels: Sequence[int] = (1, 2)) -> dict:
    """How much the pseudo-labels changed between two rounds' kept sets (see ``cosmos.selftraining.labels``)."""
    from cosmos.selftraining.labels import label_change as _label_change

    return _label_change(previous_kept_dir, kept_dir, labels)


def read_filter_summary(out_dir: str | Path) -> FilterResult | None:
    """The result a previous :func:`filter_pseudo_labels` call recorded in ``out_dir`` (or None)."""
    path = Path(out_dir) / SUMMARY_FILE
    if not path.is_file():
        return None
    d = json.loads(path.read_text())
    return FilterResult(
        kept=list(d.get("kept", [])),
        dropped=list(d.get("dropped", [])),
        reasons=dict(d.get("reasons", {})),
        out_dir=Path(out_dir),
        alert=d.get("alert"),
        carried_over=list(d.get("carried_over", [])),
        mode=d.get("mode", "image"),
        ignore_label=d.get("ignore_label"),
        ignored_fraction=dict(d.get("ignored_fraction", {})),
        largest_component=dict(d.get("largest_component", {})),
    )
