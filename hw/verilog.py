"""The accelerator's Verilog for a configuration, as ``flexigan compile`` writes it.

The RTL depends only on the :class:`~flexigan.hw.arch.config.AcceleratorConfig` and on this
package's code, not on the model, so it is generated once per configuration and kept in a cache
(``$FLEXIGAN_CACHE``, default ``~/.cache/flexigan``) keyed by both; a large configuration takes
a minute to elaborate the first time and nothing after.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

__all__ = ["TOP", "FILES", "cache_dir", "rtl_key", "generate", "write_rtl"]

#: Name of the top module.
TOP = "flexigan_top"
#: What :func:`write_rtl` puts in the folder, besides ``files.f``.
FILES = (f"{TOP}.v",)


def cache_dir():
    """Where generated Verilog is kept between runs."""
    root = os.environ.get("FLEXIGAN_CACHE") or Path.home() / ".cache" / "flexigan"
    return Path(root) / "rtl"


def _code_digest():
    """A digest of the code that generates the RTL (``flexigan.hw``'s sources)."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


#: Taken when this module is imported, with the hardware modules it generates from: a source
#: edited later (while a long test run lives) must not name the Verilog of the code in memory.
_CODE = _code_digest()


def rtl_key(config):
    """A digest of ``config`` and of the code that generates the RTL."""
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    digest.update(_CODE.encode())
    return digest.hexdigest()[:20]


def generate(config):
    """The Verilog text of ``Accelerator(config)`` as module :data:`TOP`."""
    from amaranth.back import verilog

    from .accelerator import Accelerator

    return verilog.convert(Accelerator(config), name=TOP, emit_src=False)


def write_rtl(config, folder, log=None):
    """Write the accelerator's Verilog and ``files.f`` (the list of sources) into ``folder``.

    Returns ``{"top": TOP, "files": [...], "cached": bool}``. ``log`` receives a line when
    the Verilog has to be generated (it takes a while for large configurations).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cached = cache_dir() / f"{rtl_key(config)}.v"
    hit = cached.is_file()
    if hit:
        text = cached.read_text()
    else:
        if log:
            log(f"generating the accelerator's Verilog ({config.groups} groups x "
                f"{config.lanes} lanes; cached in {cached.parent} for the next compile)")
        text = generate(config)
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=cached.parent, delete=False,
                                             suffix=".tmp") as f:
                f.write(text)
            os.replace(f.name, cached)
        except OSError:
            pass                      # a read-only cache only costs time
    (folder / FILES[0]).write_text(text)
    (folder / "files.f").write_text("".join(f"{name}\n" for name in FILES))
    return {"top": TOP, "files": list(FILES), "cached": hit}
