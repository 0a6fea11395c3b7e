"""The Kubeflow side of COSMOS: the ``cosmos-pipeline`` DAG and the ways to run it.

* ``task_settings``  -- compile-time options (``PipelineOptions``) and how one task gets its stage's settings.
* ``cosmos_pipeline`` -- the DAG (``build_pipeline(PipelineOptions)``) and the one definition of a round.
* ``benchmark_pipeline`` -- ``cosmos-benchmark``: the Table-1 ablation DAG, those rounds once per row.
* ``compile``         -- ``cosmos compile``: the KFP package for a cluster (``compile_pipeline``).
* ``submit``          -- ``cosmos submit``: upload + run through ``kfp.Client``.
* ``local_run``       -- ``cosmos run``: the same DAG through ``kfp.local`` on this machine.

These modules import kfp; the ``cosmos`` library never does.
"""
