"""Iterative teacher-student self-training (COSMOS paper 3.3, Algorithm 1).

* :mod:`cosmos.selftraining.rounds` - the steps of a round, one per DAG task, each with its own
  bookkeeping (the DAG in ``pipelines/cosmos_pipeline.py`` is the one orchestration of them); it
  re-exports the names of the three modules below it:

  * :mod:`cosmos.selftraining.naming` - round and MLflow names, params, tags, the files steps hand on.
  * :mod:`cosmos.selftraining.gate` - ``register``: the registry version and the promotion gate.
  * :mod:`cosmos.selftraining.summary` - the cumulative round summary, the run's bundle and report.
* :mod:`cosmos.selftraining.filtering` - which pseudo-labels a student may train on.
"""
