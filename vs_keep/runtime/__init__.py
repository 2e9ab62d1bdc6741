"""How KEEP runs fast: CPU rewrites (`cpu`), precision policy (`precision`), the exportable decoder (`decoder`),
ONNX / onnxruntime (`onnx_export`), TensorRT (`trt`), backends (`backends`), the staged runner and benchmark
helpers (`staged`, `measure`). Nothing is imported here: each module pulls in its optional dependencies lazily.

What the engine ships is assembled in `vs_keep.engine.load_model` (CPU: `TorchBackend(device="cpu").prepare(model)`
plus `cpu.tune_malloc()`; CUDA: precision policy and decoder backend). `vs-keep bench` measures all of it.
"""

__all__: list[str] = []
