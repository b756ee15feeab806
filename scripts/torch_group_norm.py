#!/usr/bin/env python3
"""PyTorch's own GroupNorm (torch.nn.GroupNorm, affine), forward and autograd backward, dumped for
tests/parity_group_norm.rs:

    python3 scripts/torch_group_norm.py   # writes tests/fixtures/torch_group_norm.safetensors

Per case i (float64 on float32 inputs, so the fixture is PyTorch's exact answer to the f32 values
the engine reads): `case{i}.x` [B, C, H, W], `.gamma`, `.beta` [C], `.dy` (the output's gradient),
then `.y`, `.dx`, `.dgamma`, `.dbeta`; metadata `case{i}.groups`, `case{i}.eps` and `case{i}.silu`
(1: y = silu(groupnorm(x)), diffusers' norm-then-activation). The cases: a group per channel
(instance norm), one group (layer norm), diffusers' 32 groups of 4 channels at eps 1e-6 (with and
without SiLU), ragged sides, and inputs with a large mean (the variance's cancellation).
"""
import argparse

import torch
from safetensors.torch import save_file

# (B, C, H, W, groups, eps, offset of the inputs' mean, SiLU after)
CASES = [
    (3, 6, 5, 7, 3, 1e-5, 0.0, False),
    (2, 8, 4, 4, 8, 1e-5, 0.0, False),
    (1, 16, 3, 5, 1, 1e-5, 0.0, False),
    (2, 128, 8, 8, 32, 1e-6, 0.0, False),
    (2, 12, 9, 11, 4, 1e-6, 50.0, False),
    (2, 128, 8, 8, 32, 1e-6, 0.0, True),
    (3, 6, 5, 7, 3, 1e-6, 3.0, True),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/torch_group_norm.safetensors")
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    out, meta = {}, {}
    for i, (b, c, h, w, groups, eps, offset, silu) in enumerate(CASES):
        x = (torch.randn(b, c, h, w, generator=g) * 2 + offset).float()
        gamma = (torch.rand(c, generator=g) + 0.5).float()
        beta = torch.randn(c, generator=g).float()
        dy = torch.randn(b, c, h, w, generator=g).float()
        gn = torch.nn.GroupNorm(groups, c, eps=eps).double()
        with torch.no_grad():
            gn.weight.copy_(gamma.double())
            gn.bias.copy_(beta.double())
        x64 = x.double().requires_grad_()
        y = gn(x64)
        if silu:
            y = torch.nn.functional.silu(y)
        y.backward(dy.double())
        p = f"case{i}"
        out.update({f"{p}.x": x, f"{p}.gamma": gamma, f"{p}.beta": beta, f"{p}.dy": dy,
                    f"{p}.y": y.detach(), f"{p}.dx": x64.grad, f"{p}.dgamma": gn.weight.grad,
                    f"{p}.dbeta": gn.bias.grad})
        meta[f"{p}.groups"] = str(groups)
        meta[f"{p}.eps"] = repr(eps)
        meta[f"{p}.silu"] = str(int(silu))
    meta["cases"] = str(len(CASES))
    meta["torch"] = torch.__version__
    save_file({k: v.contiguous() for k, v in out.items()}, args.out, metadata=meta)
    print(f"wrote {args.out}: {len(CASES)} cases")


if __name__ == "__main__":
    main()
