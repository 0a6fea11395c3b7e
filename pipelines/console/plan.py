"""The rows a run's view starts with: the compiled pipeline's tasks, roughly in the order they run."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PlannedTask:
    """One task the pipeline will run: its KFP task name, a label for people, the DAG tasks it sits in."""

    task: str
    label: str
    parents: tuple[str, ...] = ()


def plan_tasks(pipeline: Any, args: dict[str, Any]) -> list[PlannedTask]:
    """The tasks of a compiled pipeline function, roughly in the order they run (waiting rows of the view).

    A ParallelFor's inner tasks appear once per item when the items are a pipeline argument or a
    literal list (the folds); conditions are expanded (their tasks may end up skipped). Any spec this
    does not understand gives an empty plan: the view then adds rows as tasks start.
    """
    try:
        spec = pipeline.pipeline_spec
        return _plan_dag(spec, spec.root.dag, args, ())
    except Exception:  # a plan is a nicety; never fail a run over it
        return []


def _loop_count(task_spec: Any, args: dict[str, Any]) -> int:
    if task_spec.WhichOneof("iterator") != "parameter_iterator":
        return 1
    items = task_spec.parameter_iterator.items
    if items.WhichOneof("kind") == "raw":
        value = json.loads(items.raw)
    else:
        value = args.get(items.input_parameter.removeprefix("pipelinechannel--"))
    return len(value) if isinstance(value, (list, tuple)) and value else 1


def _depth_order(tasks: dict[str, Any]) -> list[str]:
    """Task names close to the order they run: by round, then dependency depth, then name.

    Why the round: depth alone interleaves round 1's first task with round 0's last ones; people
    read the table round by round. A task's round is the ``round N`` of its display name (the
    compiled spec's ``task_info``, not a log line), else the latest round it depends on (-1 before
    the first round).
    """
    depth: dict[str, int] = {}
    rnd: dict[str, int] = {}

    def deps(name: str) -> list[str]:
        return [x for x in tasks[name].dependent_tasks if x in tasks and x != name]

    def d(name: str, seen: frozenset[str] = frozenset()) -> tuple[int, int]:
        if name not in depth:
            below = [d(x, seen | {name}) for x in deps(name) if x not in seen]
            depth[name] = 1 + max((b[0] for b in below), default=-1)
            m = re.search(r"\bround (\d+)\b", tasks[name].task_info.name or "")
            rnd[name] = int(m.group(1)) if m else max((b[1] for b in below), default=-1)
        return depth[name], rnd[name]

    return sorted(tasks, key=lambda n: (d(n)[1], d(n)[0], n))


def _plan_dag(spec: Any, dag: Any, args: dict[str, Any], parents: tuple[str, ...]) -> list[PlannedTask]:
    plan: list[PlannedTask] = []
    for name in _depth_order(dict(dag.tasks)):
        task = dag.tasks[name]
        component = spec.components[task.component_ref.name]
        if component.WhichOneof("implementation") == "dag":
            inner = _plan_dag(spec, component.dag, args, (*parents, name))
            n = _loop_count(task, args)
            for i in range(n):
                plan += [
                    PlannedTask(p.task, f"{p.label} [{i + 1}/{n}]" if n > 1 else p.label, p.parents) for p in inner
                ]
        else:
            plan.append(PlannedTask(name, task.task_info.name or name, parents))
    return plan
