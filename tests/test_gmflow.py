"""GMFlow (KEEP's flow net) against the official golden fixture, plus KEEP's flow warp.

Parity tolerance, and why it is not the spec's 2.2e-3 px: with the synthetic weights GMFlow is badly conditioned
(flows up to 364 px come out of 4096-way softmaxes over unnormalised features). Measured on this project's CPU
(AMD EPYC, AVX2, 2 threads):
  - our op sequence is the upstream one: a scratch variant with upstream's literal layouts (position code added on
    split windows, out-of-place score scaling, repeated shift mask, chunked halves, 5-D correlation view) gave
    bit-identical flows;
  - we are 3.3e-2 px max / 1.7e-3 px mean from the fixture, and a float64 run of this code is 1.7e-2 / 1.0e-3 from
    it, so the fixture carries its own float32 rounding of about that size;
  - nearly all of our float32 error against float64 (2.2e-2 of 2.5e-2 px max) comes from the backbone convolutions,
    whose summation order is decided by the conv kernel (oneDNN/MKL blocking, CPU ISA), not by the model code;
  - other kernel choices on the same machine land anywhere between 2.2e-2 and 4.4e-2 px max (1.2e-3 to 1.8e-3
    mean) from the fixture: 1 thread, MKL_CBWR, ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY, oneDNN off.
So a few 1e-2 px max is the float32 floor off the fixture's machine. Real parity breaks are orders of magnitude
larger (spec §5: the smallest, replicate padding in the convex upsampler, gives 0.79 px mean / 15 px on border
rows; the others 40-95 px mean). Hence max <= 0.1 px and mean <= 3e-3 px.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import fixture_path
from synth import load_shapes, synth_tensor
from vs_keep.errors import InputError
from vs_keep.kernels import flow_warp
from vs_keep.models.gmflow import GMFlow, _shift_mask, gmflow_kwargs_from_state_dict

PREFIX = "flownet.model."


@pytest.fixture(scope="module")
def synth_gmflow() -> GMFlow:
    torch.set_num_threads(2)
    shapes = [(k, s) for k, s in load_shapes(fixture_path("keep_state_dict_shapes.json")) if k.startswith(PREFIX)]
    sd = {k[len(PREFIX):]: synth_tensor(k, s) for k, s in shapes}  # seed uses the full key
    kwargs = gmflow_kwargs_from_state_dict({PREFIX + k: v for k, v in sd.items()}, PREFIX)
    assert kwargs == dict(feature_channels=128, num_transformer_layers=6, ffn_dim_expansion=4, upsample_factor=8, attn_splits=2)
    net = GMFlow(**kwargs).eval()
    net.load_state_dict(sd, strict=True)
    return net


def test_state_dict_matches_official_keys() -> None:
    shapes = json.loads(fixture_path("keep_state_dict_shapes.json").read_text())
    official = [(k[len(PREFIX):], list(v)) for k, v in shapes.items() if k.startswith(PREFIX)]
    net = GMFlow()
    ours = [(k, list(v.shape)) for k, v in net.state_dict().items()]
    assert len(ours) == 123 and ours == official  # same names, shapes and order
    assert list(net.buffers()) == []
    assert sum(v.numel() for v in net.parameters()) == 4_680_288


@torch.no_grad()
def test_flow_matches_official_fixture(synth_gmflow: GMFlow) -> None:
    golden = torch.load(fixture_path("golden_keep_synth.pt"), weights_only=True)
    frames, ref = golden["input"][0], golden["flows"]  # (3,3,512,512), (2,2,512,512): pair k = frame k+1 -> k
    flow = synth_gmflow(frames[1:], frames[:-1])
    assert flow.shape == ref.shape and flow.dtype == torch.float32
    err = (flow - ref).abs()
    scale = ref.abs().max().item()
    print(f"GMFlow vs fixture: max {err.max().item():.3e} px, mean {err.mean().item():.3e} px, max |flow| {scale:.1f} px")
    assert scale > 100  # the fixture exercises large displacements
    assert err.max().item() <= 0.1
    assert err.mean().item() <= 3e-3


@torch.no_grad()
def test_non_square_pair_runs(synth_gmflow: GMFlow) -> None:
    g = torch.Generator().manual_seed(7)
    base = torch.rand(1, 3, 300, 440, generator=g) * 2 - 1
    cur, prev = base[..., 20:276, 30:414], base[..., 22:278, 27:411]
    flow = synth_gmflow(torch.cat([cur, prev]), torch.cat([prev, cur]))
    assert flow.shape == (2, 2, 256, 384) and flow.dtype == torch.float32 and torch.isfinite(flow).all()
    single = synth_gmflow(cur, prev)
    assert (single - flow[:1]).abs().max().item() <= 0.1  # pairs in a batch are independent (up to rounding)


def test_shift_mask_layout() -> None:
    mask = _shift_mask(64, 64, 2, torch.device("cpu"))
    assert mask.shape == (4, 1024, 1024)
    assert set(mask.unique().tolist()) == {0.0, -100.0}
    frac = (mask != 0).float().mean(dim=(1, 2)).tolist()
    assert frac == pytest.approx([0.0, 0.5, 0.5, 0.75])


@torch.no_grad()
def test_small_config_roundtrip_and_bf16() -> None:
    net = GMFlow(feature_channels=32, num_transformer_layers=2, ffn_dim_expansion=2).eval()
    sd = {PREFIX + k: v for k, v in net.state_dict().items()}
    kwargs = gmflow_kwargs_from_state_dict(sd, PREFIX)
    assert kwargs["feature_channels"] == 32 and kwargs["num_transformer_layers"] == 2 and kwargs["ffn_dim_expansion"] == 2
    net2 = GMFlow(**kwargs)
    net2.load_state_dict(net.state_dict(), strict=True)
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    f32 = net(x[:1], x[1:])
    assert f32.shape == (1, 2, 32, 48)
    fbf = net.to(torch.bfloat16)(x[:1], x[1:])  # 16-bit module: matching stays float32, output float32
    assert fbf.dtype == torch.float32 and torch.isfinite(fbf).all()
    assert (fbf - f32).abs().mean().item() < 0.5  # bf16 features, but no overflow and no sub-pixel collapse


@torch.no_grad()
def test_matching_precision_is_at_least_float32() -> None:
    """16-bit modules match in float32; a float64 module stays float64 end to end (flow dtype float64, and the
    same flow as float32 up to float32 rounding, not a float32 result cast up)."""
    net = GMFlow(feature_channels=32, num_transformer_layers=2, ffn_dim_expansion=2).eval()
    x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(5)) * 2 - 1
    f32 = net(x[:1], x[1:])
    f64 = net.double()(x[:1].double(), x[1:].double())
    assert f64.dtype == torch.float64
    diff = (f64 - f32.double()).abs().max().item()
    assert 0 < diff < 1e-3, diff
    f16 = net.half()(x[:1], x[1:])
    assert f16.dtype == torch.float32 and torch.isfinite(f16).all()


def test_wrong_inputs_raise() -> None:
    net = GMFlow(feature_channels=32, num_transformer_layers=1)
    ok = torch.zeros(1, 3, 64, 64)
    for cur, prev in (
        (torch.zeros(1, 3, 64, 72), torch.zeros(1, 3, 64, 72)),  # W not a multiple of 16
        (torch.zeros(1, 3, 40, 64), torch.zeros(1, 3, 40, 64)),  # H not a multiple of 16
        (ok, torch.zeros(1, 3, 64, 80)),  # shapes differ
        (torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 64, 64)),  # not RGB
        (torch.zeros(0, 3, 64, 64), torch.zeros(0, 3, 64, 64)),  # no pairs
        (torch.zeros(3, 64, 64), torch.zeros(3, 64, 64)),  # not batched
    ):
        with pytest.raises(InputError):
            net(cur, prev)
    with pytest.raises(InputError):
        GMFlow(upsample_factor=4)
    with pytest.raises(InputError):
        flow_warp(torch.zeros(1, 3, 8, 8), torch.zeros(1, 8, 8, 2))


def _bilinear_fetch(img: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor) -> torch.Tensor:
    """Hand-written bilinear sampling of img (C,H,W) at float64 positions, zero for taps outside the image."""
    c, h, w = img.shape
    x0, y0 = torch.floor(fx), torch.floor(fy)
    out = torch.zeros(c, *fx.shape, dtype=torch.float64)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wgt = (1 - (fx - xi).abs()) * (1 - (fy - yi).abs())
            inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
            xs, ys = xi.clamp(0, w - 1).long(), yi.clamp(0, h - 1).long()
            out += torch.where(inside, wgt, torch.zeros_like(wgt)) * img.double()[:, ys, xs]
    return out


def test_flow_warp_matches_bilinear_fetch() -> None:
    g = torch.Generator().manual_seed(3)
    n, c, h, w = 2, 3, 24, 40
    x = torch.rand(n, c, h, w, generator=g) * 2 - 1
    flow = torch.randn(n, 2, h, w, generator=g) * 6  # many samples land outside the image
    out = flow_warp(x, flow)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    exact = flow_warp(x.double(), flow.double())  # float64 stays float64 (coordinates too): the exact reference
    assert exact.dtype == torch.float64
    for i in range(n):
        ref = _bilinear_fetch(x[i], xs + flow[i, 0].double(), ys + flow[i, 1].double())
        assert (out[i].double() - ref).abs().max().item() < 1e-5
        assert (exact[i] - ref).abs().max().item() < 1e-12
    half = flow_warp(x.half(), flow)
    assert half.dtype == torch.float16 and (half.float() - out).abs().max().item() < 2e-3


def test_flow_warp_translation() -> None:
    x = torch.rand(1, 2, 16, 20) * 2 - 1
    flow = torch.zeros(1, 2, 16, 20)
    flow[:, 0], flow[:, 1] = 3.0, -2.0  # content at (x, y) is fetched from (x+3, y-2)
    out = flow_warp(x, flow)
    exp = torch.zeros_like(x)
    exp[..., 2:, :17] = x[..., :14, 3:]
    assert torch.allclose(out, exp, atol=1e-6)
    flow[:, 0], flow[:, 1] = 0.5, 0.0  # half-pixel shift: mean of horizontal neighbours, last column half-zero
    out = flow_warp(x, flow)
    assert torch.allclose(out[..., :19], 0.5 * (x[..., :19] + x[..., 1:]), atol=1e-6)
    assert torch.allclose(out[..., 19], 0.5 * x[..., 19], atol=1e-6)
    assert torch.allclose(flow_warp(x, torch.zeros_like(flow)), x, atol=1e-5)  # identity up to coordinate rounding
