"""evaluate's pod: CPU only; logs the round's metrics to MLflow (never cached)."""

from components.evaluate.component import evaluate
from components.spec import HOUR, Caching, StageSpec
from components.spec import StageResources as R

SPEC = StageSpec(
    evaluate,
    # per GB in data_uri: the validation set, the crop windows and the predictions in
    disk_per_gb=0.3,
    work_s_per_gb=30,
    secret=True,
    caching=Caching.SIDE_EFFECTS,
    resources={
        "tiny": R("500m", "2", "1Gi", "2Gi", 1 * HOUR),
        "small": R("1", "2", "2Gi", "4Gi", 1 * HOUR),
        "paper": R("2", "4", "4Gi", "8Gi", 2 * HOUR),
    },
)
