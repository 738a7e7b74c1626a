"""Writing the files a command leaves behind, so that a reader never sees half of one."""

import json
import os
import tempfile
from pathlib import Path

__all__ = ["write_json_atomic"]


def write_json_atomic(path, document):
    """Write ``document`` as JSON to ``path`` through a temporary file in the same folder."""
    path = Path(path)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
        f.write(json.dumps(document, indent=1) + "\n")
    os.replace(f.name, path)
