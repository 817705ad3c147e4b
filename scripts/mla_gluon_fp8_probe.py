"""Where the Gluon MLA tile's fp8 form goes wrong, if it does: `dump` runs it on a Hopper GPU on crafted inputs and
saves what it wrote; `analyse` reads that file on any machine and says which part is wrong.

    python scripts/mla_gluon_fp8_probe.py dump $OUT          # GPU (sm_90, Triton 3.6): $OUT/gluon_fp8_probe.pt
    python scripts/mla_gluon_fp8_probe.py analyse $OUT/gluon_fp8_probe.pt

The inputs (sequences of 175, 2793, 64, 700 and 1 tokens, nhead 64 and 16): random q; q on the fp8 grid (its low fp8
part zero); q with only its rope part; a KV whose latent part is one vector for every token (P @ V must give it back
whatever P is). The analysis prints, per input, the largest error per sequence against the fp32 reference; recovers
the 64-token sequence's softmax weights from the output by least squares (V is known) and fits the scores they
imply to each 64-channel box's exact partial scores, high and low fp8 part apart (a coefficient of 1 each is right);
and compares the q split kernel's parts and scales with the same split on the CPU. It found the first GPU runs' bug
(2026-12-06, results/examples/mla-gluon-ws-ab-h100): the split's residual, not the tile."""
import dataclasses
import sys
from pathlib import Path

import torch

from rocbench.formats.paged_kv import build_paged_kv, make_query
from rocbench.suites.mla.reference import mla_decode_reference

SM_SCALE = 192 ** -0.5
LENS = [175, 2793, 64, 700, 1]
NHEADS = (64, 16)
ONE_BLOCK = 2  # the sequence of exactly one 64-token block


def _inputs(nhead: int) -> tuple:
    """(kv, {name: (q, kv_buffer or None)}) on the CPU, the same on every machine."""
    g = torch.Generator().manual_seed(7)
    kv = build_paged_kv(LENS, 64, torch.float8_e4m3fn, g, "cpu")
    q = make_query(len(LENS), nhead, torch.bfloat16, g, "cpu")
    grid_q = (q.float() * 8).to(torch.float8_e4m3fn).float() / 8
    grid_q[:, :, 0] = 448 / 8  # each row's largest: hi_scale 1/8 exactly, so hi is q and lo zero
    rope_q = q.clone()
    rope_q[:, :, :512] = 0
    same_v = kv.kv_buffer.clone()
    same_v[:, :, :512] = same_v[0:1, 0:1, :512]
    return kv, {"random": (q, None), "grid": (grid_q.to(torch.bfloat16), None), "rope": (rope_q, None),
                "same_v": (q, same_v)}


def _fp8_split(x: torch.Tensor) -> tuple:
    """q's rows as (hi, hi_scale, lo, lo_scale), as the split kernel should give them."""
    def rows(v):
        amax = v.abs().amax(-1, keepdim=True)
        scale = torch.where(amax > 0, amax / 448, torch.ones_like(amax))
        return (v / scale).to(torch.float8_e4m3fn), scale
    hi, hs = rows(x)
    lo, ls = rows(x - hi.float() * hs)
    return hi, hs[:, 0], lo, ls[:, 0]


def dump(out_dir: Path) -> None:
    from rocbench.kernels import mla_config, mla_decode, mla_gluon

    saved = {}
    for nhead in NHEADS:
        kv, inputs = _inputs(nhead)
        # two chains: q's low part at its own scale, as this probe's split (split_q without one_scale) compares it
        config = dataclasses.replace(mla_config.gluon_ws_config(torch.float8_e4m3fn, nhead, 1), gluon_one_chain=False)
        schedule = mla_decode.build_persistent_schedule(LENS, 1, nhead, 132, config, kv_element_bytes=1).to("cuda")
        for name, (q, buffer) in inputs.items():
            kv_here = kv if buffer is None else dataclasses.replace(kv, kv_buffer=buffer)
            out = torch.full((len(LENS), nhead, 512), float("nan"), dtype=torch.bfloat16, device="cuda")
            mla_decode.mla_decode_persistent(q.to("cuda"), kv_here.to("cuda"), schedule, SM_SCALE, 1, out,
                                             config=config)
            saved[f"{nhead}/{name}"] = out.cpu()
        q2d = inputs["random"][0].view(-1, 576).to("cuda")
        hi, lo = (torch.empty(q2d.shape, dtype=torch.float8_e4m3fn, device="cuda") for _ in range(2))
        hs, ls = (torch.empty(q2d.shape[0], device="cuda") for _ in range(2))
        mla_gluon.split_q(q2d, hi, lo, hs, ls)
        saved[f"{nhead}/split"] = tuple(t.cpu() for t in (hi, hs, lo, ls))
    torch.save(saved, out_dir / "gluon_fp8_probe.pt")
    print(f"saved {len(saved)} entries in {out_dir / 'gluon_fp8_probe.pt'}")


def analyse(path: Path) -> None:
    saved = torch.load(path)
    for nhead in NHEADS:
        kv, inputs = _inputs(nhead)
        q = inputs["random"][0].view(-1, 576).float()
        hi, hs, lo, ls = saved[f"{nhead}/split"]
        want_hi, want_hs, want_lo, want_ls = _fp8_split(q)
        rebuilt = hi.float() * hs[:, None] + lo.float() * ls[:, None]
        print(f"nhead {nhead} split: hi differs in {(hi.float() != want_hi.float()).sum()} values (ties: the GPU's "
              f"division), lo_scale / CPU's {(ls / want_ls).min():.3g}..{(ls / want_ls).max():.3g}, q rebuilt off by "
              f"{((rebuilt - q).abs().amax(1) / q.abs().amax(1)).max():.2e} of a row's largest (right: < 2^-7)")
        for name, (qq, buffer) in inputs.items():
            ref, _ = mla_decode_reference(qq, kv if buffer is None else dataclasses.replace(kv, kv_buffer=buffer),
                                          SM_SCALE, 1)
            err = (saved[f"{nhead}/{name}"].float() - ref).abs()
            print(f"  {name:7s} largest error per sequence {[f'{err[b].max():.3g}' for b in range(len(LENS))]}")
        _fit_scores(saved[f"{nhead}/random"][ONE_BLOCK].float(), inputs["random"][0][ONE_BLOCK].float(),
                    kv.dequantized_tokens(ONE_BLOCK).float())


def _fit_scores(out: torch.Tensor, q: torch.Tensor, tokens: torch.Tensor) -> None:
    """out = softmax(S) V for one 64-token sequence: P from out by least squares, S up to a row constant from log P,
    then S fitted per row to each box's exact partial scores of q's high and low fp8 parts (medians over rows)."""
    p = torch.linalg.lstsq(tokens[:, :512].T, out.T).solution.T  # [heads, 64]
    seen = p > 1e-3
    s = torch.where(seen, p.clamp_min(1e-9).log(), torch.nan)
    hi, hs, lo, ls = _fp8_split(q)
    parts = [part[:, c:c + 64] @ tokens[:, c:c + 64].T * SM_SCALE
             for part in (hi.float() * hs[:, None], lo.float() * ls[:, None]) for c in range(0, 576, 64)]
    x = torch.stack(parts, -1)  # [heads, 64, 18]
    fits = []
    for h in range(q.shape[0]):
        a = x[h][seen[h]] - x[h][seen[h]].mean(0)
        y = s[h][seen[h]] - s[h][seen[h]].mean()
        fits.append(torch.linalg.lstsq(a, y[:, None]).solution[:, 0])
    coef = torch.stack(fits).median(0).values
    print("  scores fitted per channel box (1 is right), high part:", [f"{c:.2f}" for c in coef[:9].tolist()])
    print("                                                low part: ", [f"{c:.2f}" for c in coef[9:].tolist()])


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("dump", "analyse"):
        sys.exit(__doc__.split("\n\n")[1])
    (dump if sys.argv[1] == "dump" else analyse)(Path(sys.argv[2]))
