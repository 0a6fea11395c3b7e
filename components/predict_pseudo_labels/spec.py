"""predict_pseudo_labels's pod: one GPU; nnU-Net's export workers pass tensors through /dev/shm."""

from components.predict_pseudo_labels.component import predict_pseudo_labels
from components.spec import HOUR, StageSpec
from components.spec import StageResources as R

SPEC = StageSpec(
    predict_pseudo_labels,
    # per GB in data_uri: the cropped data in; sliding-window prediction of every target scan
    disk_per_gb=1.1,
    work_s_per_gb=120,
    gpu=True,
    secret=True,
    shm=True,
    scratch=True,
    resources={
        "tiny": R("1", "2", "2Gi", "4Gi", 1 * HOUR, shm="1Gi"),
        "small": R("2", "4", "4Gi", "8Gi", 2 * HOUR, shm="2Gi"),
        # Sliding-window prediction of every case (8x mirroring), export workers use /dev/shm.
        "paper": R("4", "8", "24Gi", "40Gi", 8 * HOUR, shm="8Gi"),
    },
)
