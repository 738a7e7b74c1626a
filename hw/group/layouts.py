"""The payloads that travel between a group's blocks, and what a group exchanges outside.

Each layout is sized by the :class:`~flexigan.hw.arch.config.AcceleratorConfig` it is given;
the fields that come from an instruction keep the instruction's shape (:mod:`flexigan.hw.arch.isa`).
"""

from amaranth.hdl import signed, unsigned
from amaranth.lib import data
from amaranth.utils import ceil_log2, exact_log2

from ..arch import isa
from ..memories import chunk_layout

__all__ = ["local_spaces", "local_write_layout", "act_tag_layout", "slot_layout", "mac_layout",
           "body_layout", "job_layout"]


def _run_fields():
    return dict(isa.fields_of(isa.RunArgs))


def _norm_fields():
    """A NORM's: whether the pixel is one (not POST and WRITE), which step, its operands."""
    norm = dict(isa.fields_of(isa.NormArgs))
    return {"norm": 1, "finish": 1, "count": norm["count"], "eps": norm["eps"]}


def local_spaces(config):
    """Bytes of each group memory the DMA engine writes, by :class:`isa.Space`."""
    return {space: config.local_units(space) * isa.unit_bytes(space)
            for space in (isa.Space.WGT, isa.Space.PARAM, isa.Space.LUT, isa.Space.UOP)}


def local_write_layout(config):
    """A DMA chunk for one of a group's memories: the space, then a memory chunk."""
    address_width = max(ceil_log2(size) for size in local_spaces(config).values())
    return data.StructLayout({"space": isa.Space,
                              "chunk": chunk_layout(address_width, config.axi_bytes)})


def act_tag_layout(config):
    """What an activation read carries through the crossbar."""
    weight_address_width = config.wgt_addr_width
    return data.StructLayout({
        "byte": unsigned(max(1, exact_log2(config.axi_bytes))),
        "n": range(1, config.bundle_width + 1),
        "wgt_addr": unsigned(weight_address_width),
        "wgt_stride": unsigned(weight_address_width),
        "last": 1,
        "null": 1,
        "reuse": 1,
        "lanes": _run_fields()["lanes"],
    })


def slot_layout():
    """A slot of a group's RUN queue: whether it holds a RUN (queued or executing), for the
    controller's scoreboard."""
    return data.StructLayout({"valid": 1})


def mac_layout(config):
    """A step for the lanes: activation, each lane's weight, end of a tap nest, null step."""
    return data.StructLayout({"act": signed(8), "wgt": data.ArrayLayout(signed(8),
                                                                           config.lanes),
                              "last": 1, "null": 1})


def body_layout(config):
    """The execute body of one RUN, decoded."""
    address_width = config.act_addr_width
    run = _run_fields()
    return data.StructLayout({
        "rows": run["rows"], "cols": run["cols"], "lanes": run["lanes"],
        "passes": unsigned(8),
        "use_bias": 1,
        "square": 1,                          # the MACs square the activation
        "post": 1,                            # a job per pixel: POST then WRITE, or NORM
        **_norm_fields(),
        "use_lut": 1, "per_lane": 1,
        "lut": unsigned(8),                   # lut_offset + POST.lut
        "param_offset": run["param_offset"],
        "out_base": unsigned(address_width),  # out_offset + WRITE.base
        "out_row": unsigned(address_width), "out_col": unsigned(address_width),
        "lane_stride": unsigned(address_width),
    })


def job_layout(config):
    """One pixel for the post-processor (or, with ``end``, the end of a RUN)."""
    address_width = config.act_addr_width
    run = _run_fields()
    return data.StructLayout({
        "end": 1,
        **_norm_fields(),
        "acc": data.ArrayLayout(signed(config.acc_width), config.lanes),
        "lanes": run["lanes"],
        "use_bias": 1, "use_lut": 1, "per_lane": 1,
        "lut": unsigned(8),
        "param_offset": run["param_offset"],
        "out_addr": unsigned(address_width),
        "lane_stride": unsigned(address_width),
    })
