"""translate's pod: one GPU (minutes; the CPU would take hours), credentials for the translator's store."""

from components.spec import HOUR, StageSpec
from components.spec import StageResources as R
from components.translate.component import translate

SPEC = StageSpec(
    translate,
    # per GB in data_uri: the cropped data in, the pseudo-hrT2 (the source scans) out
    disk_per_gb=1.5,
    work_s_per_gb=30,
    gpu=True,
    secret=True,
    scratch=True,
    resources={
        "tiny": R("1", "2", "2Gi", "4Gi", 1 * HOUR),
        "small": R("2", "4", "4Gi", "8Gi", 2 * HOUR),
        # ceT1 -> pseudo-hrT2 conversion of 105 volumes (GPU: minutes; the CPU would take hours).
        "paper": R("4", "8", "8Gi", "16Gi", 6 * HOUR),
    },
)
