"""vs-keep: KEEP video face restoration as a VapourSynth filter (engine importable without VapourSynth)."""

from setuptools import find_namespace_packages, setup

ENGINE_REQUIRES = [
    "torch>=2.4",
    "numpy>=1.26",
    "scipy>=1.11",
    "opencv-python-headless>=4.8",
    "platformdirs>=3",
    "tqdm>=4.60",
    "av>=12",
]

EXTRAS = {
    # The VapourSynth plugin layer (`vs_keep.keep`, `.vpy` templates).
    "vapoursynth": ["vapoursynth>=70"],
    # RetinaFace / ParseNet through facexlib (weights supplied by the user).
    "facexlib": ["facexlib>=0.3"],
    # GPU kernels (CuPy built for torch's CUDA major version: 13 for today's default torch wheels) and TensorRT.
    "cuda": ["cupy-cuda13x>=14"],
    "cuda12": ["cupy-cuda12x>=13"],
    "tensorrt": ["tensorrt>=10", "onnx>=1.16"],
    # Opt-in bf16 on CPUs with AVX512-BF16 / AMX (`cpu_precision="bf16"`): KEEP's decoder through OpenVINO.
    "openvino": ["openvino>=2024.0", "onnx>=1.16"],
    # Headless vs-preview smoke test (tests/test_vspreview.py; also needs Xvfb, xdotool and Qt's xcb libraries).
    # vspreview 0.20.1 imports vsjetpack 1.x; 2.x breaks it.
    "preview": ["vspreview==0.20.1", "vsjetpack<2"],
    # Evaluation plots and reference metrics.
    "eval": ["matplotlib>=3.8", "scikit-image>=0.22"],
    # `vs-keep restore --shards N --ray [ADDRESS]`: shards as Ray tasks on a local Ray or a cluster.
    "ray": ["ray>=2.9"],
    # Offline identity (dlib 128-d descriptor, CC0) and 68-point landmarks for `vs-keep eval`.
    "identity": ["dlib-bin>=20", "face-recognition-models>=0.3"],
}
EXTRAS["test"] = sorted(
    set(
        EXTRAS["vapoursynth"]
        + EXTRAS["facexlib"]
        + EXTRAS["eval"]
        + EXTRAS["identity"]
        + EXTRAS["openvino"]
        + EXTRAS["ray"]
        # onnx + onnxruntime: the ArcFace identity metric of `vs-keep eval` (tests/test_eval_metrics.py)
        + ["pytest>=8", "pytest-timeout>=2.3", "onnx>=1.16", "onnxruntime>=1.18"]
        # reload soak of the filter (tests/test_reliability.py, scripts/soak.py): a previewer's load/dispose cycle
        + ["vsjetengine>=2"]
        # NVRTC without a GPU: CI compiles every CUDA kernel for sm_75..sm_90 (tests/test_cuda_sources.py)
        + ["cuda-bindings>=13,<14", "nvidia-cuda-nvrtc>=13,<14"]
    )
)

setup(
    name="vs-keep",
    version="0.1.0",
    description="KEEP video face restoration (Kalman-inspired feature propagation) for VapourSynth",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT (code only; KEEP/CodeFormer weights are S-Lab License 1.0, non-commercial)",
    python_requires=">=3.12",
    # namespace discovery so the data folders are packages too (no setuptools "would be ignored" warnings)
    packages=find_namespace_packages(include=["vs_keep", "vs_keep.*"], exclude=["*.__pycache__"])
    + ["vs_keep.plugin", "vs_keep.plugin.templates"],
    package_dir={"vs_keep.plugin": "plugin"},
    package_data={"vs_keep.face.data": ["*"], "vs_keep.licenses": ["*.txt"], "vs_keep.plugin.templates": ["*.vpy"]},
    include_package_data=True,
    install_requires=ENGINE_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["vs-keep = vs_keep.cli:main"]},
)
