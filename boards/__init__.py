"""Board support: the board top (:mod:`.top`), one short module per board on amaranth-boards'
platforms (:mod:`.icebreaker`, :mod:`.ulx3s`) with their PLLs (:mod:`.pll`), the build to a
bitstream (:mod:`.build`), and synthesis of the accelerator's Verilog with Yosys for ECP5 and
iCE40 (:mod:`.synth`). :func:`board` finds a target's board module."""

__all__ = ["BOARDS", "board"]

#: The targets that are boards, and the modules that describe them.
BOARDS = ("icebreaker", "ulx3s")


def board(target):
    """The board module of ``target`` (a preset name); ``None`` for a simulation target."""
    if target not in BOARDS:
        return None
    import importlib

    return importlib.import_module(f"{__name__}.{target}")
