"""Issue 14 row 8: a stage that fails on bad input ends ``cosmos run`` with the problem, not a traceback.

SAMPLE is real ``cosmos run`` console output for a dataset with one corrupt file (trimmed: 3 of
its 24 "Skipping task" lines; paths generalised; the stage's ``fail`` event, :mod:`cosmos.events`,
built by the code that writes it), fed through the same wrapper ``cosmos run`` uses.
"""

from __future__ import annotations

import os
import sys

import pytest

from cosmos import events, process_guard
from cosmos.errors import CosmosError
from pipelines import run_guard

SAMPLE = """\
13:57:54.724 - INFO - Executing task \x1b[96m'ingest-validate'\x1b[0m

                    0.0
    13:57:55 INFO cosmos.stage: stage ingest: start (work dir {out}/work/ingest-1aa6e54cda577840)
    13:57:55 INFO cosmos.data.ingest: copied ['source_training', 'target_training', 'target_validation', 'target_validation_labels'] from {data} to {out}/work/ingest-1aa6e54cda577840/data
\x20\x20\x20\x20
    validate:   0%|          | 0/5 [00:00<?, ?case/s]
    13:57:56 ERROR cosmos.stage: stage ingest failed: {data}: 1 problem(s) in the dataset:
      {data}/source_training/crossmoda_1_ceT1.nii.gz: corrupt or truncated gzip stream (it ends before its end-of-stream marker)
    {fail_event}
    Traceback (most recent call last):
      File "<frozen runpy>", line 198, in _run_module_as_main
      File "<frozen runpy>", line 88, in _run_code
      File "/repo/.venv/lib/python3.11/site-packages/kfp/dsl/executor_main.py", line 109, in <module>
        executor_main()
      File "/repo/.venv/lib/python3.11/site-packages/kfp/dsl/executor_main.py", line 101, in executor_main
        output_file = executor.execute()
                      ^^^^^^^^^^^^^^^^^^
      File "/repo/.venv/lib/python3.11/site-packages/kfp/dsl/executor.py", line 453, in execute
        result = self.func(**func_kwargs)
                 ^^^^^^^^^^^^^^^^^^^^^^^^
      File "{out}/tmp/tmp.JOt4CwTQG3/ephemeral_component.py", line 40, in ingest_validate
        result = rt.run("ingest", {"data": data.path}, body, key=key, work_root=work_root)
                 ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
      File "/repo/components/_runtime.py", line 130, in run
        result = run_stage(stage, outputs, body, key=key, work_root=work_root)
                 ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
      File "/repo/src/cosmos/resume.py", line 147, in run_stage
        result = _call(stage, body, dirs)
                 ^^^^^^^^^^^^^^^^^^^^^^^^
      File "/repo/src/cosmos/resume.py", line 108, in _call
        return body(dirs)
               ^^^^^^^^^^
      File "{out}/tmp/tmp.JOt4CwTQG3/ephemeral_component.py", line 35, in body
        ds = ingest(data_uri, out["data"], val_labels_uri=val_labels_uri or None, cfg=cfg,
             ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
      File "/repo/src/cosmos/data/ingest.py", line 104, in ingest
        raise DatasetError(data_uri or "phantom", [to_user(p) for p in report.errors])
    cosmos.data.ingest.DatasetError: {data}: 1 problem(s) in the dataset:
      {data}/source_training/crossmoda_1_ceT1.nii.gz: corrupt or truncated gzip stream (it ends before its end-of-stream marker)
\x20\x20\x20\x20
13:57:56.573 - ERROR - Task \x1b[96m'ingest-validate'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m
13:57:56 INFO root: Skipping task train-translator: upstream task(s) ['ingest-validate'] failed.
13:57:56 INFO root: Skipping task translate: upstream task(s) ['ingest-validate', 'train-translator'] failed.
13:57:56 INFO root: Skipping task prepare-round: upstream task(s) ['ingest-validate', 'translate'] failed.
"""


def _fail_event(stage: str, message: str, user_error: bool = True) -> str:
    return events.Event(stage=stage, kind="fail", ts=0.0, message=message, user_error=user_error).to_line()


def _sample(out: str, data: str) -> str:
    problem = (
        f"{data}: 1 problem(s) in the dataset:\n  {data}/source_training/crossmoda_1_ceT1.nii.gz: "
        "corrupt or truncated gzip stream (it ends before its end-of-stream marker)"
    )
    return SAMPLE.replace("{fail_event}", _fail_event("ingest", problem)).replace("{out}", out).replace("{data}", data)


def _feed(tmp_path, text, hide=True):
    """``hide``: the console of ``cosmos run`` (one line per stage); else ``--verbose`` (the full stream)."""
    from pipelines.console.router import StageRouter
    from pipelines.console.views import PlainView

    console = []

    class Console:
        def write(self, s):
            console.append(s)

        def flush(self):
            pass

    router = StageRouter(tmp_path / "logs", PlainView(Console())) if hide else None
    out = run_guard.TaskOutput(Console(), tmp_path / "logs" / "tasks.log", router=router)
    out.write(text)
    out.flush()
    return out, "".join(console)


def test_failure_line_is_the_stage_problem_in_the_users_path(tmp_path):
    text = _sample("/o", "/home/me/data")
    out, console = _feed(tmp_path, text)
    msg = out.failure_message(tmp_path / "work", "/home/me/data")
    assert msg == (
        "stage ingest failed: /home/me/data: 1 problem(s) in the dataset:\n"
        "  /home/me/data/source_training/crossmoda_1_ceT1.nii.gz: corrupt or truncated gzip stream "
        "(it ends before its end-of-stream marker)"
    )
    assert "Traceback" not in console and 'File "' not in console and "Skipping task" not in console
    assert console.count("1 problem(s) in the dataset") == 1  # the stage's line, not again from the traceback
    out.close()
    logged = (tmp_path / "logs" / "tasks.log").read_text()
    assert "Traceback (most recent call last):" in logged and logged.count("Skipping task") == 3


def test_verbose_keeps_the_traceback_on_the_console(tmp_path):
    _, console = _feed(tmp_path, _sample("/o", "/d"), hide=False)
    assert "Traceback (most recent call last):" in console


def test_a_work_dir_copy_is_named_as_the_users_file_or_s3_key(tmp_path):
    work = tmp_path / "work"
    line = "    " + _fail_event(
        "translator",
        f"{work}/ingest-0123abcd/data/source_training/crossmoda_2_Label.nii.gz: label values outside 0..255",
    )
    line += "\n"
    out, _ = _feed(tmp_path, line)
    assert out.failure_message(work, "s3://bucket/crossmoda") == (
        "stage translator failed: s3://bucket/crossmoda/source_training/crossmoda_2_Label.nii.gz: "
        "label values outside 0..255"
    )
    vl = "    " + _fail_event("evaluate", f"{work}/ingest-0a/data/target_validation_labels/c.nii.gz: bad") + "\n"
    out, _ = _feed(tmp_path, vl)
    assert out.failure_message(work, "/d", "/labels/") == "stage evaluate failed: /labels/c.nii.gz: bad"


def test_an_unexpected_crash_still_gives_its_last_line(tmp_path):
    crash = _fail_event("x", "ZeroDivisionError: division by zero", user_error=False)
    text = (
        "13:00 - INFO - Executing task 'x'\n"
        f'    Traceback (most recent call last):\n      File "x.py", line 1, in <module>\n    {crash}\n'
        "    ZeroDivisionError: division by zero\n\n13:00 - ERROR - Task 'x' finished with status FAILURE\n"
    )
    out, console = _feed(tmp_path, text)
    assert out.failure_message() == "a task failed: ZeroDivisionError: division by zero"
    assert "Traceback" not in console and "x: FAILED after" in console
    assert console.count("ZeroDivisionError") == 1  # the stage's line says it once


def test_supervise_turns_a_failed_pipeline_into_one_cosmos_error(tmp_path, capsys):
    data = str(tmp_path / "data")
    before = os.environ.get(process_guard.TOKEN_ENV)
    with pytest.raises(CosmosError) as info:
        with run_guard.supervise(tmp_path, data_uri=data):
            assert os.environ.get(process_guard.TOKEN_ENV)  # tasks started now are tagged
            print(_sample(str(tmp_path), data))
            raise RuntimeError(
                "Pipeline 'cosmos-pipeline' finished with status FAILURE. Inner task failed: 'ingest-validate'."
            )
    lines = str(info.value).splitlines()
    assert lines[0] == f"stage ingest failed: {data}: 1 problem(s) in the dataset:"
    assert lines[-1].startswith(f"  {data}/source_training/crossmoda_1_ceT1.nii.gz: corrupt")
    console = capsys.readouterr().out
    assert "Traceback" not in console and "Inner task failed" not in str(info.value)
    assert os.environ.get(process_guard.TOKEN_ENV) == before
    assert sys.stdout is not None and not isinstance(sys.stdout, run_guard.TaskOutput)
    assert "DatasetError" in (tmp_path / "logs" / "tasks.log").read_text()


def test_supervise_passes_other_errors_through(tmp_path):
    with pytest.raises(RuntimeError, match="no stage said why"):
        with run_guard.supervise(tmp_path):
            raise RuntimeError("no stage said why")
    with pytest.raises(KeyError):
        with run_guard.supervise(tmp_path):
            raise KeyError("x")


# ---------------------------------------------------------------- row 2: kfp.local's cache sees edited data
def test_kfp_cache_is_cleared_when_the_data_changed(tmp_path):
    data = tmp_path / "data" / "source_training"
    data.mkdir(parents=True)
    label = data / "crossmoda_1_Label.nii.gz"
    label.write_bytes(b"label 1")
    out, cache = tmp_path / "out", tmp_path / "out" / "kfp_cache"
    cache.mkdir(parents=True)
    entry = cache / "abc.json"
    entry.write_text("{}")
    # no record yet (a run by an older version): the cache cannot be trusted
    assert run_guard.forget_stale_cache(out, str(tmp_path / "data")) is True and not entry.exists()
    entry.write_text("{}")
    assert run_guard.forget_stale_cache(out, str(tmp_path / "data")) is False and entry.exists()
    label.write_bytes(b"label 3")  # edited in place: same name, same size
    os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 1000))
    with run_guard.supervise(out, data_uri=str(tmp_path / "data")):
        pass
    assert not entry.exists()  # the ingest task will run again and validate the edit
