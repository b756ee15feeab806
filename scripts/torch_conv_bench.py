#!/usr/bin/env python3
"""PyTorch's CPU convolutions at the shapes of a vae-wgpu conv model, the peer of the GPU report's
conv table: for each layer (Conv2d or ConvTranspose2d, kernel 4, stride 2, padding 1) the forward,
and the backward (input and weight gradients, the bias gradient with them), each the best of a few
timed runs. Prints one line of JSON: {"torch": version, "threads": n, "layers": [...]}, each layer
with its shapes, multiply-adds per pass and seconds for "forward" and "backward".

    python3 scripts/torch_conv_bench.py --batch 128 --image 1,28,28 --conv 32,64
"""
import argparse
import json
import os
import time

import torch
import torch.nn as nn


def best_of(fn, runs):
    fn()  # warm-up (allocations, oneDNN primitive creation)
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--image", default="1,28,28")
    ap.add_argument("--conv", default="32,64")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    c, h, w = (int(v) for v in args.image.split(","))
    widths = [int(v) for v in args.conv.split(",")]
    layers = []
    # The encoder's Conv2d layers, then the decoder's ConvTranspose2d layers in the order they run.
    shape = (c, h, w)
    for out in widths:
        layers.append(("Conv2d", nn.Conv2d(shape[0], out, 4, 2, 1), shape))
        shape = (out, shape[1] // 2, shape[2] // 2)
    for out in list(reversed(widths))[1:] + [c]:
        layers.append(("ConvTranspose2d", nn.ConvTranspose2d(shape[0], out, 4, 2, 1), shape))
        shape = (out, shape[1] * 2, shape[2] * 2)
    rows = []
    for kind, layer, inp in layers:
        x = torch.randn(args.batch, *inp, requires_grad=True)
        y = layer(x)
        g = torch.randn_like(y)
        lo = y.shape[2] * y.shape[3] if kind == "Conv2d" else inp[1] * inp[2]
        macs = layer.weight.numel() * args.batch * lo

        def forward():
            with torch.no_grad():
                layer(x)

        def backward():
            layer.zero_grad(set_to_none=True)
            x.grad = None
            layer(x).backward(g)

        fwd = best_of(forward, args.runs)
        # The backward includes a forward (autograd needs its graph): subtract it.
        bwd = max(best_of(backward, args.runs) - fwd, 1e-9)
        rows.append(dict(kind=kind, input=list(inp), output=list(y.shape[1:]), batch=args.batch, macs=macs,
                         forward=fwd, backward=bwd))
    print(json.dumps(dict(torch=torch.__version__, threads=args.threads, layers=rows)))


if __name__ == "__main__":
    main()
