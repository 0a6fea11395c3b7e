"""Contract test of ``cosmos submit`` against a fake Kubeflow Pipelines REST API.

A contract test: a local ``http.server`` on 127.0.0.1 plays the KFP v2 API server
(``/apis/v2beta1``), records every request and answers like KFP does. The test checks the calls
``cosmos submit`` makes (upload as ``cosmos-pipeline``, a new version when the pipeline exists,
experiment, run with the given parameters) -- not a real cluster.

Multi-user mode (``multi_user=True``) follows what kubeflow/pipelines backend 2.17.0 does, read from
its source: ``backend/src/apiserver/server/pipeline_upload_server.go`` (upload takes ``namespace`` as a
query parameter; with ``REQUIRE_NAMESPACE_FOR_PIPELINES`` an empty one is refused,
``validation/namespace.go``), ``pipeline_server.go`` ``listPipelines`` (lists one namespace; "" = the
shared pipelines), ``run_server.go`` ``createRun`` (a run's namespace is its experiment's; empty is refused
in multi-user mode) and the request bodies of ``backend/api/v2beta1/run.proto`` / ``experiment.proto`` and
``swagger/pipeline.upload.swagger.json``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

# The fields of message ``Run`` in kubeflow/pipelines 2.17.0 backend/api/v2beta1/run.proto (JSON names).
RUN_FIELDS = {
    "experiment_id",
    "run_id",
    "display_name",
    "storage_state",
    "description",
    "pipeline_version_id",
    "pipeline_spec",
    "pipeline_version_reference",
    "runtime_config",
    "service_account",
    "created_at",
    "scheduled_at",
    "finished_at",
    "state",
    "error",
    "run_details",
    "recurring_run_id",
    "state_history",
    "plugins_input",
    "plugins_output",
}


class FakeKfp:
    """Minimal in-memory KFP v2beta1 API: pipelines, versions, experiments, runs."""

    def __init__(
        self,
        existing_pipeline: bool,
        version: str = "2.17.0",
        multi_user: bool = False,
        require_namespace: bool = False,
    ):
        self.version = version  # what /healthz reports as the backend's tag_name
        # multi-user mode as backend 2.17.0 implements it (see the module docstring)
        self.multi_user = multi_user
        self.require_namespace = require_namespace  # REQUIRE_NAMESPACE_FOR_PIPELINES=true
        self.calls: list[dict] = []
        self.pipelines = {"p-1": "cosmos-pipeline"} if existing_pipeline else {}
        self.pipeline_ns: dict[str, str] = {"p-1": ""} if existing_pipeline else {}  # "" = shared
        self.versions: dict[str, list[str]] = {"p-1": ["v-0"]} if existing_pipeline else {}
        self.version_pipeline: dict[str, str] = {"v-0": "p-1"} if existing_pipeline else {}
        self.experiments: dict[str, str] = {}
        self.experiment_ns: dict[str, str] = {}
        self.runs: list[dict] = []
        self.run_ns: list[str] = []  # the namespace each run landed in (its experiment's)
        # run id -> V2beta1RuntimeState; RetryRun (resource_manager.go) re-runs only a workflow whose Argo
        # phase is Failed/Error (execSpec.CanRetry), else the server answers 500
        self.run_states: dict[str, str] = {}
        self.retried: list[str] = []

    def namespace_of(self, call: dict) -> str:
        """The ``namespace`` query parameter; single-user servers drop it (ReplaceNamespace)."""
        return call["query"].get("namespace", [""])[0] if self.multi_user else ""

    def handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self, body: bytes = b""):
                url = urlparse(self.path)
                if url.path.startswith("/pipeline/"):  # the central dashboard's API route
                    url = url._replace(path=url.path[len("/pipeline") :])
                call = {
                    "method": self.command,
                    "path": url.path,
                    "query": parse_qs(url.query),
                    "content_type": self.headers.get("Content-Type", ""),
                    "body": body,
                    "auth": self.headers.get("Authorization"),
                }
                fake.calls.append(call)
                return call

            def do_GET(self):
                call = self._record()
                path = call["path"]
                if path == "/apis/v2beta1/healthz":
                    return self._reply(
                        200, {"commit_sha": "test", "tag_name": fake.version, "multi_user": fake.multi_user}
                    )
                if path == "/apis/v2beta1/pipelines":
                    ns = fake.namespace_of(call)
                    if fake.require_namespace and not ns:  # validation.ValidateNamespaceRequired
                        return self._reply(400, {"error": "Namespace is required for pipeline operations"})
                    flt = json.loads(call["query"].get("filter", ["{}"])[0])
                    name = flt["predicates"][0]["stringValue"]
                    found = [
                        {"pipeline_id": pid, "display_name": n, "namespace": fake.pipeline_ns[pid]}
                        for pid, n in fake.pipelines.items()
                        if n == name and fake.pipeline_ns[pid] == ns
                    ]
                    return self._reply(200, {"pipelines": found, "total_size": len(found)})
                if path.startswith("/apis/v2beta1/pipelines/") and path.endswith("/versions"):
                    pid = path.split("/")[4]
                    vs = [
                        {"pipeline_version_id": v, "pipeline_id": pid, "display_name": v}
                        for v in reversed(fake.versions.get(pid, []))
                    ]
                    return self._reply(200, {"pipeline_versions": vs, "total_size": len(vs)})
                if path == "/apis/v2beta1/experiments":
                    ns = fake.namespace_of(call)
                    flt = json.loads(call["query"].get("filter", ["{}"])[0])
                    name = flt["predicates"][0]["stringValue"]
                    found = [
                        {"experiment_id": e, "display_name": n, "namespace": fake.experiment_ns.get(e, "")}
                        for e, n in fake.experiments.items()
                        if n == name and fake.experiment_ns.get(e, "") == ns
                    ]
                    return self._reply(200, {"experiments": found, "total_size": len(found)})
                if path.startswith("/apis/v2beta1/runs/"):  # GetRun
                    rid = path.rsplit("/", 1)[1]
                    if rid not in fake.run_states:
                        return self._reply(404, {"error": f"Run {rid} not found"})
                    return self._reply(200, {"run_id": rid, "display_name": rid, "state": fake.run_states[rid]})
                return self._reply(404, {"error": f"unexpected GET {path}"})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                call = self._record(body)
                path = call["path"]
                if path == "/apis/v2beta1/pipelines/upload":
                    ns = fake.namespace_of(call)
                    if fake.require_namespace and not ns:  # pipeline_upload_server.go uploadPipeline
                        return self._reply(400, {"error": "Namespace is required for pipeline operations"})
                    pid = f"p-{len(fake.pipelines) + 1}"
                    fake.pipelines[pid] = call["query"]["name"][0]
                    fake.pipeline_ns[pid] = ns
                    fake.versions[pid] = [f"v-{pid}"]
                    fake.version_pipeline[f"v-{pid}"] = pid
                    return self._reply(200, {"pipeline_id": pid, "display_name": fake.pipelines[pid], "namespace": ns})
                if path == "/apis/v2beta1/pipelines/upload_version":
                    pid = call["query"]["pipelineid"][0]  # the version's namespace is its pipeline's
                    vid = f"v-{len(fake.versions[pid])}"
                    fake.versions[pid].append(vid)
                    fake.version_pipeline[vid] = pid
                    return self._reply(
                        200, {"pipeline_version_id": vid, "pipeline_id": pid, "display_name": call["query"]["name"][0]}
                    )
                if path == "/apis/v2beta1/experiments":
                    data = json.loads(body)
                    ns = data.get("namespace", "") if fake.multi_user else ""
                    if fake.multi_user and not ns:
                        return self._reply(400, {"error": "experiment needs a namespace in multi-user mode"})
                    eid = f"e-{len(fake.experiments) + 1}"
                    fake.experiments[eid] = data["display_name"]
                    fake.experiment_ns[eid] = ns
                    return self._reply(
                        200, {"experiment_id": eid, "display_name": data["display_name"], "namespace": ns}
                    )
                if path.startswith("/apis/v2beta1/runs/") and path.endswith(":retry"):  # run.proto RetryRun
                    rid = path[len("/apis/v2beta1/runs/") : -len(":retry")]
                    if rid not in fake.run_states:
                        return self._reply(404, {"error": f"Run {rid} not found"})
                    if fake.run_states[rid] not in ("FAILED", "CANCELED"):
                        return self._reply(500, {"error": f"Failed to retry run {rid} as it does not allow retries"})
                    fake.retried.append(rid)
                    fake.run_states[rid] = "RUNNING"  # the same run id, its failed nodes reset
                    return self._reply(200, {})
                if path == "/apis/v2beta1/runs":
                    data = json.loads(body)
                    unknown = set(data) - RUN_FIELDS
                    if unknown:  # protojson rejects fields the Run message does not have
                        return self._reply(400, {"error": f"unknown field(s) {sorted(unknown)} in Run"})
                    # run_server.go createRun: the namespace is the experiment's
                    ns = fake.experiment_ns.get(data.get("experiment_id", ""), "")
                    if fake.multi_user and not ns:
                        return self._reply(400, {"error": "A run cannot have an empty namespace in multi-user mode"})
                    fake.run_ns.append(ns)
                    fake.runs.append(data)
                    return self._reply(
                        200,
                        {
                            "run_id": f"r-{len(fake.runs)}",
                            "display_name": data["display_name"],
                            "experiment_id": data["experiment_id"],
                        },
                    )
                return self._reply(404, {"error": f"unexpected POST {path}"})

        return Handler


@pytest.fixture
def kfp_server(request):
    param = getattr(request, "param", False)
    fake = FakeKfp(**param) if isinstance(param, dict) else FakeKfp(existing_pipeline=param)
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    from pipelines.compile import compile_pipeline
    from pipelines.task_settings import PipelineOptions

    path = tmp_path_factory.mktemp("pkg") / "cosmos-pipeline.yaml"
    compile_pipeline(str(path), PipelineOptions(rounds=1))
    return path


def _uploaded_yaml(call: dict) -> list[dict]:
    body = call["body"].decode()
    start = body.index("# PIPELINE DEFINITION")
    end = body.rindex("\r\n--")
    return list(yaml.safe_load_all(body[start:end]))


def test_submit_new_pipeline_uploads_then_runs(kfp_server, package):
    from pipelines.submit import submit

    fake, host = kfp_server
    res = submit(
        package,
        host,
        {"data_uri": "s3://bucket/crossmoda", "folds": [0, 1]},
        experiment="cosmos-exp",
        run_name="demo-run",
        token="tok123",
    )
    paths = [(c["method"], c["path"]) for c in fake.calls if c["path"] != "/apis/v2beta1/healthz"]
    assert paths == [
        ("GET", "/apis/v2beta1/pipelines"),
        ("POST", "/apis/v2beta1/pipelines/upload"),
        ("GET", "/apis/v2beta1/pipelines/p-1/versions"),
        ("GET", "/apis/v2beta1/experiments"),
        ("POST", "/apis/v2beta1/experiments"),
        ("POST", "/apis/v2beta1/runs"),
    ]
    upload = next(c for c in fake.calls if c["path"].endswith("/upload"))
    assert upload["query"]["name"] == ["cosmos-pipeline"]
    assert upload["content_type"].startswith("multipart/form-data")
    spec = _uploaded_yaml(upload)[0]
    assert spec["pipelineInfo"]["name"] == "cosmos-pipeline"
    assert all(c["auth"] == "Bearer tok123" for c in fake.calls if c["path"] != "/apis/v2beta1/healthz")
    run = fake.runs[0]
    assert run["display_name"] == "demo-run"
    assert run["pipeline_version_reference"] == {"pipeline_id": "p-1", "pipeline_version_id": "v-p-1"}
    params = dict(run["runtime_config"]["parameters"])
    # the bucket cannot be listed from here (no credentials): a one-off fingerprint, never a cache hit
    assert params.pop("data_fingerprint").startswith("unique:")
    assert params == {"data_uri": "s3://bucket/crossmoda", "folds": [0, 1]}
    assert fake.experiments[run["experiment_id"]] == "cosmos-exp"
    assert (res.pipeline_id, res.version_id, res.run_id) == ("p-1", "v-p-1", "r-1")
    assert res.run_url.endswith("/#/runs/details/r-1")


@pytest.mark.parametrize("kfp_server", [True], indirect=True)
def test_submit_existing_pipeline_adds_a_version(kfp_server, package):
    from pipelines.submit import submit

    fake, host = kfp_server
    fake.experiments["e-9"] = "cosmos"
    res = submit(package, host, {}, experiment="cosmos")
    posts = [c["path"] for c in fake.calls if c["method"] == "POST"]
    assert "/apis/v2beta1/pipelines/upload" not in posts  # no second pipeline of the same name
    version_call = next(c for c in fake.calls if c["path"] == "/apis/v2beta1/pipelines/upload_version")
    assert version_call["query"]["pipelineid"] == ["p-1"]
    assert version_call["query"]["name"][0].startswith("cosmos-pipeline-")
    assert _uploaded_yaml(version_call)[0]["pipelineInfo"]["name"] == "cosmos-pipeline"
    assert "/apis/v2beta1/experiments" not in posts  # the experiment exists already
    assert fake.runs[0]["experiment_id"] == "e-9"
    assert fake.runs[0]["pipeline_version_reference"]["pipeline_version_id"] == res.version_id == "v-1"


def test_submit_rejects_unknown_parameter_before_any_call(kfp_server, package):
    from cosmos.errors import CosmosError
    from pipelines.submit import submit

    fake, host = kfp_server
    with pytest.raises(CosmosError, match="unknown pipeline parameter"):
        submit(package, host, {"nosuch": 1})
    assert fake.calls == []


def test_submit_unreachable_host_is_one_clear_error(package):
    import socket

    from cosmos.errors import CosmosError
    from pipelines.submit import submit

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CosmosError, match=f"submitting to http://127.0.0.1:{port} failed"):
        submit(package, f"http://127.0.0.1:{port}", {})


def test_cosmos_submit_cli_compiles_and_submits(kfp_server, capsys):
    from cosmos.cli import main

    fake, host = kfp_server
    rc = main(
        [
            "submit",
            "--host",
            host,
            "--experiment",
            "e",
            "--run-name",
            "r",
            "--rounds",
            "1",
            "--folds",
            "0,1",
            "data_uri=s3://b/d",
            "profile=tiny",
            "folds=[0, 1]",
        ]
    )
    assert rc == 0
    run = fake.runs[0]
    params = dict(run["runtime_config"]["parameters"])
    assert params.pop("data_fingerprint").startswith("unique:")
    assert params == {"data_uri": "s3://b/d", "profile": "tiny", "folds": [0, 1]}
    upload = next(c for c in fake.calls if c["path"].endswith("/upload"))
    spec = _uploaded_yaml(upload)[0]
    assert len([t for t in spec["root"]["dag"]["tasks"] if t.startswith("for-loop")]) == 2
    out = capsys.readouterr().out
    assert "run r-1" in out


def test_parse_params():
    from cosmos.errors import CosmosError
    from pipelines.submit import parse_params

    assert parse_params(["a=1", "b=[0,1]", "c=s3://x/y", "d="]) == {"a": 1, "b": [0, 1], "c": "s3://x/y", "d": ""}
    with pytest.raises(CosmosError):
        parse_params(["novalue"])


# -- backend version, in-cluster token, run URL, pipeline root ---------------------------------


@pytest.fixture
def no_sa_token(monkeypatch, tmp_path):
    """No in-cluster token unless a test writes one (the default path may exist on a CI pod)."""
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.delenv("KF_PIPELINES_UI_ENDPOINT", raising=False)
    return tmp_path / "no-token"


@pytest.mark.parametrize("kfp_server", [{"existing_pipeline": False, "version": "2.14.4"}], indirect=True)
def test_submit_refuses_a_backend_older_than_the_minimum_before_uploading(kfp_server, package, no_sa_token):
    from cosmos.errors import CosmosError
    from pipelines.submit import submit

    fake, host = kfp_server
    with pytest.raises(CosmosError, match=r"Kubeflow Pipelines 2\.14\.4.*>= 2\.17\.0.*secretAsEnv.*OneOf") as info:
        submit(package, host, {})
    assert "\n" not in str(info.value)
    assert [c["path"] for c in fake.calls if c["method"] == "POST"] == []  # nothing uploaded


@pytest.mark.parametrize(
    "kfp_server",
    [
        {"existing_pipeline": False, "version": "2.17.0"},
        {"existing_pipeline": False, "version": "v2.18.0-rc.1"},
        {"existing_pipeline": False, "version": "dev"},
    ],
    indirect=True,
)
def test_submit_accepts_the_minimum_newer_and_unversioned_backends(kfp_server, package, no_sa_token):
    from pipelines.submit import submit

    fake, host = kfp_server
    assert submit(package, host, {}).run_id == "r-1"


def test_minimum_backend_version_and_parsing():
    from pipelines.submit import MIN_KFP_BACKEND, parse_version

    assert MIN_KFP_BACKEND == (2, 17, 0)  # dsl.OneOf artifacts resolved at run time: backend 2.17.0 (see submit.py)
    assert parse_version("2.15.0") == (2, 15, 0)
    assert parse_version("v2.5") == (2, 5, 0)
    assert parse_version("2.16.1-rc.2") == (2, 16, 1)
    assert parse_version("") is None and parse_version("dev") is None


def test_submit_uses_the_in_cluster_service_account_token(kfp_server, package, monkeypatch, tmp_path):
    from pipelines.submit import submit

    fake, host = kfp_server
    token = tmp_path / "token"
    token.write_text("sa-token-1\n")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    submit(package, host, {})
    auths = {c["auth"] for c in fake.calls}
    assert auths == {"Bearer sa-token-1"}


def test_an_explicit_token_wins_over_the_in_cluster_token(kfp_server, package, monkeypatch, tmp_path):
    from pipelines.submit import submit

    fake, host = kfp_server
    token = tmp_path / "token"
    token.write_text("sa-token-1")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    submit(package, host, {}, token="explicit")
    assert {c["auth"] for c in fake.calls} == {"Bearer explicit"}


def test_without_any_token_no_authorization_header(kfp_server, package, no_sa_token):
    from pipelines.submit import submit

    fake, host = kfp_server
    submit(package, host, {})
    assert {c["auth"] for c in fake.calls} == {None}


def test_behind_the_central_dashboard_the_run_url_is_the_dashboard_route(kfp_server, package, no_sa_token):
    from pipelines.submit import submit

    fake, host = kfp_server
    res = submit(package, f"{host}/pipeline", {}, namespace="team-a")
    assert fake.runs  # the API calls went through the /pipeline route
    assert res.run_url == f"{host}/_/pipeline/?ns=team-a#/runs/details/r-1"


def test_run_url_forms(monkeypatch):
    from pipelines.submit import run_url

    monkeypatch.delenv("KF_PIPELINES_UI_ENDPOINT", raising=False)
    assert run_url("http://localhost:8080", "r") == "http://localhost:8080/#/runs/details/r"
    assert run_url("https://kf.example.com/pipeline", "r") == "https://kf.example.com/_/pipeline/#/runs/details/r"
    assert (
        run_url("https://kf.example.com/pipeline/", "r", namespace="a b")
        == "https://kf.example.com/_/pipeline/?ns=a%20b#/runs/details/r"
    )
    assert run_url("http://api:8888", "r", ui_host="ui.example.com") == "http://ui.example.com/#/runs/details/r"
    monkeypatch.setenv("KF_PIPELINES_UI_ENDPOINT", "https://ui.example.com/")
    assert run_url("http://api:8888", "r") == "https://ui.example.com/#/runs/details/r"


def test_pipeline_root_is_set_per_run(kfp_server, package, no_sa_token):
    from pipelines.submit import submit

    fake, host = kfp_server
    submit(package, host, {}, pipeline_root="s3://cosmos-artifacts/v2/artifacts")
    assert fake.runs[0]["runtime_config"]["pipeline_root"] == "s3://cosmos-artifacts/v2/artifacts"
    submit(package, host, {})
    assert "pipeline_root" not in fake.runs[1]["runtime_config"]  # the server's default


def test_cosmos_submit_cli_passes_pipeline_root(kfp_server, no_sa_token, capsys):
    from cosmos.cli import main

    fake, host = kfp_server
    rc = main(["submit", "--host", host, "--rounds", "0", "--pipeline-root", "s3://b/root", "profile=tiny"])
    assert rc == 0
    assert fake.runs[0]["runtime_config"]["pipeline_root"] == "s3://b/root"


# -- multi-user Kubeflow: the pipeline and the run live in the profile namespace ----------------

MULTI_USER = {"existing_pipeline": False, "version": "2.17.0", "multi_user": True, "require_namespace": True}


@pytest.mark.parametrize("kfp_server", [MULTI_USER], indirect=True)
def test_submit_with_a_namespace_uploads_into_it_and_runs_there(kfp_server, package, no_sa_token):
    from pipelines.submit import submit

    fake, host = kfp_server
    res = submit(package, host, {"profile": "tiny"}, namespace="team-a", experiment="cosmos")
    lookup = next(c for c in fake.calls if c["method"] == "GET" and c["path"] == "/apis/v2beta1/pipelines")
    assert lookup["query"]["namespace"] == ["team-a"]  # looked up in the namespace, not among the shared
    upload = next(c for c in fake.calls if c["path"] == "/apis/v2beta1/pipelines/upload")
    assert upload["query"]["namespace"] == ["team-a"] and upload["query"]["name"] == ["cosmos-pipeline"]
    assert fake.pipeline_ns[res.pipeline_id] == "team-a"
    exp_post = next(c for c in fake.calls if c["method"] == "POST" and c["path"] == "/apis/v2beta1/experiments")
    assert json.loads(exp_post["body"]) == {"display_name": "cosmos", "namespace": "team-a"}
    run = fake.runs[0]
    assert set(run) <= RUN_FIELDS and "namespace" not in run  # a v2beta1 Run has no namespace field
    assert fake.run_ns == ["team-a"]  # ... it is the experiment's
    assert run["pipeline_version_reference"] == {"pipeline_id": res.pipeline_id, "pipeline_version_id": res.version_id}
    assert run["runtime_config"] == {"parameters": {"profile": "tiny"}}  # no root: the namespace's default


@pytest.mark.parametrize(
    "kfp_server", [dict(MULTI_USER, existing_pipeline=True, require_namespace=False)], indirect=True
)
def test_a_shared_pipeline_of_the_same_name_is_not_given_the_new_version(kfp_server, package, no_sa_token):
    from pipelines.submit import submit

    fake, host = kfp_server
    first = submit(package, host, {}, namespace="team-a")
    assert first.pipeline_id != "p-1" and fake.pipeline_ns[first.pipeline_id] == "team-a"
    assert not [c for c in fake.calls if c["path"] == "/apis/v2beta1/pipelines/upload_version"]
    second = submit(package, host, {}, namespace="team-a")  # now it exists in the namespace: a version
    version_call = next(c for c in fake.calls if c["path"] == "/apis/v2beta1/pipelines/upload_version")
    assert version_call["query"]["pipelineid"] == [first.pipeline_id] == [second.pipeline_id]
    assert fake.versions["p-1"] == ["v-0"]  # the shared pipeline is untouched
    assert fake.run_ns == ["team-a", "team-a"] and len(fake.experiments) == 1


@pytest.mark.parametrize("kfp_server", [MULTI_USER], indirect=True)
def test_multi_user_without_a_namespace_is_one_clear_error_before_any_upload(kfp_server, package, no_sa_token):
    from cosmos.errors import CosmosError
    from pipelines.submit import submit

    fake, host = kfp_server
    with pytest.raises(CosmosError, match="multi-user.*--namespace") as info:
        submit(package, host, {})
    assert "\n" not in str(info.value)
    assert [c for c in fake.calls if c["method"] == "POST"] == []


@pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp.Client's "only works with KFP v2.0.0-beta.2 and later"
@pytest.mark.parametrize("kfp_server", [MULTI_USER], indirect=True)
def test_the_fake_refuses_a_shared_upload_like_the_2_17_backend(kfp_server, package, no_sa_token):
    """What `cosmos submit` did before: upload with no namespace. The multi-user fake must refuse it."""
    import kfp

    fake, host = kfp_server
    client = kfp.Client(host=host, namespace="team-a")
    with pytest.raises(Exception, match="400"):
        client.upload_pipeline(str(package), pipeline_name="cosmos-pipeline")  # no namespace=
    assert fake.pipelines == {}


@pytest.mark.parametrize("kfp_server", [MULTI_USER], indirect=True)
def test_cosmos_submit_cli_namespace(kfp_server, no_sa_token, capsys):
    from cosmos.cli import main

    fake, host = kfp_server
    rc = main(["submit", "--host", host, "--rounds", "0", "--namespace", "team-b", "profile=tiny"])
    assert rc == 0
    assert next(iter(fake.pipeline_ns.values())) == "team-b" and fake.run_ns == ["team-b"]
    assert "(namespace team-b)" in capsys.readouterr().out


@pytest.mark.parametrize("kfp_server", [MULTI_USER], indirect=True)
def test_a_pipeline_root_outside_the_profile_grant_is_warned_about(kfp_server, package, no_sa_token, caplog):
    from pipelines.submit import profile_default_root, submit

    fake, host = kfp_server
    with caplog.at_level("WARNING", logger="pipelines.submit"):
        submit(package, host, {}, namespace="team-a", pipeline_root="s3://cosmos-artifacts/v2/artifacts")
    assert "outside what the KFP profile controller grants namespace team-a" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="pipelines.submit"):
        submit(package, host, {}, namespace="team-a", pipeline_root=profile_default_root("team-a"))
    assert "outside" not in caplog.text
    assert fake.runs[1]["runtime_config"]["pipeline_root"] == "minio://mlpipeline/private-artifacts/team-a/v2/artifacts"


def test_granted_to_profile_follows_the_profile_controller_policy():
    from pipelines.submit import granted_to_profile

    ns = "team-a"
    for uri in (
        "s3://mlpipeline/private/team-a/cosmos/mlflow",
        "s3://mlpipeline/private-artifacts/team-a/v2/artifacts",
        "minio://mlpipeline/artifacts/x",
        "s3://mlpipeline/shared/crossmoda/",
    ):
        assert granted_to_profile(uri, ns), uri
    for uri in (
        "s3://cosmos-mlflow/artifacts",  # our own buckets: no CreateBucket, no grant
        "s3://mlpipeline/private/team-b/cosmos",  # another namespace
        "s3://mlpipeline/private/team-ab/cosmos",  # a prefix of the name is not the namespace
        "s3://mlpipeline/v2/artifacts",  # the single-user default root
        "s3://mlpipeline/private",
        "gs://mlpipeline/private/team-a/x",
    ):
        assert not granted_to_profile(uri, ns), uri


def test_retry_posts_the_v2beta1_retry_endpoint_of_the_same_run(kfp_server, no_sa_token):
    """cosmos retry: GET the run (its state), then POST /apis/v2beta1/runs/{id}:retry (backend 2.17.0
    run.proto RetryRun); the run id stays, so the folds' checkpoint keys (pipeline_run_id) do too."""
    from pipelines.submit import retry

    fake, host = kfp_server
    fake.run_states["r-7"] = "FAILED"
    res = retry("r-7", host, token="tok")
    calls = [(c["method"], c["path"]) for c in fake.calls if c["path"] != "/apis/v2beta1/healthz"]
    assert calls == [("GET", "/apis/v2beta1/runs/r-7"), ("POST", "/apis/v2beta1/runs/r-7:retry")]
    assert fake.retried == ["r-7"] and fake.calls[-1]["auth"] == "Bearer tok"
    assert (res.run_id, res.previous_state) == ("r-7", "FAILED")
    assert res.run_url.endswith("/#/runs/details/r-7")


@pytest.mark.parametrize("state", ["RUNNING", "SUCCEEDED", "PENDING"])
def test_retry_refuses_a_run_that_has_not_failed_before_posting(kfp_server, no_sa_token, state):
    from cosmos.errors import CosmosError
    from pipelines.submit import retry

    fake, host = kfp_server
    fake.run_states["r-1"] = state
    with pytest.raises(CosmosError, match=f"run r-1 is {state}: only a FAILED or CANCELED run"):
        retry("r-1", host)
    assert fake.retried == [] and all(c["method"] == "GET" for c in fake.calls)


def test_retry_of_an_unknown_run_or_host_is_one_clear_error(kfp_server, no_sa_token):
    from cosmos.errors import CosmosError
    from pipelines.submit import retry

    fake, host = kfp_server
    with pytest.raises(CosmosError, match="retrying run nosuch on .* failed"):
        retry("nosuch", host)
    with pytest.raises(CosmosError, match="give the id of a KFP run"):
        retry("", host)
    with pytest.raises(CosmosError, match="--host"):
        retry("r-1", " ")


def test_cosmos_retry_cli(kfp_server, no_sa_token, capsys):
    from cosmos.cli import main

    fake, host = kfp_server
    fake.run_states["r-3"] = "CANCELED"
    rc = main(["retry", "r-3", "--host", host, "--namespace", "team-a"])
    assert rc == 0 and fake.retried == ["r-3"]
    out = capsys.readouterr().out
    assert "run r-3 (CANCELED) retried" in out and "r-3" in out.splitlines()[-1]


def test_submit_passes_the_data_fingerprint_that_follows_the_s3_data(kfp_server, package, no_sa_token, real_s3_env):
    """data_fingerprint (keys, sizes, ETags on a REAL S3 server) reaches the run's request body: the same
    value for unchanged data (so KFP's cache key of ingest_validate repeats), another after an edit; the
    ingest task accepts exactly that value and refuses a stale one."""
    import boto3

    from components._runtime import check_data_fingerprint, data_fingerprint
    from cosmos.errors import CosmosError
    from pipelines.submit import submit

    s3 = boto3.client("s3", endpoint_url=real_s3_env)
    s3.create_bucket(Bucket="fp-data")
    for key, body in (("crossmoda/source_training/crossmoda_1_ceT1.nii.gz", b"a" * 10), ("crossmoda/x.txt", b"b")):
        s3.put_object(Bucket="fp-data", Key=key, Body=body)
    fake, host = kfp_server
    submit(package, host, {"data_uri": "s3://fp-data/crossmoda"})
    submit(package, host, {"data_uri": "s3://fp-data/crossmoda"})
    s3.put_object(Bucket="fp-data", Key="crossmoda/x.txt", Body=b"edited")
    submit(package, host, {"data_uri": "s3://fp-data/crossmoda"})
    fps = [r["runtime_config"]["parameters"]["data_fingerprint"] for r in fake.runs]
    assert fps[0].startswith("sha256:") and fps[0] == fps[1] and fps[2] != fps[0]
    assert fps[2] == data_fingerprint("s3://fp-data/crossmoda")
    check_data_fingerprint("s3://fp-data/crossmoda", "", fps[2], cluster=True)  # the task's own check passes
    with pytest.raises(CosmosError, match="changed since the run was submitted"):
        check_data_fingerprint("s3://fp-data/crossmoda", "", fps[0], cluster=True)
    # none (the Kubeflow UI, kfp run submit): accepted, that run's DAG branch ingests with caching off
    check_data_fingerprint("s3://fp-data/crossmoda", "", "", cluster=True)
    check_data_fingerprint("s3://fp-data/crossmoda", "", "", cluster=False)  # a local run resumes by its own key
    # a fingerprint the user gives is passed as given
    submit(package, host, {"data_uri": "s3://fp-data/crossmoda", "data_fingerprint": "sha256:mine"})
    assert fake.runs[-1]["runtime_config"]["parameters"]["data_fingerprint"] == "sha256:mine"
