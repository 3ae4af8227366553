"""Where a checkpoint came from: the fingerprint of the weights its training started from."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

LINEAGE_FILE = "lineage.json"


def fingerprint(module: torch.nn.Module) -> str:
    """sha256 over the names, shapes and bytes of a module's parameters (order-stable)."""
    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def write_lineage(directory: Path, **info: Any) -> None:
    (directory / LINEAGE_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")


def read_lineage(directory: Path) -> dict[str, Any]:
    path = Path(directory) / LINEAGE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
