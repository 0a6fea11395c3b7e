"""Overhead of our nnU-Net wrapper: one fold through ``train_fold`` vs nnU-Net's own ``nnUNetv2_train``.

What is compared, exactly (same prepared round, same plan ``CosmosPlans`` / ``3d_fullres_cosmos``,
same fold, same budget, same seed, same ``nnUNet_n_proc_DA``, same torch thread count):

* **wrapper**: ``cosmos.segmentation.training.train_fold(prepared, fold, out, cfg)`` with
  ``run_validation=true`` (environment set-up, seeding, trainer construction, output relocation,
  MLflow hook without a tracking URI, training, nnU-Net's final validation, manifest).
* **nnunet**: nnU-Net's ``nnUNetv2_train`` code path, i.e. ``nnunetv2.run.run_training.run_training_entry()``
  with argv ``DATASET 3d_fullres_cosmos FOLD -tr nnUNetTrainerCosmosBudget -p CosmosPlans -device D``.
  The real console script cannot find a trainer here: its name lookup imports every trainer module
  in nnunetv2, including primus -> timm -> torchvision, which crashes on the CPU torch,
  and it would not find a class outside nnunetv2 anyway. So the benchmark replaces ONLY that lookup
  (``recursive_find_trainer_class_by_name``) with one returning our trainer class, whose budget is
  set through its ``default_budget`` class attribute. Everything else is nnU-Net's entry point
  (argument parsing, its torch thread setting, plans loading, run_training, perform_actual_validation).

Both trainers are the same class, so the difference is the wrapper's own cost. Each run is a fresh
subprocess (no warm caches shared between the two), runs alternate, and the script reports the
median training-call time of each, their ratio (target <= 1.02) and nnU-Net's per-epoch time
(from its logger timestamps) on the device used (CPU here; CUDA when available).

Usage::

    python benchmarks/nnunet_overhead.py [--profile tiny] [--repeats 2] [--out DIR] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _make_training_folder(root: Path, n_cases: int, seed: int) -> Path:
    """Phantom hrT2 with its ground-truth labels, laid out like the translator's pseudo folder."""
    from cosmos.data.phantom import make_phantom

    data = make_phantom(
        root / "phantom",
        n_source=2,
        n_target=n_cases,
        n_val=1,
        seed=seed,
        scale="small",
        preview=False,
        target_labels=True,
    )
    pseudo = root / "pseudo"
    pseudo.mkdir(parents=True, exist_ok=True)
    for img in sorted((data / "target_training").glob("*_hrT2.nii.gz")):
        case = img.name[: -len("_hrT2.nii.gz")]
        shutil.copyfile(img, pseudo / f"{case}_hrT2pseudo.nii.gz")
        shutil.copyfile(data / "target_training_labels" / f"{case}_Label.nii.gz", pseudo / f"{case}_Label.nii.gz")
    return pseudo


def _epoch_times(checkpoint: Path) -> list[float]:
    import torch

    ckpt = torch.load(str(checkpoint), map_location="cpu", weights_only=False)
    log = ckpt["logging"]
    return [e - s for s, e in zip(log["epoch_start_timestamps"], log["epoch_end_timestamps"])]


# ---------------------------------------------------------------------------------- child runs
def _child(mode: str, prepared_dir: str, out_dir: str, fold: int, cfg_json: str) -> None:
    from cosmos.config import from_dict
    from cosmos.segmentation import environment
    from cosmos.segmentation.prepare import load_prepared

    cfg = from_dict(json.loads(cfg_json))
    seg = cfg.segmentation
    prepared = load_prepared(prepared_dir)
    device = environment.resolve_device(seg.device)
    out = Path(out_dir)
    if mode == "wrapper":
        # Import nnU-Net's trainer module before the clock starts, as the nnunet branch does (its
        # import takes seconds: on a GPU a 2-epoch fold is short enough for that to skew the ratio).
        import cosmos.segmentation.trainer  # noqa: F401
        from cosmos.segmentation.training import train_fold

        t0 = time.perf_counter()
        fold_dir = train_fold(prepared.root, fold, out, cfg)
        seconds = time.perf_counter() - t0
        ckpt = fold_dir / "checkpoint_final.pth"
    else:
        import nnunetv2.run.run_training as rt

        from cosmos.segmentation.trainer import TrainerBudget, nnUNetTrainerCosmosBudget

        nnUNetTrainerCosmosBudget.default_budget = TrainerBudget.from_config(seg)
        if not seg.run_validation:  # --no-validation: nnUNetv2_train always validates; skip it as the wrapper does
            nnUNetTrainerCosmosBudget.perform_actual_validation = lambda self, *a, **k: None
        rt.recursive_find_trainer_class_by_name = lambda name: {"nnUNetTrainerCosmosBudget": nnUNetTrainerCosmosBudget}[
            name
        ]
        os.environ["nnUNet_preprocessed"] = str(prepared.preprocessed_root.resolve())
        os.environ["nnUNet_results"] = str(out.resolve())
        environment.seed_everything(cfg.seed + fold)
        sys.argv = [
            "nnUNetv2_train",
            prepared.dataset_name,
            prepared.configuration,
            str(fold),
            "-tr",
            "nnUNetTrainerCosmosBudget",
            "-p",
            prepared.plans_identifier,
            "-device",
            device.type,
        ]
        t0 = time.perf_counter()
        rt.run_training_entry()
        seconds = time.perf_counter() - t0
        ckpt = next(out.rglob("checkpoint_final.pth"))
    epochs = _epoch_times(ckpt)
    print(
        "RESULT " + json.dumps({"mode": mode, "seconds": seconds, "epoch_seconds": epochs, "device": str(device)}),
        flush=True,
    )


def _run_child(mode: str, prepared: Path, out: Path, fold: int, cfg, env: dict) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--_child",
        mode,
        "--_prepared",
        str(prepared),
        "--_out",
        str(out),
        "--_fold",
        str(fold),
        "--_cfg",
        cfg.to_json(),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"{mode} run failed (exit {proc.returncode})")
    result = json.loads(lines[-1][len("RESULT ") :])
    result["process_seconds"] = wall
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="tiny")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--repeats", type=int, default=2, help="runs of each kind (alternating)")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--cases", type=int, default=8, help="phantom training cases")
    p.add_argument("--out", default=None, help="work dir (default: a temp dir, removed afterwards)")
    p.add_argument(
        "--prepared",
        default=None,
        help="reuse this prepared round (cosmos_prepared.json) instead of making phantom data and planning; "
        "e.g. on a GPU machine without SimpleITK, after `--out` on a CPU box",
    )
    p.add_argument(
        "--no-validation",
        action="store_true",
        help="skip nnU-Net's final full-case validation in both runs (it writes NIfTI through SimpleITK)",
    )
    p.add_argument("--_child"), p.add_argument("--_prepared"), p.add_argument("--_out")
    p.add_argument("--_fold", type=int), p.add_argument("--_cfg")
    args = p.parse_args(argv)
    if args._child:
        _child(args._child, args._prepared, args._out, args._fold, args._cfg)
        return 0

    from cosmos.config import load_config
    from cosmos.logs import setup_logging
    from cosmos.segmentation import environment
    from cosmos.segmentation.prepare import prepare_round

    setup_logging("WARNING")
    threads = multiprocessing.cpu_count()  # what nnUNetv2_train sets for -device cpu
    cfg = load_config(
        args.profile, overrides=[*args.overrides, f"segmentation.run_validation={str(not args.no_validation).lower()}"]
    )
    device = environment.resolve_device(cfg.segmentation.device)
    if device.type == "cpu":
        cfg = cfg.with_overrides({"segmentation.torch_threads": threads})
    else:
        cfg = cfg.with_overrides({"segmentation.torch_threads": 1})  # what nnUNetv2_train sets for -device cuda
    n_da = environment.augmentation_workers(cfg.segmentation.da_workers, device)
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="nnunet_overhead_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        if args.prepared:
            prepared = Path(args.prepared).resolve()
        else:
            pseudo = _make_training_folder(work / "data", args.cases, cfg.seed)
            prepared = prepare_round(pseudo, work / "prepared", cfg)
        prepare_s = time.perf_counter() - t0
        env = dict(
            os.environ,
            nnUNet_n_proc_DA=str(n_da),
            nnUNet_def_n_proc=str(cfg.segmentation.num_processes),
            nnUNet_compile="1" if cfg.segmentation.compile else "0",
            COSMOS_NO_PROGRESS="1",
        )
        env.pop("MLFLOW_TRACKING_URI", None)
        results: dict[str, list[dict]] = {"wrapper": [], "nnunet": []}
        for i in range(args.repeats):
            order = ("wrapper", "nnunet") if i % 2 == 0 else ("nnunet", "wrapper")
            for mode in order:
                out = work / "runs" / f"{mode}_{i}"
                shutil.rmtree(out, ignore_errors=True)
                r = _run_child(mode, prepared, out, args.fold, cfg, env)
                results[mode].append(r)
                print(
                    f"  run {i} {mode:8s} {r['seconds']:8.1f} s  (process {r['process_seconds']:.1f} s, "
                    f"epochs {', '.join(f'{e:.1f}' for e in r['epoch_seconds'])} s)",
                    flush=True,
                )
        med = {m: statistics.median(r["seconds"] for r in rs) for m, rs in results.items()}
        ratio = med["wrapper"] / med["nnunet"]
        med_proc = {m: statistics.median(r["process_seconds"] for r in rs) for m, rs in results.items()}
        ratio_proc = med_proc["wrapper"] / med_proc["nnunet"]
        epoch_s = [e for r in results["nnunet"] for e in r["epoch_seconds"]]
        seg = cfg.segmentation
        summary = {
            "device": str(device),
            "cuda_name": _cuda_name(),
            "torch_threads": seg.torch_threads,
            "da_workers": n_da,
            "profile": cfg.profile,
            "budget": f"{seg.epochs} epochs x {seg.iterations_per_epoch} iterations "
            f"(+{seg.val_iterations_per_epoch} val)",
            "prepare_seconds": round(prepare_s, 1),
            "median_seconds": {k: round(v, 2) for k, v in med.items()},
            "ratio_wrapper_over_nnunet": round(ratio, 4),
            "target": 1.02,
            "median_process_seconds": {k: round(v, 2) for k, v in med_proc.items()},
            "ratio_process_wall": round(ratio_proc, 4),
            "per_epoch_seconds_median": round(statistics.median(epoch_s), 2),
            "load_average": os.getloadavg(),
            "runs": results,
        }
        (work / "nnunet_overhead.json").write_text(json.dumps(summary, indent=2))
        print(
            f"device {summary['device']}{' (' + summary['cuda_name'] + ')' if summary['cuda_name'] else ''}, "
            f"profile {cfg.profile}: {summary['budget']}, torch threads {seg.torch_threads}, DA workers {n_da}"
        )
        print(f"median fold time: wrapper {med['wrapper']:.1f} s, nnUNetv2_train path {med['nnunet']:.1f} s")
        print(
            f"ratio wrapper / nnU-Net = {ratio:.3f} (target <= 1.02){'' if ratio <= 1.02 else '  ABOVE TARGET'}; "
            f"whole child process (imports included): {med_proc['wrapper']:.1f} s / {med_proc['nnunet']:.1f} s "
            f"= {ratio_proc:.3f}"
        )
        print(
            f"per-epoch time ({summary['device']}): {summary['per_epoch_seconds_median']:.1f} s "
            f"(median over nnU-Net runs); load average {os.getloadavg()[0]:.1f}"
        )
        print(f"details: {work / 'nnunet_overhead.json'}")
        return 0
    finally:
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)


def _cuda_name() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    except Exception:
        return ""


if __name__ == "__main__":
    sys.exit(main())
