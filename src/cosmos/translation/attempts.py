"""A translator stage that acts on its own label-free check: train, check, try again, keep the best.

Why: a short GAN run can settle in a contrast-inverted optimum (bone bright, tumour black). Its
histogram can match real hrT2, its losses look normal, and no later epoch of the same run leaves it;
a teacher trained on it learns nothing. The fidelity figures of :mod:`cosmos.translation.fidelity`
see it (:func:`~cosmos.translation.fidelity.failed_checks`), so the stage trains another candidate
when the kept generator fails them: attempt ``k`` > 1 uses seed ``seed + k - 1`` and the
translator-section overrides ``translator.retry[k - 2]`` (the last entry repeats), up to
``translator.max_attempts``. The first candidate that passes is kept; when none passes, the one with
the best fidelity score is kept and the stage says, in one line, which checks failed.

Every candidate is its own MLflow run (tagged ``cosmos.translator_attempt`` and
``cosmos.translator_checks``); only the kept one is registered. ``OUT/attempts.json`` (also copied
into the kept model directory, so it travels with the model into the pseudo-hrT2 folder and the
report) lists each candidate, its settings, its score and its failed checks. Resumable: each
candidate resumes in its own directory (attempt 1 in ``OUT`` itself, attempt k in ``OUT/attempt_k``).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from cosmos.config import CosmosConfig
from cosmos.translation import fidelity
from cosmos.translation.model_io import ATTEMPTS_JSON
from cosmos.translation.training import FIDELITY_JSON, TranslatorResult, train_translator

log = logging.getLogger(__name__)

TAG_ATTEMPT = "cosmos.translator_attempt"
TAG_CHECKS = "cosmos.translator_checks"
TAG_KEPT = "cosmos.translator_kept"


def attempt_overrides(cfg: CosmosConfig, attempt: int) -> dict[str, Any]:
    """The overrides of candidate ``attempt`` (1-based): none for the first, then a new seed and ``retry``."""
    if attempt <= 1:
        return {}
    retry = cfg.translator.retry
    extra = dict(retry[min(attempt - 2, len(retry) - 1)]) if retry else {}
    return {"seed": cfg.seed + attempt - 1, **{f"translator.{k}": v for k, v in extra.items()}}


def attempt_dir(out_dir: str | Path, attempt: int) -> Path:
    return Path(out_dir) if attempt <= 1 else Path(out_dir) / f"attempt_{attempt}"


def _figures(directory: Path) -> dict[str, Any] | None:
    path = directory / FIDELITY_JSON
    return json.loads(path.read_text()) if path.is_file() else None


def _score(figures: dict[str, Any] | None) -> float:
    if figures is None:
        return -math.inf
    score = fidelity.Fidelity.from_dict(figures).score()
    return score if math.isfinite(score) else -math.inf


def _tag_run(run_id: str | None, tags: dict[str, str]) -> None:
    if not run_id:
        return
    from mlflow import MlflowClient

    client = MlflowClient()
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def train_checked(
    data_dir: str | Path, out_dir: str | Path, cfg: CosmosConfig, tracking_uri: str | None = None, register: bool = True
) -> TranslatorResult:
    """Train translator candidates until one passes the label-free checks (see the module docstring).

    Returns the kept candidate's result (its ``model_version`` when ``register``).
    """
    from cosmos.translation.model_io import register_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    min_pass = cfg.checks.fidelity_min_pass
    candidates: list[dict[str, Any]] = []
    results: list[TranslatorResult] = []
    scores: list[float] = []  # each candidate's fidelity score (-inf when it has none): the fallback choice
    for attempt in range(1, cfg.translator.max_attempts + 1):
        overrides = attempt_overrides(cfg, attempt)
        acfg = cfg.with_overrides(overrides) if overrides else cfg
        directory = attempt_dir(out, attempt)
        res = train_translator(data_dir, directory, acfg, tracking_uri=tracking_uri, register=False)
        figures = _figures(directory)
        failed = fidelity.failed_checks(figures, min_pass, cfg.checks.fidelity_gate)
        score = _score(figures)
        entry = {
            "attempt": attempt,
            "dir": str(directory.relative_to(out)) if directory != out else ".",
            "seed": acfg.seed,
            "overrides": {k: v for k, v in overrides.items() if k != "seed"},
            "run_id": res.run_id,
            "selected_epoch": (figures or {}).get("selected_epoch"),
            "score": round(score, 4) if math.isfinite(score) else None,
            "passed": not failed,
            "failed_checks": failed,
        }
        candidates.append(entry)
        results.append(res)
        scores.append(score)
        _tag_run(res.run_id, {TAG_ATTEMPT: str(attempt), TAG_CHECKS: "passed" if not failed else "; ".join(failed)})
        if not failed:
            log.info("translator attempt %d/%d passes its label-free checks", attempt, cfg.translator.max_attempts)
            break
        log.warning(
            "translator attempt %d/%d fails its label-free checks: %s%s",
            attempt,
            cfg.translator.max_attempts,
            "; ".join(failed),
            "; training another candidate" if attempt < cfg.translator.max_attempts else "",
        )
    passing = [i for i, c in enumerate(candidates) if c["passed"]]
    best = passing[0] if passing else max(range(len(candidates)), key=scores.__getitem__)
    kept, res = candidates[best], results[best]
    for i, c in enumerate(candidates):
        c["kept"] = i == best
    summary = {"passed": kept["passed"], "kept_attempt": kept["attempt"], "min_pass": min_pass, "attempts": candidates}
    if not kept["passed"]:
        log.error(
            "translation FAILED its label-free checks after %d attempt(s); keeping attempt %d (best fidelity score): %s",
            len(candidates),
            kept["attempt"],
            "; ".join(kept["failed_checks"]),
        )
    version = res.model_version
    previous = json.loads((out / ATTEMPTS_JSON).read_text()) if (out / ATTEMPTS_JSON).is_file() else {}
    if register and res.model_uri:
        if previous.get("kept_attempt") == kept["attempt"] and previous.get("model_version"):
            version = previous["model_version"]  # a resumed stage registers nothing twice
        else:
            version = register_model(
                res.model_uri,
                cfg.tracking.translator_model_name,
                tags={"run_id": res.run_id or "", "profile": cfg.profile, "attempt": str(kept["attempt"])},
            )
        _tag_run(res.run_id, {TAG_KEPT: "true", "registered_version": str(version)})
    summary["model_version"] = version
    text = json.dumps(summary, indent=2)
    (out / ATTEMPTS_JSON).write_text(text)
    (Path(res.model_dir) / ATTEMPTS_JSON).write_text(text)
    return TranslatorResult(res.model_dir, res.run_id, version, res.epochs, res.history, res.model_uri)
