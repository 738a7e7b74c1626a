"""Board support: the board top (:mod:`.top`), one short module per board on amaranth-boards'
platforms (:mod:`.icebreaker`, :mod:`.ulx3s`) with their PLLs and the build to a bitstream
(:mod:`.pll`), and synthesis of the accelerator's Verilog with Yosys for ECP5 and iCE40
(:mod:`.synth`)."""
