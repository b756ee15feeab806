#!/usr/bin/env python3
"""Dump a PyTorch reference of the notebook's Bernoulli VAE for tests/torch_parity.rs.

Builds `BernoulliVAE` exactly as the classic notebook does (784 -> 200 -> 10, ReLU, sigmoid output,
summed `binary_cross_entropy` + analytic KL, Adam lr 0.01), seeds it, takes the first 16 MNIST
training images and fixed noise, and writes one safetensors file with:

  - the initial parameters under their state_dict names (`linear_enc.weight`, ...),
  - `x` [16, 784] and `eps.1`, `eps.2`, `eps.3` [16, 10] (the noise of steps 1-3),
  - the step-1 intermediates `h_enc`, `mu_e`, `logvar_e`, `z`, `h_dec`, `logits`, `mu_d`,
    the scalars `loss`, `bce`, `kl`, and the gradients `grad.<name>` and `grad.logits`,
  - the parameters after 3 Adam steps, `after3.<name>`, and the losses of steps 1-3 `losses`.

Usage (needs `pip install torch safetensors numpy`):
    python3 scripts/torch_reference.py [--data-dir data/mnist] [--out tests/fixtures/torch_reference.safetensors]
"""
import argparse
import gzip
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file


class BernoulliVAE(nn.Module):
    def __init__(self, input_dim=784, hidden_dim=200, latent_dim=10):
        super().__init__()
        self.linear_enc = nn.Linear(input_dim, hidden_dim)
        self.enc_mu = nn.Linear(hidden_dim, latent_dim)
        self.enc_logvar = nn.Linear(hidden_dim, latent_dim)
        self.linear_dec = nn.Linear(latent_dim, hidden_dim)
        self.dec_mu = nn.Linear(hidden_dim, input_dim)

    def forward(self, x, eps, keep=None):
        h_enc = F.relu(self.linear_enc(x))
        mu_e, logvar_e = self.enc_mu(h_enc), self.enc_logvar(h_enc)
        z = mu_e + torch.exp(0.5 * logvar_e) * eps
        h_dec = F.relu(self.linear_dec(z))
        logits = self.dec_mu(h_dec)
        mu_d = torch.sigmoid(logits)
        if keep is not None:
            logits.retain_grad()
            keep.update(h_enc=h_enc, mu_e=mu_e, logvar_e=logvar_e, z=z, h_dec=h_dec, logits=logits, mu_d=mu_d)
        return mu_d, mu_e, logvar_e


def loss_fn(mu_d, x, mu_e, logvar_e):
    bce = F.binary_cross_entropy(mu_d, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar_e - mu_e.pow(2) - logvar_e.exp())
    return bce + kl, bce, kl


def read_images(path, n):
    with gzip.open(path, "rb") as f:
        magic, count, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 0x803, f"bad magic {magic:#x}"
        data = np.frombuffer(f.read(n * rows * cols), dtype=np.uint8)
    return torch.from_numpy(data.reshape(n, rows * cols).astype(np.float32) / 255.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="data/mnist")
    ap.add_argument("--out", default="tests/fixtures/torch_reference.safetensors")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    model = BernoulliVAE()
    x = read_images(f"{args.data_dir}/train-images-idx3-ubyte.gz", args.batch)
    eps = [torch.randn(args.batch, 10) for _ in range(3)]
    out = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    out["x"] = x.clone()
    for i, e in enumerate(eps, 1):
        out[f"eps.{i}"] = e.clone()

    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for step in range(3):
        opt.zero_grad()
        keep = {} if step == 0 else None
        mu_d, mu_e, logvar_e = model(x, eps[step], keep)
        loss, bce, kl = loss_fn(mu_d, x, mu_e, logvar_e)
        loss.backward()
        losses.append(loss.item())
        if step == 0:
            for k, v in keep.items():
                out[k] = v.detach().clone().contiguous()
            out["grad.logits"] = keep["logits"].grad.detach().clone().contiguous()
            out["loss"] = loss.detach().reshape(1).clone()
            out["bce"] = bce.detach().reshape(1).clone()
            out["kl"] = kl.detach().reshape(1).clone()
            for name, p in model.named_parameters():
                out[f"grad.{name}"] = p.grad.detach().clone().contiguous()
        opt.step()
    for name, p in model.named_parameters():
        out[f"after3.{name}"] = p.detach().clone().contiguous()
    out["losses"] = torch.tensor(losses, dtype=torch.float32)
    save_file(out, args.out, metadata={"torch": torch.__version__, "seed": str(args.seed)})
    print(f"wrote {args.out}: losses {losses}")


if __name__ == "__main__":
    main()
