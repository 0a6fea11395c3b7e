"""Serving a registered COSMOS segmenter behind HTTP (``cosmos serve``), on the KServe Python SDK.

Modules: :mod:`codec` (request/response bodies), :mod:`model` (the ``kserve.Model``),
:mod:`server` (``ModelServer`` set-up). KServe is an optional dependency (``pip install -e
'.[serve]'`` in the repository), imported only when serving starts.
"""

from __future__ import annotations


def serve(*args, **kwargs):
    """See :func:`cosmos.serving.server.serve` (imported lazily: KServe is optional)."""
    from cosmos.serving.server import serve as _serve

    return _serve(*args, **kwargs)


__all__ = ["serve"]
