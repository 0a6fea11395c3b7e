"""Contract test of ``cosmos submit`` against a fake Kubeflow Pipelines REST API.

A contract test: a local ``http.server`` on 127.0.0.1 plays the KFP v2 API server
(``/apis/v2beta1``), records every request and answers like KFP does. The test checks the calls
``cosmos submit`` makes (upload as ``cosmos-pipeline``, a new version when the pipeline exists,
experiment, run with the given parameters) -- not a real cluster.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
import yaml


class FakeKfp:
    """Minimal in-memory KFP v2beta1 API: pipelines, versions, experiments, runs."""

    def __init__(self, existing_pipeline: bool, version: str = "2.15.0"):
        self.version = version  # what /healthz reports as the backend's tag_name
        self.calls: list[dict] = []
        self.pipelines = {"p-1": "cosmos-pipeline"} if existing_pipeline else {}
        self.versions: dict[str, list[str]] = {"p-1": ["v-0"]} if existing_pipeline else {}
        self.experiments: dict[str, str] = {}
        self.runs: list[dict] = []

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
                    return self._reply(200, {"commit_sha": "test", "tag_name": fake.version, "multi_user": False})
                if path == "/apis/v2beta1/pipelines":
                    flt = json.loads(call["query"].get("filter", ["{}"])[0])
                    name = flt["predicates"][0]["stringValue"]
                    found = [{"pipeline_id": pid, "display_name": n} for pid, n in fake.pipelines.items() if n == name]
                    return self._reply(200, {"pipelines": found, "total_size": len(found)})
                if path.startswith("/apis/v2beta1/pipelines/") and path.endswith("/versions"):
                    pid = path.split("/")[4]
                    vs = [
                        {"pipeline_version_id": v, "pipeline_id": pid, "display_name": v}
                        for v in reversed(fake.versions.get(pid, []))
                    ]
                    return self._reply(200, {"pipeline_versions": vs, "total_size": len(vs)})
                if path == "/apis/v2beta1/experiments":
                    flt = json.loads(call["query"].get("filter", ["{}"])[0])
                    name = flt["predicates"][0]["stringValue"]
                    found = [{"experiment_id": e, "display_name": n} for e, n in fake.experiments.items() if n == name]
                    return self._reply(200, {"experiments": found, "total_size": len(found)})
                return self._reply(404, {"error": f"unexpected GET {path}"})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                call = self._record(body)
                path = call["path"]
                if path == "/apis/v2beta1/pipelines/upload":
                    pid = f"p-{len(fake.pipelines) + 1}"
                    fake.pipelines[pid] = call["query"]["name"][0]
                    fake.versions[pid] = [f"v-{pid}"]
                    return self._reply(200, {"pipeline_id": pid, "display_name": fake.pipelines[pid]})
                if path == "/apis/v2beta1/pipelines/upload_version":
                    pid = call["query"]["pipelineid"][0]
                    vid = f"v-{len(fake.versions[pid])}"
                    fake.versions[pid].append(vid)
                    return self._reply(
                        200, {"pipeline_version_id": vid, "pipeline_id": pid, "display_name": call["query"]["name"][0]}
                    )
                if path == "/apis/v2beta1/experiments":
                    data = json.loads(body)
                    eid = f"e-{len(fake.experiments) + 1}"
                    fake.experiments[eid] = data["display_name"]
                    return self._reply(200, {"experiment_id": eid, "display_name": data["display_name"]})
                if path == "/apis/v2beta1/runs":
                    data = json.loads(body)
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
    from pipelines.cosmos_pipeline import PipelineOptions, compile_pipeline

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
    assert run["runtime_config"]["parameters"] == {"data_uri": "s3://bucket/crossmoda", "folds": [0, 1]}
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
    assert run["runtime_config"]["parameters"] == {"data_uri": "s3://b/d", "profile": "tiny", "folds": [0, 1]}
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
    with pytest.raises(CosmosError, match=r"Kubeflow Pipelines 2\.14\.4.*>= 2\.15\.0.*secretAsEnv") as info:
        submit(package, host, {})
    assert "\n" not in str(info.value)
    assert [c["path"] for c in fake.calls if c["method"] == "POST"] == []  # nothing uploaded


@pytest.mark.parametrize(
    "kfp_server",
    [
        {"existing_pipeline": False, "version": "2.15.0"},
        {"existing_pipeline": False, "version": "v2.17.0-rc.1"},
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

    assert MIN_KFP_BACKEND == (2, 15, 0)  # 'optional' in secretAsEnv: backend 2.15.0 (see submit.py)
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
