"""Repeated modules of Yosys's Verilog merged, and the large ones named for a build of their own."""

import re

from amaranth.back import verilog
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flexigan.sim import shared_modules
from flexigan.sim.shared_modules import share_modules


class Accumulate(wiring.Component):
    """A register that adds its input every cycle."""

    i: In(8)
    o: Out(8)

    def elaborate(self, platform):
        m = Module()
        total = Signal(8)
        m.d.sync += total.eq(total + self.i)
        m.d.comb += self.o.eq(total ^ self.i)
        return m


class Pair(wiring.Component):
    """Two ``Accumulate`` in a row, and a third reading the first: one module written three
    times by Amaranth."""

    i: In(8)
    o: Out(8)

    def elaborate(self, platform):
        m = Module()
        m.submodules.a = a = Accumulate()
        m.submodules.b = b = Accumulate()
        m.submodules.c = c = Accumulate()
        m.d.comb += [a.i.eq(self.i), b.i.eq(a.o), c.i.eq(a.o), self.o.eq(b.o + c.o)]
        return m


def modules(text):
    return re.findall(r"^module ([^\s(]+)", text, re.MULTILINE)


def test_amaranths_copies_of_one_block_become_one_module():
    text = verilog.convert(Pair(), name="top", emit_src=False)
    assert len(modules(text)) == 4
    merged, shared = share_modules(text, "top")
    assert modules(merged) == ["top", "\\top.a"]
    assert merged.count("\\top.a ") == 4           # its definition and the three instances
    assert shared == []                            # far below SHARED_BYTES


def test_a_large_repeated_module_is_named_for_its_own_build(monkeypatch):
    monkeypatch.setattr(shared_modules, "SHARED_BYTES", 100)
    merged, shared = share_modules(verilog.convert(Pair(), name="top", emit_src=False), "top")
    assert shared == ["top_a"]
    assert modules(merged) == ["top", "top_a"]
    assert len(re.findall(r"^\s*top_a \w+ \($", merged, re.MULTILINE)) == 3


SWAPPED = """\
module top(x, y, clk);
  input x; input clk; output y;
  wire \\$1 ; wire \\$2 ;
  \\top.p  p (
    .\\port$7$0 (x),
    .q(\\$1 )
  );
  \\top.r  r (
    .\\port$9$0 (x),
    .q(\\$2 )
  );
  assign y = \\$1  ^ \\$2 ;
endmodule
module \\top.p (\\port$7$0 , q);
  input \\port$7$0 ; output q;
  wire \\$1 ; wire \\$2 ;
  assign \\$1  = ~\\port$7$0 ;
  assign \\$2  = \\port$7$0 ;
  assign q = \\$1 ;
endmodule
module \\top.r (\\port$9$0 , q);
  input \\port$9$0 ; output q;
  wire \\$1 ; wire \\$2 ;
  assign \\$1  = ~\\port$9$0 ;
  assign \\$2  = \\port$9$0 ;
  assign q = \\$2 ;
endmodule
"""


def test_modules_that_differ_only_in_which_generated_name_they_use_stay_apart():
    merged, _ = share_modules(SWAPPED, "top")
    assert modules(merged) == ["top", "\\top.p", "\\top.r"]


def test_a_port_with_a_generated_name_is_renamed_where_it_is_connected_too():
    same = SWAPPED.replace("assign q = \\$2 ;", "assign q = \\$1 ;")
    merged, _ = share_modules(same, "top")
    assert modules(merged) == ["top", "\\top.p"]
    assert merged.count(".flexigan_n0 (x)") == 2      # both instances, by the port's new name
    assert "\\$1  ^ \\$2" in merged                   # the top keeps every name
