#!/usr/bin/env python3
"""PyTorch's own log-likelihoods, gradients and means for the decoder likelihoods vae-wgpu trains
with (src/model/likelihood.rs), dumped for tests/torch_parity.rs:

    python3 scripts/torch_likelihoods.py   # writes tests/fixtures/torch_likelihoods.safetensors

Per likelihood (torch.distributions, float64 on the f32 inputs): `<name>.nll` = -Σ log_prob(x),
`<name>.dlogits` = its autograd gradient in the logits, `<name>.mean` = the distribution's mean;
the Gaussian (N(sigmoid(l), exp(log_sigma)²)) and the Laplace (Laplace(sigmoid(l), exp(log_sigma)))
also `<name>.dlog_sigma`, and each of them again with the logit as the mean itself
(`gaussian-identity`, `laplace-identity`: an AutoencoderKL's decoder). The logits cover the
continuous Bernoulli's unstable region around 0 (where PyTorch switches to a Taylor series), the
targets exact 0s and 1s.

And the continuous Bernoulli as PyTorch computes it in float32, the engine's definition (its
clamp of λ to [ε, 1 − ε] bounds the normaliser): logits `cb32.logits` from −40 to 40, targets
`cb32.x` exact 0s and 1s and some between; per element `cb32.nll` (−log_prob), `cb32.dlogits`
(autograd), `cb32.mean`, all computed in float32.
"""
import argparse

import torch
from safetensors.torch import save_file
from torch.distributions import Bernoulli, ContinuousBernoulli, Laplace, Normal


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/torch_likelihoods.safetensors")
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    n = 4096
    logits = torch.rand(n, generator=g) * 24 - 12
    logits[:512] = (torch.rand(512, generator=g) - 0.5) * 0.02  # |l| < 0.01: λ within 0.4975..0.5025
    x = torch.rand(n, generator=g)
    x[::10] = 0.0
    x[5::10] = 1.0
    logits, x = logits.float(), x.float()
    log_sigma = torch.tensor(-1.1).float()
    out = {"logits": logits, "x": x, "log_sigma": log_sigma.reshape(1)}
    l64, x64 = logits.double(), x.double()
    dists = {
        "bernoulli": lambda l, s: Bernoulli(logits=l, validate_args=False),
        "continuous-bernoulli": lambda l, s: ContinuousBernoulli(logits=l),
        "gaussian": lambda l, s: Normal(torch.sigmoid(l), s.exp()),
        "gaussian-identity": lambda l, s: Normal(l, s.exp()),
        "laplace": lambda l, s: Laplace(torch.sigmoid(l), s.exp()),
        "laplace-identity": lambda l, s: Laplace(l, s.exp()),
    }
    for name, make in dists.items():
        l = l64.clone().requires_grad_(True)
        s = log_sigma.double().clone().requires_grad_(True)
        d = make(l, s)
        nll = -d.log_prob(x64).sum()
        nll.backward()
        out[f"{name}.nll"] = nll.detach().reshape(1).float()
        out[f"{name}.dlogits"] = l.grad.float()
        out[f"{name}.mean"] = d.mean.detach().float()
        if name.startswith(("gaussian", "laplace")):
            out[f"{name}.dlog_sigma"] = s.grad.reshape(1).float()
    # PyTorch's float32 continuous Bernoulli, per element, logits to ±40 on 0/1 targets.
    m = 2048
    l32 = torch.linspace(-40.0, 40.0, m, dtype=torch.float32)
    x32 = (torch.arange(m) % 2).float()
    x32[::7] = torch.rand(len(x32[::7]), generator=g)
    l32g = l32.clone().requires_grad_(True)
    d = ContinuousBernoulli(logits=l32g)
    nll32 = -d.log_prob(x32)
    nll32.sum().backward()
    out.update({"cb32.logits": l32, "cb32.x": x32, "cb32.nll": nll32.detach(),
                "cb32.dlogits": l32g.grad, "cb32.mean": d.mean.detach()})
    save_file({k: v.contiguous() for k, v in out.items()}, args.out)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {float(v[0]):.6g}" for k, v in out.items() if k.endswith(".nll")))


if __name__ == "__main__":
    main()
