"""Repeated modules of Yosys's Verilog merged, and the large ones named for a build of their own."""

import re

import pytest
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


@pytest.fixture
def small(monkeypatch):
    """Thresholds that the small designs below reach."""
    monkeypatch.setattr(shared_modules, "SHARED_BYTES", 100)
    monkeypatch.setattr(shared_modules, "SHARED_TOTAL", 100)


def test_amaranths_copies_of_one_block_become_one_module_built_once(small):
    text = verilog.convert(Pair(), name="top", emit_src=False)
    assert len(modules(text)) == 4
    merged, shared = share_modules(text, "top")
    assert shared == ["top_a"]
    assert modules(merged) == ["top", "top_a"]
    assert len(re.findall(r"^\s*top_a \w+ \($", merged, re.MULTILINE)) == 3


def test_a_design_with_few_copies_is_left_alone():
    text = verilog.convert(Pair(), name="top", emit_src=False)
    assert share_modules(text, "top") == (text, [])


SWAPPED = """\
module top(x, y, clk);
  input x; input clk; output y;
  wire \\$1 ; wire \\$2 ; wire \\$3 ; wire \\$4 ;
  \\top.p  p (
    .\\port$7$0 (x),
    .q(\\$1 )
  );
  \\top.r  r (
    .\\port$9$0 (x),
    .q(\\$2 )
  );
  \\top.p  p2 (
    .\\port$7$0 (x),
    .q(\\$3 )
  );
  \\top.r  r2 (
    .\\port$9$0 (x),
    .q(\\$4 )
  );
  assign y = \\$1  ^ \\$2  ^ \\$3  ^ \\$4 ;
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


def test_modules_that_differ_only_in_which_generated_name_they_use_stay_apart(small):
    merged, shared = share_modules(SWAPPED, "top")
    assert shared == ["top_p", "top_r"]
    assert modules(merged) == ["top", "top_p", "top_r"]


def test_a_port_with_a_generated_name_is_renamed_where_it_is_connected_too(small):
    same = SWAPPED.replace("assign q = \\$2 ;", "assign q = \\$1 ;")
    merged, shared = share_modules(same, "top")
    assert shared == ["top_p"]
    assert modules(merged) == ["top", "top_p"]
    assert merged.count(".flexigan_n0 (x)") == 4      # every instance, by the port's new name
    assert "\\$1  ^ \\$2  ^ \\$3" in merged           # the top keeps every name
