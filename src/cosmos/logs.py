"""Stdlib logging set-up and progress bars (tqdm on stderr) shared by every stage."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any, Iterable, Iterator, TypeVar

T = TypeVar("T")

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str | int | None = None) -> None:
    """Configure the root logger once (idempotent). ``COSMOS_LOG_LEVEL`` overrides the default INFO."""
    level = level or os.environ.get("COSMOS_LOG_LEVEL", "INFO")
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_cosmos", False)]
    if not ours:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        handler._cosmos = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for h in ours:
        # a second command in one process (tests, notebooks) may find the stderr of the first one closed
        if isinstance(h, logging.StreamHandler) and h.stream is not sys.stderr:
            swap_stream(h, sys.stderr)
    install_redaction(root)
    root.setLevel(level)
    for noisy in ("urllib3", "botocore", "boto3", "s3transfer", "alembic", "matplotlib", "PIL", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def swap_stream(handler: logging.StreamHandler, stream: Any) -> Any:
    """Point ``handler`` at ``stream`` and return the old stream, without flushing the old one.

    Why not ``setStream``: it flushes the old stream first, and a stream left behind by an earlier
    command in the same process (pytest's capture of a finished test, a notebook cell) may be closed.
    """
    with handler.lock or contextlib.nullcontext():
        old = handler.stream
        handler.stream = stream
    return old


def install_redaction(logger: logging.Logger | None = None) -> None:
    """Mask credentials (URI userinfo, ``password=``/``token=`` values) in every line our handlers write.

    Why on the handlers: a filter on a logger misses records propagated from child loggers (MLflow,
    boto3, kfp), while a handler filter sees every record it is about to write.
    """
    from cosmos.secrets import RedactingFilter

    logger = logger or logging.getLogger()
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """A tqdm bar on stderr; degrades to periodic log lines when stderr is not a terminal (KFP pods).

    Inside a pipeline stage (:func:`cosmos.events.current_stage`) the loop also tells its progress as
    ``progress`` events (first item, then at most every :func:`cosmos.events.interval` seconds, and
    the end), which the console of ``cosmos run`` draws as the stage's bar. ``COSMOS_NO_PROGRESS=1``
    turns both off.
    """
    from tqdm.auto import tqdm

    from cosmos import events

    disable = os.environ.get("COSMOS_NO_PROGRESS") == "1"
    mininterval = 0.5 if sys.stderr.isatty() else 10.0
    bar = tqdm(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        file=sys.stderr,
        disable=disable,
        mininterval=mininterval,
        dynamic_ncols=True,
    )
    n = bar.total if isinstance(bar.total, (int, float)) else None
    if disable or events.current_stage() is None or not n:
        yield from bar
        return
    count, throttle = int(n), events.Throttle()
    done = 0
    for item in bar:
        if throttle.due():
            events.progress(desc, done, count, unit)
        yield item
        done += 1
    events.progress(desc, done, count, unit)
