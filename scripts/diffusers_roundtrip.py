#!/usr/bin/env python3
"""The engine's AutoencoderKL folder against diffusers itself (needs `pip install torch diffusers
safetensors pillow`): loads RUN (a run folder of `vae-wgpu train --arch autoencoder-kl`, or any
diffusers AutoencoderKL folder) with `AutoencoderKL.from_pretrained` and reports missing or
unexpected keys, then encodes the images of IMAGES with diffusers and compares the means with
LATENTS (`vae-wgpu encode --model RUN --input IMAGES --out LATENTS`), and decodes them and compares
the pixels with DECODED (`vae-wgpu decode --model RUN --latents LATENTS --out DECODED`):

    python3 scripts/diffusers_roundtrip.py RUN IMAGES LATENTS DECODED

Exits 1 when a key is missing or unexpected, or a difference is past its bound (latents: 1e-4 of
their largest magnitude; pixels: 1 level of 255). And a folder for the engine to start from, made by
diffusers itself (`AutoencoderKL(...).save_pretrained`, random weights of seed 0):

    python3 scripts/diffusers_roundtrip.py --make DIR --in-channels 1 --blocks 8,16 --groups 4 \
        --latent 2 --size 28

`tests/conv_cli.rs` (`diffusers_loads_the_folders_the_engine_trains`) runs both where torch and
diffusers import.
"""
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image
from safetensors.torch import load_file


def make(argv):
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--make", required=True)
    ap.add_argument("--in-channels", type=int, default=3)
    ap.add_argument("--blocks", default="8,16")
    ap.add_argument("--layers-per-block", type=int, default=1)
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--latent", type=int, default=2)
    ap.add_argument("--size", type=int, default=32)
    a = ap.parse_args(argv)
    blocks = [int(b) for b in a.blocks.split(",")]
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=a.in_channels, out_channels=a.in_channels,
                        down_block_types=["DownEncoderBlock2D"] * len(blocks),
                        up_block_types=["UpDecoderBlock2D"] * len(blocks), block_out_channels=blocks,
                        layers_per_block=a.layers_per_block, latent_channels=a.latent,
                        norm_num_groups=a.groups, sample_size=a.size)
    vae.save_pretrained(a.make)
    print(f"wrote {a.make}")


def main():
    if "--make" in sys.argv:
        return make(sys.argv[1:])
    run, images, latents, decoded = (Path(a) for a in sys.argv[1:5])
    vae, info = AutoencoderKL.from_pretrained(run, output_loading_info=True)
    vae.eval()
    bad = {k: v for k, v in info.items() if v}
    print("from_pretrained:", bad or "no missing, unexpected or mismatched keys")
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    mode = "L" if vae.config.in_channels == 1 else "RGB"
    x = torch.stack([torch.from_numpy(np.array(Image.open(f).convert(mode))).float() / 255
                     for f in files])
    x = x[:, None] if mode == "L" else x.permute(0, 3, 1, 2)
    x = (x - 0.5) / 0.5
    ours = load_file(latents)["latents"]
    with torch.no_grad():
        mean = vae.encode(x).latent_dist.mean
        out = vae.decode(mean).sample
    lat_err = (ours - mean).abs().max().item()
    lat_bound = 1e-4 * mean.abs().max().item()
    print(f"encode: max |ours - diffusers| {lat_err:.3e} (bound {lat_bound:.3e})")
    theirs = ((out * 0.5 + 0.5).clamp(0, 1) * 255).round()
    px = []
    for f, t in zip(files, theirs):
        o = torch.from_numpy(np.array(Image.open(decoded / (f.stem + ".png")).convert(mode))).float()
        o = o[None] if mode == "L" else o.permute(2, 0, 1)
        px.append((o - t).abs().max().item())
    print(f"decode: max pixel difference {max(px):.0f} of 255")
    sys.exit(1 if bad or lat_err > lat_bound or max(px) > 1 else 0)


if __name__ == "__main__":
    main()
