"""The files of a phantom folder besides the crossMoDA tree, and reading its manifest back."""

from __future__ import annotations

import json
from pathlib import Path

MANIFEST = "phantom.json"
PREVIEW = "preview.png"
TARGET_LABELS_DIR = "target_training_labels"  # only with target_labels=True (for pseudo-label QA)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _read_manifest(path: Path) -> dict | None:
    text = _read_text(path)
    try:
        return None if text is None else json.loads(text)
    except ValueError:
        return None
