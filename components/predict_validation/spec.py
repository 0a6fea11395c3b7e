"""predict_validation's pod: one GPU and /dev/shm; credentials for the artifact store (s3:// pipeline root)."""

from components.predict_validation.component import predict_validation
from components.spec import HOUR, StageSpec
from components.spec import StageResources as R

SPEC = StageSpec(
    predict_validation,
    # per GB in data_uri: the cropped data in; prediction of the validation scans
    disk_per_gb=1.1,
    work_s_per_gb=30,
    secret=True,
    gpu=True,
    shm=True,
    scratch=True,
    resources={
        "tiny": R("1", "2", "2Gi", "4Gi", 1 * HOUR, shm="1Gi"),
        "small": R("2", "4", "4Gi", "8Gi", 2 * HOUR, shm="2Gi"),
        "paper": R("4", "8", "16Gi", "32Gi", 4 * HOUR, shm="8Gi"),
    },
)
