"""Iterative teacher-student self-training (COSMOS paper 3.3, Algorithm 1).

* :mod:`cosmos.selftraining.filtering` - keep pseudo-labels that contain every structure.
* :mod:`cosmos.selftraining.loop` - teacher + K students in local form (the KFP pipeline runs
  the same library calls as separate tasks).
"""
