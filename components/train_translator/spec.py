"""train_translator's pod: one GPU; an MLflow run and a registered model (never cached)."""

from components.spec import HOUR, Caching, StageSpec
from components.spec import StageResources as R
from components.train_translator.component import train_translator

SPEC = StageSpec(
    train_translator,
    # per GB in data_uri: the cropped data in; a fixed number of iterations, whatever the data size
    disk_per_gb=1.0,
    work_s_per_gb=0,
    scratch=True,  # downloads the whole cropped data set
    gpu=True,
    secret=True,
    caching=Caching.SIDE_EFFECTS,
    resources={
        "tiny": R("1", "2", "2Gi", "4Gi", 2 * HOUR),
        "small": R("2", "4", "4Gi", "8Gi", 4 * HOUR),
        # CycleGAN + segmentor on one GPU; data loading in the main process.
        "paper": R("4", "8", "16Gi", "32Gi", 24 * HOUR),
    },
)
