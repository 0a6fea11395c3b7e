"""report's pod: CPU only; attaches the report to the final round's MLflow run (never cached)."""

from components.report.component import report
from components.spec import HOUR, Caching, StageSpec
from components.spec import StageResources as R

SPEC = StageSpec(
    report,
    # per GB in data_uri: the cropped data and the pseudo-hrT2 in (the report's figures)
    disk_per_gb=1.5,
    work_s_per_gb=10,
    scratch=True,  # downloads a whole data set (see disk_per_gb)
    secret=True,
    caching=Caching.SIDE_EFFECTS,
    resources={
        "tiny": R("500m", "1", "1Gi", "2Gi", 1 * HOUR),
        "small": R("500m", "1", "2Gi", "4Gi", 1 * HOUR),
        "paper": R("1", "2", "4Gi", "8Gi", 1 * HOUR),
    },
)
