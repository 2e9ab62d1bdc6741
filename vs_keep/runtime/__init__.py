"""How KEEP runs fast: CPU rewrites (`cpu`), precision policy (`precision`), the exportable decoder (`decoder`),
ONNX / onnxruntime (`onnx_export`), TensorRT (`trt`), backends (`backends`), the staged runner and benchmark
helpers (`staged`, `measure`). Nothing is imported here: each module pulls in its optional dependencies lazily.

Typical CPU use: `TorchBackend(device="cpu").prepare(model)` after `vs_keep.models.load(...)`, plus
`cpu.tune_malloc()` in a process you own (the CLI). `vs-keep bench` measures all of it.
"""
