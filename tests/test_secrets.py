"""Issue 14 row 10: a credential inside a URI is refused at compile time and masked in logs and params."""

from __future__ import annotations

import io
import logging

import pytest

from cosmos import secrets
from cosmos.cli import main
from cosmos.config import ConfigError, load_config

SECRET = "s3cr3t-Value"


def test_compile_refuses_a_password_in_a_set_uri(tmp_path, capsys):
    out = tmp_path / "pipeline.yaml"
    rc = main(["compile", "-o", str(out), "--set", f"tracking.tracking_uri=http://alice:{SECRET}@mlflow:5000"])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cosmos: error: tracking.tracking_uri: a credential inside a URI")
    assert "Kubernetes Secret" in lines[0] and "MLFLOW_TRACKING_PASSWORD" in lines[0]
    assert SECRET not in err and "alice" not in err


def test_config_file_with_a_token_in_a_uri_is_refused(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"tracking:\n  tracking_uri: https://{SECRET}@mlflow.example.com\n")
    with pytest.raises(ConfigError) as info:
        load_config("tiny", cfg)
    assert SECRET not in str(info.value) and "https://***@mlflow.example.com" in str(info.value)


def test_plain_uris_pass():
    cfg = load_config("tiny", overrides=["tracking.tracking_uri=http://mlflow.kubeflow:5000"])
    assert cfg.tracking.tracking_uri == "http://mlflow.kubeflow:5000"


@pytest.mark.parametrize(
    "text,expected",
    [
        (f"http://u:{SECRET}@h:5000/x", "http://***@h:5000/x"),
        (f"s3://{SECRET}@bucket/key", "s3://***@bucket/key"),
        (f"postgresql://mlflow:{SECRET}@db/mlflow", "postgresql://***@db/mlflow"),
        (f"https://h/p?X-Amz-Signature={SECRET}&a=1", "https://h/p?X-Amz-Signature=***&a=1"),
        (f"connect with password={SECRET} now", "connect with password=*** now"),
        ("http://mlflow:5000 and s3://bucket/key", "http://mlflow:5000 and s3://bucket/key"),
        ("user@example.com wrote a=1", "user@example.com wrote a=1"),
    ],
)
def test_redact(text, expected):
    assert secrets.redact(text) == expected


def test_log_lines_are_redacted_on_our_handlers():
    from cosmos.logs import install_redaction

    stream = io.StringIO()
    logger = logging.getLogger("cosmos.test_secrets")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        install_redaction(logger)
        install_redaction(logger)  # idempotent
        assert sum(isinstance(f, secrets.RedactingFilter) for f in handler.filters) == 1
        logger.warning("tracking at %s", f"http://bob:{SECRET}@mlflow:5000")
        logger.error("plain %d", 3)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert SECRET not in text and "http://***@mlflow:5000" in text and "plain 3" in text


def test_setup_logging_installs_the_filter():
    from cosmos.logs import setup_logging

    setup_logging("INFO")
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_cosmos", False)]
    assert ours and all(any(isinstance(f, secrets.RedactingFilter) for f in h.filters) for h in ours)


def test_redact_params_for_mlflow():
    params = {"tracking_uri": f"http://u:{SECRET}@h", "epochs": 3, "data": "s3://bucket/x"}
    assert secrets.redact_params(params) == {"tracking_uri": "http://***@h", "epochs": 3, "data": "s3://bucket/x"}
