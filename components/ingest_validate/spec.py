"""ingest_validate's pod: CPU only; reads the data URI (never cached), credentials for S3."""

from components.ingest_validate.component import ingest_validate
from components.spec import HOUR, Caching, StageSpec
from components.spec import StageResources as R

SPEC = StageSpec(
    ingest_validate,
    secret=True,
    caching=Caching.EXTERNAL_INPUT,
    scratch=True,
    resources={
        "tiny": R("500m", "2", "1Gi", "2Gi", 1 * HOUR),
        "small": R("500m", "2", "1Gi", "2Gi", 1 * HOUR),
        # 105 + 105 + 32 volumes; the ingest copies and validates all of them.
        "paper": R("2", "4", "4Gi", "8Gi", 3 * HOUR),
    },
)
