"""Translator throughput and memory: training slices/s, conversion slices/s, peak RSS.

    python benchmarks/translator_speed.py [--profile tiny] [--devices cpu,cuda] [--train-steps 5]
                                          [--convert-shape 512 512 120] [--threads 0]

Training: ``--train-steps`` full COSMOS steps (both generators + both discriminators, all loss
terms) on random slices of the profile's grid, after one warm-up step. Conversion: one synthetic
crossMoDA-size ceT1 volume (default 512x512x120 at 0.4x0.4x1.5 mm, the paper's ceT1 grid) through
``convert_volume`` with the profile's generator (random weights: speed and memory do not depend on
the weights) in chunks of ``translator.convert_batch_size`` slices. Each conversion runs in a fresh
child process so its peak RSS (``resource.getrusage``, includes the ~0.3 GB of the torch import) is
its own. CUDA rows appear when a GPU is available (peak GPU memory from torch.cuda).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def bench_train(profile: str, device: str, steps: int, overrides: list[str]) -> dict:
    import torch

    from cosmos.config import load_config
    from cosmos.translation.training import TranslatorTrainer

    cfg = load_config(profile, overrides=overrides)
    t = cfg.translator
    torch.manual_seed(0)
    trainer = TranslatorTrainer(cfg, torch.device(device))
    s, b = t.image_size, t.batch_size
    x_s = torch.rand(b, 1, s, s, device=device) * 2 - 1
    x_t = torch.rand(b, 1, s, s, device=device) * 2 - 1
    y_s = torch.zeros(b, s, s, dtype=torch.long, device=device)
    y_s[:, s // 3 : s // 2, s // 3 : s // 2] = 1
    y_s[:, s // 2 : s // 2 + 3, s // 2 : s // 2 + 3] = 2
    trainer.step(x_s, y_s, x_t, True)  # warm-up (allocator, cudnn autotune)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.step(x_s, y_s, x_t, True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    return {
        "what": "train",
        "profile": profile,
        "device": device,
        "image_size": s,
        "batch_size": b,
        "base_channels": t.base_channels,
        "slices_per_s": steps * b / secs,
        "s_per_step": secs / steps,
    }


def bench_convert(profile: str, device: str, shape: tuple[int, int, int], overrides: list[str]) -> dict:
    import numpy as np
    import torch

    from cosmos.config import load_config
    from cosmos.translation.conversion import convert_volume
    from cosmos.translation.networks import Generator, GeneratorSpec
    from cosmos.translation.training import grid_from_config

    cfg = load_config(profile, overrides=overrides)
    t = cfg.translator
    torch.manual_seed(0)
    gen = Generator(GeneratorSpec(base_channels=t.base_channels, levels=t.levels, with_seg=t.segmentor)).to(device)
    vol = (np.random.default_rng(0).random(shape, dtype=np.float32) * 1000).astype(np.float32)
    affine = np.diag([-0.4, 0.4, 1.5, 1.0])
    before = _peak_rss_mb()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = convert_volume(gen, vol, affine, grid_from_config(cfg), batch_size=t.convert_batch_size, device=device)
    secs = time.perf_counter() - t0
    assert out.shape == vol.shape
    res = {
        "what": "convert",
        "profile": profile,
        "device": device,
        "shape": list(shape),
        "convert_batch_size": t.convert_batch_size,
        "base_channels": t.base_channels,
        "slices_per_s": shape[2] / secs,
        "seconds": secs,
        "peak_rss_mb": _peak_rss_mb(),
        "rss_before_convert_mb": before,
    }
    if device.startswith("cuda"):
        res["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="tiny")
    p.add_argument("--devices", default="cpu,cuda", help="comma list; cuda rows are skipped without a GPU")
    p.add_argument("--train-steps", type=int, default=5)
    p.add_argument("--convert-shape", type=int, nargs=3, default=[512, 512, 120])
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--child", choices=["convert"], help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.child == "convert":
        print(json.dumps(bench_convert(args.profile, args.device, tuple(args.convert_shape), args.overrides)))
        return 0
    devices = [d for d in args.devices.split(",") if d == "cpu" or (d.startswith("cuda") and torch.cuda.is_available())]
    rows = []
    for dev in devices:
        rows.append(bench_train(args.profile, dev, args.train_steps, args.overrides))
        print(json.dumps(rows[-1]), flush=True)
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "convert",
            "--device",
            dev,
            "--profile",
            args.profile,
            "--threads",
            str(args.threads),
            "--convert-shape",
            *map(str, args.convert_shape),
        ]
        for o in args.overrides:
            cmd += ["--set", o]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
            return out.returncode
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'what':8} {'device':6} {'profile':7} {'slices/s':>9} {'peak RSS MB':>12}  notes")
    for r in rows:
        note = (
            f"{r['image_size']}px batch {r['batch_size']} base {r['base_channels']}"
            if r["what"] == "train"
            else f"{'x'.join(map(str, r['shape']))} chunk {r['convert_batch_size']} base {r['base_channels']}"
            + (f" peak GPU {r['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in r else "")
        )
        rss = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "-"
        print(f"{r['what']:8} {r['device']:6} {r['profile']:7} {r['slices_per_s']:9.2f} {rss:>12}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
