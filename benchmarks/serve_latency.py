"""Latency and memory of the warm ``cosmos serve``, side by side with ``cosmos predict`` and the old server.

What is compared, on the same phantom scans, the same model and the same machine, one after the other:

* **predict**: a ``cosmos predict --model DIR SCAN -o OUT`` process per scan (what a user without a server
  runs): wall time of the whole process (Python start, imports, model read, one scan) and its peak RSS.
* **old serve**: the serving layer as it was before the warm server (``--baseline-rev``, default 63e81c8:
  every request read the folds from disk and built nnU-Net's predictor, one request at a time), copied out
  of git into a temporary package and run on today's library, so only the serving layer differs.
* **warm serve**: today's ``cosmos serve`` (``--max-concurrent`` = the client count, so no request is
  refused while measuring).

For each server: the cold start (process start to ``/v2/health/ready`` = 200), the first request, then
p50/p95 of warm v1 requests (one scan each) with 1 client and with 4 concurrent clients, and the server's
RSS (now and peak, VmHWM). The model is the tests' small one (tests/test_serving.py ``build_fold``: nnU-Net's
PlainConvUNet with seeded random weights, 2 folds; the test is about serving cost, not label quality), with
the tiny profile's inference settings (mirroring on) and ``segmentation.torch_threads`` from ``--threads``.
Targets (issue 29): a warm request <= 0.5x a ``cosmos predict`` process, and <= 0.5x the old server's request.

Usage::

    python benchmarks/serve_latency.py [--scans 3] [--requests 8] [--threads 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE_REV = "63e81c8"  # the last commit whose server read the folds per request
NAME = "cosmos-segmenter"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cosmos() -> list[str]:
    exe = Path(sys.executable).with_name("cosmos")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "cosmos.cli"]


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: every figure is a measured request)."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def make_inputs(root: Path, n_scans: int) -> tuple[Path, list[Path]]:
    """Phantom hrT2 scans and a model folder of two folds (the tests' small model)."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_serving import build_fold  # the tests' model, exactly

    from cosmos.data.phantom import make_phantom

    phantom = make_phantom(root / "phantom", n_source=1, n_target=n_scans, n_val=1, seed=3, preview=False)
    scans = sorted(phantom.glob("target_*/*_hrT2.nii.gz"))[:n_scans]
    model = root / "model"
    for fold in (0, 1):
        build_fold(model / f"fold_{fold}", seed=fold)
    return model, scans


def build_full_size_folds(root: Path, n_folds: int) -> list[Path]:
    """Fold dirs with nnU-Net's default 3d_fullres network for crossMoDA-sized patches (6 stages, 32-320
    features, two convolutions per stage: ~30 M parameters, ~120 MB per checkpoint), for timing what the
    old server did on every request before any voxel: reading every fold and building the predictor."""
    import copy

    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from test_serving import _plans

    plans = copy.deepcopy(_plans())
    conf = plans["configurations"]["3d_fullres"]
    conf["patch_size"] = [48, 192, 192]
    conf["architecture"]["arch_kwargs"].update(
        n_stages=6,
        features_per_stage=[32, 64, 128, 256, 320, 320],
        kernel_sizes=[[1, 3, 3]] + [[3, 3, 3]] * 5,
        strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2]],
        n_conv_per_stage=[2] * 6,
        n_conv_per_stage_decoder=[2] * 5,
    )
    dataset = {
        "channel_names": {"0": "hrT2"},
        "labels": {"background": 0, "VS": 1, "cochlea": 2},
        "numTraining": 6,
        "file_ending": ".nii.gz",
        "overwrite_image_reader_writer": "SimpleITKIO",
    }
    pm = PlansManager(plans)
    net = nnUNetTrainer.build_network_architecture(
        pm, pm.get_configuration("3d_fullres"), 1, 3, enable_deep_supervision=False
    )
    dirs = []
    for fold in range(n_folds):
        d = root / "full_size" / f"fold_{fold}"
        d.mkdir(parents=True)
        (d / "plans.json").write_text(json.dumps(plans))
        (d / "dataset.json").write_text(json.dumps(dataset))
        torch.save(
            {
                "network_weights": net.state_dict(),
                "init_args": {"configuration": "3d_fullres"},
                "trainer_name": "nnUNetTrainer",
                "inference_allowed_mirroring_axes": (0, 1, 2),
            },
            str(d / "checkpoint_final.pth"),
        )
        dirs.append(d)
    return dirs


def time_model_setup(fold_dirs: list[Path], threads: int, repeats: int = 3) -> tuple[float, float, int]:
    """(median s, checkpoint MB, parameters) of ``load_folds`` + ``predictor_for``: the per-request set-up
    of the old server (``segment_files`` -> ``predict``), which the warm server does once at start."""
    import torch

    from cosmos.config import load_config
    from cosmos.segmentation.inference import load_folds, predictor_for

    torch.set_num_threads(threads)
    cfg = load_config("tiny")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ensemble = load_folds(fold_dirs)
        predictor_for(ensemble, cfg.segmentation, torch.device("cpu"), True)
        times.append(time.perf_counter() - t0)
        del ensemble
    size = sum((d / "checkpoint_final.pth").stat().st_size for d in fold_dirs) / 1e6
    weights = torch.load(str(fold_dirs[0] / "checkpoint_final.pth"))["network_weights"]
    # the decoder holds the encoder, so its tensors are listed twice in the state dict: count storages once
    n_params = sum(int(v.numel()) for v in {v.data_ptr(): v for v in weights.values()}.values())
    return statistics.median(times), size, n_params


def time_predict(model: Path | str, scans: list[Path], root: Path, overrides: list[str]) -> list[tuple[float, float]]:
    """(wall seconds, peak RSS MB) of one ``cosmos predict`` process per scan."""
    out = []
    for i, scan in enumerate(scans):
        cmd = [*_cosmos(), "predict", "--model", str(model), str(scan), "-o", str(root / f"predict_{i}")]
        for o in overrides:
            cmd += ["--set", o]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"cosmos predict failed: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        out.append((seconds, usage.ru_maxrss / 1024))
    return out


def _env() -> dict[str, str]:
    return dict(os.environ, COSMOS_NO_PROGRESS="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))


def baseline_package(root: Path, rev: str) -> Path:
    """The serving layer at ``rev`` as the package ``cosmos_serving_baseline`` under ``root``."""
    pkg = root / "baseline" / "cosmos_serving_baseline"
    pkg.mkdir(parents=True)
    names = subprocess.run(
        ["git", "-C", str(REPO), "ls-tree", "--name-only", f"{rev}:src/cosmos/serving"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in names:
        if not name.endswith(".py"):
            continue
        text = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{rev}:src/cosmos/serving/{name}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (pkg / name).write_text(re.sub(r"\bcosmos\.serving\b", "cosmos_serving_baseline", text))
    return pkg.parent


_BASELINE_MAIN = """
import sys
sys.path.insert(0, sys.argv[1])
from cosmos.config import load_config
from cosmos.logs import setup_logging
from cosmos_serving_baseline.server import serve
setup_logging(None)
serve(sys.argv[2], name="cosmos-segmenter", port=int(sys.argv[3]), max_mb=64.0,
      fallback_cfg=load_config("tiny", overrides=sys.argv[4:]))
"""


class Server:
    """A server process, its readiness time and its memory."""

    def __init__(self, cmd: list[str], port: int, log: Path):
        self.port, self.log = port, log
        self.base = f"http://127.0.0.1:{port}"
        self._log = open(log, "wb")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=_env())
        self.cold_s = self._wait_ready()

    def _wait_ready(self, timeout: float = 600) -> float:
        while time.perf_counter() - self.t0 < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.base}/v2/health/ready", timeout=5) as r:
                    if r.status == 200:
                        return time.perf_counter() - self.t0
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        raise SystemExit("server did not get ready")

    def memory_mb(self) -> tuple[float, float]:
        """(RSS, peak RSS) in MB, from /proc."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        return float(fields["VmRSS"].split()[0]) / 1024, float(fields["VmHWM"].split()[0]) / 1024

    def request(self, body: bytes) -> float:
        req = urllib.request.Request(
            f"{self.base}/v1/models/{NAME}:predict", data=body, headers={"content-type": "application/json"}
        )
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=600) as r:
            r.read()
            if r.status != 200:
                raise SystemExit(f"request failed: {r.status}")
        return time.perf_counter() - t0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def measure_server(server: Server, bodies: list[bytes], n_requests: int) -> dict[str, float]:
    """First request, then warm p50/p95 with 1 client and with 4 concurrent clients."""
    first = server.request(bodies[0])
    one = [server.request(bodies[i % len(bodies)]) for i in range(n_requests)]
    four: list[float] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        for i in range(n_requests // 2):
            seconds = server.request(bodies[(i + k) % len(bodies)])
            with lock:
                four.append(seconds)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall4 = time.perf_counter() - t0
    rss, peak = server.memory_mb()
    return {
        "cold_start_s": server.cold_s,
        "first_request_s": first,
        "p50_1_s": statistics.median(one),
        "p95_1_s": _percentile(one, 95),
        "p50_4_s": statistics.median(four),
        "p95_4_s": _percentile(four, 95),
        "throughput_4_per_s": len(four) / wall4,
        "rss_mb": rss,
        "peak_rss_mb": peak,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scans", type=int, default=3, help="phantom scans (default 3)")
    ap.add_argument("--requests", type=int, default=8, help="warm requests per 1-client run (default 8)")
    ap.add_argument("--threads", type=int, default=1, help="segmentation.torch_threads for all (default 1)")
    ap.add_argument(
        "--baseline-rev", default=BASELINE_REV, help=f"git revision of the old server (default {BASELINE_REV})"
    )
    ap.add_argument(
        "--full-size-folds", type=int, default=5, help="folds of the full-size set-up timing (default 5; 0: skip)"
    )
    ap.add_argument(
        "--model",
        default=None,
        help="a trained model instead of the tests' small one: a folder or models:/ URI (registry: $MLFLOW_TRACKING_URI),"
        " e.g. the demo's models:/cosmos-segmenter@champion",
    )
    ap.add_argument("--out", type=Path, default=None, help="also write the printed figures to this file")
    args = ap.parse_args()
    overrides = [f"segmentation.torch_threads={args.threads}"]
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    root = Path(tempfile.mkdtemp(prefix="serve-latency-"))
    try:
        say(f"serve latency benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {_load()} at start")
        small_model, scans = make_inputs(root, args.scans)
        model = args.model or small_model
        sizes = ", ".join(f"{s.name} {s.stat().st_size / 1e6:.2f} MB" for s in scans)
        described = f"{args.model} (trained)" if args.model else "tests' small model (2 folds, random weights)"
        say(f"model: {described}; {len(scans)} phantom scans: {sizes}; {overrides[0]}")
        bodies = [
            json.dumps({"instances": [{"b64": base64.b64encode(s.read_bytes()).decode()}]}).encode() for s in scans
        ]

        predicted = time_predict(model, scans, root, overrides)
        predict_s = statistics.median(p[0] for p in predicted)
        say(
            f"cosmos predict process, one scan each: {', '.join(f'{p[0]:.2f}' for p in predicted)} s "
            f"(median {predict_s:.2f} s); peak RSS {max(p[1] for p in predicted):.0f} MB"
        )

        results = {}
        baseline_root = baseline_package(root, args.baseline_rev)
        port = _free_port()
        old = Server(
            [sys.executable, "-c", _BASELINE_MAIN, str(baseline_root), str(model), str(port), *overrides],
            port,
            root / "old.log",
        )
        try:
            results["old serve"] = measure_server(old, bodies, args.requests)
        finally:
            old.stop()
        port = _free_port()
        cmd = [*_cosmos(), "serve", "--model", str(model), "--port", str(port), "--max-concurrent", "4"]
        for o in overrides:
            cmd += ["--set", o]
        warm = Server(cmd, port, root / "warm.log")
        try:
            results["warm serve"] = measure_server(warm, bodies, args.requests)
        finally:
            warm.stop()

        say()
        say(f"{'':28s}{'old serve (' + args.baseline_rev + ')':>22s}{'warm serve':>14s}")
        rows = [
            ("cold start (to ready), s", "cold_start_s", "{:.2f}"),
            ("first request, s", "first_request_s", "{:.2f}"),
            ("p50, 1 client, s", "p50_1_s", "{:.2f}"),
            ("p95, 1 client, s", "p95_1_s", "{:.2f}"),
            ("p50, 4 clients, s", "p50_4_s", "{:.2f}"),
            ("p95, 4 clients, s", "p95_4_s", "{:.2f}"),
            ("requests/s, 4 clients", "throughput_4_per_s", "{:.2f}"),
            ("server RSS now, MB", "rss_mb", "{:.0f}"),
            ("server peak RSS, MB", "peak_rss_mb", "{:.0f}"),
        ]
        for label, key, fmt in rows:
            say(f"{label:28s}{fmt.format(results['old serve'][key]):>22s}{fmt.format(results['warm serve'][key]):>14s}")
        warm_p50 = results["warm serve"]["p50_1_s"]
        vs_predict = warm_p50 / predict_s
        vs_old = warm_p50 / results["old serve"]["p50_1_s"]
        say()
        say(
            f"warm request / cosmos predict process: {warm_p50:.2f} / {predict_s:.2f} s = {vs_predict:.2f}x "
            f"(target <= 0.5x: {'met' if vs_predict <= 0.5 else 'NOT met'})"
        )
        say(
            f"warm request / old server request:     {warm_p50:.2f} / {results['old serve']['p50_1_s']:.2f} s = "
            f"{vs_old:.2f}x (target <= 0.5x: {'met' if vs_old <= 0.5 else 'NOT met'})"
        )
        if not args.model:
            small_s, _, small_params = time_model_setup(sorted(small_model.glob("fold_*")), args.threads)
            say()
            say(
                f"per-request set-up of the old server on this model ({small_params} parameters per fold, 2 folds): "
                f"reading the folds + building the predictor = {small_s * 1000:.0f} ms (median of 3)"
            )
        if args.full_size_folds > 0:
            dirs = build_full_size_folds(root, args.full_size_folds)
            setup_s, size_mb, n_params = time_model_setup(dirs, args.threads)
            say(
                f"per-request set-up the old server paid and the warm one does not, on nnU-Net's default 3d_fullres "
                f"network ({n_params / 1e6:.1f} M parameters, {len(dirs)} folds, {size_mb:.0f} MB of checkpoints): "
                f"reading the folds + building the predictor = {setup_s:.2f} s (median of 3, page cache warm)"
            )
        say(f"{_load()} at the end")
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text("\n".join(lines) + "\n")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
