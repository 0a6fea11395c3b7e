"""k8s/: every overlay renders with ``kubectl kustomize`` and validates offline with
``kubernetes-validate --strict``; pods run restricted; images are pinned; Secrets come only from
untracked files; the kfp-launcher ConfigMap is opt-in; the Kubeflow overlay's Istio policies.

Both tools are test dependencies: a missing tool FAILS these tests (it never skips them).
No cluster is involved: this is offline validation only. kubernetes-validate has no schemas for
Istio's CRDs (it only warns), so their fields are checked here by hand against the field names
of Istio's security.istio.io/v1 API -- that they work on a mesh is NOT tested.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
K8S_VERSION = "1.31.0"
# Values the test writes into the untracked secret files of its own copy of k8s/.
SECRET_VALUES = {
    "AWS_ACCESS_KEY_ID": "test-access-key",
    "AWS_SECRET_ACCESS_KEY": "test-secret-key",
    "POSTGRES_PASSWORD": "test-postgres-password",
    "MINIO_ROOT_USER": "test-access-key",
    "MINIO_ROOT_PASSWORD": "test-secret-key",
}


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} is required for this test (install it; see pyproject [test] extras / README)"
    return found


def _kustomize(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_tool("kubectl"), "kustomize", str(path)], capture_output=True, text=True, timeout=120)


def _render(path: Path) -> list[dict]:
    out = _kustomize(path)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _copy_k8s(dest: Path, with_secrets: bool) -> Path:
    """A copy of k8s/ without any real .env file; with_secrets: filled from the *.env.example files."""
    root = dest / "k8s"
    shutil.copytree(K8S, root, ignore=shutil.ignore_patterns("*.env"))
    if with_secrets:
        for example in root.rglob("*.env.example"):
            lines = []
            for line in example.read_text().splitlines():
                key, sep, _ = line.partition("=")
                lines.append(f"{key}={SECRET_VALUES[key]}" if sep and not line.startswith("#") else line)
            example.with_suffix("").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def k8s_copy(tmp_path_factory) -> Path:
    return _copy_k8s(tmp_path_factory.mktemp("k8s"), with_secrets=True)


@pytest.fixture(scope="module")
def rendered(k8s_copy, tmp_path_factory) -> dict[str, tuple[Path, list[dict]]]:
    tmp = tmp_path_factory.mktemp("rendered")
    out = {}
    for overlay in OVERLAYS:
        docs = _render(k8s_copy / "overlays" / overlay)
        path = tmp / f"{overlay}.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        out[overlay] = (path, docs)
    return out


def _find(docs, kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_there_are_overlays_for_own_and_bundled_object_store_and_full_kubeflow():
    assert set(OVERLAYS) >= {"minio", "kfp-seaweedfs", "kubeflow"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_strictly(rendered, overlay):
    path, _ = rendered[overlay]
    res = subprocess.run(
        [_tool("kubernetes-validate"), "--strict", "--quiet", "-k", K8S_VERSION, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def _pod_specs(docs):
    for d in docs:
        spec = d.get("spec", {})
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield d, spec["template"]["spec"]


def _containers(pod: dict) -> list[dict]:
    return pod.get("containers", []) + pod.get("initContainers", [])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_restricted(rendered, overlay):
    _, docs = rendered[overlay]
    pods = list(_pod_specs(docs))
    assert pods
    for d, pod in pods:
        sc = pod["securityContext"]
        assert sc["runAsNonRoot"] is True, d["metadata"]["name"]
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"
        assert sc.get("runAsUser", 1) != 0
        for c in _containers(pod):
            csc = c["securityContext"]
            assert csc["allowPrivilegeEscalation"] is False, c["name"]
            assert csc["capabilities"]["drop"] == ["ALL"], c["name"]
            assert csc.get("privileged", False) is False
            assert "memory" in c["resources"]["limits"], c["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_is_pinned_and_mlflow_is_not_the_cuda_image(rendered, overlay):
    _, docs = rendered[overlay]
    for d, pod in _pod_specs(docs):
        for c in _containers(pod):
            image = c["image"]
            name, _, tag = image.rpartition(":")
            if "@sha256:" in image:
                continue  # pinned by digest
            # an explicit version (16.4, 3.17.2) or release date (MinIO's RELEASE.2025-04-22T...): no
            # latest, no bare major ("16") that moves with every release
            assert name and "/" in name and re.search(r"\d+\.\d+|\d{4}-\d{2}-\d{2}", tag), (
                f"{d['metadata']['name']}: {image}"
            )
            assert "latest" not in tag
            # the component image is multi-GB CUDA PyTorch: never pulled for a server or a Job
            assert not name.endswith("cosmos-kubeflow/cosmos"), f"{d['metadata']['name']} runs the CUDA image"
    mlflow = _find(docs, "Deployment", "cosmos-mlflow")["spec"]["template"]["spec"]["containers"][0]
    assert mlflow["image"].startswith("ghcr.io/cosmos-kubeflow/cosmos-mlflow:")


def test_the_mlflow_image_and_its_requirements_are_pinned():
    dockerfile = (REPO / "docker" / "Dockerfile.mlflow").read_text()
    base = re.search(r"^FROM\s+(\S+)", dockerfile, re.M).group(1)
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    reqs = [
        ln
        for ln in (REPO / "docker" / "requirements-mlflow.txt").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert reqs and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", r) for r in reqs), reqs
    assert any(r.startswith("mlflow==") for r in reqs) and any(r.startswith("psycopg2-binary==") for r in reqs)
    assert "!docker/requirements-mlflow.txt" in (REPO / ".dockerignore").read_text()
    hadolint = _tool("hadolint")
    res = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(REPO / "docker" / "Dockerfile.mlflow")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_required_services_and_config(rendered, overlay):
    _, docs = rendered[overlay]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Deployment", "cosmos-mlflow") in kinds and ("Service", "cosmos-mlflow") in kinds
    assert ("StatefulSet", "cosmos-postgres") in kinds
    assert ("Job", "cosmos-create-buckets") in kinds
    assert ("Secret", "cosmos-credentials") in kinds and ("Secret", "cosmos-postgres") in kinds
    assert any(k == "NetworkPolicy" for k, _ in kinds)
    pg = _find(docs, "StatefulSet", "cosmos-postgres")
    assert pg["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    mlflow = _find(docs, "Deployment", "cosmos-mlflow")
    args = " ".join(mlflow["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "postgresql://" in args and "--artifacts-destination" in args and "s3://" in args
    assert mlflow["spec"]["template"]["spec"]["serviceAccountName"] == "cosmos-mlflow"
    creds = {k: base64.b64decode(v).decode() for k, v in _find(docs, "Secret", "cosmos-credentials")["data"].items()}
    endpoint = _find(docs, "ConfigMap", "cosmos-object-store")["data"]["S3_ENDPOINT_URL"]
    assert creds["AWS_ENDPOINT_URL"] == creds["MLFLOW_S3_ENDPOINT_URL"] == endpoint
    assert creds["MLFLOW_TRACKING_URI"] == "http://cosmos-mlflow:5000"
    if overlay == "minio":
        store = _find(docs, "StatefulSet", "cosmos-object-store")
        assert store["spec"]["volumeClaimTemplates"]
        assert ("NetworkPolicy", "cosmos-object-store-ingress") in kinds
        assert endpoint == "http://cosmos-object-store:9000"
    else:
        assert endpoint == "http://seaweedfs.kubeflow:8333"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pipeline_root_is_not_set_for_the_whole_namespace(rendered, overlay):
    """No kfp-launcher ConfigMap by default: the pipeline root goes on each run (cosmos submit)."""
    _, docs = rendered[overlay]
    assert not [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "kfp-launcher"]
    assert "defaultPipelineRoot" not in yaml.safe_dump_all(docs)


def test_the_kfp_launcher_provider_block_is_an_opt_in_component(k8s_copy, tmp_path):
    overlay = k8s_copy / "overlays" / "with-launcher"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["../minio"],
                "components": ["../../components/kfp-launcher-s3"],
            }
        )
    )
    docs = _render(overlay)
    launcher = _find(docs, "ConfigMap", "kfp-launcher")
    assert "defaultPipelineRoot" not in launcher["data"]  # never namespace-wide
    providers = yaml.safe_load(launcher["data"]["providers"])
    assert providers["s3"]["default"]["credentials"]["secretRef"]["secretName"] == "cosmos-credentials"
    path = tmp_path / "with-launcher.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    res = subprocess.run(
        [_tool("kubernetes-validate"), "--strict", "--quiet", "-k", K8S_VERSION, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr


# -- secrets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_hold_exactly_the_values_of_the_untracked_files(rendered, overlay):
    _, docs = rendered[overlay]
    secrets = [d for d in docs if d["kind"] == "Secret"]
    assert secrets
    for s in secrets:
        assert "stringData" not in s
        values = {k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()}
        for key, value in values.items():
            if key in SECRET_VALUES:
                assert value == SECRET_VALUES[key], f"{s['metadata']['name']}.{key}"
        assert "REPLACE_ME" not in values.values()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_an_overlay_without_the_secret_files_does_not_render(tmp_path, overlay):
    """So a template Secret can never be applied by mistake: no file, no manifests at all."""
    root = _copy_k8s(tmp_path, with_secrets=False)
    out = _kustomize(root / "overlays" / overlay)
    assert out.returncode != 0
    assert ".env" in out.stderr


def test_no_secret_is_tracked_and_the_secret_files_are_ignored():
    tracked = subprocess.run(
        ["git", "ls-files", "k8s"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked, "k8s/ is not tracked"
    for rel in tracked:
        text = (REPO / rel).read_text() if (REPO / rel).is_file() else ""
        assert "REPLACE_ME" not in text, rel
        if rel.endswith((".yaml", ".yml")):
            assert not re.search(r"^kind:\s*Secret\s*$", text, re.M), f"{rel}: Secrets come from secretGenerator"
        assert not rel.endswith(".env"), rel
    examples = sorted(K8S.rglob("*.env.example"))
    assert {p.name for p in examples} == {
        "cosmos-credentials.env.example",
        "cosmos-postgres.env.example",
        "minio-root.env.example",
    }
    for example in examples:
        for line in example.read_text().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                assert key in SECRET_VALUES and value == "", f"{example.name}: {line}"  # empty: fail closed
        real = example.with_suffix("")
        ignored = subprocess.run(["git", "check-ignore", "-q", str(real.relative_to(REPO))], cwd=REPO)
        assert ignored.returncode == 0, f"{real} is not git-ignored"


# -- the Kubeflow (Istio, profile namespace) overlay -----------------------------------------

# Field names of Istio's security.istio.io/v1 API (AuthorizationPolicy, PeerAuthentication).
_AP_SPEC = {"selector", "targetRef", "targetRefs", "action", "provider", "rules"}
_AP_RULE = {"from", "to", "when"}
_AP_SOURCE = {
    "principals",
    "notPrincipals",
    "requestPrincipals",
    "notRequestPrincipals",
    "namespaces",
    "notNamespaces",
    "ipBlocks",
    "notIpBlocks",
    "remoteIpBlocks",
    "notRemoteIpBlocks",
    "serviceAccounts",
    "notServiceAccounts",
}
_AP_OPERATION = {"hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths"}
_PA_SPEC = {"selector", "targetRef", "targetRefs", "mtls", "portLevelMtls"}


def _check_istio(doc: dict) -> None:
    spec = doc["spec"]
    assert doc["apiVersion"] == "security.istio.io/v1"
    if doc["kind"] == "AuthorizationPolicy":
        assert set(spec) <= _AP_SPEC and spec["action"] in ("ALLOW", "DENY", "AUDIT", "CUSTOM")
        for rule in spec["rules"]:
            assert set(rule) <= _AP_RULE
            for f in rule.get("from", []):
                assert set(f) == {"source"} and set(f["source"]) <= _AP_SOURCE
            for t in rule.get("to", []):
                assert set(t) == {"operation"} and set(t["operation"]) <= _AP_OPERATION
                assert all(isinstance(p, str) for p in t["operation"].get("ports", []))
    else:
        assert doc["kind"] == "PeerAuthentication"
        assert set(spec) <= _PA_SPEC and spec["mtls"]["mode"] in ("UNSET", "DISABLE", "PERMISSIVE", "STRICT")


def test_kubeflow_overlay_targets_a_profile_namespace(rendered):
    _, docs = rendered["kubeflow"]
    namespaces = {d["metadata"].get("namespace") for d in docs}
    assert len(namespaces) == 1 and namespaces != {"kubeflow"} and None not in namespaces


def test_kubeflow_overlay_istio_policies(rendered):
    _, docs = rendered["kubeflow"]
    ns = docs[0]["metadata"]["namespace"]
    istio = [d for d in docs if d["apiVersion"].startswith("security.istio.io/")]
    assert {(d["kind"], d["metadata"]["name"]) for d in istio} == {
        ("PeerAuthentication", "cosmos-mlflow"),
        ("AuthorizationPolicy", "cosmos-mlflow"),
        ("PeerAuthentication", "cosmos-postgres"),
        ("AuthorizationPolicy", "cosmos-postgres"),
    }
    for d in istio:
        _check_istio(d)
    assert "PROFILE_NAMESPACE" not in yaml.safe_dump_all(istio)  # filled in from `namespace:`
    # pipeline pods have no sidecar: MLflow must take plaintext, but only on its port
    assert _find(docs, "PeerAuthentication", "cosmos-mlflow")["spec"]["mtls"]["mode"] == "PERMISSIVE"
    rules = _find(docs, "AuthorizationPolicy", "cosmos-mlflow")["spec"]["rules"]
    assert rules[0]["from"][0]["source"] == {"notPrincipals": ["*"]}
    assert all(r["to"] == [{"operation": {"ports": ["5000"]}}] for r in rules)
    assert rules[1]["from"][0]["source"]["namespaces"] == [ns]
    assert "cluster.local/ns/kubeflow/sa/ml-pipeline-ui" in rules[2]["from"][0]["source"]["principals"]
    # PostgreSQL: mTLS from MLflow's own ServiceAccount only
    assert _find(docs, "PeerAuthentication", "cosmos-postgres")["spec"]["mtls"]["mode"] == "STRICT"
    pg_rules = _find(docs, "AuthorizationPolicy", "cosmos-postgres")["spec"]["rules"]
    assert pg_rules[0]["from"][0]["source"]["principals"] == [f"cluster.local/ns/{ns}/sa/cosmos-mlflow"]
    assert ("ServiceAccount", "cosmos-mlflow") in {(d["kind"], d["metadata"]["name"]) for d in docs}


def test_kubeflow_overlay_sidecar_settings(rendered):
    _, docs = rendered["kubeflow"]
    for kind, name in (
        ("Deployment", "cosmos-mlflow"),
        ("StatefulSet", "cosmos-postgres"),
        ("Job", "cosmos-create-buckets"),
    ):
        ann = _find(docs, kind, name)["spec"]["template"]["metadata"]["annotations"]
        assert ann["sidecar.istio.io/inject"] == "true", name
    job = _find(docs, "Job", "cosmos-create-buckets")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in job["env"]}
    assert env["ISTIO_QUIT_URL"] == "http://127.0.0.1:15020/quitquitquit"  # or the Job never completes
    assert "ISTIO_QUIT_URL" in job["args"][0]
    hosts = _find(docs, "ConfigMap", "cosmos-object-store")["data"]["MLFLOW_ALLOWED_HOSTS"].split(",")
    assert "cosmos-mlflow:5000" in hosts and not any(".kubeflow" in h for h in hosts)


def test_kubeflow_overlay_network_policies_admit_pipeline_pods_and_the_kfp_ui(rendered):
    _, docs = rendered["kubeflow"]
    pols = [
        d
        for d in docs
        if d["kind"] == "NetworkPolicy"
        and d["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == "cosmos-mlflow"
    ]
    peers = [p for pol in pols for rule in pol["spec"]["ingress"] for p in rule["from"]]
    assert {"podSelector": {}} in peers  # this namespace: pipeline pods, notebooks
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kubeflow"}},
        "podSelector": {"matchLabels": {"app": "ml-pipeline-ui"}},
    } in peers
    ports = {p["port"] for pol in pols for rule in pol["spec"]["ingress"] for p in rule["ports"]}
    assert ports == {5000}
