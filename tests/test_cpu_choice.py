"""Per-CPU kernel choice (vs_keep.runtime.cpu_choice): measured once per shape, cached under the cache root,
deterministic for a given cache, and every forced table reproduces the fixed code path it names exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vs_keep.bench.synthetic import build_synthetic_keep
from vs_keep.errors import InputError
from vs_keep.runtime import cpu_choice
from vs_keep.runtime.cpu import CpuOptions, FastConv2d, optimize_cpu

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(300)]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VS_KEEP_HOME", str(tmp_path))
    monkeypatch.delenv(cpu_choice.ENV_KERNELS, raising=False)
    monkeypatch.setattr(cpu_choice, "_TABLES", {})  # a fresh process as far as the tables go
    return tmp_path


def _frames() -> torch.Tensor:
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1


def _run(model: torch.nn.Module) -> torch.Tensor:
    with torch.inference_mode():
        return model(_frames())


def _table_file(home: Path) -> Path:
    files = list((home / "cpu").glob("kernels-*.json"))
    assert len(files) == 1, files
    return files[0]


def test_measured_once_then_read_from_the_cache(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = optimize_cpu(build_synthetic_keep("tiny"))  # auto is the default (what the engine ships)
    assert all(m.auto for m in model.modules() if isinstance(m, FastConv2d))
    first = _run(model)
    tab = cpu_choice.table()
    assert tab.measured > 5
    data = json.loads(_table_file(home).read_text())
    assert data["identity"] == cpu_choice.cpu_identity() and data["identity"]["threads"] == 1
    assert {v["kind"] for v in data["choices"].values()} <= {"default", "winograd", "im2col", "gemm1x1"}
    assert all("default" in v["ms"] and v["kind"] in v["ms"] for v in data["choices"].values())
    assert torch.equal(_run(model), first)  # same process, table in memory

    monkeypatch.setattr(cpu_choice, "_TABLES", {})  # "next process": reads the file, measures nothing
    assert torch.equal(_run(model), first)
    assert cpu_choice.table().measured == 0
    assert json.loads(_table_file(home).read_text()) == data  # a cached choice never changes


def test_a_given_table_is_followed_exactly(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """All-reference and fixed-rule tables give exactly the outputs of those code paths (bitwise)."""
    model = build_synthetic_keep("tiny")
    reference_convs = _run(optimize_cpu(model, CpuOptions(auto=False, winograd=False, gemm=False)))  # fused SiLU only
    fixed = _run(optimize_cpu(model, CpuOptions(auto=False)))
    optimize_cpu(model)
    _run(model)
    path = _table_file(home)
    data = json.loads(path.read_text())
    for entry in data["choices"].values():
        entry["kind"] = "default"
    path.write_text(json.dumps(data))
    monkeypatch.setattr(cpu_choice, "_TABLES", {})
    assert torch.equal(_run(model), reference_convs)
    assert cpu_choice.table().measured == 0

    monkeypatch.setenv(cpu_choice.ENV_KERNELS, "winograd")
    assert torch.equal(_run(model), fixed)
    monkeypatch.setenv(cpu_choice.ENV_KERNELS, "reference")
    assert torch.equal(_run(model), reference_convs)
    monkeypatch.setenv(cpu_choice.ENV_KERNELS, "fastest")
    with pytest.raises(InputError, match="VS_KEEP_CPU_KERNELS must be auto, reference or winograd"):
        _run(model)


def test_identity_names_cpu_torch_and_threads(home: Path) -> None:
    kind = cpu_choice.cpu_kind()
    assert kind["model"] and isinstance(kind["flags"], list) and kind["capability"]
    one = cpu_choice.table()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = cpu_choice.table()
    finally:
        torch.set_num_threads(before)
    assert one is not two and one.path != two.path and two.identity["threads"] == 2
    assert one.path is not None and one.path.parent == home / "cpu"


def test_processes_sharing_a_cache_agree(home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> None:
    """A shape another process measured after this one loaded its table is read, not measured again (shards and
    Ray workers on one machine must run the same kernels); a new cache root gets its own table."""
    tab = cpu_choice.table()  # loaded now, while the file holds nothing
    other = cpu_choice.KernelTable(tab.identity, tab.path)  # "another process" measures the shape and saves
    other.choices["conv:test"] = {"kind": "winograd", "ms": {"default": 2.0, "winograd": 1.0}}
    other.save()

    def never(kind: str) -> torch.Tensor:
        raise AssertionError(f"measured {kind} although the shared table holds the shape")

    assert cpu_choice.pick("conv:test", ["default", "winograd"], never, "winograd") == ("winograd", None)
    assert tab.measured == 0

    monkeypatch.setenv("VS_KEEP_HOME", str(tmp_path_factory.mktemp("other-home")))
    assert cpu_choice.table() is not tab and "conv:test" not in cpu_choice.table().choices
