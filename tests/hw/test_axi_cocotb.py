"""The AXI4-Lite register file and the AXI4 DMA parts on real simulators, against AxiRam."""

import pytest

from flexigan.hw.arch.config import AcceleratorConfig
from flexigan.sim.rtl import SIMULATORS, run_cocotb
from flexigan.sim.tb.dma_copy import DmaCopy

#: 32-bit AXI and 256-byte bursts: copies of a few hundred bytes take several bursts.
CONFIG = AcceleratorConfig(axi_data_width=32, burst_bytes=256)


@pytest.mark.parametrize("pause", [0.0, 0.3])
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_dma_copy_against_axi_ram(simulator, pause, build_root):
    run_cocotb(DmaCopy(CONFIG), test_module="flexigan.sim.tb.dma_copy", simulator=simulator,
               build_dir=build_root / "dma_copy",
               extra_env={"AXI_DATA_WIDTH": CONFIG.axi_data_width, "PAUSE": pause, "SEED": 1})
