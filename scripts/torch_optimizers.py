#!/usr/bin/env python3
"""PyTorch's optimizers on the engine's VAE, for tests/torch_parity.rs `optimizers_match_pytorch`.

One small model (784 -> 32 -> 4, ReLU; the notebook's names), the first 16 MNIST training images
and fixed noise; from the same initial weights, 3 steps of each case below with torch.optim's own
optimizer, `torch.optim.lr_scheduler.LambdaLR` for a schedule (the factor of
src/kernels/step.rs `LrSchedule::factor`: (s+1)/N over an N-step warm-up, then constant or half a
cosine from 1 to 0 at the run's last step) and `torch.nn.utils.clip_grad_norm_` for clipping.
Writes one safetensors file with
  - the initial parameters under their state_dict names and the architecture metadata,
  - `x` [16, 784], `eps.1`..`eps.3` [16, 4],
  - per case C: `C.losses` (the 3 losses), `C.after3.<name>` (the weights after 3 steps) and
    `C.state.<exp_avg|exp_avg_sq|momentum_buffer>.<name>` (the optimizer's state),
  - metadata `cases`: a JSON list of each case's settings, as the engine's flags name them.

    python3 scripts/torch_optimizers.py          # tests/fixtures/torch_optimizers.safetensors
"""
import argparse
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_reference import BernoulliVAE, architecture_metadata, loss_fn, read_images  # noqa: E402

CASES = [
    dict(name="adamw", optimizer="adamw", lr=0.01, weight_decay=0.05),
    dict(name="sgd_momentum", optimizer="sgd", lr=3e-4, momentum=0.9),
    dict(name="sgd_nesterov_l2", optimizer="sgd", lr=3e-4, momentum=0.9, nesterov=True, weight_decay=0.1),
    dict(name="adam_cosine_warmup", optimizer="adam", lr=0.01, lr_schedule="cosine", warmup_steps=2,
         total_steps=4),
    dict(name="sgd_clipped", optimizer="sgd", lr=0.01, momentum=0.5, clip_grad_norm=2.0),
    dict(name="adamw_clipped_warmup", optimizer="adamw", lr=0.01, weight_decay=0.01, warmup_steps=3,
         total_steps=3, clip_grad_norm=50.0),
]


def lr_factor(case):
    """LrSchedule::factor, as LambdaLR's lambda of the number of steps taken s."""
    n = case.get("warmup_steps", 0)
    total = case.get("total_steps", 0)
    cosine = case.get("lr_schedule", "constant") == "cosine"

    def f(s):
        if s + 1 < n:
            return (s + 1) / n
        if not cosine:
            return 1.0
        peak = max(n, 1) - 1
        span = max(total - 1 - peak, 0)
        if span == 0:
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min((s - peak) / span, 1.0)))
    return f


def make_optimizer(case, params):
    kind, lr, wd = case["optimizer"], case["lr"], case.get("weight_decay")
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd or 0.0)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.01 if wd is None else wd)
    return torch.optim.SGD(params, lr=lr, momentum=case.get("momentum", 0.0), dampening=0,
                           nesterov=case.get("nesterov", False), weight_decay=wd or 0.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="data/mnist")
    ap.add_argument("--out", default="tests/fixtures/torch_optimizers.safetensors")
    args = ap.parse_args()
    hidden, latent = [32], 4
    arch = dict(input=784, hidden=hidden, decoder_hidden=hidden, latent=latent, activation="relu",
                conv=[], image=(1, 28, 28), classes=0)
    torch.manual_seed(0)
    model = BernoulliVAE(784, hidden, latent, hidden, "relu")
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    x = read_images(f"{args.data_dir}/train-images-idx3-ubyte.gz", 16)
    eps = [torch.randn(16, latent) for _ in range(3)]
    out = {k: v.contiguous() for k, v in init.items()}
    out["x"] = x.clone()
    for i, e in enumerate(eps, 1):
        out[f"eps.{i}"] = e.clone()
    for case in CASES:
        model.load_state_dict(init)
        opt = make_optimizer(case, model.parameters())
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(case))
        losses = []
        for step in range(3):
            opt.zero_grad()
            mu_d, mu_e, logvar_e = model(x, eps[step])
            loss, _, _ = loss_fn(mu_d, x, mu_e, logvar_e)
            loss.backward()
            if case.get("clip_grad_norm"):
                torch.nn.utils.clip_grad_norm_(model.parameters(), case["clip_grad_norm"])
            losses.append(loss.item())
            opt.step()
            sched.step()
        c = case["name"]
        out[f"{c}.losses"] = torch.tensor(losses, dtype=torch.float32)
        for name, p in model.named_parameters():
            out[f"{c}.after3.{name}"] = p.detach().clone().contiguous()
            for key, v in opt.state[p].items():
                if key != "step":
                    out[f"{c}.state.{key}.{name}"] = v.detach().clone().contiguous()
        print(f"{c}: losses {losses}")
    meta = architecture_metadata(model, arch)
    meta.update(torch=torch.__version__, cases=json.dumps(CASES))
    save_file(out, args.out, metadata=meta)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
