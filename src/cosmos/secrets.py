"""Keep credentials out of configs, compiled pipelines, logs and MLflow params.

Why: a URI such as ``http://user:password@mlflow:5000`` given by ``--set`` or ``--config`` used to
land verbatim in the compiled YAML (the ``config`` parameter's default), in every stage's log and
in MLflow. Credentials belong in the Kubernetes Secret that the pipeline mounts as environment
variables (``cosmos compile --secret``; keys ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``,
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``), which boto3 and MLflow read themselves.

* :func:`credential_problems` finds them in a config mapping (refused at load/compile time);
* :func:`redact` masks them in any text; :class:`RedactingFilter` does it for every log record;
* :func:`redact_params` masks them in a mapping about to be logged as MLflow params.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Iterator, Mapping

MASK = "***"
SECRET_HINT = (
    "put credentials in the Kubernetes Secret instead (cosmos compile --secret NAME; keys "
    "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD for MLflow, AWS_ACCESS_KEY_ID / "
    "AWS_SECRET_ACCESS_KEY for S3), or export them as those environment variables locally"
)

# scheme://userinfo@host : userinfo is "user:password" or a bare token.
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s:'\"]+(?::[^/@\s'\"]*)?)@")
# ?password=... &token=... X-Amz-Signature=... in a query string or a "key=value" text.
_QUERY = re.compile(
    r"(?i)(?P<key>\b(?:password|passwd|pwd|secret|token|access[_-]?token|api[_-]?key|"
    r"secret[_-]?access[_-]?key|x-amz-signature|x-amz-credential|x-amz-security-token|sig)=)"
    r"(?P<value>[^&\s'\"]+)"
)


def redact(text: str) -> str:
    """``text`` with the userinfo of every URI and every secret-looking query value masked."""
    if not text or ("://" not in text and "=" not in text):
        return text
    out = _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    return _QUERY.sub(lambda m: f"{m.group('key')}{MASK}", out)


def has_credential(value: str) -> bool:
    return isinstance(value, str) and redact(value) != value


def _walk(obj: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from _walk(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _walk(value, f"{prefix}[{i}]")
    elif isinstance(obj, str):
        yield prefix, obj


def credential_problems(data: Mapping[str, Any]) -> list[str]:
    """One line per config value holding a credential (the value shown masked, never in clear)."""
    return [
        f"{key}: a credential inside a URI ({redact(value)}) would be written into the compiled "
        f"pipeline, logs and MLflow; {SECRET_HINT}"
        for key, value in _walk(data)
        if has_credential(value)
    ]


def redact_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``params`` (e.g. for ``mlflow.log_params``) with credentials masked in string values."""
    return {k: redact(v) if isinstance(v, str) else v for k, v in params.items()}


class RedactingFilter(logging.Filter):
    """Masks credentials in a record's final message (arguments included) before any handler writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is logging's own problem to report
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
