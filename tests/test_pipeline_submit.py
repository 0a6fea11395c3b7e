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

    def __init__(self, existing_pipeline: bool):
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
                call = {"method": self.command, "path": url.path, "query": parse_qs(url.query),
                        "content_type": self.headers.get("Content-Type", ""), "body": body,
                        "auth": self.headers.get("Authorization")}
                fake.calls.append(call)
                return call

            def do_GET(self):
                call = self._record()
                path = call["path"]
                if path == "/apis/v2beta1/healthz":
                    return self._reply(200, {"commit_sha": "test", "tag_name": "2.5.0", "multi_user": False})
                if path == "/apis/v2beta1/pipelines":
                    flt = json.loads(call["query"].get("filter", ["{}"])[0])
                    name = flt["predicates"][0]["stringValue"]
                    found = [{"pipeline_id": pid, "display_name": n} for pid, n in fake.pipelines.items() if n == name]
                    return self._reply(200, {"pipelines": found, "total_size": len(found)})
                if path.startswith("/apis/v2beta1/pipelines/") and path.endswith("/versions"):
                    pid = path.split("/")[4]
                    vs = [{"pipeline_version_id": v, "pipeline_id": pid, "display_name": v}
                          for v in reversed(fake.versions.get(pid, []))]
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
                    return self._reply(200, {"pipeline_version_id": vid, "pipeline_id": pid,
                                             "display_name": call["query"]["name"][0]})
                if path == "/apis/v2beta1/experiments":
                    data = json.loads(body)
                    eid = f"e-{len(fake.experiments) + 1}"
                    fake.experiments[eid] = data["display_name"]
                    return self._reply(200, {"experiment_id": eid, "display_name": data["display_name"]})
                if path == "/apis/v2beta1/runs":
                    data = json.loads(body)
                    fake.runs.append(data)
                    return self._reply(200, {"run_id": f"r-{len(fake.runs)}", "display_name": data["display_name"],
                                             "experiment_id": data["experiment_id"]})
                return self._reply(404, {"error": f"unexpected POST {path}"})

        return Handler


@pytest.fixture
def kfp_server(request):
    fake = FakeKfp(existing_pipeline=getattr(request, "param", False))
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
    res = submit(package, host, {"data_uri": "s3://bucket/crossmoda", "folds": [0, 1]}, experiment="cosmos-exp",
                 run_name="demo-run", token="tok123")
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
    rc = main(["submit", "--host", host, "--experiment", "e", "--run-name", "r", "--rounds", "1", "--folds", "0,1",
               "data_uri=s3://b/d", "profile=tiny", "folds=[0, 1]"])
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
