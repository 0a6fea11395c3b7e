"""register_round's pod: CPU only; registers a model version and may move ``champion`` (never cached)."""

from components.register_round.component import register_round
from components.spec import HOUR, Caching, StageSpec
from components.spec import StageResources as R

SPEC = StageSpec(
    register_round,
    # per GB in data_uri: fold models and JSON only
    disk_per_gb=0.1,
    work_s_per_gb=0,
    secret=True,
    caching=Caching.SIDE_EFFECTS,
    resources={
        "tiny": R("500m", "1", "1Gi", "2Gi", 1 * HOUR),
        "small": R("500m", "1", "2Gi", "4Gi", 1 * HOUR),
        "paper": R("1", "2", "4Gi", "8Gi", 2 * HOUR),
    },
)
