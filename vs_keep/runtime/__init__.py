"""What the engine runs to make KEEP fast: CPU rewrites (`cpu`) with the kernel rule per ISA class (`cpu_choice`),
precision policy (`precision`), the exportable decoder (`decoder`) and its ONNX export (`onnx_export`), OpenVINO
bf16 for CPUs with AVX512-BF16/AMX (`openvino`), TensorRT (`trt`), backends (`backends`). Nothing is imported
here: each module pulls in its optional dependencies lazily. Benchmark-only code (the staged runner, synthetic
models, accuracy metrics, 16-bit emulation) lives in `vs_keep.bench`.

What the engine ships is assembled in `vs_keep.engine.load_model` (CPU: `TorchBackend(device="cpu").prepare(model)`
plus `cpu.tune_malloc()`, and the OpenVINO bf16 decoder for `cpu_precision="bf16"`; CUDA: precision policy and
decoder backend). `vs-keep bench` measures all of it.
"""

__all__: list[str] = []
