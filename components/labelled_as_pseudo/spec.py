"""labelled_as_pseudo's pod: I/O only (links or copies labelled scans); credentials for the artifact store."""

from components.labelled_as_pseudo.component import labelled_as_pseudo
from components.spec import HOUR, StageSpec
from components.spec import StageResources as R

SPEC = StageSpec(
    labelled_as_pseudo,
    # per GB in data_uri: the cropped data in, the labelled scans out
    disk_per_gb=1.5,
    work_s_per_gb=10,
    secret=True,
    scratch=True,
    resources={
        "tiny": R("500m", "2", "1Gi", "2Gi", 1 * HOUR),
        "small": R("500m", "2", "1Gi", "2Gi", 1 * HOUR),
        # ablation rows: copy/link an existing pseudo-hrT2 set or the labelled data (I/O only).
        "paper": R("1", "2", "2Gi", "4Gi", 3 * HOUR),
    },
)
