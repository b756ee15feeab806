#!/usr/bin/env python3
"""Train the engine's Bernoulli VAE in PyTorch on the CPU, as the peer of `vae-wgpu train`.

The same model (any depth and activation, built by torch_reference.BernoulliVAE), loss (summed
-log p(x|z) of the likelihood + analytic KL weighted by β and the warm-up), Adam settings, batch size
and epochs, with the data preloaded as one float tensor
(PyTorch's fastest CPU path: no DataLoader workers). Prints each epoch's average training loss, test
loss (one noise draw) and wall time, and a last line of JSON. Used for two things: PyTorch's own
losses for an architecture next to ours, and the CPU epoch time that issue 14 compares ours with.

    pip install torch numpy safetensors
    python3 scripts/torch_train.py --epochs 5                                # the notebook's model
    python3 scripts/torch_train.py --hidden 400,200 --activation tanh --epochs 5
    python3 scripts/torch_train.py --conv 32,64 --latent 16 --lr 0.001 --epochs 5    # the conv model
    python3 scripts/torch_train.py --likelihood gaussian --beta 4 --kl-warmup 2
    python3 scripts/torch_train.py --conditional                              # one-hot labels in
    python3 scripts/torch_train.py --optimizer adamw --weight-decay 0.05      # torch.optim.AdamW
    python3 scripts/torch_train.py --optimizer sgd --lr 0.00003 --momentum 0.9
    python3 scripts/torch_train.py --lr-schedule cosine --warmup-steps 200    # LambdaLR, as the engine's

The likelihoods are torch.distributions' (ContinuousBernoulli from the logits; Normal(sigmoid, σ) or
Laplace(sigmoid, b) with a learned 0-d log_sigma, log σ or log b, unless --sigma); the KL weight at step t is β·min(1, (t−1)/(E·steps per
epoch)), as src/model/schedule.rs. Printed: the -ELBO (recon + KL) and, when weighted, the objective.
"""
import argparse
import json
import math
import os
import sys
import time

import torch
from torch.distributions import ContinuousBernoulli, Laplace, Normal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_reference import BernoulliVAE, loss_fn, read_images, read_labels, widths  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="data/mnist")
    ap.add_argument("--hidden", default=None, help="dense widths [default: 200, none with --conv]")
    ap.add_argument("--decoder-hidden", default=None)
    ap.add_argument("--latent", type=int, default=10)
    ap.add_argument("--activation", default="relu")
    ap.add_argument("--conv", default="", help="conv channel counts, e.g. 32,64 (--hidden then defaults to none)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd"])
    ap.add_argument("--weight-decay", type=float, default=None, help="[default: 0; adamw 0.01]")
    ap.add_argument("--momentum", type=float, default=0.0)
    ap.add_argument("--nesterov", action="store_true")
    ap.add_argument("--lr-schedule", default="constant", choices=["constant", "cosine"])
    ap.add_argument("--warmup-steps", type=int, default=0)
    ap.add_argument("--clip-grad-norm", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--likelihood", default="bernoulli", choices=["bernoulli", "continuous-bernoulli", "gaussian", "laplace"])
    ap.add_argument("--sigma", type=float, default=None, help="a Gaussian's fixed σ, a Laplace's fixed b [default: learned]")
    ap.add_argument("--beta", type=float, default=1.0)
    ap.add_argument("--kl-warmup", type=float, default=0.0, help="epochs over which the KL weight rises to β")
    ap.add_argument("--objective", default="elbo", choices=["elbo", "iwae"])
    ap.add_argument("--samples", type=int, default=1, help="k, the IWAE objective's samples per image")
    ap.add_argument("--conditional", action="store_true", help="condition on MNIST's labels (one-hot, 10 classes)")
    ap.add_argument("--init", default=None,
                    help="start from these weights (a safetensors state_dict, e.g. examples/trajectory.rs's "
                         "init.safetensors) instead of PyTorch's own initialisation")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    conv = widths(args.conv)
    hidden = widths(args.hidden) if args.hidden else ([] if conv else [200])
    dec = widths(args.decoder_hidden) if args.decoder_hidden else list(reversed(hidden))
    train = read_images(f"{args.data_dir}/train-images-idx3-ubyte.gz")
    test = read_images(f"{args.data_dir}/t10k-images-idx3-ubyte.gz")
    classes = 10 if args.conditional else 0
    train_y = read_labels(f"{args.data_dir}/train-labels-idx1-ubyte.gz") if classes else None
    test_y = read_labels(f"{args.data_dir}/t10k-labels-idx1-ubyte.gz") if classes else None
    learned = args.likelihood in ("gaussian", "laplace") and args.sigma is None
    model = BernoulliVAE(784, hidden, args.latent, dec, args.activation, conv, learned_sigma=learned,
                         classes=classes)
    if args.init:
        from safetensors.torch import load_file
        model.load_state_dict(load_file(args.init), strict=True)
    from torch_optimizers import lr_factor, make_optimizer  # noqa: E402
    case = dict(optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay, momentum=args.momentum,
                nesterov=args.nesterov, lr_schedule=args.lr_schedule, warmup_steps=args.warmup_steps,
                total_steps=args.epochs * -(-len(train) // args.batch_size))
    opt = make_optimizer(case, model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(case))

    def recon_rows(x, mu_d):
        """-log p(x | z) per row."""
        if args.likelihood == "bernoulli":
            return torch.nn.functional.binary_cross_entropy(mu_d, x, reduction="none").sum(1)
        if args.likelihood == "continuous-bernoulli":
            return -ContinuousBernoulli(logits=model.logits).log_prob(x).sum(1)
        sigma = model.log_sigma.exp() if learned else args.sigma
        if args.likelihood == "laplace":
            return -Laplace(mu_d, sigma).log_prob(x).sum(1)
        return -Normal(mu_d, sigma).log_prob(x).sum(1)

    def losses(x, mu_d, mu_e, logvar_e):
        """(-ELBO, recon, KL) of a batch, summed."""
        if args.likelihood == "bernoulli":
            return loss_fn(mu_d, x, mu_e, logvar_e)
        kl = -0.5 * torch.sum(1 + logvar_e - mu_e.pow(2) - logvar_e.exp())
        recon = recon_rows(x, mu_d).sum()
        return recon + kl, recon, kl

    def iwae_step(x, y):
        """(the IWAE bound summed over the batch, its -ELBO with k samples) for k = --samples."""
        k, b = args.samples, len(x)
        mu_e, logvar_e = model.enc_mu_logvar(x, y)
        eps = torch.randn(k, b, args.latent)
        z = mu_e + torch.exp(0.5 * logvar_e) * eps
        xs = x.repeat(k, 1)
        mu_d = model.decode(z.reshape(k * b, -1), y)
        rows = recon_rows(xs, mu_d).reshape(k, b)
        log_w = -rows + 0.5 * (eps.pow(2) - z.pow(2) + logvar_e).sum(2)
        bound = -(torch.logsumexp(log_w, 0) - math.log(k)).sum()
        kl = -0.5 * torch.sum(1 + logvar_e - mu_e.pow(2) - logvar_e.exp())
        return bound, rows.sum() / k + kl

    steps_per_epoch = -(-len(train) // args.batch_size)
    warmup_steps = args.kl_warmup * steps_per_epoch
    weighted = args.beta != 1.0 or args.kl_warmup > 0 or args.objective == "iwae"
    epochs, step = [], 0
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        total = objective = 0.0
        for idx in torch.randperm(len(train)).split(args.batch_size):
            x = train[idx]
            y = train_y[idx] if classes else None
            opt.zero_grad()
            step += 1
            if args.objective == "iwae":
                obj, loss = iwae_step(x, y)
            else:
                mu_d, mu_e, logvar_e = model(x, torch.randn(len(x), args.latent), y=y)
                loss, recon, kl = losses(x, mu_d, mu_e, logvar_e)
                w = args.beta * (min(1.0, (step - 1) / warmup_steps) if warmup_steps > 0 else 1.0)
                obj = recon + w * kl if weighted else loss
            obj.backward()
            if args.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad_norm)
            opt.step()
            sched.step()
            total += loss.item()
            objective += obj.item()
        seconds = time.perf_counter() - start
        with torch.no_grad():
            t = 0.0
            for i, x in enumerate(test.split(1000)):
                y = test_y[i * 1000:(i + 1) * 1000] if classes else None
                mu_d, mu_e, logvar_e = model(x, torch.randn(len(x), args.latent), y=y)
                t += losses(x, mu_d, mu_e, logvar_e)[0].item()
        epochs.append(dict(epoch=epoch, train_loss=total / len(train), train_objective=objective / len(train),
                           test_loss=t / len(test), seconds=seconds))
        obj_txt = f"  objective: {objective / len(train):.2f}" if weighted else ""
        print(f"====> Epoch {epoch}  Average loss: {total / len(train):.2f}{obj_txt}  test loss: {t / len(test):.2f}  "
              f"time: {seconds:.1f} s", flush=True)
    print(json.dumps(dict(torch=torch.__version__, threads=args.threads, conv=conv, hidden=hidden, decoder_hidden=dec,
                          activation=args.activation, latent=args.latent, likelihood=args.likelihood,
                          sigma=args.sigma, beta=args.beta, kl_warmup=args.kl_warmup, classes=classes,
                          epochs=epochs)))


if __name__ == "__main__":
    main()
