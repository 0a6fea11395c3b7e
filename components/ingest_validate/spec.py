"""ingest_validate's pod: CPU only; reads the data URI (credentials for S3).

Cached by KFP when its inputs are unchanged: the ``data_fingerprint`` parameter (keys, sizes and ETags
of the s3:// data, computed by ``cosmos submit`` and checked by the task itself) puts the data into
KFP's cache key, so an unchanged data set is not copied again and every downstream task whose inputs
are unchanged can hit the cache too. A run without a fingerprint (the Kubeflow UI, ``kfp run submit``)
gets the same task with caching off (``pipelines/cosmos_pipeline.py`` ``_add_ingest``).
"""

from components.ingest_validate.component import ingest_validate
from components.spec import HOUR, StageSpec
from components.spec import StageResources as R

SPEC = StageSpec(
    ingest_validate,
    secret=True,
    # per GB in data_uri: downloads data_uri and stages it as its output (+ the validation copy); validates every file
    disk_per_gb=2.2,
    work_s_per_gb=30,
    scratch=True,
    resources={
        "tiny": R("500m", "2", "1Gi", "2Gi", 1 * HOUR),
        "small": R("500m", "2", "1Gi", "2Gi", 1 * HOUR),
        # 105 + 105 + 32 volumes; the ingest copies and validates all of them.
        "paper": R("2", "4", "4Gi", "8Gi", 3 * HOUR),
    },
)
