#!/usr/bin/env python3
"""PyTorch's own IWAE objective and its autograd gradients, for tests/torch_parity.rs:

    python3 scripts/torch_iwae.py   # writes tests/fixtures/torch_iwae.safetensors

The notebook's module at 784-32-6 (torch_reference.BernoulliVAE, PyTorch's init from seed 0; a
learned-σ Gaussian decoder with --likelihood gaussian), the first 16 MNIST training images, fixed
noise eps [k = 5, 16, 6], and the importance-weighted bound of Burda et al. summed over the batch:
log w_l = log p(x|z_l) + log p(z_l) − log q(z_l|x), objective Σ_b −(logsumexp_l log w_l − log k).
Saved: the initial state_dict (with the architecture, `samples` and `objective` in the metadata, so
the engine reads it as a checkpoint), x, eps, the objective, and `grad.<name>` for every tensor.
"""
import argparse
import math
import os
import sys

import torch
from safetensors.torch import save_file
from torch.distributions import Normal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_reference import BernoulliVAE, architecture_metadata, read_images  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="data/mnist")
    ap.add_argument("--likelihood", default="bernoulli", choices=["bernoulli", "gaussian"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = args.out or ("tests/fixtures/torch_iwae.safetensors" if args.likelihood == "bernoulli"
                       else "tests/fixtures/torch_iwae_gaussian.safetensors")
    torch.manual_seed(0)
    k, b, hidden, latent = 5, 16, 32, 6
    gaussian = args.likelihood == "gaussian"
    model = BernoulliVAE(784, [hidden], latent, None, "relu", learned_sigma=gaussian)
    if gaussian:
        with torch.no_grad():
            model.log_sigma.fill_(-0.7)
    init = {n: t.detach().clone().contiguous() for n, t in model.state_dict().items()}
    x = read_images(f"{args.data_dir}/train-images-idx3-ubyte.gz", b)
    eps = torch.randn(k, b, latent)
    mu_e, logvar_e = model.enc_mu_logvar(x)
    z = mu_e + torch.exp(0.5 * logvar_e) * eps
    mu_d = model.decode(z.reshape(k * b, latent))
    xs = x.repeat(k, 1)
    if gaussian:
        rows = -Normal(mu_d, model.log_sigma.exp()).log_prob(xs).sum(1)
    else:
        rows = torch.nn.functional.binary_cross_entropy_with_logits(model.logits, xs, reduction="none").sum(1)
    log_w = -rows.reshape(k, b) + 0.5 * (eps.pow(2) - z.pow(2) + logvar_e).sum(2)
    objective = -(torch.logsumexp(log_w, 0) - math.log(k)).sum()
    objective.backward()
    tensors = dict(init)
    tensors.update({f"grad.{n}": p.grad.detach().clone().contiguous() for n, p in model.named_parameters()})
    tensors.update(x=x.contiguous(), eps=eps.reshape(k * b, latent).contiguous(),
                   objective=objective.detach().reshape(1))
    meta = architecture_metadata(model, dict(input=784, hidden=[hidden], decoder_hidden=[hidden], latent=latent,
                                             activation="relu"))
    meta.update(samples=str(k), objective="iwae", likelihood=args.likelihood)
    save_file(tensors, out, metadata=meta)
    print(f"wrote {out}: objective {objective.item():.4f} over {b} images, k = {k}")


if __name__ == "__main__":
    main()
