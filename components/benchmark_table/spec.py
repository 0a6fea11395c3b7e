"""benchmark_table's pod: CPU only; reads the rows' summaries, writes the table; credentials for the artifact store."""

from components.benchmark_table.component import benchmark_table
from components.spec import HOUR, StageSpec
from components.spec import StageResources as R

SPEC = StageSpec(
    benchmark_table,
    # per GB in data_uri: the rows' summaries only
    disk_per_gb=0.0,
    work_s_per_gb=0,
    secret=True,
    resources={
        "tiny": R("500m", "1", "1Gi", "2Gi", 1 * HOUR),
        "small": R("500m", "1", "2Gi", "4Gi", 1 * HOUR),
        "paper": R("500m", "1", "2Gi", "4Gi", 1 * HOUR),
    },
)
