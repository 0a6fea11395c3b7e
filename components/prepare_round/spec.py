"""prepare_round's pod: CPU only (nnU-Net plan + preprocess with num_processes workers)."""

from components.prepare_round.component import prepare_round
from components.spec import HOUR, StageSpec
from components.spec import StageResources as R

SPEC = StageSpec(
    prepare_round,
    scratch=True,
    resources={
        "tiny": R("1", "2", "2Gi", "4Gi", 1 * HOUR),
        "small": R("2", "4", "4Gi", "8Gi", 2 * HOUR),
        # nnU-Net plan + preprocess with num_processes workers.
        "paper": R("4", "8", "16Gi", "32Gi", 6 * HOUR),
    },
)
