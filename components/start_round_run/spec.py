"""start_round_run's pod: a small MLflow client; opens the round's run (never cached)."""

from components.spec import Caching, StageSpec
from components.spec import StageResources as R
from components.start_round_run.component import start_round_run

SPEC = StageSpec(
    start_round_run,
    secret=True,
    caching=Caching.SIDE_EFFECTS,
    resources={
        "tiny": R("100m", "1", "256Mi", "1Gi", 600),
        "small": R("100m", "1", "256Mi", "1Gi", 600),
        "paper": R("250m", "1", "512Mi", "1Gi", 900),
    },
)
