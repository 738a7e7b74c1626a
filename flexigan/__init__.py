"""flexigan: compile GANs from ONNX to a zero-free MIMD-SIMD FPGA accelerator on open tools.

The import package is assembled from the repository's top-level folders: ``compiler/`` is
``flexigan.compiler``, ``hw/`` is ``flexigan.hw``, ``sim/`` is ``flexigan.sim`` and ``boards/`` is
``flexigan.boards``. This root package holds what ties them together: the errors shown to users,
the flow and the command line.
"""

from .errors import FlexiganError

__all__ = ["FlexiganError"]
__version__ = "0.1.0"
