"""KFP component: train the target-aware CycleGAN (COSMOS stage 1) and register it in MLflow.

Thin wrapper around :func:`cosmos.translation.attempts.train_checked` (train, check the translation
without labels, train another candidate when it fails, keep the best). A GPU task.
"""

from typing import NamedTuple

from kfp.dsl import Dataset, Input, Model, Output


def train_translator(
    data: Input[Dataset],
    profile: str,
    config: str,
    overrides: str,
    tracking_uri: str,
    experiment: str,
    work_root: str,
    translator: Output[Model],
) -> NamedTuple("TranslatorOutputs", [("run_id", str), ("model_version", str)]):
    """translator: the training directory; its self-contained model dir is recorded inside it.
    overrides: a compile-time YAML layer (e.g. the benchmark's pure-CycleGAN row)."""
    from collections import namedtuple

    from components import _runtime as rt
    from cosmos.config import checks_except
    from cosmos.resume import stage_key, write_pointer

    rt.setup()
    cfg = rt.load_cfg(profile, config, experiment, overrides)
    key = stage_key(
        "train_translator",
        {},
        [data.path],
        cfg,
        ["translator", "tracking", "checks"],
        exclude=checks_except("fidelity_min_pass", "fidelity_gate"),
    )

    def body(out):
        from cosmos.translation.attempts import train_checked as train

        uri = rt.tracking(tracking_uri, out["translator"])
        res = train(data.path, out["translator"], cfg, tracking_uri=uri, register=True)
        write_pointer(out["translator"], res.model_dir)
        return {"run_id": res.run_id or "", "model_version": res.model_version or ""}

    result = rt.run("train_translator", {"translator": translator.path}, body, key=key, work_root=work_root)
    translator.metadata.update(result)
    outputs = namedtuple("TranslatorOutputs", ["run_id", "model_version"])
    return outputs(result["run_id"], result["model_version"])
