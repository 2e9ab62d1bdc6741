"""Recipe of `tests/data/golden_keep_wide_fp64.pt`, and the fp32 bit-identity check of the 32/64/128/256 layout.

The golden holds the **official** KEEP's float64 results for the layout a third-party port (ComfyUI-KEEP) uses for
KEEP_Asian (SFT fusion at 32/64/128/256, cross-frame attention at 16/32), on synthetic weights (the recipe of
/work/shared/fixtures/README.md, SALT 0) and the golden input of that README (T = 3, 512x512). It is small (strided
samples, top-2 logits, sums), so it can live in the repository; the test recomputes the same numbers with our model.

Nothing of the official code is in this repository. To rerun the recipe, prepare a folder OFFICIAL with:
  1. jnjaby/KEEP at 5c7c472 (its `basicsr/` folder) and haofeixu/gmflow at b512343 in `basicsr/archs/gmflow/`;
  2. a Python with torch and `diffusers==0.11.0 einops "huggingface_hub<0.26" "setuptools<70"` (diffusers 0.11
     imports distutils); its training-only imports are bypassed below;
  3. for --dtype f64 only, the official float32 casts made to follow the default dtype, as for golden_keep_fp64.pt:
       cd OFFICIAL/basicsr/archs && sed -i 's/\\.float()/.to(torch.get_default_dtype())/g;
         s/dtype=torch\\.float32/dtype=torch.get_default_dtype()/g' gmflow/gmflow/geometry.py gmflow/gmflow/position.py
         arch_util.py vqgan_arch.py keep_arch.py
Then (with that Python; vs_keep on PYTHONPATH for --check):
  python scripts/make_golden_keep_wide.py --official OFFICIAL --dtype f64 --golden tests/data/golden_keep_wide_fp64.pt
  python scripts/make_golden_keep_wide.py --official OFFICIAL_UNPATCHED --dtype f32 --check   # fp32 bit-identity
`--check` loads the same weights through `vs_keep.models.load` and prints one JSON line: per-frame equality and
relative error of our output against the official one on this machine. Measured (AMD EPYC, 2 threads, torch
2.14.1): layouts wide and wide-nocfa bit-identical on all 3 frames. Before the fix in `KEEP.fusion_sizes` (cross-
frame attention at 16, a size without SFT, was skipped) frames 1-2 of `wide` were 1.26 / 1.39 relative off.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

LAYOUTS = {  # name -> (connect_list, cross_fuse_list) in the official constructor's terms
    "standard": (["16", "32", "64"], ["16", "32"]),
    "wide": (["32", "64", "128", "256"], ["16", "32"]),
    "wide-nocfa": (["32", "64", "128", "256"], []),
}
STRIDE = 8  # output and flows are stored on every 8th pixel in both directions


def official_keep_class(folder: Path) -> type:
    """The official KEEP class, imported without basicsr's package __init__ files (datasets, CUDA ops)."""
    sys.path.insert(0, str(folder))
    for name, sub in (("basicsr", "basicsr"), ("basicsr.archs", "basicsr/archs")):
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(folder / sub)]
        sys.modules[name] = pkg
    corr = types.ModuleType("basicsr.archs.correlation")  # PWC-Net's CUDA correlation; KEEP uses GMFlow
    corr.ModuleCorrelation = object
    sys.modules["basicsr.archs.correlation"] = corr
    from basicsr.archs.keep_arch import KEEP

    return KEEP


def synthetic(key: str, shape: tuple[int, ...], salt: int = 0) -> torch.Tensor:
    """shared/fixtures/README.md recipe (vs_keep.models.synthetic.synthetic_tensor)."""
    from vs_keep.models.synthetic import synthetic_tensor

    return synthetic_tensor(key, shape, salt)


def golden_input() -> torch.Tensor:
    """(1,3,3,512,512) float32: the golden input of shared/fixtures/README.md."""
    g = torch.Generator().manual_seed(1234)
    base = torch.rand(1, 3, 40, 40, generator=g, dtype=torch.float32) * 2 - 1
    base = F.interpolate(base, size=(600, 600), mode="bicubic", align_corners=False).clamp(-1, 1)
    return torch.stack([base[0, :, 20 + 2 * t : 532 + 2 * t, 20 + 3 * t : 532 + 3 * t] for t in range(3)])[None]


def run_official(folder: Path, layout: str, dtype: torch.dtype, checkpoint: Path) -> dict[str, torch.Tensor]:
    """Build the official KEEP in `layout`, write its synthetic weights to `checkpoint`, run the golden input."""
    KEEP = official_keep_class(folder)
    connect, cross = LAYOUTS[layout]
    torch.set_default_dtype(dtype)
    net = KEEP(
        img_size=512, emb_dim=256, dim_embd=512, n_head=8, n_layers=9, codebook_size=1024, connect_list=connect,
        flow_type="gmflow", flownet_path=None, kalman_attn_head_dim=48, num_uncertainty_layers=3,
        cross_fuse_list=cross, cross_fuse_nhead=4, cross_fuse_dim=256,
    )
    sd = {k: synthetic(k, tuple(v.shape)) for k, v in net.state_dict().items()}
    net.load_state_dict(sd, strict=True)
    torch.save(sd, checkpoint, _use_new_zipfile_serialization=False)  # the release's legacy format
    net = net.to(dtype).eval()
    logits: list[torch.Tensor] = []
    seen: dict[str, torch.Tensor] = {}
    net.idx_pred_layer.register_forward_hook(lambda m, i, o: logits.append(o.permute(1, 0, 2)[0]))
    net.kalman_filter.kalman_gain_calculator.register_forward_hook(lambda m, i, o: seen.__setitem__("gains", o))
    net.flownet.register_forward_hook(lambda m, i, o: seen.__setitem__("flows", o))
    x = golden_input().to(dtype)
    with torch.no_grad():
        out = net(x, need_upscale=False)[0]
    torch.set_default_dtype(torch.float32)
    return {"input": x[0], "output": out, "logits": torch.stack(logits), "gains": seen["gains"], "flows": seen["flows"]}


def compact(full: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """What the golden file keeps: enough to pin every stage, a few hundred kB."""
    out, logits = full["output"], full["logits"]
    flat = out.flatten(1)
    return {
        "layout": torch.tensor([int(s) for s in LAYOUTS[layout][0]] + [0] + [int(s) for s in LAYOUTS[layout][1]]),
        "output_strided": out[..., ::STRIDE, ::STRIDE].clone(),
        "output_sum": flat.sum(1),
        "output_sumsq": (flat * flat).sum(1),
        "top_idx": logits.argmax(2),
        "logits_top2": logits.topk(2, dim=2).values,
        "gains": full["gains"].clone(),
        "flows_strided": full["flows"][..., ::STRIDE, ::STRIDE].clone(),
    }


def check_ours(checkpoint: Path, official: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, object]:
    from vs_keep.models import load

    model = load(checkpoint, dtype=dtype)
    with torch.inference_mode():
        ours = model(official["input"].to(dtype))
    frames = []
    for t in range(ours.shape[0]):
        a, b = ours[t], official["output"][t]
        frames.append({"frame": t, "bit_identical": bool(torch.equal(a, b)), "rel": float((a - b).norm() / b.norm())})
    return {"threads": torch.get_num_threads(), "torch": torch.__version__, "frames": frames}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", type=Path, required=True, help="prepared official KEEP folder (see above)")
    ap.add_argument("--layout", choices=sorted(LAYOUTS), default="wide")
    ap.add_argument("--dtype", choices=("f32", "f64"), default="f64")
    ap.add_argument("--golden", type=Path, help="write the compact golden here")
    ap.add_argument("--check", action="store_true", help="compare vs_keep's output with the official one")
    args = ap.parse_args()
    dtype = {"f32": torch.float32, "f64": torch.float64}[args.dtype]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "KEEP-synthetic.pth"
        t0 = time.perf_counter()
        full = run_official(args.official, args.layout, dtype, ckpt)
        report: dict[str, object] = {"layout": args.layout, "dtype": args.dtype, "official_s": round(time.perf_counter() - t0, 1)}
        if args.golden:
            torch.save(compact(full, args.layout), args.golden)
            report["golden"] = str(args.golden)
        if args.check:
            report["ours"] = check_ours(ckpt, full, dtype)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
