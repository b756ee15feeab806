#!/usr/bin/env python3
"""Train the engine's Bernoulli VAE in PyTorch on the CPU, as the peer of `vae-wgpu train`.

The same model (any depth and activation, built by torch_reference.BernoulliVAE), loss (summed BCE
+ analytic KL), Adam settings, batch size and epochs, with the data preloaded as one float tensor
(PyTorch's fastest CPU path: no DataLoader workers). Prints each epoch's average training loss, test
loss (one noise draw) and wall time, and a last line of JSON. Used for two things: PyTorch's own
losses for an architecture next to ours, and the CPU epoch time that issue 14 compares ours with.

    pip install torch numpy safetensors
    python3 scripts/torch_train.py --epochs 5                                # the notebook's model
    python3 scripts/torch_train.py --hidden 400,200 --activation tanh --epochs 5
    python3 scripts/torch_train.py --conv 32,64 --latent 16 --lr 0.001 --epochs 5    # the conv model
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_reference import BernoulliVAE, loss_fn, read_images, widths  # noqa: E402


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
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    conv = widths(args.conv)
    hidden = widths(args.hidden) if args.hidden else ([] if conv else [200])
    dec = widths(args.decoder_hidden) if args.decoder_hidden else list(reversed(hidden))
    train = read_images(f"{args.data_dir}/train-images-idx3-ubyte.gz")
    test = read_images(f"{args.data_dir}/t10k-images-idx3-ubyte.gz")
    model = BernoulliVAE(784, hidden, args.latent, dec, args.activation, conv)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    epochs = []
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        total = 0.0
        for idx in torch.randperm(len(train)).split(args.batch_size):
            x = train[idx]
            opt.zero_grad()
            mu_d, mu_e, logvar_e = model(x, torch.randn(len(x), args.latent))
            loss, _, _ = loss_fn(mu_d, x, mu_e, logvar_e)
            loss.backward()
            opt.step()
            total += loss.item()
        seconds = time.perf_counter() - start
        with torch.no_grad():
            t = 0.0
            for x in test.split(1000):
                mu_d, mu_e, logvar_e = model(x, torch.randn(len(x), args.latent))
                t += loss_fn(mu_d, x, mu_e, logvar_e)[0].item()
        epochs.append(dict(epoch=epoch, train_loss=total / len(train), test_loss=t / len(test), seconds=seconds))
        print(f"====> Epoch {epoch}  Average loss: {total / len(train):.2f}  test loss: {t / len(test):.2f}  "
              f"time: {seconds:.1f} s", flush=True)
    print(json.dumps(dict(torch=torch.__version__, threads=args.threads, conv=conv, hidden=hidden, decoder_hidden=dec,
                          activation=args.activation, latent=args.latent, epochs=epochs)))


if __name__ == "__main__":
    main()
