"""COSMOS stage 1: target-aware domain translation (ceT1 -> pseudo-hrT2), paper sections 3.1 / 4.2.

Public entry points (the KFP components and the CLI call these):

* :func:`cosmos.translation.training.train_translator` - train, log to MLflow, register the S->T generator.
* :func:`cosmos.translation.conversion.convert_source` - pseudo-hrT2 on each source grid + label copies.
* :func:`cosmos.translation.conversion.convert_volume` - one volume, bounded memory.

Modules: ``networks`` (U-Net generators with a shared encoder, PatchGAN), ``losses`` (eq. 1-5),
``slices`` (grid, normalisation), ``model_io`` (model dir + MLflow pyfunc), ``samples`` (Fig.-3 grids).
"""
