"""Deployment: int8 quantization (`toolkit quantize`) and C code generation (`toolkit export`)."""
