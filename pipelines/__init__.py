"""The Kubeflow side of COSMOS: the ``cosmos-pipeline`` DAG and the ways to run it.

* ``cosmos_pipeline`` -- the DAG (``build_pipeline(PipelineOptions)``), compile-time options.
* ``compile``         -- ``cosmos compile``: the KFP package for a cluster.
* ``submit``          -- ``cosmos submit``: upload + run through ``kfp.Client``.
* ``local_run``       -- ``cosmos run``: the same DAG through ``kfp.local`` on this machine.

These modules import kfp; the ``cosmos`` library never does.
"""
