"""Per-CPU kernel rule (vs_keep.runtime.cpu_choice): a pure function of the CPU description and the shape, tested
for every ISA class on any machine (capabilities forced), and followed exactly by the rewritten convolutions."""

from __future__ import annotations

import pytest
import torch

from vs_keep.models.synthetic import build_synthetic_keep
from vs_keep.errors import InputError
from vs_keep.runtime import cpu, cpu_choice
from vs_keep.runtime.cpu import FastConv2d, optimize_cpu, restore_reference

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(300)]

#: one CPU description per ISA class, as `cpu_kind()` reports them
KINDS = {
    "avx2": {"model": "AMD EPYC 7B12", "flags": ["avx2", "fma"], "machine": "x86_64"},
    "avx512": {"model": "Intel Xeon Gold 6248", "flags": ["avx2", "fma", "avx512f", "avx512_vnni"], "machine": "x86_64"},
    "avx512-bf16": {"model": "AMD EPYC 9B14", "flags": ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"],
                    "machine": "x86_64"},
    "amx": {"model": "Intel Xeon Platinum 8480", "flags": ["avx2", "fma", "avx512f", "avx512_bf16", "amx_tile",
                                                            "amx_bf16"], "machine": "x86_64"},
    "arm": {"model": "Neoverse-V1", "flags": ["asimd", "sve"], "machine": "aarch64"},
    "other": {"model": "old x86", "flags": [], "machine": "x86_64"},
}


@pytest.fixture(autouse=True)
def no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cpu_choice.ENV_KERNELS, raising=False)


@pytest.mark.parametrize("name", list(KINDS))
def test_isa_class_and_rule_of_each_cpu_kind(name: str) -> None:
    kind = KINDS[name]
    assert cpu_choice.isa_class(kind) == name
    rule = cpu_choice.active_rule(kind)
    assert rule is cpu_choice.RULES[name] and rule in cpu_choice.NAMED.values()
    assert cpu_choice.EVIDENCE[name]  # every rule says what justifies it
    # the same description gives the same rule every time: nothing measured, nothing cached
    assert all(cpu_choice.active_rule(dict(kind)) is rule for _ in range(3))


def test_this_cpu_has_a_class() -> None:
    kind = cpu_choice.cpu_kind()
    assert kind["model"] and isinstance(kind["flags"], list) and kind["capability"]
    assert cpu_choice.isa_class() in cpu_choice.ISA_CLASSES


def test_override_names_a_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, rule in cpu_choice.NAMED.items():
        monkeypatch.setenv(cpu_choice.ENV_KERNELS, name)
        assert all(cpu_choice.active_rule(kind) is rule for kind in KINDS.values())
    monkeypatch.setenv(cpu_choice.ENV_KERNELS, "fastest")
    with pytest.raises(InputError, match="VS_KEEP_CPU_KERNELS must be auto, reference, winograd, gemm"):
        cpu_choice.active_rule()


@pytest.mark.parametrize("nnpack", [True, False])
def test_conv_kernel_table(nnpack: bool) -> None:
    """Every branch of the decision, with NNPACK present and forced off."""
    ref, wino, gemm = (cpu_choice.NAMED[n] for n in ("reference", "winograd", "gemm"))
    k = cpu_choice.conv_kernel
    for rule in (ref, wino, gemm):
        assert k(rule, 3, 1, 64, False, nnpack) == "default"  # strided / grouped / dilated: oneDNN
        assert k(rule, 4, 1, 64, True, nnpack) == "default"
    assert [k(r, 1, 0, 16, True, nnpack) for r in (ref, wino, gemm)] == ["default", "gemm1x1", "gemm1x1"]
    assert [k(r, 3, 1, 16, True, nnpack) for r in (ref, wino, gemm)] == ["default", "im2col", "im2col"]
    big = "winograd" if nnpack else "default"
    assert [k(r, 3, 1, 32, True, nnpack) for r in (ref, wino, gemm)] == ["default", big, "default"]
    late = cpu_choice.KernelRule("late", 128, True)
    assert [k(late, 3, 1, s, True, nnpack) for s in (16, 64, 128)] == ["im2col", "default", big]


def _frames() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1


def _run(model: torch.nn.Module) -> torch.Tensor:
    with torch.inference_mode():
        return model(_frames())


def test_rules_are_followed_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each named rule gives bitwise the output of the fixed code path it names; the default follows this CPU's
    class; NNPACK forced off turns Winograd into oneDNN."""
    model = build_synthetic_keep("tiny")
    fused_only = _run(optimize_cpu(model, cpu_choice.NAMED["reference"]))  # oneDNN convs
    fixed = _run(optimize_cpu(model, cpu_choice.NAMED["winograd"]))
    gemm = _run(optimize_cpu(model, cpu_choice.NAMED["gemm"]))
    optimize_cpu(model)
    assert all(m.kernel_rule is None for m in model.modules() if isinstance(m, FastConv2d))  # the engine's default
    want = {"reference": fused_only, "winograd": fixed, "gemm": gemm}
    assert torch.equal(_run(model), want[cpu_choice.active_rule().name])
    for name, out in want.items():
        monkeypatch.setenv(cpu_choice.ENV_KERNELS, name)
        assert torch.equal(_run(model), out), name
    if cpu.nnpack_available():
        assert not torch.equal(fixed, gemm)  # the rules really differ here
        monkeypatch.setitem(cpu._NNPACK_STATE, "ok", False)
        monkeypatch.setenv(cpu_choice.ENV_KERNELS, "winograd")
        assert torch.equal(_run(model), gemm)
    restore_reference(model)
    assert not any(isinstance(m, FastConv2d) for m in model.modules())
