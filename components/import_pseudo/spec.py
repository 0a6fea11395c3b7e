"""import_pseudo's pod: I/O only; reads a folder outside KFP's artifacts (never cached)."""

from components.import_pseudo.component import import_pseudo
from components.spec import HOUR, Caching, StageSpec
from components.spec import StageResources as R

SPEC = StageSpec(
    import_pseudo,
    # per GB in data_uri: the pseudo-hrT2 folder in (from S3 when s3://), cropped copy out
    disk_per_gb=1.0,
    work_s_per_gb=10,
    secret=True,
    caching=Caching.EXTERNAL_INPUT,
    scratch=True,
    resources={
        "tiny": R("500m", "2", "1Gi", "2Gi", 1 * HOUR),
        "small": R("500m", "2", "1Gi", "2Gi", 1 * HOUR),
        # ablation rows: copy/link an existing pseudo-hrT2 set or the labelled data (I/O only).
        "paper": R("1", "2", "2Gi", "4Gi", 3 * HOUR),
    },
)
