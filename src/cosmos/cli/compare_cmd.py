"""``cosmos compare PRIOR_LABEL CURRENT_LABEL``: the VS volume change between two scans' label maps.

Why: clinicians follow a vestibular schwannoma by its volume over time; volumetry detects growth that
linear measures miss, and 20 % is the volumetric growth threshold used in VS surveillance studies
(van de Langenberg et al. 2009: smallest detectable change 19.7 % by volume). Volumes are physical
(voxel count x voxel volume), so the two labels may lie on different grids; nothing is resampled.
"""

from __future__ import annotations

import json

from cosmos.evaluation.measurements import DEFAULT_GROWTH_THRESHOLD_PCT


def register(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="VS volume change between a prior and a current label map (flags growth)",
        description="Reads two label maps (VS=1, cochlea=2; any grids), prints the VS volume in each, the change "
        "in ml and %, and flags growth above --growth-threshold. Exit 0 whether or not the tumour grew.",
    )
    p.add_argument("prior", metavar="PRIOR_LABEL", help="the earlier scan's label NIfTI")
    p.add_argument("current", metavar="CURRENT_LABEL", help="the later scan's label NIfTI")
    p.add_argument(
        "--growth-threshold",
        type=float,
        default=DEFAULT_GROWTH_THRESHOLD_PCT,
        metavar="PCT",
        help=f"flag growth above this VS volume increase in %% (default {DEFAULT_GROWTH_THRESHOLD_PCT:g})",
    )
    p.add_argument("--json", action="store_true", help="print the comparison as JSON instead of one line")
    p.set_defaults(func=_run)


def check_threshold(value: float, flag: str = "--growth-threshold") -> float:
    """A growth threshold in %: finite and not negative; one clear line otherwise."""
    import math

    from cosmos.errors import CosmosError

    if not math.isfinite(value) or value < 0:
        raise CosmosError(f"{flag}: {value!r} is not a percentage >= 0")
    return float(value)


def _run(args) -> int:
    from cosmos.evaluation.measurements import compare, describe_comparison, measure_file

    threshold = check_threshold(args.growth_threshold)
    prior = measure_file(args.prior)
    current = measure_file(args.current)
    result = compare(prior, current, threshold)
    if args.json:
        print(json.dumps({"prior": str(args.prior), "current": str(args.current), **result}, indent=2))
    else:
        print(describe_comparison(result, str(args.prior), str(args.current)))
        if result["note"]:
            print(f"note: {result['note']}")
    return 0
