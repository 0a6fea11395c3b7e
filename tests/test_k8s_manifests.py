"""k8s/: every overlay renders with ``kubectl kustomize`` and validates offline with
``kubernetes-validate --strict``; pods run restricted; Secrets are placeholders only.

Both tools are test dependencies: a missing tool FAILS these tests (it never skips them).
No cluster is involved: this is offline validation only.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
OVERLAYS = sorted(p.parent for p in (REPO / "k8s" / "overlays").glob("*/kustomization.yaml"))
K8S_VERSION = "1.31.0"
PLACEHOLDERS = {"REPLACE_ME"}


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} is required for this test (install it; see pyproject [test] extras / README)"
    return found


def _render(path: Path) -> list[dict]:
    out = subprocess.run([_tool("kubectl"), "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, tuple[Path, list[dict]]]:
    tmp = tmp_path_factory.mktemp("k8s")
    out = {}
    for overlay in OVERLAYS:
        docs = _render(overlay)
        path = tmp / f"{overlay.name}.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        out[overlay.name] = (path, docs)
    return out


def test_there_are_overlays_for_own_and_bundled_object_store():
    assert {p.name for p in OVERLAYS} >= {"minio", "kfp-seaweedfs"}


@pytest.mark.parametrize("overlay", [p.name for p in OVERLAYS])
def test_overlay_validates_strictly(rendered, overlay):
    path, _ = rendered[overlay]
    res = subprocess.run([_tool("kubernetes-validate"), "--strict", "--quiet", "-k", K8S_VERSION, str(path)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


def _pod_specs(docs):
    for d in docs:
        spec = d.get("spec", {})
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield d, spec["template"]["spec"]


@pytest.mark.parametrize("overlay", [p.name for p in OVERLAYS])
def test_pods_are_restricted(rendered, overlay):
    _, docs = rendered[overlay]
    pods = list(_pod_specs(docs))
    assert pods
    for d, pod in pods:
        sc = pod["securityContext"]
        assert sc["runAsNonRoot"] is True, d["metadata"]["name"]
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"
        assert sc.get("runAsUser", 1) != 0
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            csc = c["securityContext"]
            assert csc["allowPrivilegeEscalation"] is False, c["name"]
            assert csc["capabilities"]["drop"] == ["ALL"], c["name"]
            assert csc.get("privileged", False) is False
            assert ":" in c["image"] and not c["image"].endswith(":latest"), c["image"]
            assert "memory" in c["resources"]["limits"], c["name"]


@pytest.mark.parametrize("overlay", [p.name for p in OVERLAYS])
def test_required_services_and_config(rendered, overlay):
    _, docs = rendered[overlay]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Deployment", "cosmos-mlflow") in kinds and ("Service", "cosmos-mlflow") in kinds
    assert ("StatefulSet", "cosmos-postgres") in kinds
    assert ("Job", "cosmos-create-buckets") in kinds
    assert ("Secret", "cosmos-credentials") in kinds
    assert any(k == "NetworkPolicy" for k, _ in kinds)
    launcher = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "kfp-launcher")
    assert launcher["data"]["defaultPipelineRoot"].startswith("s3://")
    providers = yaml.safe_load(launcher["data"]["providers"])
    assert providers["s3"]["default"]["credentials"]["secretRef"]["secretName"] == "cosmos-credentials"
    pg = next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "cosmos-postgres")
    assert pg["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    mlflow = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "cosmos-mlflow")
    args = " ".join(mlflow["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "postgresql://" in args and "--artifacts-destination" in args and "s3://" in args
    if overlay == "minio":
        assert ("StatefulSet", "cosmos-object-store") in kinds
        store = next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "cosmos-object-store")
        assert store["spec"]["volumeClaimTemplates"]
    else:
        endpoint = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "cosmos-object-store")
        assert "seaweedfs" in endpoint["data"]["S3_ENDPOINT_URL"]
        assert providers["s3"]["default"]["endpoint"].startswith("seaweedfs")


@pytest.mark.parametrize("overlay", [p.name for p in OVERLAYS])
def test_secrets_hold_placeholders_only(rendered, overlay):
    _, docs = rendered[overlay]
    secrets = [d for d in docs if d["kind"] == "Secret"]
    assert secrets
    sensitive = ("PASSWORD", "SECRET", "ACCESS_KEY", "ROOT_USER")
    for s in secrets:
        values = dict(s.get("stringData", {}))
        values.update({k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()})
        for key, value in values.items():
            if any(word in key for word in sensitive):
                assert value in PLACEHOLDERS, f"{s['metadata']['name']}.{key} must be a placeholder"
