"""The compiler: ONNX import, the IR, its passes, quantization and (later) code generation."""
