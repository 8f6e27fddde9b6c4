"""Compare the head tensors tapped by tools/fp8_audit.py with fp64 and with torch._scaled_mm (the reference's FP8 GEMMs).

    python tools/fp8_audit_torch.py DIR TAG [TAG ...]   -> DIR/<TAG>_torch.json and a table

For each backend the tap recorded (xla, triton): the quantised operands against torch's own casts of the same h, W and
incoming gradient (bitwise), the logits / dh / dW against fp64 products of the same FP8 operands (recipe §1.9) and against
torch._scaled_mm called as the reference calls it, and how far each is from the unquantised bf16-head product.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

DEV = "cuda" if torch.cuda.is_available() else "cpu"
TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2,
                "float32": torch.float32}
INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32}


def load(dump: Path, prefix: str) -> dict[str, torch.Tensor]:
    dtypes = json.loads((dump / f"{prefix}_dtypes.json").read_text())
    out = {}
    for name, dtype in dtypes.items():
        raw = np.load(dump / f"{prefix}_{name}.npy")
        size = raw.dtype.itemsize
        t = torch.from_numpy(raw.view({1: np.uint8, 2: np.int16, 4: np.int32}[size])).to(DEV)
        out[name] = t.view(TORCH_DTYPES[dtype])
    return out


def rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.double(), ref.double()
    return float(torch.linalg.norm(a - ref) / torch.linalg.norm(ref))


def low_rows(dw: torch.Tensor, ref: torch.Tensor, frac: float = 0.5) -> dict:
    """dW rows of the smallest reference norm (rare tokens): their relative error, norm ratio and mean row cosine."""
    ref, dw = ref.double(), dw.double()
    norms = torch.linalg.norm(ref, dim=1)
    rows = torch.argsort(norms)[: int(frac * ref.shape[0])]
    rows = rows[norms[rows] > 0]
    a, b = dw[rows], ref[rows]
    cos = (a * b).sum(1) / (torch.linalg.norm(a, dim=1) * torch.linalg.norm(b, dim=1)).clamp_min(1e-300)
    return {"rows": int(rows.numel()), "rel_err": rel(a, b), "norm_ratio": float(torch.linalg.norm(a) / torch.linalg.norm(b)),
            "mean_row_cos": float(cos.mean()), "zero_rows_frac": float((torch.linalg.norm(a, dim=1) == 0).double().mean())}


def audit(t: dict[str, torch.Tensor], scales) -> dict:
    xs, ws, gs = scales
    h, w, g = t["h"], t["w"], t["g"]
    r: dict = {}
    # Quantisation: torch's casts (fp32 quotient rounded once, as the compiled reference does) vs the tap's operands.
    xq_t = (h.float() / xs).to(torch.float8_e4m3fn)
    wq_t = (w.float() / ws).to(torch.float8_e4m3fn)
    gq_t = (g.float() / gs).to(torch.float8_e5m2)
    r["xq_mismatch"] = float((xq_t.view(torch.uint8) != t["xq"].view(torch.uint8)).double().mean())
    r["wq_mismatch"] = float((wq_t.view(torch.uint8) != t["wq"].view(torch.uint8)).double().mean())
    if "gq_jax" in t:  # XLA's quantiser on the same g: bitwise, and where the mismatches lie
        diff = gq_t.view(torch.uint8) != t["gq_jax"].view(torch.uint8)
        qt = gq_t.float()
        r["gq_mismatch"] = float(diff.double().mean())
        r["gq_mismatch_where"] = {"jax_zero_torch_nonzero": float((diff & (t["gq_jax"].float() == 0)).double().mean()),
                                  "torch_subnormal": float((diff & (qt != 0) & (qt.abs() < 2.0**-14)).double().mean()),
                                  "jax_abs_gt_torch": float((diff & (t["gq_jax"].float().abs() > qt.abs())).double().mean())}
    gq_f = gq_t.float()
    r["g_stats"] = {"max_abs": float(g.float().abs().max()), "zero_frac_g": float((g == 0).double().mean()),
                    "zero_frac_gq": float((gq_f == 0).double().mean()),
                    "subnormal_frac_gq": float(((gq_f != 0) & (gq_f.abs() < 2.0**-14)).double().mean()),
                    "max_abs_gq": float(gq_f.abs().max())}
    xq64, wq64, gq64 = t["xq"].double(), t["wq"].double(), gq_t.double()
    # Forward.
    ref = (xq64 @ wq64.T) * (xs * ws)
    mm = torch._scaled_mm(t["xq"], t["wq"].T, out_dtype=torch.bfloat16, scale_a=torch.tensor(xs, device=DEV),
                          scale_b=torch.tensor(ws, device=DEV), use_fast_accum=True)
    exact = h.double() @ w.double().T
    r["logits"] = {"tap_vs_fp64": rel(t["logits"], ref), "torch_vs_fp64": rel(mm, ref), "tap_vs_torch": rel(t["logits"], mm),
                   "fp64_fp8_vs_bf16_product": rel(ref, exact), "tap_vs_bf16_product": rel(t["logits"], exact)}
    del ref, mm, exact
    # Backward: dh = (gq wq) gs ws, dW = (gq^T xq) gs xs, as the reference's two _scaled_mm calls.
    dh_ref = (gq64 @ wq64) * (gs * ws)
    dh_mm = torch._scaled_mm(gq_t, t["wq"].T.contiguous().T, out_dtype=torch.bfloat16, scale_a=torch.tensor(gs, device=DEV),
                             scale_b=torch.tensor(ws, device=DEV), use_fast_accum=False)
    dh_fast = torch._scaled_mm(gq_t, t["wq"].T.contiguous().T, out_dtype=torch.bfloat16, scale_a=torch.tensor(gs, device=DEV),
                               scale_b=torch.tensor(ws, device=DEV), use_fast_accum=True)
    g64 = g.double()
    dh_exact = g64 @ w.double()
    r["dh"] = {"tap_vs_fp64": rel(t["dh"], dh_ref), "torch_vs_fp64": rel(dh_mm, dh_ref), "tap_vs_torch": rel(t["dh"], dh_mm),
               "torch_fast_accum_vs_fp64": rel(dh_fast, dh_ref), "tap_vs_torch_fast_accum": rel(t["dh"], dh_fast),
               "fp64_fp8_vs_exact": rel(dh_ref, dh_exact), "tap_vs_exact": rel(t["dh"], dh_exact),
               "norm_ratio_tap_vs_fp64": float(torch.linalg.norm(t["dh"].double()) / torch.linalg.norm(dh_ref))}
    del dh_ref, dh_mm, dh_exact, dh_fast
    dw_ref = (gq64.T @ xq64) * (gs * xs)
    dw_mm = torch._scaled_mm(t["xq"].T.contiguous(), gq_t.T.contiguous().T, out_dtype=torch.float32,
                             scale_a=torch.tensor(xs, device=DEV), scale_b=torch.tensor(gs, device=DEV),
                             use_fast_accum=False).T.to(torch.bfloat16)
    dw_fast = torch._scaled_mm(t["xq"].T.contiguous(), gq_t.T.contiguous().T, out_dtype=torch.float32,
                               scale_a=torch.tensor(xs, device=DEV), scale_b=torch.tensor(gs, device=DEV),
                               use_fast_accum=True).T.to(torch.bfloat16)
    dw_exact = g64.T @ h.double()
    r["dw"] = {"tap_vs_fp64": rel(t["dw"], dw_ref), "torch_vs_fp64": rel(dw_mm, dw_ref), "tap_vs_torch": rel(t["dw"], dw_mm),
               "fp64_fp8_vs_exact": rel(dw_ref, dw_exact), "tap_vs_exact": rel(t["dw"], dw_exact),
               "norm_ratio_tap_vs_fp64": float(torch.linalg.norm(t["dw"].double()) / torch.linalg.norm(dw_ref)),
               "torch_fast_accum_vs_fp64": rel(dw_fast, dw_ref), "tap_vs_torch_fast_accum": rel(t["dw"], dw_fast),
               "low_rows_tap_vs_exact": low_rows(t["dw"], dw_exact), "low_rows_torch_vs_exact": low_rows(dw_mm, dw_exact),
               "low_rows_tap_vs_torch": low_rows(t["dw"], dw_mm.double())}
    return r


def main() -> None:
    dump, tags = Path(sys.argv[1]), sys.argv[2:]
    for tag in tags:
        report = json.loads((dump / f"{tag}_report.json").read_text())
        if not any((dump / f"{tag}_{b}_dtypes.json").exists() for b in ("xla", "triton")):
            continue
        out = {}
        for backend in ("xla", "triton"):
            if not (dump / f"{tag}_{backend}_dtypes.json").exists():
                continue
            out[backend] = audit(load(dump, f"{tag}_{backend}"), report["scales"])
            torch.cuda.empty_cache()
            print(f"== {tag} {backend}")
            print(json.dumps(out[backend], indent=1))
        (dump / f"{tag}_torch.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
