"""Timeouts and disks are planned at compile time (``cosmos compile --dataset-gb``); ingest measures the data and
stops before copying anything when the data is larger than the plan, and warns when a large dataset was never
declared."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conftest import run_ingest
from kfp.dsl import Dataset

from components import _runtime as rt
from components import build
from cosmos.errors import CosmosError


@pytest.fixture(scope="module")
def ops():
    return build("example.org/cosmos:test")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    from cosmos.data.phantom import make_phantom

    return make_phantom(tmp_path_factory.mktemp("p") / "data", n_source=2, n_target=2, n_val=2, seed=3, preview=False)


def test_the_size_is_measured_from_the_listing(phantom):
    expected = sum(p.stat().st_size for p in phantom.rglob("*") if p.is_file()) / 1e9
    assert rt.data_size_gb(str(phantom)) == pytest.approx(expected)
    assert rt.data_size_gb("") is None  # the built-in phantom: nothing to measure before it is made


def test_data_larger_than_the_compiled_plan_is_refused_in_one_line():
    with pytest.raises(CosmosError) as refused:
        rt.check_dataset_size(80.0, 50.0, cluster=True)
    message = str(refused.value)
    assert "80.0 GB" in message and "50 GB" in message and "--dataset-gb 80" in message and "\n" not in message
    rt.check_dataset_size(60.0, 50.0, cluster=True)  # within the slack: the plan holds
    rt.check_dataset_size(None, 50.0, cluster=True)


def test_an_undeclared_large_dataset_gets_a_warning_on_a_cluster_only(caplog):
    with caplog.at_level(logging.WARNING, logger="cosmos.component"):
        rt.check_dataset_size(rt.UNDECLARED_DATASET_GB + 1, 0.0, cluster=False)
        assert not caplog.records
        rt.check_dataset_size(rt.UNDECLARED_DATASET_GB + 1, 0.0, cluster=True)
    assert len(caplog.records) == 1 and "--dataset-gb" in caplog.records[0].getMessage()


def test_ingest_stops_before_copying_when_the_data_outgrow_the_plan(ops, phantom, tmp_path):
    out = Dataset(name="data", uri=str(tmp_path / "out" / "data"))
    with pytest.raises(CosmosError, match="compiled for 1e-06 GB"):
        run_ingest(ops, out, data_uri=str(phantom), compiled_dataset_gb=1e-6)
    assert not Path(out.path).exists() or not any(Path(out.path).iterdir())
    res = run_ingest(ops, out, data_uri=str(phantom), compiled_dataset_gb=1.0)  # planned for more: it runs
    assert res.n_target == 2
