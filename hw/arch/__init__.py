"""The machine's definition: what the compiler, the simulators and the RTL all agree on.

- :mod:`.isa`: the two-level instruction formats, their units, masks, the PARAM layout and the
  performance counters;
- :mod:`.config`: :class:`~.config.AcceleratorConfig`, every size derived from it and every
  check on it;
- :mod:`.timing`: the latencies and setup costs that the RTL has and the cycle model charges;
- :mod:`.numerics`: the integer arithmetic (rounding, shifts, saturation, requantization);
- :mod:`.registers`: the host's view, the AXI4-Lite register map and status bits;
- :mod:`.bridge`: the host bridge's wire protocol.

These modules import nothing else of flexigan and no Amaranth block (only the
:mod:`amaranth.lib.data`/:mod:`amaranth.lib.enum` layouts that type the formats), so the compiler
can depend on them without loading hardware or a simulator. docs/architecture.md explains the
layering.
"""
