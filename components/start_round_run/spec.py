"""start_round_run's pod: a small MLflow client; opens the round's run (never cached)."""

from components.spec import Caching, StageSpec
from components.spec import StageResources as R
from components.start_round_run.component import start_round_run

SPEC = StageSpec(
    start_round_run,
    # per GB in data_uri: downloads the round's prepared data (its input) to open the MLflow run
    disk_per_gb=1.8,
    work_s_per_gb=0,
    scratch=True,  # downloads a whole data set (see disk_per_gb)
    secret=True,
    caching=Caching.SIDE_EFFECTS,
    resources={
        "tiny": R("100m", "1", "256Mi", "1Gi", 600),
        "small": R("100m", "1", "256Mi", "1Gi", 600),
        "paper": R("250m", "1", "512Mi", "1Gi", 900),
    },
)
