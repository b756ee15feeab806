#!/usr/bin/env python3
"""PyTorch trained on exactly what `examples/trajectory.rs` trained the engine on: its initial
weights (init.safetensors), its batches (MNIST's training images in order, 128 a step) and its
noise (eps.bin), with Adam (lr 0.01) on the summed -ELBO; prints both runs' loss per image and
log σ side by side, and the first step where they part by more than --tolerance (relative).

    cargo run --release --example trajectory -- --likelihood gaussian --steps 500 --out /tmp/traj
    python3 scripts/torch_trajectory.py /tmp/traj
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file
from torch.distributions import ContinuousBernoulli, Laplace, Normal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_reference import BernoulliVAE, read_images  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--data-dir", default="data/mnist")
    ap.add_argument("--tolerance", type=float, default=1e-3)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--show", default="", help="steps to print in full, e.g. 100-125")
    ap.add_argument("--save", default=None, help="write PyTorch's per-step losses here (JSON)")
    ap.add_argument("--perturb", type=int, default=None,
                    help="scale each initial weight by 1 + 1e-7·N(0, 1) from this seed: how far a "
                         "rounding-sized difference carries the run")
    args = ap.parse_args()
    torch.set_num_threads(2)
    dtype = getattr(torch, args.dtype)
    eng = json.load(open(os.path.join(args.dir, "engine.json")))
    b, k, lik = eng["batch"], eng["latent"], eng["likelihood"]
    steps = len(eng["steps"])
    learned = lik in ("gaussian", "laplace")
    model = BernoulliVAE(784, [200], k, [200], "relu", learned_sigma=learned).to(dtype)
    state = load_file(os.path.join(args.dir, "init.safetensors"))
    if args.perturb is not None:
        g = torch.Generator().manual_seed(args.perturb)
        state = {n: t * (1 + 1e-7 * torch.randn(t.shape, generator=g)) for n, t in state.items()}
    model.load_state_dict({n: t.to(dtype) for n, t in state.items()}, strict=True)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    eps_all = torch.from_numpy(np.fromfile(os.path.join(args.dir, "eps.bin"), dtype="<f4").copy())
    eps_all = eps_all.reshape(steps, b, k).to(dtype)
    train = read_images(f"{args.data_dir}/train-images-idx3-ubyte.gz").to(dtype)
    parted = None
    mine = []
    for step in range(steps):
        first = (step * b) % (len(train) - b + 1)
        x = train[first:first + b]
        opt.zero_grad()
        mu_d, mu_e, logvar_e = model(x, eps_all[step])
        kl = -0.5 * torch.sum(1 + logvar_e - mu_e.pow(2) - logvar_e.exp())
        if lik == "gaussian":
            recon = -Normal(mu_d, model.log_sigma.exp()).log_prob(x).sum()
        elif lik == "laplace":
            recon = -Laplace(mu_d, model.log_sigma.exp()).log_prob(x).sum()
        elif lik == "continuous-bernoulli":
            recon = -ContinuousBernoulli(logits=model.logits).log_prob(x).sum()
        else:
            recon = torch.nn.functional.binary_cross_entropy(mu_d, x, reduction="sum")
        loss = recon + kl
        loss.backward()
        log_sigma = float(model.log_sigma.detach()) if learned else 0.0
        opt.step()
        e = eng["steps"][step]
        ours, theirs = e["loss"] / b, float(loss) / b
        mine.append(theirs)
        rel = abs(ours - theirs) / max(abs(theirs), 1.0)
        if parted is None and rel > args.tolerance:
            parted = step + 1
        lo, _, hi = args.show.partition("-")
        shown = bool(args.show) and int(lo) <= step + 1 <= int(hi or lo)
        if shown:
            print(f"step {step + 1:4d}: recon engine {e['recon'] / b:.5f} torch {float(recon) / b:.5f}  "
                  f"KL engine {e['kl'] / b:.5f} torch {float(kl) / b:.5f}")
        if step < 5 or (step + 1) % 50 == 0 or step + 1 == parted:
            print(f"step {step + 1:4d}: loss/image engine {ours:10.3f} torch {theirs:10.3f} (rel {rel:.1e})  "
                  f"log σ before the step engine {e['log_sigma']:.5f}… torch {log_sigma:.5f}")
    print(f"first step past {args.tolerance:g} relative: {parted}")
    if args.save:
        json.dump(mine, open(args.save, "w"))


if __name__ == "__main__":
    main()
