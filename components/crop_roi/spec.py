"""crop_roi's pod: CPU only (resampling and I/O); credentials for the artifact store (s3:// pipeline root)."""

from components.crop_roi.component import crop_roi
from components.spec import HOUR, StageSpec
from components.spec import StageResources as R

SPEC = StageSpec(
    crop_roi,
    secret=True,
    # per GB in data_uri: the ingested data in, the cropped data out; resamples every scan
    disk_per_gb=2.0,
    work_s_per_gb=60,
    scratch=True,
    resources={
        "tiny": R("500m", "2", "1Gi", "2Gi", 1 * HOUR),
        "small": R("500m", "2", "2Gi", "4Gi", 1 * HOUR),
        # crop every volume to the inner-ear region (resampling, I/O; CPU only).
        "paper": R("2", "4", "4Gi", "8Gi", 3 * HOUR),
    },
)
