"""The terminal view of ``cosmos run``: recorded task output in, per-stage logs and a compact console out.

The text lines below are real ones from a tiny run's ``OUT/logs/tasks.log`` (executor JSON and nnU-Net's
plan dumps shortened); the ``@cosmos-event`` lines are the structured events the stages write
(:mod:`cosmos.events`), built here with the same code that writes them. They go through the same
objects ``cosmos run`` uses (``TaskOutput`` -> ``StageRouter`` -> a view), without running a pipeline.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cosmos import events
from pipelines import live_view, run_guard
from pipelines.console import kfp_lines
from pipelines.live_view import LiveView, PlainView, PlannedTask, StageRouter, choose_mode

C, G, R, X = "\x1b[96m", "\x1b[92m", "\x1b[91m", "\x1b[0m"


def ev(stage: str, kind: events.Kind, **fields) -> str:
    """One event line as a stage writes it."""
    return events.Event(stage=stage, kind=kind, ts=0.0, **fields).to_line()


INGEST = f"""14:04:20.830 - INFO - Executing task {C}'ingest-validate'{X}
14:04:20.830 - INFO - Streamed logs:

    [KFP Executor 2026-11-29 14:04:21,351 INFO]: Got executor_input:
    {{
        "inputs": {{
            "parameterValues": {{
                "profile": "tiny",
                "work_root": "/o/work"
            }}
        }}
    }}
    14:04:22 INFO cosmos.stage: stage ingest: start (work dir /o/work/ingest-516bc388c130c42f)
    {ev("ingest", "start", work="/o/work/ingest-516bc388c130c42f")}
    14:04:27 INFO cosmos.data.phantom: phantom: generating 10 of 10 cases (scale=small, seed=0) in /o/work/ingest
    {ev("ingest", "progress", desc="phantom", done=0, total=10, unit="case")}
    phantom:   0%|          | 0/10 [00:00<?, ?case/s]
    {ev("ingest", "progress", desc="phantom", done=5, total=10, unit="case")}
    phantom:  50%|█████     | 5/10 [00:11<00:11,  2.35s/case]
    phantom: 100%|██████████| 10/10 [00:23<00:00,  2.32s/case]{ev("ingest", "progress", desc="phantom", done=10, total=10, unit="case")}
    14:05:00 INFO cosmos.stage: stage ingest: done in 38.7 s
    {ev("ingest", "end", seconds=38.7)}
    14:05:00 INFO root: Wrote executor output file to /o/pipeline_root/ingest-validate/executor_output.json.


14:05:00.897 - INFO - Task {C}'ingest-validate'{X} finished with status {G}SUCCESS{X}
14:05:00.898 - INFO - Task {C}'ingest-validate'{X} outputs:
    n_source: 4
    data: Dataset( name='data',
                   uri='/o/pipeline_root/ingest-validate/data',
                   metadata={{'n_source': 4.0}} )
--------------------------------------------------------------------------------
"""

CROP_CACHED = "14:05:00 INFO root: Task crop-roi cache hit (key=3f2a9c81d0aa); skipping execution.\n"

TRAIN_FOLD = f"""14:15:48.343 - INFO - Executing task {C}'train-fold'{X}
14:15:48.343 - INFO - Streamed logs:

    14:15:49 INFO cosmos.stage: stage train_fold0_0: start (work dir /o/work/train_fold0_0-182805e18df530c5)
    {ev("train_fold0_0", "start", work="/o/work/train_fold0_0-182805e18df530c5")}
    14:16:31 INFO cosmos.segmentation.training: training fold 0 of round 0 on cpu (3d_fullres_cosmos, 2 epochs, \
DA workers 0, seed 0)
    Using device: cpu

    #######################################################################
    Please cite the following paper when using nnU-Net:
    Isensee, F., Jaeger, P. F., Kohl, S. A., Petersen, J., & Maier-Hein, K. H. (2021). nnU-Net: a self-configuring \
method for deep learning-based biomedical image segmentation. Nature methods, 18(2), 203-211.
    #######################################################################

    This is the configuration used by this training:
    Configuration name: 3d_fullres_cosmos
     {{'data_identifier': 'nnUNetPlans_3d_fullres', 'preprocessor_name': 'DefaultPreprocessor', 'batch_size': 2}}

    2026-11-29 14:16:37.367213: Epoch 0
    2026-11-29 14:16:37.367327: Current learning rate: 0.01
    2026-11-29 14:17:47.491233: train_loss 1.5332
    2026-11-29 14:17:47.502194: Epoch time: 70.13 s
    {ev("train_fold0_0", "progress", desc="nnU-Net", done=1, total=2, unit="epoch")}
    2026-11-29 14:17:47.510000: Epoch 1
    2026-11-29 14:17:49.502194: Epoch time: 2.01 s
    {ev("train_fold0_0", "progress", desc="nnU-Net", done=2, total=2, unit="epoch")}
    2026-11-29 14:17:53.988610: Training done.
    14:17:54 WARNING cosmos.segmentation.training: fold 0: validation Dice is 0 (too few epochs to learn)
    {ev("train_fold0_0", "warning", message="fold 0: validation Dice is 0 (too few epochs to learn)")}
    14:17:54 INFO cosmos.stage: stage train_fold0_0: done in 124.8 s
    {ev("train_fold0_0", "end", seconds=124.8)}


14:17:55.025 - INFO - Task {C}'train-fold'{X} finished with status {G}SUCCESS{X}
--------------------------------------------------------------------------------
14:17:55.035 - INFO - Pipeline 'cosmos-pipeline' finished with status SUCCESS
"""

PROBLEM = (
    "/home/me/bad: 1 problem(s) in the dataset:\n"
    "  /home/me/bad/source_training/crossmoda_1_ceT1.nii.gz: corrupt or truncated gzip stream"
)


def failed_run(task: str = "ingest-validate", stage: str = "ingest") -> str:
    """A task whose stage fails on a corrupt file (its fail event, its log lines, kfp's skipping lines)."""
    return f"""13:59:20.291 - INFO - Executing task {C}'{task}'{X}
13:59:20.291 - INFO - Streamed logs:

    13:59:20 INFO cosmos.stage: stage {stage}: start (work dir /o/work/ingest-1aa6e54cda577840)
    {ev(stage, "start", work="/o/work/ingest-1aa6e54cda577840")}
    13:59:21 INFO cosmos.data.ingest: copied ['source_training', 'target_training'] from /home/me/bad to /o/work/ingest
    validate: 100%|██████████| 5/5 [00:00<00:00, 23.47case/s]
    13:59:21 ERROR cosmos.stage: stage {stage} failed: /home/me/bad: 1 problem(s) in the dataset:
      /home/me/bad/source_training/crossmoda_1_ceT1.nii.gz: corrupt or truncated gzip stream
    {ev(stage, "fail", message=PROBLEM, user_error=True, seconds=1.2)}
    Traceback (most recent call last):
      File "/work/main/src/cosmos/resume.py", line 108, in _call
        return body(dirs)
               ^^^^^^^^^^
      File "/work/main/src/cosmos/data/ingest.py", line 104, in ingest
        raise DatasetError(data_uri or "phantom", [to_user(p) for p in report.errors])
    cosmos.data.ingest.DatasetError: /home/me/bad: 1 problem(s) in the dataset:
      /home/me/bad/source_training/crossmoda_1_ceT1.nii.gz: corrupt or truncated gzip stream


13:59:21.995 - ERROR - Task {C}'{task}'{X} finished with status {R}FAILURE{X}
--------------------------------------------------------------------------------
Skipping task train-translator: upstream task(s) ['{task}'] failed.
Skipping task for-loop-1: upstream task(s) ['train-translator'] failed.
"""


FAILED = failed_run()

PLAN = [
    PlannedTask("ingest-validate", "ingest + validate"),
    PlannedTask("crop-roi", "crop to the inner-ear region"),
    PlannedTask("train-translator", "train translator (CycleGAN)"),
    PlannedTask("train-fold", "round 0: train fold", ("for-loop-1",)),
]


def _section_lines(text: str) -> list[str]:
    """The lines a stage's log keeps: colours gone, event lines left out (the events are in tasks.log)."""
    return [kfp_lines.strip_ansi(x) for x in text.splitlines() if events.PREFIX not in x]


def _run(tmp_path: Path, text: str, view: live_view.View, plan=PLAN) -> tuple[StageRouter, run_guard.TaskOutput]:
    """Feed ``text`` the way kfp.local prints it (sys.stdout -> TaskOutput) into a router with ``view``."""
    router = StageRouter(tmp_path / "logs", view, plan)
    output = run_guard.TaskOutput(io.StringIO(), tmp_path / "logs" / "tasks.log", router=router)
    for line in text.splitlines(keepends=True):  # kfp's indented print: indent and line are two writes
        if line.startswith("    "):
            output.write("    ")
            line = line[4:]
        output.write(line)
    output.flush()
    return router, output


def _live(buf: io.StringIO) -> LiveView:
    from rich.console import Console

    return LiveView(buf, console=Console(file=buf, width=120, height=40, force_terminal=False, force_interactive=False))


# ----------------------------------------------------------------------------------------- logs
def test_every_task_line_reaches_its_stage_log_and_tasks_log(tmp_path):
    router, output = _run(tmp_path, INGEST + CROP_CACHED + TRAIN_FOLD, PlainView(io.StringIO()))
    router.close(ok=True)
    output.close()
    logs = tmp_path / "logs"
    ingest, fold = (logs / "ingest.log").read_text(), (logs / "train_fold0_0.log").read_text()
    for line in _section_lines(INGEST):
        assert line in ingest.splitlines()  # the executor echo before "stage ingest: start" too
    for line in _section_lines(TRAIN_FOLD.split("14:17:55.035")[0]):
        assert line in fold.splitlines()
    assert "Please cite the following paper" in fold and "Please cite" not in ingest
    assert "nnU-Net" not in ingest and "phantom:  50%" not in fold
    tasks = (logs / "tasks.log").read_text()
    assert tasks.count("Please cite the following paper") == 1 and "phantom:  50%" in tasks
    # the events are machine lines: in the full log, not in the stage logs people read
    assert tasks.count(events.PREFIX) == INGEST.count(events.PREFIX) + TRAIN_FOLD.count(events.PREFIX)
    assert events.PREFIX not in ingest + fold and "phantom: 100%|██████████| 10/10" in ingest
    assert [r.state for r in router.rows] == ["done", "reused", "skipped", "done"]


def test_parallel_folds_are_told_apart_by_their_thread(tmp_path):
    """kfp.local prints ParallelFor iterations from their own threads; both tasks are named 'train-fold'."""
    router = StageRouter(tmp_path / "logs", PlainView(io.StringIO()))
    output = run_guard.TaskOutput(io.StringIO(), tmp_path / "logs" / "tasks.log", router=router)
    start = threading.Barrier(2)

    def fold(k: int) -> None:
        start.wait()
        output.write("14:00:00.000 - INFO - Executing task 'train-fold'\n")
        output.write("    ")
        output.write(ev(f"train_fold0_{k}", "start", work="/o/w") + "\n")
        for i in range(200):
            output.write("    ")  # the indent and the line are separate writes: they must not mix across threads
            output.write(f"fold {k} line {i}\n")
        output.write("14:00:09.000 - INFO - Task 'train-fold' finished with status SUCCESS\n")

    threads = [threading.Thread(target=fold, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    router.close(ok=True)
    output.close()
    for k in (0, 1):
        text = (tmp_path / "logs" / f"train_fold0_{k}.log").read_text()
        assert sum(f"    fold {k} line " in x for x in text.splitlines()) == 200
        assert f"fold {1 - k} line" not in text
    assert [r.state for r in router.rows] == ["done", "done"]


def test_the_log_text_alone_changes_no_state(tmp_path):
    """Stage state comes from events only: the same output without its event lines names no stage,
    draws no bar and has no problem to show beyond kfp's own status."""

    def text_only(text: str) -> str:
        return "".join(x for x in text.splitlines(keepends=True) if events.PREFIX not in x)

    router, _ = _run(tmp_path, text_only(INGEST.split("    phantom: 100%")[0]), PlainView(io.StringIO()))
    assert router.rows[0].state == "running" and router.rows[0].stage is None and router.rows[0].progress is None
    router, output = _run(tmp_path / "b", text_only(FAILED), PlainView(io.StringIO()))
    router.close(ok=False)
    output.close()
    row = router.rows[0]
    assert row.state == "failed" and row.problem == "the task exited with an error"
    assert row.log_path == tmp_path / "b" / "logs" / "ingest-validate.log"  # named after the KFP task
    assert output.failure_message() is None


def test_a_torn_or_foreign_event_line_is_only_text(tmp_path):
    good = ev("ingest", "progress", desc="validate", done=3, total=5, unit="case")
    assert events.parse_line("\rvalidate:  40%|####  | 2/5\r" + good) == events.parse_line(good)
    assert events.parse_line(good).done == 3
    for bad in (good[:-5], events.PREFIX + '{"stage": "x", "kind": "explode"}', events.PREFIX + "[1, 2]", "plain"):
        assert events.parse_line(bad) is None
    router, _ = _run(
        tmp_path, INGEST.split("    phantom:   0%")[0] + "    " + good[:-5] + "\n", PlainView(io.StringIO())
    )
    assert router.rows[0].progress is not None and router.rows[0].progress.desc == "phantom"  # the torn line: ignored


# ----------------------------------------------------------------------------------------- console
def test_live_view_shows_one_line_per_stage(tmp_path):
    buf = io.StringIO()
    router, output = _run(tmp_path, INGEST + CROP_CACHED + TRAIN_FOLD, _live(buf))
    router.close(ok=True)
    output.close()
    console = buf.getvalue()
    lines = console.splitlines()
    # the warning (a note above the view), the title, one row per planned stage
    assert len(lines) == 1 + 1 + len(PLAN), console
    assert "validation Dice is 0" in lines[0]
    for noise in ("Please cite", "executor_input", "Epoch", "phantom:", "Dataset(", "Streamed logs", "-----"):
        assert noise not in console
    rows = {p.label: next(x for x in lines[2:] if p.label in x) for p in PLAN}
    assert "done" in rows["ingest + validate"] and "ingest" in rows["ingest + validate"].split()[-1]
    assert "reused" in rows["crop to the inner-ear region"]
    assert "skipped" in rows["train translator (CycleGAN)"]  # never ran in a successful run: a condition said no
    assert "done" in rows["round 0: train fold"] and "train_fold0_0" in rows["round 0: train fold"]


def test_progress_comes_from_the_stages_progress_events(tmp_path):
    router, _ = _run(tmp_path, INGEST.split("    phantom: 100%")[0], PlainView(io.StringIO()))
    p = router.rows[0].progress
    assert (p.desc, p.n, p.total, p.unit) == ("phantom", 5, 10, "case")
    router, _ = _run(tmp_path / "b", TRAIN_FOLD.split("Epoch 1")[0], PlainView(io.StringIO()))
    p = router.rows[3].progress
    assert (p.desc, p.n, p.total, p.unit) == ("nnU-Net", 1, 2, "epoch")
    router, _ = _run(tmp_path / "c", TRAIN_FOLD.split("Training done")[0], PlainView(io.StringIO()))
    assert router.rows[3].progress.n == 2
    router, _ = _run(tmp_path / "d", TRAIN_FOLD.split("14:17:55.025")[0], PlainView(io.StringIO()))
    assert router.rows[3].progress is None and router.rows[3].stage == "train_fold0_0"  # its end event


def test_a_running_stage_has_a_bar_and_the_frame_fits_the_terminal(tmp_path):
    from rich.console import Console

    plan = [PlannedTask(f"t{i}", f"stage {i}") for i in range(40)] + PLAN
    router, _ = _run(tmp_path, INGEST.split("    phantom: 100%")[0], PlainView(io.StringIO()), plan)
    view = _live(io.StringIO())
    view.attach(router)
    out = io.StringIO()
    Console(file=out, width=100, height=12, force_terminal=False).print(view)
    frame = out.getvalue().splitlines()
    assert len(frame) <= 12
    running = next(x for x in frame if "ingest + validate" in x)
    assert "running" in running and "━" in running and "5/10 case" in running
    assert any("more stage(s) waiting" in x for x in frame)
    view.stop()


def test_a_failed_stage_names_its_log_file_and_its_problem(tmp_path):
    buf = io.StringIO()
    router, output = _run(tmp_path, FAILED, _live(buf))
    router.close(ok=False)
    output.close()
    console = buf.getvalue()
    row = next(x for x in console.splitlines() if "ingest + validate" in x)
    assert "failed" in row and "ingest.log" in row
    assert console.splitlines()[-2].startswith(
        "✗ ingest + validate: stage ingest failed: /home/me/bad: 1 problem(s) in the dataset:"
    )
    assert console.splitlines()[-1].strip() == f"full log: {tmp_path / 'logs' / 'ingest.log'}"
    assert "Traceback" not in console and "Skipping task" not in console
    assert "DatasetError" in (tmp_path / "logs" / "ingest.log").read_text()
    assert [r.state for r in router.rows] == ["failed", "waiting", "skipped", "skipped"]


def test_plain_mode_prints_one_line_per_stage_start_and_end(tmp_path):
    buf = io.StringIO()
    router, output = _run(
        tmp_path,
        INGEST + CROP_CACHED + TRAIN_FOLD + failed_run("report"),
        PlainView(buf),
        PLAN + [PlannedTask("report", "report")],
    )
    router.close(ok=False)
    output.close()
    lines = buf.getvalue().splitlines()
    stages = [x.split(" ", 1)[1] for x in lines if x.split(" ", 1)[1].startswith("[")]
    assert stages[:4] == [
        "[1/5] ingest + validate: running",
        "[1/5] ingest + validate: done in 0.0 s",
        "[2/5] crop to the inner-ear region: reused",
        "[4/5] round 0: train fold: running",
    ]
    assert stages[4].startswith("[4/5] round 0: train fold: done in ") and stages[5] == "[5/5] report: running"
    assert stages[6].startswith("[5/5] report: FAILED after ") and "/home/me/bad: 1 problem(s)" in stages[6]
    assert stages[6].endswith("logs/ingest-2.log)")  # its stage said "ingest": the second such log this run
    assert len(lines) == len(stages) + 1  # and the stage's warning
    assert not any("━" in x or "\x1b[" in x or "\r" in x for x in lines)


def test_supervise_with_a_view_keeps_the_console_small_and_names_the_stage_log(tmp_path, caplog):
    from cosmos.errors import CosmosError

    buf = io.StringIO()
    caplog.set_level(logging.INFO)
    with pytest.raises(CosmosError) as info:
        with run_guard.supervise(tmp_path, data_uri="/home/me/bad", view=PlainView(buf), plan=PLAN):
            for line in (INGEST + failed_run("crop-roi", "crop_roi")).splitlines():
                print(line)
            logging.getLogger("kfp").info("Skipping task train-translator: upstream task(s) ['crop-roi'] failed.")
            raise RuntimeError(
                "Pipeline 'cosmos-pipeline' finished with status FAILURE. Inner task failed: 'crop-roi'."
            )
    assert str(info.value).startswith("stage crop_roi failed: /home/me/bad: 1 problem(s) in the dataset:")
    console = buf.getvalue().splitlines()
    assert len(console) == 4 and "crop_roi.log" in console[-1]
    assert any("re-run the same command" in r.getMessage() for r in caplog.records)
    assert sys.stdout is not None and not isinstance(sys.stdout, run_guard.TaskOutput)


@pytest.mark.timeout(60)
def test_the_live_view_redraws_while_parallel_tasks_print(tmp_path):
    """rich's refresh thread and two printing task threads (with warnings, which print above the view) never block."""
    from rich.console import Console

    buf = io.StringIO()
    view = LiveView(buf, console=Console(file=buf, width=100, height=20, force_terminal=True, force_interactive=True))
    router = StageRouter(tmp_path / "logs", view, PLAN)
    output = run_guard.TaskOutput(io.StringIO(), tmp_path / "logs" / "tasks.log", router=router)

    def task(k: int) -> None:
        output.write(TRAIN_FOLD.replace("train_fold0_0", f"train_fold0_{k}").split("14:17:55.025")[0] * 1)
        for i in range(300):
            note = "    " + ev(f"train_fold0_{k}", "warning", message=f"note {k}.{i}") + "\n"
            output.write(note if i % 100 == 0 else f"    line {i}\n")
        output.write("14:17:55.025 - INFO - Task 'train-fold' finished with status SUCCESS\n")

    threads = [threading.Thread(target=task, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    router.close(ok=True)
    output.close()
    assert buf.getvalue().count("note 0.") == 3 and "train_fold0_1" in buf.getvalue()


# ----------------------------------------------------------------------------------------- events of real stages
def _stage_output(capsys, stage: str, body, work: Path, task: str = "") -> tuple[str, BaseException | None]:
    """What a task prints around ``cosmos.resume.run_stage`` (kfp's lines and the stage's stderr)."""
    from cosmos import resume

    capsys.readouterr()
    error: BaseException | None = None
    try:
        resume.run_stage(stage, {"out": str(work / "artifact" / stage)}, body, key="k", work_root=str(work))
    except Exception as exc:
        error = exc
    emitted = capsys.readouterr().err
    task = task or stage.replace("_", "-")
    status = "FAILURE" if error else "SUCCESS"
    text = f"00:00:00.000 - INFO - Executing task '{task}'\n"
    text += "".join(f"    {x}\n" for x in emitted.splitlines())
    text += f"00:00:01.000 - INFO - Task '{task}' finished with status {status}\n"
    return text, error


def test_run_stage_events_drive_the_view(tmp_path, capsys):
    """start/end, reused and fail (with the one-line problem) as cosmos.resume writes them, read back."""
    from cosmos.errors import CosmosError

    work = tmp_path / "work"
    work.mkdir()

    def ok(out):
        return {"n": 1}

    def bad(out):
        raise CosmosError(f"{work}/ingest-0a/data/source_training/crossmoda_1_ceT1.nii.gz: corrupt\n  second line")

    def crash(out):
        raise ZeroDivisionError("division by zero")

    runs = {name: _stage_output(capsys, name, body, work) for name, body in (("fit", ok), ("bad_input", bad))}
    runs["again"] = _stage_output(capsys, "fit", ok, work, task="fit-again")  # the same key: reused
    runs["crash"] = _stage_output(capsys, "crash", crash, work)
    kinds = {name: [e.kind for e in map(events.parse_line, text.splitlines()) if e] for name, (text, _) in runs.items()}
    assert kinds == {
        "fit": ["start", "end"],
        "bad_input": ["start", "fail"],
        "again": ["reused", "end"],
        "crash": ["start", "fail"],
    }
    assert isinstance(runs["bad_input"][1], CosmosError) and isinstance(runs["crash"][1], ZeroDivisionError)

    plan = [PlannedTask(t, t) for t in ("fit", "bad-input", "fit-again", "crash")]
    buf = io.StringIO()
    router = StageRouter(
        tmp_path / "logs", PlainView(buf), plan, humanize=lambda t: run_guard.user_paths(t, work, "s3://b/d")
    )
    output = run_guard.TaskOutput(io.StringIO(), tmp_path / "logs" / "tasks.log", router=router)
    for name in ("fit", "bad_input", "again", "crash"):
        output.write(runs[name][0])
    router.close(ok=False)
    output.close()
    rows = {r.task: r for r in router.rows}
    assert [rows[t].state for t in ("fit", "bad-input", "fit-again", "crash")] == ["done", "failed", "reused", "failed"]
    assert rows["fit"].stage == rows["fit-again"].stage == "fit" and rows["fit"].progress is None
    assert (
        rows["bad-input"].problem == "stage bad_input failed: s3://b/d/source_training/crossmoda_1_ceT1.nii.gz: corrupt"
    )
    assert rows["crash"].problem == "a task failed: ZeroDivisionError: division by zero"
    assert rows["bad-input"].log_path is not None and rows["bad-input"].log_path.name == "bad_input.log"
    assert output.failure_message(work, "s3://b/d") == (
        "stage bad_input failed: s3://b/d/source_training/crossmoda_1_ceT1.nii.gz: corrupt\n  second line"
    )
    console = buf.getvalue()
    assert "FAILED after" in console and "bad_input.log" in console and "Traceback" not in console


# ----------------------------------------------------------------------------------------- modes
class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "verbose", "env", "mode"),
    [
        (_Tty(), False, {}, "live"),
        (_Tty(), True, {}, "verbose"),
        (_Tty(), False, {"COSMOS_NO_PROGRESS": "1"}, "plain"),
        (_Tty(), False, {"TERM": "dumb"}, "plain"),
        (io.StringIO(), False, {}, "plain"),
        (io.StringIO(), True, {"COSMOS_NO_PROGRESS": "1"}, "verbose"),
    ],
)
def test_mode_follows_the_terminal_ci_and_verbose(stream, verbose, env, mode):
    assert choose_mode(stream, verbose, env) == mode


def test_the_plan_lists_every_task_of_the_real_pipeline_round_by_round():
    from cosmos.config import load_config
    from pipelines.cosmos_pipeline import build_pipeline
    from pipelines.local_run import _local_options

    cfg, opts = _local_options(load_config("tiny", None, ["segmentation.folds=[0,1]", "selftraining.rounds=1"]), "tiny")
    plan = live_view.plan_tasks(build_pipeline(opts), {"folds": [0, 1]})
    labels = [p.label for p in plan]
    assert labels[0] == "ingest + validate" and labels[-1] == "report"
    assert labels.count("round 0: train fold [1/2]") == 1 and labels.count("round 1: train fold [2/2]") == 1
    first_round1 = next(i for i, x in enumerate(labels) if x.startswith("round 1"))
    assert all(not x.startswith("round 0") for x in labels[first_round1:])
    assert len(plan) == 4 + 2 * 8 + 1  # 4 before the rounds, 8 per round with two folds, the report
    assert live_view.plan_tasks(object(), {}) == []  # not a pipeline: no plan, rows come as tasks start


def test_the_closing_summary_does_not_list_every_stage(tmp_path):
    from pipelines.local_run import LocalRunResult, describe

    stages = [{"stage": f"stage{i}", "seconds": float(i), "reused": i % 5 == 0} for i in range(30)]
    (tmp_path / "predictions").mkdir()
    result = LocalRunResult(
        tmp_path,
        tmp_path / "predictions",
        tmp_path / "report",
        None,
        tmp_path / "s.json",
        "sqlite:///x.db",
        12.0,
        stages,
    )
    text = describe(result)
    assert len(text.splitlines()) <= 10 and "stage29 29 s" in text and "6 reused" in text
    assert f"{tmp_path / 'logs'}/<stage>.log" in text


# ----------------------------------------------------------------------------------------- a real run
def _screen(data: str) -> list[str]:
    """The lines a terminal keeps after ``data`` (\\r, \\n, erase-line, cursor-up: what rich's Live sends)."""
    lines, row, col = [""], 0, 0
    for m in re.finditer(r"\x1b\[([0-9;?]*)([A-Za-z])|\r|\n|[^\x1b\r\n]+", data):
        t = m.group(0)
        if t == "\n":
            row, col = row + 1, 0
            if row == len(lines):
                lines.append("")
        elif t == "\r":
            col = 0
        elif m.group(2):
            if m.group(2) == "A":
                row = max(0, row - int(m.group(1) or 1))
            elif m.group(2) == "K":
                lines[row] = "" if m.group(1) == "2" else lines[row][:col]
        else:
            lines[row] = lines[row][:col] + t + lines[row][col + len(t) :]
            col += len(t)
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _run_in_a_terminal(argv: list[str], env: dict[str, str], rows: int = 40, cols: int = 110) -> tuple[int, str]:
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("terminal", [False, True])
def test_a_failing_cosmos_run_prints_a_few_lines(tmp_path_factory, terminal):
    """A real ``cosmos run`` through kfp.local whose first stage fails (no dataset): a handful of lines.

    ``terminal``: under a pseudo-terminal (the live view), counting the lines the screen keeps; else a pipe
    (plain stage lines). The folder is a short one at pytest's base temp: the error names its paths, and a
    deeper folder (pytest-xdist adds ``popen-gwN/``) would wrap one more line on the 80-column screen.
    """
    base = tmp_path_factory.getbasetemp()
    base = base.parent if base.name.startswith("popen-") else base  # the run's base temp, with or without xdist
    tmp_path = base / f"lv{int(terminal)}-{os.getpid()}"
    bad = tmp_path / "bad"
    (bad / "source_training").mkdir(parents=True)
    cli = "import sys; from cosmos.cli import main; sys.exit(main())"
    argv = [sys.executable, "-c", cli, "run", "--out", str(tmp_path / "out"), "--data", str(bad)]
    if terminal:
        env = {k: v for k, v in os.environ.items() if k != "COSMOS_NO_PROGRESS"} | {"TERM": "xterm"}
        rc, text = _run_in_a_terminal(argv, env)
        console = _screen(text)
        assert any(x.startswith("✗ ingest + validate") and "failed" in x for x in console), "\n".join(console)
    else:
        res = subprocess.run(
            argv, capture_output=True, text=True, env={**os.environ, "COSMOS_NO_PROGRESS": "1"}, timeout=220
        )
        rc, console = res.returncode, (res.stdout + res.stderr).splitlines()
    assert rc == 2, "\n".join(console)
    assert len(console) <= 15, "\n".join(console)
    assert any("logs/ingest.log" in x for x in console)
    assert any(x.startswith("cosmos: error: stage ingest failed:") for x in console)
    assert (tmp_path / "out" / "logs" / "ingest.log").is_file()
