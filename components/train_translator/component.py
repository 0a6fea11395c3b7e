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
    compiled_profile: str = "",
) -> NamedTuple("TranslatorOutputs", [("run_id", str), ("model_version", str)]):  # type: ignore[valid-type]  # KFP's syntax for named outputs
    """translator: the training directory; its self-contained model dir is recorded inside it.
    overrides: a compile-time YAML layer (e.g. the benchmark's pure-CycleGAN row)."""
    from collections import namedtuple

    from components import _runtime as rt
    from cosmos.config import checks_except

    def body(cfg, out):
        from cosmos.resume import write_pointer
        from cosmos.translation.attempts import train_checked as train

        uri = rt.tracking(tracking_uri, out["translator"])
        res = train(data.path, out["translator"], cfg, tracking_uri=uri, register=True)
        write_pointer(out["translator"], res.model_dir)
        return {"run_id": res.run_id or "", "model_version": res.model_version or ""}

    result = rt.run_component(
        "train_translator",
        body,
        {"translator": translator.path},
        profile=profile,
        compiled_profile=compiled_profile,
        config=config,
        experiment=experiment,
        overrides=overrides,
        work_root=work_root,
        inputs=[data.path],
        sections=["translator", "tracking", "checks"],
        exclude=checks_except("fidelity_min_pass", "fidelity_gate"),
    )
    translator.metadata.update(result)
    outputs = namedtuple("TranslatorOutputs", ["run_id", "model_version"])  # type: ignore[name-match]
    return outputs(result["run_id"], result["model_version"])
