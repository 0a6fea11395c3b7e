"""prepare_round's pod: CPU only (nnU-Net plan + preprocess with num_processes workers); credentials for the artifact store."""

from components.prepare_round.component import prepare_round
from components.spec import HOUR, StageSpec
from components.spec import StageResources as R

SPEC = StageSpec(
    prepare_round,
    # per GB in data_uri: data, pseudo and the previous round's nnU-Net data in, nnU-Net raw + preprocessed out
    disk_per_gb=5.0,
    work_s_per_gb=120,
    secret=True,
    scratch=True,
    resources={
        "tiny": R("1", "2", "2Gi", "4Gi", 1 * HOUR),
        "small": R("2", "4", "4Gi", "8Gi", 2 * HOUR),
        # nnU-Net plan + preprocess with num_processes workers.
        "paper": R("4", "8", "16Gi", "32Gi", 6 * HOUR),
    },
)
