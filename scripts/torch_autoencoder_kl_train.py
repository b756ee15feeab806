#!/usr/bin/env python3
"""diffusers' own AutoencoderKL trained by the engine's loss on an image folder, for the side by
side in docs/MODELS.md ("AutoencoderKL"): the module `AutoencoderKL(block_out_channels=BLOCKS,
layers_per_block=1, latent_channels=4, norm_num_groups=8)` with diffusers' initialisation, pixels
in [-1, 1], the -ELBO of `vae-wgpu train --arch autoencoder-kl` (Σ over values of
-log N(x; decoder(z), σ²) with one learned log σ starting at 0, plus the posterior's KL, z sampled
once per image), Adam, batches reshuffled each epoch. Prints per epoch the mean train -ELBO per
image (over the epoch's steps, as the engine's epoch line), the test -ELBO per image and the
seconds per step; the last line is JSON.

    python3 scripts/torch_autoencoder_kl_train.py --data-dir DIR --epochs 10 --batch-size 32 --lr 0.001

DIR holds train/ and test/ folders of class folders of pictures (`examples/shapes.rs` writes one).
Or, for the speed report (`examples/gpu_report.rs`), only the step's time on random images in
[-1, 1] of `--image C,H,W` (the first step is a warm-up; the best of the next N is printed, JSON):

    python3 scripts/torch_autoencoder_kl_train.py --bench-steps 5 --image 1,28,28 --batch-size 32
"""
import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image


def read_folder(root):
    files = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    x = np.stack([np.array(Image.open(f).convert("RGB")) for f in files])
    return (torch.from_numpy(x).float().permute(0, 3, 1, 2) / 255 - 0.5) / 0.5


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir")
    ap.add_argument("--bench-steps", type=int, default=0)
    ap.add_argument("--image", default="1,28,28", help="C,H,W of --bench-steps' random images")
    ap.add_argument("--blocks", default="32,64")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.bench_steps:
        c, h, w = (int(v) for v in args.image.split(","))
        train = torch.rand(args.batch_size, c, h, w) * 2 - 1
        test = train
    else:
        train = read_folder(Path(args.data_dir) / "train")
        test = read_folder(Path(args.data_dir) / "test")
    blocks = [int(b) for b in args.blocks.split(",")]
    channels = train.shape[1]
    vae = AutoencoderKL(in_channels=channels, out_channels=channels, down_block_types=["DownEncoderBlock2D"] * len(blocks),
                        up_block_types=["UpDecoderBlock2D"] * len(blocks), block_out_channels=blocks,
                        layers_per_block=1, latent_channels=4, norm_num_groups=8,
                        sample_size=train.shape[-1])
    log_sigma = torch.nn.Parameter(torch.zeros(()))
    opt = torch.optim.Adam(list(vae.parameters()) + [log_sigma], lr=args.lr)
    half_log_2pi = 0.5 * math.log(2 * math.pi)

    def neg_elbo(x):
        post = vae.encode(x).latent_dist
        out = vae.decode(post.sample()).sample
        r = (x - out) / log_sigma.exp()
        recon = (0.5 * r * r + log_sigma + half_log_2pi).sum()
        return recon + post.kl().sum()

    if args.bench_steps:
        times = []
        for _ in range(args.bench_steps + 1):
            t0 = time.time()
            opt.zero_grad()
            neg_elbo(train).backward()
            opt.step()
            times.append(time.time() - t0)
        print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                          "step_s": min(times[1:]), "steps": times[1:]}))
        return
    g = torch.Generator().manual_seed(args.seed)
    epochs = []
    for epoch in range(1, args.epochs + 1):
        vae.train()
        perm = torch.randperm(len(train), generator=g)
        total, steps, t0 = 0.0, 0, time.time()
        for i in range(0, len(train), args.batch_size):
            x = train[perm[i:i + args.batch_size]]
            opt.zero_grad()
            loss = neg_elbo(x)
            loss.backward()
            opt.step()
            total += loss.item()
            steps += 1
        step_s = (time.time() - t0) / steps
        vae.eval()
        with torch.no_grad():
            test_loss = sum(neg_elbo(test[i:i + 100]).item() for i in range(0, len(test), 100))
        e = {"epoch": epoch, "train_loss": total / len(train), "test_loss": test_loss / len(test),
             "step_s": step_s, "sigma": log_sigma.exp().item()}
        epochs.append(e)
        print(f"epoch {epoch}: train {e['train_loss']:.2f} test {e['test_loss']:.2f} "
              f"σ {e['sigma']:.4f} ({step_s:.3f} s a step)", flush=True)
    print(json.dumps({"torch": torch.__version__, "epochs": epochs}))


if __name__ == "__main__":
    main()
