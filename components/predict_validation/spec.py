"""predict_validation's pod: one GPU and /dev/shm; artifacts in and out, so no credentials."""

from components.predict_validation.component import predict_validation
from components.spec import HOUR, StageSpec
from components.spec import StageResources as R

SPEC = StageSpec(
    predict_validation,
    gpu=True,
    shm=True,
    scratch=True,
    resources={
        "tiny": R("1", "2", "2Gi", "4Gi", 1 * HOUR, shm="1Gi"),
        "small": R("2", "4", "4Gi", "8Gi", 2 * HOUR, shm="2Gi"),
        "paper": R("4", "8", "16Gi", "32Gi", 4 * HOUR, shm="8Gi"),
    },
)
