"""Board support: synthesis of the accelerator's Verilog with Yosys for ECP5 and iCE40."""
