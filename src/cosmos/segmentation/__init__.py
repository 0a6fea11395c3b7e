"""nnU-Net v2 adapter: raw-dataset export, plan + preprocess, fold training, ensemble prediction.

nnU-Net is used as an unmodified library. Importing this package only sets small worker-pool
defaults for nnU-Net (before nnunetv2 is imported, see ``environment``); heavy imports happen
inside the functions, so ``cosmos.segmentation.registry`` etc. stay cheap to import.

Public entry points (see the cross-team contracts):

* ``cosmos.segmentation.prepare.prepare_round``  - export + plan + preprocess -> one self-contained dir
* ``cosmos.segmentation.training.train_fold``    - one fold, resumable, independent of other folds
* ``cosmos.segmentation.inference.predict``      - fold ensemble, mirroring TTA, VS largest component
"""

import os as _os

# nnunetv2 reads nnUNet_def_n_proc once at import; without it validation/export spawn 8 workers.
_os.environ.setdefault("nnUNet_def_n_proc", "2")
_os.environ.setdefault("nnUNet_compile", "0")
