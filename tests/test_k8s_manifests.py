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
    # the driver is named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which the image lacks
    assert "postgresql+psycopg2://" in args and '--artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION}"' in args
    store = _find(docs, "ConfigMap", "cosmos-object-store")["data"]
    assert store["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    env = {e["name"]: e for e in mlflow["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_ARTIFACTS_DESTINATION"]["valueFrom"]["configMapKeyRef"] == {
        "name": "cosmos-object-store",
        "key": "MLFLOW_ARTIFACTS_DESTINATION",
    }
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


# -- multi-user Kubeflow storage: only what the KFP profile controller grants -----------------

_STORE_URIS = ("DATA_URI", "PIPELINE_ROOT", "MLFLOW_ARTIFACTS_DESTINATION", "CHECKPOINT_URI")


def test_kubeflow_overlay_keeps_every_store_path_inside_the_profile_grant(rendered):
    """Since KFP 2.15 a profile's keys reach only mlpipeline/{artifacts,private-artifacts/NS,private/NS,
    shared}/* and cannot create buckets (policy encoded in pipelines.submit.granted_to_profile)."""
    from pipelines.submit import granted_to_profile, profile_default_root

    _, docs = rendered["kubeflow"]
    ns = docs[0]["metadata"]["namespace"]
    store = _find(docs, "ConfigMap", "cosmos-object-store")["data"]
    assert store["CREATE_BUCKETS"] == "false"  # no CreateBucket in the grant
    for key in _STORE_URIS:
        assert granted_to_profile(store[key], ns), f"{key}={store[key]} is outside the grant of {ns}"
    assert store["PIPELINE_ROOT"] == profile_default_root(ns)  # what the namespace's kfp-launcher says
    for key in ("DATA_URI", "MLFLOW_ARTIFACTS_DESTINATION", "CHECKPOINT_URI"):
        # private/NS, not private-artifacts/NS: the controller puts an expiry rule on private-artifacts
        assert store[key].startswith(f"s3://mlpipeline/private/{ns}/cosmos/"), store[key]
    assert len({store[k] for k in _STORE_URIS}) == len(_STORE_URIS)
    for overlay in ("minio", "kfp-seaweedfs"):  # own buckets there, created by the Job
        own = _find(rendered[overlay][1], "ConfigMap", "cosmos-object-store")["data"]
        assert own["CREATE_BUCKETS"] == "true"
        assert not any(granted_to_profile(own[k], ns) for k in _STORE_URIS)


def test_kubeflow_overlay_leaves_the_launcher_configmap_to_the_profile_controller(rendered):
    """The controller owns kfp-launcher in every profile namespace (a metacontroller attachment)."""
    _, docs = rendered["kubeflow"]
    assert not [d for d in docs if d["metadata"]["name"] == "kfp-launcher"]
    kustomization = yaml.safe_load((K8S / "overlays" / "kubeflow" / "kustomization.yaml").read_text())
    assert not any("kfp-launcher" in c for c in kustomization.get("components", []))
    assert not any("kfp-launcher" in r for r in kustomization.get("resources", []))


def _job_script(docs) -> tuple[str, dict]:
    job = _find(docs, "Job", "cosmos-create-buckets")["spec"]["template"]["spec"]["containers"][0]
    assert job["command"] == ["python", "-c"]
    return job["args"][0], _find(docs, "ConfigMap", "cosmos-object-store")["data"]


def _run_job(script: str, config: dict, endpoint: str) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **config, "S3_ENDPOINT_URL": endpoint}
    env.pop("ISTIO_QUIT_URL", None)
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)


def test_the_bucket_job_creates_own_buckets_and_proves_it_can_write(rendered, real_s3_env):
    """The rendered Job's script, run for real against SeaweedFS (no IAM there: grants are not tested)."""
    import boto3

    script, config = _job_script(rendered["minio"][1])
    res = _run_job(script, config, real_s3_env)
    assert res.returncode == 0, res.stdout + res.stderr
    s3 = boto3.client("s3", endpoint_url=real_s3_env)
    for bucket in (config["DATA_BUCKET"], config["ARTIFACT_BUCKET"], config["MLFLOW_BUCKET"]):
        s3.head_bucket(Bucket=bucket)  # created (raises otherwise)
        assert f"bucket created: {bucket}" in res.stdout
    for key in _STORE_URIS:
        assert f"{key}: {config[key]} is writable" in res.stdout
    for bucket in (config["DATA_BUCKET"], config["ARTIFACT_BUCKET"], config["MLFLOW_BUCKET"]):
        assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0  # the probes were deleted


def test_the_bucket_job_in_a_profile_namespace_creates_nothing_and_names_what_it_cannot_write(rendered, real_s3_env):
    import boto3

    script, config = _job_script(rendered["kubeflow"][1])
    s3 = boto3.client("s3", endpoint_url=real_s3_env)
    s3.create_bucket(Bucket="mlpipeline")  # the platform's bucket exists; the profile may not create any
    res = _run_job(script, config, real_s3_env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "bucket" not in res.stdout  # neither "bucket exists" nor "bucket created": no bucket calls
    for key in ("DATA_URI", "MLFLOW_ARTIFACTS_DESTINATION", "CHECKPOINT_URI"):
        assert f"{key}: {config[key]} is writable" in res.stdout
    assert s3.list_objects_v2(Bucket="mlpipeline").get("KeyCount", 0) == 0  # the probes were deleted
    assert "PIPELINE_ROOT: minio://mlpipeline/" in res.stdout and "not s3://, not checked" in res.stdout
    broken = dict(config, CHECKPOINT_URI="s3://cosmos-no-such-bucket/checkpoints")
    res = _run_job(script, broken, real_s3_env)
    assert res.returncode == 1
    assert "CHECKPOINT_URI: the keys of cosmos-credentials cannot write s3://cosmos-no-such-bucket/checkpoints" in (
        res.stderr
    )
    assert "Traceback" not in res.stderr


# -- KServe: accepted in Serverless (Knative, default feature flags) and in RawDeployment ----------
#
# Knative admission, encoded from knative/serving knative-v1.23.0 (commit 98e5ef9 of the mirror):
# pkg/apis/serving/fieldmask.go (PodSpecMask, ContainerMask, SecurityContextMask, CapabilitiesMask,
# PodSecurityContextMask, VolumeSourceMask, VolumeMountMask, ProbeMask, HTTPGetActionMask,
# ContainerPortMask, EnvVarMask, EnvVarSourceMask, EnvFromSourceMask, ResourceRequirementsMask) with the
# defaults of pkg/apis/config/features.go (every kubernetes.podspec-* flag disabled except
# podspec-volumes-emptydir; secure-pod-defaults disabled), and the rules of
# pkg/apis/serving/k8s_validation.go (reserved paths, env vars, ports; port names; every volume
# mounted; readOnly mounts for non-emptyDir volumes) and pkg/apis/config/defaults.go
# (max-revision-timeout-seconds 600). The webhook REJECTS a field the mask drops
# (apis.CheckDisallowedFields): "must not set the field(s)".
KNATIVE_POD = {
    "serviceAccountName",
    "containers",
    "volumes",
    "imagePullSecrets",
    "enableServiceLinks",
    "automountServiceAccountToken",  # only false
}
KNATIVE_CONTAINER = {
    "name",
    "args",
    "command",
    "env",
    "workingDir",
    "envFrom",
    "image",
    "imagePullPolicy",
    "livenessProbe",
    "ports",
    "readinessProbe",
    "resources",
    "securityContext",
    "startupProbe",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "volumeMounts",
}
KNATIVE_SECURITY_CONTEXT = {
    "capabilities",
    "readOnlyRootFilesystem",
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "allowPrivilegeEscalation",
    "seccompProfile",
    "privileged",  # only false
}
KNATIVE_CAPABILITIES = {"drop"}  # add: containerspec-addcapabilities disabled
KNATIVE_VOLUME_SOURCES = {"secret", "configMap", "projected", "emptyDir"}
KNATIVE_VOLUME_MOUNT = {"name", "readOnly", "mountPath", "subPath"}
KNATIVE_PROBE = {
    "httpGet",
    "exec",
    "tcpSocket",
    "grpc",
    "initialDelaySeconds",
    "timeoutSeconds",
    "periodSeconds",
    "successThreshold",
    "failureThreshold",
    "terminationGracePeriodSeconds",
}
KNATIVE_HTTP_GET = {"host", "path", "scheme", "httpHeaders", "port"}
KNATIVE_PORT = {"containerPort", "name", "protocol"}
KNATIVE_ENV = {"name", "value", "valueFrom"}
KNATIVE_ENV_SOURCE = {"configMapKeyRef", "secretKeyRef"}  # fieldRef: kubernetes.podspec-fieldref disabled
KNATIVE_ENV_FROM = {"prefix", "configMapRef", "secretRef"}
KNATIVE_RESERVED_PATHS = {"/", "/dev", "/dev/log"}
KNATIVE_RESERVED_ENV = {"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"}
KNATIVE_RESERVED_PORTS = {8012, 8013, 8022, 9090, 9091, 8008}  # pkg/networking/constants.go, pprof
KNATIVE_PORT_NAMES = {"", "h2c", "http1"}
KNATIVE_MAX_TIMEOUT_S = 600

# KServe's InferenceService webhook, encoded from kserve/kserve v0.20.0:
# pkg/apis/serving/v1beta1/inference_service_validation.go (name, exactly one implementation, blocked env
# vars of pkg/validation/env_policy.go, autoscaling per deployment mode), component.go (replicas,
# containerConcurrency), predictor_custom.go (PROTOCOL), pkg/constants/constants.go (deployment modes:
# Serverless/RawDeployment are the legacy names of Knative/Standard, normalized by the mutating webhook).
KSERVE_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
KSERVE_FRAMEWORKS = {
    "sklearn",
    "xgboost",
    "tensorflow",
    "pytorch",
    "triton",
    "onnx",
    "huggingface",
    "pmml",
    "lightgbm",
    "paddle",
    "model",
}
KSERVE_BLOCKED_ENV = {"PYTHONPATH"}
KSERVE_MODES = {"Serverless": "Knative", "Knative": "Knative", "RawDeployment": "Standard", "Standard": "Standard"}
KSERVE_KPA_METRICS = {"concurrency", "rps"}


def _predictor_pod_spec(predictor: dict) -> dict:
    """The PodSpec part of a PredictorSpec (it inlines corev1.PodSpec next to its own fields)."""
    from kubernetes.client import V1PodSpec

    pod_fields = set(V1PodSpec.attribute_map.values())
    return {k: v for k, v in predictor.items() if k in pod_fields}


def knative_violations(isvc: dict) -> list[str]:
    """Why Knative's webhook (default feature flags) would reject the Service KServe makes of ``isvc``."""
    predictor = isvc["spec"]["predictor"]
    pod = _predictor_pod_spec(predictor)
    bad: list[str] = [f"pod.{k}" for k in sorted(set(pod) - KNATIVE_POD)]
    if pod.get("automountServiceAccountToken") is True:
        bad.append("pod.automountServiceAccountToken: only false")
    if predictor.get("timeout", 0) > KNATIVE_MAX_TIMEOUT_S:
        bad.append(f"timeout {predictor['timeout']} > max-revision-timeout-seconds {KNATIVE_MAX_TIMEOUT_S}")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounted = set()
    for v in volumes.values():
        sources = set(v) - {"name"}
        bad += [f"volume {v['name']}.{s}" for s in sorted(sources - KNATIVE_VOLUME_SOURCES)]
        if "emptyDir" in v and v["emptyDir"].get("medium", "") not in ("", "Memory"):
            bad.append(f"volume {v['name']}.emptyDir.medium")
    for c in pod.get("containers", []):
        where = f"containers[{c.get('name')}]"
        bad += [f"{where}.{k}" for k in sorted(set(c) - KNATIVE_CONTAINER)]
        sc = c.get("securityContext", {})
        bad += [f"{where}.securityContext.{k}" for k in sorted(set(sc) - KNATIVE_SECURITY_CONTEXT)]
        if sc.get("privileged") is True:
            bad.append(f"{where}.securityContext.privileged: only false")
        bad += [f"{where}.capabilities.{k}" for k in sorted(set(sc.get("capabilities", {})) - KNATIVE_CAPABILITIES)]
        for e in c.get("env", []):
            bad += [f"{where}.env.{e['name']}.{k}" for k in sorted(set(e) - KNATIVE_ENV)]
            bad += [f"{where}.env.{e['name']}.valueFrom.{k}" for k in set(e.get("valueFrom", {})) - KNATIVE_ENV_SOURCE]
            if e["name"] in KNATIVE_RESERVED_ENV:
                bad.append(f"{where}.env.{e['name']}: reserved")
        for ef in c.get("envFrom", []):
            bad += [f"{where}.envFrom.{k}" for k in sorted(set(ef) - KNATIVE_ENV_FROM)]
        ports = c.get("ports", [])
        for port in ports:
            bad += [f"{where}.ports.{k}" for k in sorted(set(port) - KNATIVE_PORT)]
            if port["containerPort"] in KNATIVE_RESERVED_PORTS:
                bad.append(f"{where}.ports: {port['containerPort']} is reserved")
        if ports and (ports[0].get("name", "") not in KNATIVE_PORT_NAMES or ports[0].get("protocol", "TCP") != "TCP"):
            bad.append(f"{where}.ports[0]: name must be '', h2c or http1, protocol TCP")
        for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = c.get(probe_name)
            if probe is None:
                continue
            bad += [f"{where}.{probe_name}.{k}" for k in sorted(set(probe) - KNATIVE_PROBE)]
            get = probe.get("httpGet", {})
            bad += [f"{where}.{probe_name}.httpGet.{k}" for k in sorted(set(get) - KNATIVE_HTTP_GET)]
            port = get.get("port")
            if isinstance(port, str) and port != (ports[0].get("name") if ports else None):
                bad.append(f"{where}.{probe_name}: a named probe port must be the container port's name")
        bad += [f"{where}.resources.{k}" for k in sorted(set(c.get("resources", {})) - {"limits", "requests"})]
        for m in c.get("volumeMounts", []):
            bad += [f"{where}.volumeMounts.{m['name']}.{k}" for k in sorted(set(m) - KNATIVE_VOLUME_MOUNT)]
            if m["mountPath"].rstrip("/") in {p.rstrip("/") for p in KNATIVE_RESERVED_PATHS} or m["mountPath"] == "/":
                bad.append(f"{where}.volumeMounts.{m['name']}: {m['mountPath']} is reserved")
            vol = volumes.get(m["name"])
            if vol is None:
                bad.append(f"{where}.volumeMounts.{m['name']}: no such volume")
            elif not ({"emptyDir", "persistentVolumeClaim", "ephemeral"} & set(vol)) and not m.get("readOnly"):
                bad.append(f"{where}.volumeMounts.{m['name']}: must be readOnly")
            mounted.add(m["name"])
    bad += [f"volume {name} not mounted" for name in sorted(set(volumes) - mounted)]
    return bad


def kserve_violations(isvc: dict) -> list[str]:
    """Why KServe's InferenceService webhook would reject ``isvc``."""
    bad: list[str] = []
    meta, predictor = isvc["metadata"], isvc["spec"]["predictor"]
    if not KSERVE_NAME.match(meta["name"]):
        bad.append(f"name {meta['name']!r}")
    mode_name = (meta.get("annotations") or {}).get("serving.kserve.io/deploymentMode")
    if mode_name is not None and mode_name not in KSERVE_MODES:
        bad.append(f"deploymentMode {mode_name!r} is unknown (KServe would silently use its default)")
    implementations = sorted(KSERVE_FRAMEWORKS & set(predictor)) + (["custom"] if predictor.get("containers") else [])
    if len(implementations) != 1:
        bad.append(f"exactly one predictor implementation, found {implementations}")
    for c in predictor.get("containers", []) + predictor.get("initContainers", []):
        for e in c.get("env", []):
            if e["name"] in KSERVE_BLOCKED_ENV:
                bad.append(f"env {e['name']} is blocked")
            if e["name"] == "PROTOCOL" and e.get("value") not in ("v1", "v2"):
                bad.append("PROTOCOL must be v1 or v2")
    lo, hi = predictor.get("minReplicas", 1), predictor.get("maxReplicas", 0)
    if lo < 0 or hi < 0 or (hi != 0 and lo > hi):
        bad.append(f"replicas min {lo} max {hi}")
    if predictor.get("containerConcurrency", 0) < 0:
        bad.append("containerConcurrency < 0")
    if KSERVE_MODES.get(mode_name or "Serverless") == "Knative":
        if "deploymentStrategy" in predictor:
            bad.append("deploymentStrategy is for RawDeployment only")
        if predictor.get("scaleMetric", "concurrency") not in KSERVE_KPA_METRICS:
            bad.append(f"scaleMetric {predictor['scaleMetric']} is not a KPA metric")
    if isvc["spec"].get("canary") and KSERVE_MODES.get(mode_name or "") != "Standard":
        bad.append("canary needs Standard mode")
    return bad


def _isvc(path: Path) -> dict:
    return next(d for d in _render(path) if d["kind"] == "InferenceService")


SERVING = K8S / "serving"


def test_the_inference_service_is_accepted_in_serverless_mode_with_default_knative_flags():
    isvc = _isvc(SERVING)
    assert "serving.kserve.io/deploymentMode" not in (isvc["metadata"].get("annotations") or {})  # the default
    assert knative_violations(isvc) == []
    assert kserve_violations(isvc) == []
    (c,) = isvc["spec"]["predictor"]["containers"]
    sc = c["securityContext"]  # the restricted profile, on the container where Knative allows it
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0 and sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize("variant", ["raw", "gpu"])
def test_the_raw_deployment_variants_are_accepted_by_kserve_and_are_valid_pods(variant, tmp_path):
    isvc = _isvc(SERVING / variant)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert kserve_violations(isvc) == []
    # RawDeployment: KServe makes a plain Deployment of the predictor's PodSpec: a strict Pod check
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": _predictor_pod_spec(isvc["spec"]["predictor"]),
    }
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(pod))
    res = subprocess.run(
        [_tool("kubernetes-validate"), "--strict", "--quiet", "-k", K8S_VERSION, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    if variant == "gpu":
        (c,) = isvc["spec"]["predictor"]["containers"]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
        # why gpu/ is RawDeployment: its toleration is exactly what default Knative would refuse
        assert knative_violations(isvc) == ["pod.tolerations"]


def test_the_admission_checks_catch_what_the_webhooks_refuse():
    """The checkers themselves: the old manifest shape and other refused fields are caught."""
    import copy

    good = _isvc(SERVING)
    old = copy.deepcopy(good)  # before issue 27: the restricted settings on the pod
    old["spec"]["predictor"]["securityContext"] = {"runAsNonRoot": True, "fsGroup": 10001}
    assert knative_violations(old) == ["pod.securityContext"]
    bad = copy.deepcopy(good)
    c = bad["spec"]["predictor"]["containers"][0]
    c["securityContext"]["capabilities"]["add"] = ["NET_ADMIN"]
    c["ports"][0]["name"] = "http"
    c["env"].append({"name": "PORT", "value": "1"})
    c["env"].append({"name": "PYTHONPATH", "value": "/x"})
    c["volumeMounts"].append({"name": "tmp", "mountPath": "/dev"})
    bad["spec"]["predictor"]["volumes"].append({"name": "cache", "hostPath": {"path": "/x"}})
    bad["spec"]["predictor"]["timeout"] = 3600
    problems = knative_violations(bad)
    for expected in (
        "capabilities.add",
        "ports[0]",
        "env.PORT: reserved",
        "/dev is reserved",
        "volume cache.hostPath",
        "volume cache not mounted",
        "timeout 3600",
    ):
        assert any(expected in p for p in problems), (expected, problems)
    assert any("PYTHONPATH" in p for p in kserve_violations(bad))
    typo = copy.deepcopy(good)
    typo["metadata"]["annotations"] = {"serving.kserve.io/deploymentMode": "Raw"}
    typo["spec"]["predictor"]["sklearn"] = {"storageUri": "s3://x"}
    assert len(kserve_violations(typo)) == 2
