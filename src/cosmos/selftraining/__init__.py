"""Iterative teacher-student self-training (COSMOS paper 3.3, Algorithm 1).

* :mod:`cosmos.selftraining.rounds` - the steps of a round, one per DAG task, each with its own
  bookkeeping (the DAG in ``pipelines/cosmos_pipeline.py`` is the one orchestration of them).
* :mod:`cosmos.selftraining.filtering` - which pseudo-labels a student may train on.
"""
