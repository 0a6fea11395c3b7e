"""components/_runtime.py (config, fast exit), cosmos.resume (keyed resumable stage dirs), the
round summary steps of cosmos.selftraining.rounds, and the local runner's console filter.
Fast: no KFP task runs here."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from components import _runtime as rt
from cosmos import resume
from cosmos.selftraining import rounds


# ------------------------------------------------------------------------------ config
def test_load_cfg_profile_then_yaml_then_experiment():
    cfg = rt.load_cfg("tiny", "")
    assert cfg.profile == "tiny" and cfg.segmentation.folds == [0]
    cfg = rt.load_cfg("paper", "{segmentation: {epochs: 7}}", experiment="exp-x")
    assert cfg.profile == "paper" and cfg.segmentation.epochs == 7
    assert cfg.segmentation.features_max == 320  # the rest stays the paper profile
    assert cfg.tracking.experiment == "exp-x"


def test_load_cfg_full_resolved_yaml_round_trips():
    from cosmos.config import load_config

    cfg = load_config("tiny", overrides=["translator.loss_preset=report", "segmentation.epochs=5"])
    again = rt.load_cfg("tiny", cfg.to_yaml())
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize(
    "text, match", [("[1, 2]", "mapping"), ("a: [", "not valid YAML"), ("{nosuch: {x: 1}}", "nosuch")]
)
def test_load_cfg_errors_are_cosmos_errors(text, match):
    from cosmos.errors import CosmosError

    with pytest.raises(CosmosError, match=match):
        rt.load_cfg("tiny", text)


# ------------------------------------------------------------------------------ keys
def test_stage_key_depends_on_params_inputs_and_only_named_sections(tmp_path):
    from cosmos.config import load_config

    cfg = load_config("tiny")
    a = tmp_path / "a"
    a.mkdir()
    (a / resume.KEY_FILE).write_text("lineage-1")
    base = resume.stage_key("s", {"round": 0}, [a], cfg, ["segmentation"])
    assert base == resume.stage_key("s", {"round": 0}, [a], cfg, ["segmentation"])
    assert base != resume.stage_key("s", {"round": 1}, [a], cfg, ["segmentation"])
    assert base != resume.stage_key("t", {"round": 0}, [a], cfg, ["segmentation"])
    assert base != resume.stage_key(
        "s", {"round": 0}, [a], cfg.with_overrides(["segmentation.epochs=9"]), ["segmentation"]
    )
    # a section the stage does not read does not invalidate it
    assert base == resume.stage_key(
        "s", {"round": 0}, [a], cfg.with_overrides(["translator.epochs=9"]), ["segmentation"]
    )
    (a / resume.KEY_FILE).write_text("lineage-2")  # upstream changed
    assert base != resume.stage_key("s", {"round": 0}, [a], cfg, ["segmentation"])


def test_training_keys_leave_out_prediction_only_fields_and_the_round_count(tmp_path):
    """Changing how a model predicts, or how many rounds run, must not re-train a finished round."""
    from cosmos.config import PREDICTION_ONLY, ROUND_COUNT, load_config

    cfg = load_config("tiny")
    sections = ["segmentation", "selftraining"]
    exclude = (*PREDICTION_ONLY, *ROUND_COUNT)
    train = resume.stage_key("train_fold", {"round": 0}, [], cfg, sections, exclude=exclude)
    for change in (
        "segmentation.cochlea_components=all",
        "segmentation.mirroring=true",
        "segmentation.vs_component=largest",
        "selftraining.rounds=3",
    ):
        other = cfg.with_overrides([change])
        assert resume.stage_key("train_fold", {"round": 0}, [], other, sections, exclude=exclude) == train, change
        # a stage that predicts still sees it
        assert resume.stage_key("predict", {}, [], other, sections) != resume.stage_key(
            "predict", {}, [], cfg, sections
        )
    for change in ("segmentation.epochs=9", "selftraining.student_init=scratch"):
        other = cfg.with_overrides([change])
        assert resume.stage_key("train_fold", {"round": 0}, [], other, sections, exclude=exclude) != train, change
    assert cfg.to_dict()["segmentation"]["cochlea_components"] == "per_side"  # the config itself is not edited


def test_local_fingerprint_sees_changed_files(tmp_path):
    assert resume.local_fingerprint("") == ""
    assert resume.local_fingerprint("s3://b/p") == "s3://b/p"
    (tmp_path / "x.nii.gz").write_bytes(b"1")
    first = resume.local_fingerprint(str(tmp_path))
    (tmp_path / "x.nii.gz").write_bytes(b"12")
    assert resume.local_fingerprint(str(tmp_path)) != first


# ------------------------------------------------------------------------------ run_stage
def test_run_stage_local_runs_once_and_links_outputs(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    calls = []

    def body(out):
        calls.append(out)
        (out["model"] / "weights.bin").write_text("w")
        return {"run_id": "abc"}

    first = resume.run_stage("train", {"model": str(tmp_path / "run1" / "model")}, body, key="k1", work_root=str(work))
    assert first == {"run_id": "abc"} and len(calls) == 1
    link = tmp_path / "run1" / "model"
    assert link.is_symlink() and (link / "weights.bin").read_text() == "w"
    assert (link / resume.KEY_FILE).read_text() == "k1"
    assert (work / "train-k1" / resume.DONE_FILE).exists()
    # a new kfp.local run gives a new artifact path: the finished work is reused, not redone
    second = resume.run_stage("train", {"model": str(tmp_path / "run2" / "model")}, body, key="k1", work_root=str(work))
    assert second == first and len(calls) == 1
    assert (tmp_path / "run2" / "model" / "weights.bin").exists()
    timings = [json.loads(line) for line in (work / resume.TIMINGS_FILE).read_text().splitlines()]
    assert [t["reused"] for t in timings] == [False, True]
    # another key is other work
    resume.run_stage("train", {"model": str(tmp_path / "run3" / "model")}, body, key="k2", work_root=str(work))
    assert len(calls) == 2


def test_run_stage_killed_stage_resumes_in_the_same_dir(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    seen = []

    def crashing(out):
        (out["m"] / "checkpoint_latest.pth").write_text("epoch 1")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        resume.run_stage("fold", {"m": str(tmp_path / "a" / "m")}, crashing, key="k", work_root=str(work))
    assert not (work / "fold-k" / resume.DONE_FILE).exists()

    def resuming(out):
        seen.append((out["m"] / "checkpoint_latest.pth").read_text())
        return {"ok": True}

    result = resume.run_stage("fold", {"m": str(tmp_path / "b" / "m")}, resuming, key="k", work_root=str(work))
    assert result == {"ok": True}
    assert seen == ["epoch 1"]  # the library found its own checkpoint


# ------------------------------------------------------------------------------ run_component
def test_run_component_resolves_the_config_once_and_hands_it_on(tmp_path, monkeypatch):
    """The one helper every component calls: one config resolution, seen by the key hook and the step."""
    resolved = []
    real = rt.load_cfg

    def counting(*args):
        cfg = real(*args)
        resolved.append(cfg)
        return cfg

    monkeypatch.setattr(rt, "load_cfg", counting)
    work = tmp_path / "work"
    work.mkdir()
    seen = {}

    def params(cfg):
        seen["params"] = cfg
        return {"round": 2}

    def body(cfg, out):
        seen["body"] = cfg
        (out["model"] / "w").write_text(str(cfg.segmentation.epochs))
        return {"epochs": cfg.segmentation.epochs}

    kw = dict(profile="tiny", config="{segmentation: {epochs: 7}}", experiment="exp-r", work_root=str(work))
    out = str(tmp_path / "run1" / "model")
    result = rt.run_component(
        "fold", body, {"model": out}, run_name="fold2_0", params=params, sections=["segmentation"], **kw
    )
    assert result == {"epochs": 7} and len(resolved) == 1
    assert seen["params"] is seen["body"] is resolved[0]
    assert resolved[0].tracking.experiment == "exp-r"
    # the work dir is run_name + the key over exactly what the component named
    key = resume.stage_key("fold", {"round": 2}, [], resolved[0], ["segmentation"])
    assert (work / f"fold2_0-{key}" / resume.DONE_FILE).exists()
    assert (Path(out) / "w").read_text() == "7"
    # a second local run reuses the finished stage; another config value is other work
    seen.clear()
    again = rt.run_component(
        "fold",
        body,
        {"model": str(tmp_path / "run2" / "model")},
        run_name="fold2_0",
        params=params,
        sections=["segmentation"],
        **kw,
    )
    assert again == result and "body" not in seen
    kw["config"] = "{segmentation: {epochs: 8}}"
    other = rt.run_component(
        "fold",
        body,
        {"model": str(tmp_path / "run3" / "model")},
        run_name="fold2_0",
        params=params,
        sections=["segmentation"],
        **kw,
    )
    assert other == {"epochs": 8}


def test_run_component_params_hook_fails_before_any_work(tmp_path):
    from cosmos.errors import CosmosError

    ran = []

    def refuse(cfg):
        raise CosmosError("compiled for 3 rounds; recompile")

    with pytest.raises(CosmosError, match="recompile"):
        rt.run_component(
            "ingest",
            lambda cfg, out: ran.append(out) or {},
            {"data": str(tmp_path / "data")},
            profile="tiny",
            config="",
            work_root=str(tmp_path),
            params=refuse,
        )
    assert ran == [] and not list(tmp_path.glob("ingest-*"))


def test_run_stage_cluster_mode_writes_into_the_artifact(tmp_path):
    out = tmp_path / "artifact"
    result = resume.run_stage("s", {"o": str(out)}, lambda d: (d["o"] / "f").write_text("x") and {"n": 1}, key="kk")
    assert result == {"n": 1}
    assert not out.is_symlink() and (out / "f").read_text() == "x" and (out / resume.KEY_FILE).read_text() == "kk"


def test_model_pointer(tmp_path):
    from cosmos.errors import CosmosError

    (tmp_path / "a" / "model").mkdir(parents=True)
    resume.write_pointer(tmp_path / "a", tmp_path / "a" / "model")
    assert resume.read_pointer(tmp_path / "a") == (tmp_path / "a" / "model").resolve()
    assert resume.read_pointer(tmp_path / "b") == tmp_path / "b"
    with pytest.raises(CosmosError):
        resume.write_pointer(tmp_path / "a", tmp_path / "elsewhere")


# ------------------------------------------------------------------------------ summaries
def _round_inputs(tmp_path: Path, k: int, with_pseudo: bool):
    scores = tmp_path / f"scores{k}"
    scores.mkdir()
    metrics = {
        "summary": {"mean": {"dice_mean": 0.5 + k / 10, "dice_std": 0.1, "assd_mean": 2.0, "assd_std": 0.5}},
        "cases": {},
        "errors": {},
    }
    (scores / "metrics.json").write_text(json.dumps(metrics))
    preds = tmp_path / f"preds{k}"
    preds.mkdir()
    (preds / "crossmoda_17_Label.nii.gz").write_bytes(b"p")
    pseudo = kept = None
    if with_pseudo:
        pseudo = tmp_path / f"pseudo{k}"
        pseudo.mkdir()
        (pseudo / "crossmoda_9_Label.nii.gz").write_bytes(b"l")
        kept = tmp_path / f"kept{k}"
        kept.mkdir()
        (kept / "filter_summary.json").write_text(json.dumps({"kept": ["crossmoda_9"], "dropped": ["crossmoda_10"]}))
    return scores, preds, pseudo, kept


def test_round_summaries_accumulate_and_build_the_report_summary(tmp_path):
    prev = None
    for k in range(3):
        scores, preds, pseudo, kept = _round_inputs(tmp_path, k, with_pseudo=k < 2)
        out = tmp_path / f"summary{k}"
        out.mkdir()
        fs = {"kept": ["crossmoda_9"], "dropped": ["crossmoda_10"], "carried_over": []} if kept else None
        rounds.summarize(
            k,
            out,
            prev,
            version=str(k + 1),
            run_id=f"run-{k}",
            scores_dir=scores,
            predictions_dir=preds,
            labels_dir=pseudo,
            filter_summary=fs,
            gate={"promoted": k == 1, "why": "test"},
        )
        prev = out
    entries = json.loads((prev / rounds.ROUNDS_FILE).read_text())
    assert [r["index"] for r in entries] == [0, 1, 2]
    assert [r["name"] for r in entries] == ["teacher", "student 1", "student 2"]
    assert entries[0]["kept"] == ["crossmoda_9"] and entries[0]["dropped"] == ["crossmoda_10"]
    assert entries[2]["pseudo_labels_dir"] is None and entries[2]["kept"] == []
    assert [r["champion"] for r in entries] == [False, True, False]
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    summary, dice, run_id = rounds.build_bundle(prev, bundle, data_dir="/data", pseudo_dir="/pseudo", profile="tiny")
    assert run_id == "run-2"
    # the bundle holds the final round's outputs (the paper's protocol); the champion is named beside it
    assert summary["final_round"] == 2 and dice == "0.700" and summary["final_mean_dice"] == pytest.approx(0.7)
    assert summary["champion_round"] == 1 and summary["champion_mean_dice"] == pytest.approx(0.6)
    assert summary["verdict"]["passed"] and json.loads((bundle / "verdict.json").read_text()) == summary["verdict"]
    assert summary["rounds"][1]["metrics"]["summary"]["mean"]["dice_mean"] == pytest.approx(0.6)
    assert Path(summary["rounds"][0]["pseudo_labels_dir"]).is_dir()
    assert Path(summary["rounds"][2]["predictions_dir"]).is_dir()
    assert summary["rounds"][1]["model_version"] == "2"
    assert (bundle / "predictions" / "crossmoda_17_Label.nii.gz").exists()
    assert json.loads((bundle / "metrics.json").read_text())["summary"]["mean"]["dice_mean"] == pytest.approx(0.7)
    assert json.loads((bundle / "summary.json").read_text())["profile"] == "tiny"


# ------------------------------------------------------------------------------ console filter
def test_kfp_log_filter_keeps_progress_and_drops_the_executor_echo():
    from pipelines.local_run import _KfpLogFilter

    sink = io.StringIO()
    f = _KfpLogFilter(sink)
    f.write("22:29:32.669 - INFO - Executing task 'ingest-validate'\n22:29:32.669 - INFO - Streamed logs:\n\n")
    f.write('    [KFP Executor 2026 INFO]: Got executor_input:\n    {\n        "inputs": {\n')
    f.write('            "parameterValues": {\n                "n": 3\n            }\n        },\n    }\n')
    f.write("    22:29:41 INFO cosmos.component: stage ingest: done in 8.2 s\n")
    f.write("22:29:41.683 - INFO - Task 'ingest-validate' outputs:\n    data: Dataset( name='data',\n")
    f.write("                  uri='/x',\n                  metadata={} )\n    n_source: 8\n")
    f.write("22:29:41.683 - INFO - Task 'ingest-validate' finished with status SUCCESS\n")
    f.flush()
    text = sink.getvalue()
    assert "Executing task 'ingest-validate'" in text
    assert "stage ingest: done in 8.2 s" in text
    assert "finished with status SUCCESS" in text
    assert "n_source: 8" in text
    for dropped in ("executor_input", '"inputs"', '"n": 3', "uri='/x'", "Dataset( name", "Streamed logs"):
        assert dropped not in text


# ------------------------------------------------------------------------------ fast exit
@pytest.mark.parametrize("fail", [False, True])
def test_fast_exit_runs_other_exit_handlers_and_keeps_the_exit_code(tmp_path, fail):
    import subprocess
    import sys

    marker = tmp_path / "flushed"
    script = f"""
import atexit
from components import _runtime as rt
from cosmos import resume
from cosmos.selftraining import rounds
atexit.register(lambda: open({str(marker)!r}, "w").write("yes"))   # e.g. an MLflow flush
atexit.register(rt._fast_exit)
print("done", flush=True)
if {fail}:
    raise RuntimeError("task failed")
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == (1 if fail else 0), res.stderr
    assert marker.read_text() == "yes"
    assert "done" in res.stdout


def test_fast_exit_is_never_armed_outside_a_kfp_executor(monkeypatch, tmp_path):
    import atexit

    registered = []
    monkeypatch.setattr(atexit, "register", lambda f, *a, **k: registered.append(f))
    rt.run("s", {}, lambda d: {"ok": 1}, key="k", work_root=str(tmp_path))  # pytest is no kfp executor_main
    assert registered == []


def test_cosmos_run_rejects_missing_inputs_before_starting(tmp_path, capsys):
    from cosmos.cli import main

    assert main(["run", "--out", str(tmp_path / "o"), "--data", str(tmp_path / "nope")]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["run", "--out", "s3://bucket/x"]) == 2
    assert not (tmp_path / "o").exists()
