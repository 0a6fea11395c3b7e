"""train_fold's pod: one GPU, nnU-Net's augmentation workers on /dev/shm, retried when preempted."""

from components.spec import HOUR, StageSpec
from components.spec import StageResources as R
from components.train_fold.component import train_fold

SPEC = StageSpec(
    train_fold,
    # per GB in data_uri: the round's prepared data in; a fixed number of epochs x iterations
    disk_per_gb=1.8,
    work_s_per_gb=0,
    gpu=True,
    secret=True,
    shm=True,
    # GPU nodes are often preemptible. With segmentation.checkpoint_uri set, a retried fold resumes
    # from its last checkpoint in the object store; without it, from epoch 0. The CPU profiles
    # retry nothing: they mostly run under kfp.local, which honours retries, and there a retry
    # only repeats a deterministic failure.
    retry=True,
    scratch=True,
    resources={
        "tiny": R("1", "2", "3Gi", "6Gi", 2 * HOUR, shm="1Gi"),
        "small": R("2", "4", "6Gi", "10Gi", 6 * HOUR, shm="2Gi"),
        # One nnU-Net fold: the GPU plus up to 12 augmentation workers (one core each) sharing
        # batches through /dev/shm; 200 epochs x 250 iterations fit well inside 48 h on one GPU.
        "paper": R("12", "16", "48Gi", "64Gi", 48 * HOUR, shm="16Gi", retries=3),
    },
)
