"""`cosmos serve` (KServe): a registered segmenter served on 127.0.0.1, loaded once, answers v2 and
v1 requests with phantom scans (NIfTI or a zipped DICOM series) with the very labels and
measurements `cosmos predict` writes; bad requests get a 4xx and one line, never a server path;
above --max-concurrent a request gets 503 with Retry-After; /metrics counts requests and errors by
kind; the registered pyfunc takes base64 NIfTI and declares an environment that exists.

The model is a real nnU-Net fold ensemble (PlainConvUNet, nnU-Net's own predictor), built by hand
with seeded random weights instead of trained: the test is about serving the numbers, not about
their quality, and training would cost minutes. It goes through the real registry (sqlite MLflow).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("kserve")
mlflow = pytest.importorskip("mlflow")

from cosmos.cli import main  # noqa: E402
from cosmos.config import load_config  # noqa: E402
from cosmos.data.phantom import make_phantom  # noqa: E402
from cosmos.segmentation import registry  # noqa: E402

MAX_MB = 4.0  # the server's body cap in this test; a phantom scan is ~1.1 MB of base64
START_TIMEOUT_S = 120
SPACING = [1.5, 0.6, 0.6]  # nnU-Net (z, y, x) order, about the phantom's


def _plans() -> dict:
    arch = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": 3,
            "features_per_stage": [4, 8, 16],
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]],
            "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
            "n_conv_per_stage": [1, 1, 1],
            "n_conv_per_stage_decoder": [1, 1],
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-5, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }

    def resampling(is_seg: bool, order: int) -> dict:
        return {"is_seg": is_seg, "order": order, "order_z": 0, "force_separate_z": None}

    config = {
        "data_identifier": "nnUNetPlans_3d_fullres",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": [16, 32, 32],
        "median_image_size_in_voxels": [28, 80, 80],
        "spacing": SPACING,
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": resampling(False, 3),
        "resampling_fn_seg_kwargs": resampling(True, 1),
        "resampling_fn_probabilities_kwargs": resampling(False, 1),
        "architecture": arch,
        "batch_dice": False,
    }
    return {
        "dataset_name": "Dataset700_CosmosRound0",
        "plans_name": "CosmosPlans",
        "original_median_spacing_after_transp": SPACING,
        "original_median_shape_after_transp": [28, 80, 80],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": config},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": 3000.0,
                "mean": 1000.0,
                "median": 800.0,
                "min": 0.0,
                "percentile_00_5": 50.0,
                "percentile_99_5": 2500.0,
                "std": 700.0,
            }
        },
    }


def build_fold(d: Path, seed: int = 0) -> Path:
    """A fold directory exactly as nnU-Net training leaves it, with seeded random weights."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    d.mkdir(parents=True)
    plans = _plans()
    dataset = {
        "channel_names": {"0": "hrT2"},
        "labels": {"background": 0, "VS": 1, "cochlea": 2},
        "numTraining": 6,
        "file_ending": ".nii.gz",
        "overwrite_image_reader_writer": "SimpleITKIO",
    }
    (d / "plans.json").write_text(json.dumps(plans))
    (d / "dataset.json").write_text(json.dumps(dataset))
    pm = PlansManager(plans)
    torch.manual_seed(seed)
    net = nnUNetTrainer.build_network_architecture(
        pm, pm.get_configuration("3d_fullres"), 1, 3, enable_deep_supervision=False
    )
    torch.save(
        {
            "network_weights": net.state_dict(),
            "init_args": {"configuration": "3d_fullres"},
            "trainer_name": "nnUNetTrainer",
            "inference_allowed_mirroring_axes": (0, 1, 2),
        },
        str(d / "checkpoint_final.pth"),
    )
    return d


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _labels(path_or_bytes) -> tuple[np.ndarray, np.ndarray]:
    import gzip
    import io

    import nibabel as nib

    if isinstance(path_or_bytes, (bytes, bytearray)):
        img = nib.Nifti1Image.from_bytes(gzip.decompress(path_or_bytes))
    else:
        img = nib.Nifti1Image.from_filename(str(path_or_bytes))
    _ = io
    return np.asarray(img.dataobj), img.affine


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Phantom scans, a registered model (@champion = version 1) and `cosmos predict`'s labels."""
    root = tmp_path_factory.mktemp("serving")
    phantom = make_phantom(root / "phantom", n_source=1, n_target=1, n_val=1, seed=3, preview=False)
    scans = sorted(phantom.glob("target_*/*_hrT2.nii.gz"))
    assert len(scans) == 2
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg = load_config("tiny", overrides=["tracking.experiment=serving-test", "segmentation.torch_threads=1"])
    folds = [build_fold(root / "round_0" / f"fold_{f}", seed=f) for f in (0, 1)]
    version = registry.register_round(folds, 0, cfg, alias="champion", tracking_uri=uri)
    return {"root": root, "uri": uri, "version": version, "scans": scans, "folds": folds}


@pytest.fixture(scope="module")
def expected(store, server):
    """`cosmos predict`'s labels for the scans (computed while the server loads its copy)."""
    out = store["root"] / "predicted"
    assert (
        main(
            [
                "predict",
                "--model",
                "models:/cosmos-segmenter@champion",
                "--tracking-uri",
                store["uri"],
                *map(str, store["scans"]),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    return [out / registry.output_name(s) for s in store["scans"]]


def _cosmos() -> list[str]:
    exe = Path(sys.executable).with_name("cosmos")
    return (
        [str(exe)]
        if exe.is_file()
        else [sys.executable, "-c", "import sys; from cosmos.cli import main; sys.exit(main())"]
    )


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def post(url: str, body, timeout: float = 120) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture(scope="module")
def server(store):
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(store["root"] / "serve.log", "wb")
    env = dict(os.environ, COSMOS_NO_PROGRESS="1")
    proc = subprocess.Popen(
        _cosmos()
        + [
            "serve",
            "--model",
            "models:/cosmos-segmenter@champion",
            "--tracking-uri",
            store["uri"],
            "--port",
            str(port),
            "--max-mb",
            str(MAX_MB),
            "--set",
            "segmentation.torch_threads=1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    readiness: list[int] = []
    state = {"base": base, "proc": proc, "readiness": readiness, "log": store["root"] / "serve.log"}
    try:
        yield state
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def ready(server, expected):
    """The server, once /v2/health/ready says yes (its readiness answers until then are kept)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        assert server["proc"].poll() is None, server["log"].read_text()[-3000:]
        assert time.monotonic() < deadline, "cosmos serve did not get ready in time"
        try:
            server["readiness"].append(_get(f"{server['base']}/v2/health/ready"))
        except (urllib.error.URLError, ConnectionError, OSError):
            server["readiness"].append(0)  # not listening yet
        if server["readiness"][-1] == 200:
            return server
        time.sleep(0.2)


def b64(path: Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


def _predicted_measurements(label: Path) -> dict:
    """What `cosmos predict` wrote beside ``label`` (<case>_measurements.json), as the server sends it."""
    from cosmos.evaluation.measurements import measurements_path

    return json.loads(measurements_path(label).read_text())


def v2(scans) -> dict:
    return {"inputs": [{"name": "scan", "shape": [len(scans)], "datatype": "BYTES", "data": list(scans)}]}


# ------------------------------------------------------------------------------------ serving
def test_server_listens_on_loopback_only_and_readiness_answers(ready):
    server = ready
    import psutil

    proc = psutil.Process(server["proc"].pid)
    connections = getattr(proc, "net_connections", None) or proc.connections  # psutil < 6: connections()
    listening = [c.laddr for c in connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    assert listening and all(a.ip == "127.0.0.1" for a in listening), listening
    assert set(server["readiness"]) <= {0, 503, 200} and server["readiness"][-1] == 200
    assert _get(f"{server['base']}/v2/health/live") == 200
    assert _get(f"{server['base']}/v2/models/cosmos-segmenter/ready") == 200


def test_v2_and_v1_labels_equal_cosmos_predict(ready, store, expected, capsys):
    server = ready
    url = f"{server['base']}/v2/models/cosmos-segmenter/infer"
    t0 = time.perf_counter()
    status, body = post(url, v2([b64(s) for s in store["scans"]]))
    v2_s = time.perf_counter() - t0
    assert status == 200, body
    assert body["model_name"] == "cosmos-segmenter" and body["model_version"] == store["version"]
    out, measured = body["outputs"]
    assert out["name"] == "label" and out["datatype"] == "BYTES" and len(out["data"]) == 2
    assert measured["name"] == "measurements" and measured["datatype"] == "BYTES" and len(measured["data"]) == 2
    for data, text, predicted in zip(out["data"], measured["data"], expected):
        got, got_affine = _labels(base64.b64decode(data))
        want, want_affine = _labels(predicted)
        assert got.dtype == np.uint8 and got.shape == want.shape
        assert np.array_equal(got, want)
        assert np.allclose(got_affine, want_affine)
        # the measurements are cosmos predict's <case>_measurements.json for the same scan
        assert json.loads(text) == _predicted_measurements(predicted)
    assert len(np.unique(_labels(expected[0])[0])) > 1  # the comparison is not all-background

    t0 = time.perf_counter()
    status, body = post(
        f"{server['base']}/v1/models/cosmos-segmenter:predict", {"instances": [{"b64": b64(store["scans"][1])}]}
    )
    v1_s = time.perf_counter() - t0
    assert status == 200, body
    (prediction,) = body["predictions"]
    got, _ = _labels(base64.b64decode(prediction["b64"]))
    assert np.array_equal(got, _labels(expected[1])[0])
    assert prediction["measurements"] == _predicted_measurements(expected[1])
    assert prediction["measurements"]["vs_voxels"] == int(np.count_nonzero(got == 1))  # an independent count
    with capsys.disabled():
        print(f"\n[serving latency] v2, 2 scans: {v2_s:.2f} s; v1, 1 scan: {v1_s:.2f} s")


def test_versioned_urls(ready, store):
    server = ready
    base = server["base"]
    scan = [b64(store["scans"][0])]
    status, body = post(f"{base}/v2/models/cosmos-segmenter/versions/{store['version']}/infer", v2(scan))
    assert status == 200 and body["model_version"] == store["version"]
    status, body = post(f"{base}/v2/models/cosmos-segmenter/versions/9/infer", v2(scan))
    assert status == 404 and "no version 9" in body["error"] and f"version {store['version']}" in body["error"]
    status, body = post(f"{base}/v2/models/other-model/infer", v2(scan))
    assert status == 404 and "other-model" in body["error"]


def _nifti_2d(tmp_path) -> str:
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), str(tmp_path / "slice.nii.gz"))
    return b64(tmp_path / "slice.nii.gz")


def _nifti_bytes(data: np.ndarray, affine: np.ndarray, pixdim: list[float] | None = None) -> bytes:
    """A gzipped NIfTI of ``data``; ``pixdim`` written into the stored header as given (nibabel would
    recompute it from the affine on save)."""
    import gzip
    import struct

    import nibabel as nib

    raw = bytearray(nib.Nifti1Image(data, affine).to_bytes())
    if pixdim is not None:
        struct.pack_into("<3f", raw, 80, *pixdim)  # pixdim[1:4] of the NIfTI-1 header
    return gzip.compress(bytes(raw), compresslevel=1)


def _bad_scan(case: str, store) -> bytes:
    import gzip
    import io
    import zipfile

    import nibabel as nib

    img = nib.Nifti1Image.from_filename(str(store["scans"][0]))
    data = np.asarray(img.dataobj, dtype=np.float32)
    if case == "gzip-bomb":  # ~40 KB that inflates to 40 MB, 10x the server's cap
        head = bytearray(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)).to_bytes())
        return gzip.compress(bytes(head) + bytes(40 * 2**20), compresslevel=9)
    if case == "bad-gzip":
        return b"\x1f\x8b\x08\x00" + bytes(range(256)) * 8
    if case == "truncated-gzip":
        whole = Path(store["scans"][0]).read_bytes()
        return whole[: len(whole) // 2]
    if case == "sheared":
        affine = np.diag([0.6, 0.6, 1.5, 1.0])
        affine[0, 1] = 0.3
        return _nifti_bytes(data, affine)
    if case == "pixdim":  # the sform says 0.6 mm, pixdim (what nnU-Net reads) says 5 mm
        return _nifti_bytes(data, np.diag([0.6, 0.6, 1.5, 1.0]), pixdim=[5.0, 5.0, 5.0])
    if case == "label-map":
        return gzip.compress(nib.Nifti1Image((data > np.median(data)).astype(np.uint8), img.affine).to_bytes())
    if case == "rgb":
        rgb = np.zeros(data.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
        rgb["R"] = np.clip(data / max(float(data.max()), 1.0) * 255, 0, 255).astype(np.uint8)
        return gzip.compress(nib.Nifti1Image(rgb, img.affine).to_bytes())
    if case == "complex":
        return gzip.compress(nib.Nifti1Image(data.astype(np.complex64), img.affine).to_bytes())
    if case == "50mm-voxels":
        return _nifti_bytes(data, np.diag([50.0, 50.0, 50.0, 1.0]))
    if case == "zero-pixdim":  # a valid sform, pixdim 0 (nnU-Net would have used 1 mm)
        return _nifti_bytes(data, np.diag([0.6, 0.6, 1.5, 1.0]), pixdim=[0.0, 0.0, 0.0])
    if case == "huge-header":  # a 1200^3 float32 header over a few bytes: refused from the header alone
        header = nib.Nifti1Header()
        header.set_data_shape((1200, 1200, 1200))
        header.set_data_dtype(np.float32)
        header["vox_offset"] = 352
        return gzip.compress(header.binaryblock + bytes(4) + bytes(1024))
    buf = io.BytesIO()  # not-a-series: a zip holding no DICOM
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("notes.txt", "no DICOM in here\n" * 20)
    return buf.getvalue()


_SCAN_CASES = (
    "gzip-bomb",
    "bad-gzip",
    "truncated-gzip",
    "sheared",
    "pixdim",
    "label-map",
    "not-a-series",
    "rgb",
    "complex",
    "50mm-voxels",
    "zero-pixdim",
    "huge-header",
)


@pytest.mark.parametrize(
    "case, status, message",
    [
        ("text", 400, "not a NIfTI file"),
        ("not-base64", 400, "neither base64"),
        ("2d", 400, "2D"),
        ("fp32", 400, "datatype FP32"),
        ("too-large", 413, "exceeds the server's cap"),
        ("malformed", 422, "malformed request"),
        ("v1-no-instances", 400, "instances"),
        ("v1-local-path", 400, "s3://"),
        ("binary-extension", 415, "binary tensor extension"),
        ("gzip-bomb", 413, "decompresses to more than"),
        ("bad-gzip", 400, "corrupt or truncated gzip"),
        ("truncated-gzip", 400, "corrupt or truncated gzip"),
        ("sheared", 400, "not orthogonal"),
        ("pixdim", 400, "voxel size disagrees"),
        ("label-map", 400, "label map"),
        ("not-a-series", 400, "instances[0]"),
        ("rgb", 400, "unsupported NIfTI data type"),
        ("complex", 400, "complex voxels"),
        ("50mm-voxels", 400, "plausible MRI range"),
        ("zero-pixdim", 400, "pixdim gives a voxel size"),
        ("huge-header", 413, "cosmos serve --max-mb"),
    ],
)
def test_bad_requests_get_4xx_with_one_line(ready, store, tmp_path, case, status, message):
    server = ready
    base = server["base"]
    url = f"{base}/v2/models/cosmos-segmenter/infer"
    body: object
    if case in _SCAN_CASES:
        url = f"{base}/v1/models/cosmos-segmenter:predict"
        body = {"instances": [{"b64": base64.b64encode(_bad_scan(case, store)).decode()}]}
        if case == "not-a-series":
            body = {"instances": [{"dicom_zip": base64.b64encode(_bad_scan(case, store)).decode()}]}
    elif case == "text":
        body = v2([base64.b64encode(b"hello, I am not a scan. " * 40).decode()])
    elif case == "not-base64":
        body = v2(["%%% not base64 %%%"])
    elif case == "2d":
        body = v2([_nifti_2d(tmp_path)])
    elif case == "fp32":
        body = {"inputs": [{"name": "scan", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}
    elif case == "too-large":
        body = v2(["A" * int(MAX_MB * 1e6 + 10)])
    elif case == "malformed":
        body = {"inputs": [{"name": "scan"}]}
    elif case == "binary-extension":
        import struct

        raw = b"\x1f\x8b" + bytes(range(256)) * 4  # gzip magic, then bytes that are not UTF-8
        head = json.dumps(
            {
                "inputs": [
                    {
                        "name": "scan",
                        "shape": [1],
                        "datatype": "BYTES",
                        "parameters": {"binary_data_size": len(raw) + 4},
                    }
                ]
            }
        ).encode()
        req = urllib.request.Request(
            url,
            data=head + struct.pack("<I", len(raw)) + raw,
            headers={"content-type": "application/octet-stream", "inference-header-content-length": str(len(head))},
        )
        try:
            urllib.request.urlopen(req, timeout=60)
            raise AssertionError("accepted")
        except urllib.error.HTTPError as exc:
            got, answer = exc.code, json.loads(exc.read())
        assert got == status and message in answer["error"], answer
        return
    else:
        url = f"{base}/v1/models/cosmos-segmenter:predict"
        body = {"nothing": []} if case == "v1-no-instances" else {"instances": [{"uri": "/etc/passwd"}]}
    got, answer = post(url, body)
    assert got == status, answer
    assert message in answer["error"], answer
    assert "\n" not in answer["error"] and "Traceback" not in answer["error"]
    for server_path in ("/tmp", "cosmos-serve-", "request-", "scan_0"):  # the server's files stay its own
        assert server_path not in answer["error"], answer


def test_chunked_body_over_the_cap_gets_413(ready):
    import http.client

    port = int(ready["base"].rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    chunk = b"A" * 100_000

    def body():
        for _ in range(int(MAX_MB * 10) + 10):  # ~MAX_MB + 1 MB, no content-length
            yield chunk

    conn.request(
        "POST",
        "/v2/models/cosmos-segmenter/infer",
        body=body(),
        headers={"content-type": "application/json"},
        encode_chunked=True,
    )
    answer = conn.getresponse()
    assert answer.status == 413
    assert "exceeds the server's cap" in json.loads(answer.read())["error"]
    conn.close()


def _v1_raw(url: str, data: bytes):
    """(status, JSON body, headers) of a v1 POST, errors included."""
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), exc.headers


def test_over_max_concurrent_gets_503_with_retry_after(ready, store, expected):
    """Six requests at once on a server that segments two at a time (--max-concurrent 2, the
    default): the others are refused at once with 503 + Retry-After, none waits in a queue."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    url = f"{ready['base']}/v1/models/cosmos-segmenter:predict"
    data = json.dumps({"instances": [{"b64": b64(store["scans"][0])}]}).encode()
    n = 6
    barrier = threading.Barrier(n)

    def one(_):
        barrier.wait()
        return _v1_raw(url, data)

    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(one, range(n)))
    codes = [a[0] for a in answers]
    assert set(codes) <= {200, 503}, answers
    assert 1 <= codes.count(200) and codes.count(503) >= 1, codes
    want = _labels(expected[0])[0]
    for code, body, headers in answers:
        if code == 503:
            assert int(headers["Retry-After"]) >= 1
            assert "--max-concurrent 2" in body["error"]
        else:
            assert np.array_equal(_labels(base64.b64decode(body["predictions"][0]["b64"]))[0], want)
    # and once they are done, the server takes requests again
    assert _v1_raw(url, data)[0] == 200


def _metrics(base: str) -> dict[tuple[str, tuple], float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as r:
        text = r.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_requests_latency_and_errors_by_kind(ready, store):
    base = ready["base"]
    name = "cosmos-segmenter"
    before = _metrics(base)
    url = f"{base}/v1/models/{name}:predict"
    assert _v1_raw(url, json.dumps({"instances": [{"b64": b64(store["scans"][1])}]}).encode())[0] == 200
    sheared = json.dumps({"instances": [{"b64": base64.b64encode(_bad_scan("sheared", store)).decode()}]})
    assert _v1_raw(url, sheared.encode())[0] == 400
    assert post(f"{base}/v2/models/{name}/infer", v2(["A" * int(MAX_MB * 1e6 + 10)]))[0] == 413
    after = _metrics(base)

    def grew(metric: str, **labels) -> float:
        labels = labels if "model_name" in labels else dict(model=name, **labels)
        key = (metric, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("cosmos_serve_requests_total", protocol="v1", code="200") == 1
    assert grew("cosmos_serve_requests_total", protocol="v1", code="400") == 1
    assert grew("cosmos_serve_requests_total", protocol="v2", code="413") == 1
    assert grew("cosmos_serve_request_seconds_count", protocol="v1") == 2
    assert grew("cosmos_serve_request_seconds_bucket", protocol="v1", le="+Inf") == 2
    assert grew("cosmos_serve_request_seconds_sum", protocol="v1") > 0
    assert grew("cosmos_serve_request_errors_total", kind="geometry") == 1
    assert grew("cosmos_serve_request_errors_total", kind="too_large") == 1
    # KServe's own histogram (time inside the model's predict), on the same registry
    assert grew("request_predict_seconds_count", model_name=name) == 2  # the refused scan too
    assert after[("cosmos_serve_max_concurrent", (("model", name),))] == 2
    assert after[("cosmos_serve_model_load_seconds", (("model", name),))] > 0


def test_cet1_scan_is_segmented_with_a_warning(ready, store):
    """The content-based modality check (cosmos.data.modality) warns, and the answer carries it."""
    from cosmos.data import nifti
    from cosmos.data.modality import modality_warning

    url = f"{ready['base']}/v1/models/cosmos-segmenter:predict"
    cet1 = next((store["root"] / "phantom").glob("source_training/*_ceT1.nii.gz"))
    for scan in (cet1, store["scans"][0]):
        want = modality_warning(nifti.load(scan).data)
        status, body, _ = _v1_raw(url, json.dumps({"instances": [{"b64": b64(scan)}]}).encode())
        assert status == 200, body
        assert body["predictions"][0]["warnings"] == ([want] if want else [])
        if scan == cet1:
            assert want and "ceT1" in want  # the phantom's ceT1 does trip the check: the test shows something
    status, body = post(f"{ready['base']}/v2/models/cosmos-segmenter/infer", v2([b64(cet1)]))
    assert status == 200 and "ceT1" in json.loads(body["parameters"]["warnings"])[0][0]


def test_dicom_zip_is_segmented_like_its_nifti(ready, store, tmp_path):
    """A zipped DICOM series (built from a phantom with SimpleITK) gives the labels and measurements
    `cosmos predict` gives for the NIfTI that cosmos.data.dicom reads from the same series."""
    import io
    import zipfile

    import SimpleITK as sitk

    from cosmos.data import dicom

    folder = tmp_path / "series"
    dicom.write_series(sitk.ReadImage(str(store["scans"][0])), folder)
    image, _ = dicom.read_series(folder)
    nii = dicom.write_nifti(image, tmp_path / "nifti" / "series.nii.gz")
    out = tmp_path / "predicted"
    args = ["predict", "--model", "models:/cosmos-segmenter@champion", "--tracking-uri", store["uri"]]
    assert main([*args, str(nii), "-o", str(out)]) == 0
    want = _labels(out / "series_seg.nii.gz")[0]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"study/{f.name}")
    data = base64.b64encode(buf.getvalue()).decode()
    status, body, _ = _v1_raw(
        f"{ready['base']}/v1/models/cosmos-segmenter:predict", json.dumps({"instances": [{"dicom_zip": data}]}).encode()
    )
    assert status == 200, body
    got = _labels(base64.b64decode(body["predictions"][0]["b64"]))[0]
    assert got.shape == want.shape and np.array_equal(got, want)
    assert body["predictions"][0]["measurements"] == _predicted_measurements(out / "series_seg.nii.gz")
    request = {"inputs": [{"name": "dicom_zip", "shape": [1], "datatype": "BYTES", "data": [data]}]}
    status, body = post(f"{ready['base']}/v2/models/cosmos-segmenter/infer", request)
    assert status == 200, body
    assert np.array_equal(_labels(base64.b64decode(body["outputs"][0]["data"][0]))[0], want)


@pytest.mark.parametrize(
    "flag, value",
    [("--max-mb", "nan"), ("--max-mb", "-1"), ("--max-mb", "inf"), ("--max-mb", "0"), ("--max-concurrent", "0")],
)
def test_impossible_limits_are_refused_at_start_with_one_line(flag, value, capsys):
    """On the command line (argparse: its usage, then one error line naming the flag) and from Python."""
    from cosmos.errors import CosmosError
    from cosmos.serving.server import serve

    with pytest.raises(SystemExit) as stop:
        main(["serve", "--model", "models:/cosmos-segmenter@champion", flag, value])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert flag in last and repr(value) in last, err
    limits = {"max_mb": float(value)} if flag == "--max-mb" else {"max_concurrent": int(value)}
    with pytest.raises(CosmosError, match=f"^{flag} {value}: ") as refused:
        serve("models:/cosmos-segmenter@champion", **limits)  # type: ignore[arg-type]
    assert "\n" not in str(refused.value)


def test_server_stops_on_sigterm(ready):
    server = ready
    """Last in the module on purpose: it stops the shared server."""
    proc = server["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    text = server["log"].read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]


def test_unknown_model_version_fails_start_with_one_line(store):
    res = subprocess.run(
        _cosmos()
        + [
            "serve",
            "--model",
            "models:/cosmos-segmenter/9",
            "--tracking-uri",
            store["uri"],
            "--port",
            str(_free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("cosmos: error:") and "has no version 9" in last, res.stderr[-2000:]


def test_s3_scans_on_a_real_s3_server(store, expected, real_s3_env):
    """The s3:// path of a request (v1 {"uri": ...} or a v2 element), on SeaweedFS (a real S3)."""
    import boto3

    from cosmos.serving.codec import RequestError, scans_from_v1
    from cosmos.serving.model import CosmosSegmenterModel

    s3 = boto3.client("s3", endpoint_url=real_s3_env)
    s3.create_bucket(Bucket="serving-scans")
    s3.upload_file(str(store["scans"][0]), "serving-scans", "in/scan.nii.gz")
    model = CosmosSegmenterModel(
        "cosmos-segmenter", "models:/cosmos-segmenter@champion", tracking_uri=store["uri"], max_bytes=int(MAX_MB * 1e6)
    )
    model.load()
    request_folder = model._home
    (answer,) = model.segment(scans_from_v1({"instances": [{"uri": "s3://serving-scans/in/scan.nii.gz"}]}))
    assert np.array_equal(_labels(answer.label)[0], _labels(expected[0])[0])
    with pytest.raises(RequestError, match="no such object") as missing:
        model.segment(scans_from_v1({"instances": ["s3://serving-scans/in/nothing.nii.gz"]}))
    assert missing.value.status == 404
    model.max_bytes = 1000
    with pytest.raises(RequestError, match="exceeds the server's cap") as too_large:
        model.segment(scans_from_v1({"instances": ["s3://serving-scans/in/scan.nii.gz"]}))
    assert too_large.value.status == 413
    model.stop()
    assert not model.ready and not request_folder.exists()


# ------------------------------------------------------------------------------------ the pyfunc
def test_registered_pyfunc_takes_base64_nifti(store, expected, tmp_path):
    import pandas as pd
    from mlflow.pyfunc import scoring_server

    mlflow.set_tracking_uri(store["uri"])
    model = mlflow.pyfunc.load_model("models:/cosmos-segmenter@champion")
    inputs = {spec.name: spec.required for spec in model.metadata.get_input_schema().inputs}
    assert inputs == {"path": False, "nifti": False}
    scan = b64(store["scans"][0])
    want = _labels(expected[0])[0]
    out = model.predict(pd.DataFrame({"nifti": [scan]}), params={"output_dir": str(tmp_path / "df")})
    assert list(out.columns) == ["input", "output", "label"]
    assert np.array_equal(_labels(base64.b64decode(out["label"][0]))[0], want)
    # a tensor input, as `mlflow models serve` parses {"inputs": {"nifti": [...]}}
    parsed = scoring_server.infer_and_parse_data({"inputs": {"nifti": [scan]}}, model.metadata.get_input_schema())
    out = model.predict(parsed, params={"output_dir": str(tmp_path / "tensor")})
    assert np.array_equal(_labels(base64.b64decode(out["label"][0]))[0], want)
    with pytest.raises(Exception, match="not a NIfTI file"):
        model.predict(pd.DataFrame({"nifti": [base64.b64encode(b"no scan here " * 40).decode()]}))


_LOAD_WITHOUT_INSTALLED_COSMOS = r"""
import base64, sys
# Hide the installed (editable) cosmos: only the code shipped inside the model may be imported.
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
try:
    import cosmos
    raise SystemExit("cosmos is still importable: the test proves nothing")
except ModuleNotFoundError:
    pass
import mlflow, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model("models:/cosmos-segmenter@champion")
out = model.predict(pd.DataFrame({"nifti": [base64.b64encode(open(sys.argv[2], "rb").read()).decode()]}))
import cosmos
print("COSMOS_FROM", cosmos.__file__)
print("LABEL", out["label"][0])
"""


@pytest.mark.slow  # a fresh interpreter loads mlflow + torch + nnU-Net: about 20 s on 2 free cores
def test_registered_model_environment_exists_and_ships_its_code(store, expected, tmp_path):
    from importlib.metadata import version

    from packaging.requirements import Requirement

    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri="models:/cosmos-segmenter@champion", tracking_uri=store["uri"], dst_path=str(tmp_path)
        )
    )
    reqs = [Requirement(line) for line in (local / "requirements.txt").read_text().splitlines() if line.strip()]
    names = {r.name.lower() for r in reqs}
    assert "cosmos-kubeflow" not in names and {"mlflow", "nnunetv2", "torch", "nibabel", "pandas"} <= names
    for r in reqs:  # every pin is what this environment has: it installs wherever the project installs
        assert version(r.name).split("+")[0] in r.specifier, (r, version(r.name))
    assert (local / "code" / "cosmos" / "segmentation" / "registry.py").is_file()
    res = subprocess.run(
        [sys.executable, "-c", _LOAD_WITHOUT_INSTALLED_COSMOS, store["uri"], str(store["scans"][0])],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
        env=dict(os.environ, COSMOS_NO_PROGRESS="1"),
    )
    assert res.returncode == 0, res.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in res.stdout.splitlines() if line.startswith(("COSMOS_FROM", "LABEL")))
    assert "/code/cosmos/" in lines["COSMOS_FROM"]
    assert np.array_equal(_labels(base64.b64decode(lines["LABEL"]))[0], _labels(expected[0])[0])


# ------------------------------------------------------------------------------------ k8s/serving
SERVING = Path(__file__).resolve().parents[1] / "k8s" / "serving"
K8S_VERSION = "1.31.0"  # as tests/test_k8s_manifests.py


def _tool(name: str) -> str:
    import shutil

    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} is required for this test (see pyproject [test] extras / README)"
    return found


def _render(path: Path) -> list[dict]:
    import yaml

    out = subprocess.run([_tool("kubectl"), "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _validate(docs: list[dict], tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "docs.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    res = subprocess.run(
        [_tool("kubernetes-validate"), "--strict", "--quiet", "-k", K8S_VERSION, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_inference_service_renders_and_validates_offline(variant, tmp_path):
    from cosmos.serving._kserve import kserve

    docs = _render(SERVING if variant == "cpu" else SERVING / "gpu")
    _validate(docs, tmp_path)  # the ConfigMap strictly; for the CRD kubernetes-validate only warns, so:
    isvc = next(d for d in docs if d["kind"] == "InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["metadata"]["namespace"] == "kubeflow"
    predictor = isvc["spec"]["predictor"]
    assert set(isvc["spec"]) <= set(kserve.V1beta1InferenceServiceSpec.attribute_map.values())
    assert set(predictor) <= set(kserve.V1beta1PredictorSpec.attribute_map.values()), predictor.keys()
    pod_fields = {"containers", "volumes", "securityContext", "tolerations"}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "predictor"},
        "spec": {k: v for k, v in predictor.items() if k in pod_fields},
    }
    _validate([pod], tmp_path)  # the predictor's containers, volumes and security as a strict PodSpec
    (c,) = predictor["containers"]
    assert c["command"] == ["cosmos"] and c["args"][0] == "serve"
    args = dict(zip(c["args"][1::2], c["args"][2::2]))
    assert args["--model"] == "$(MODEL_URI)" and args["--host"] == "0.0.0.0" and args["--port"] == "8080"
    env = {e["name"]: e for e in c["env"]}
    ref = env["MODEL_URI"]["valueFrom"]["configMapKeyRef"]
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == ref["name"])
    assert config["data"][ref["key"]] == "models:/cosmos-segmenter@champion"
    assert {"secretRef": {"name": "cosmos-credentials"}} in c["envFrom"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["ports"][0]["containerPort"] == 8080
    name, _, tag = c["image"].rpartition(":")
    assert name.endswith("/cosmos") and tag and tag != "latest"
    csc = c["securityContext"]  # on the container: Knative rejects a pod-level one (tests/test_k8s_manifests.py)
    assert "securityContext" not in predictor
    assert csc["runAsNonRoot"] is True and csc["runAsUser"] != 0 and csc["seccompProfile"]["type"] == "RuntimeDefault"
    assert csc["allowPrivilegeEscalation"] is False and csc["capabilities"]["drop"] == ["ALL"]
    assert "memory" in c["resources"]["limits"]
    gpus = c["resources"]["limits"].get("nvidia.com/gpu")
    assert gpus == ("1" if variant == "gpu" else None)
