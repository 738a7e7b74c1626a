"""The instruction-level simulator: the living definition of the ISA, with a cycle model.

It runs the binary two-level program exactly as docs/isa.md specifies, bit-exact with the
golden interpreter (:func:`flexigan.sim.golden.run_int`), and estimates its cycles as the RTL
spends them. Its parts, one idea each:

- :mod:`.state`: the machine state instructions act on, and the checks of their addresses
  (:class:`ProgramError`);
- :mod:`.semantics`: what each instruction and each execute micro-op does, one function each,
  as docs/isa.md's pseudo-code (micro-programs are decoded by
  :func:`flexigan.hw.arch.isa.parse_micro_program`);
- :mod:`.pipeline`: the timing of one RUN in a group's pipeline and the crossbar's sharing;
- :mod:`.cycle_model`: the event-based cycle model of the controller, the DMA engine and the
  groups, with the dependencies between them;
- :mod:`.machine`: the controller's loop, :func:`run`: fetch, semantics, time;
- :mod:`.report`: :func:`simulate` of a compiled program on a batch, with per-layer figures
  and the roofline.
"""

from .cycle_model import transfer_cycles
from .machine import Result, run
from .report import ROOFLINE_BATCHES, figures, report_fields, roofline, simulate
from .state import ProgramError

__all__ = ["transfer_cycles", "Result", "ProgramError", "run", "simulate", "report_fields",
           "figures", "roofline", "ROOFLINE_BATCHES"]
