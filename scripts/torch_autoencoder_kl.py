#!/usr/bin/env python3
"""diffusers' own AutoencoderKL, forward and autograd backward, dumped for the engine's parity test
(tests/torch_parity.rs, `autoencoder_kl_matches_diffusers`):

    python3 scripts/torch_autoencoder_kl.py              # tests/fixtures/torch_autoencoder_kl.safetensors
    python3 scripts/torch_autoencoder_kl.py --attention  # …_attention.safetensors

The model is built by diffusers from the config in the fixture's metadata (`config`): two blocks
(8 and 16 channels, so a Downsample2D, an Upsample2D, a conv_shortcut on each side), one ResNet
per down block, 4 groups, 2 latent channels; without the mid blocks' attention, or with it
(`--attention`: diffusers' default, over the 4x4 positions of the 16-channel mid blocks). Its weights are diffusers'
initialisation with every GroupNorm's γ and β moved off 1 and 0 (so the test sees them), and
`quant_conv`'s bias of logvar channel 1 set to -35, below diffusers' clamp at -30 (so its
gradient is 0 there and the clamp is tested). A batch of 2 RGB 8x8 images in [-1, 1], the noise
eps [2, 2, 4, 4], a learned log σ of 0.3; the objective is the engine's: Σ over values of the
Gaussian's -log N(x; decoder(z), σ²) plus Σ of the posterior's KL (diffusers' `kl()`), summed over
the batch. Dumped (float32): the state_dict under diffusers' names and `log_sigma`; `x`, `eps`;
`mean`, `logvar` (before the clamp), `z`, `output`; `block.{module}`, the output of each of
diffusers' blocks (`encoder.conv_in`, `encoder.down_blocks.{i}`, `encoder.mid_block`,
`encoder.conv_act`, `encoder.conv_out`, `post_quant_conv`, `decoder.conv_in`, `decoder.mid_block`,
`decoder.up_blocks.{i}`, `decoder.conv_act`), by forward hooks; `loss`, `recon`, `kl`;
`grad.{name}` of every parameter. Metadata: the config as diffusers' `config.json` writes it, and the versions.
"""
import argparse
import json
import math

import diffusers
import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 2,
    up_block_types=["UpDecoderBlock2D"] * 2,
    block_out_channels=[8, 16],
    layers_per_block=1,
    latent_channels=2,
    norm_num_groups=4,
    sample_size=8,
    mid_block_add_attention=False,
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--attention", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args()
    out_path = args.out or "tests/fixtures/torch_autoencoder_kl{}.safetensors".format(
        "_attention" if args.attention else "")
    torch.manual_seed(0)
    vae = AutoencoderKL(**dict(CONFIG, mid_block_add_attention=args.attention)).float()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn(p.shape, generator=g))
        vae.quant_conv.bias[CONFIG["latent_channels"] + 1] = -35.0
    blocks = {}
    names = ["encoder.conv_in", "encoder.mid_block", "encoder.conv_act", "encoder.conv_out",
             "post_quant_conv", "decoder.conv_in", "decoder.mid_block", "decoder.conv_act"]
    names += [f"encoder.down_blocks.{i}" for i in range(len(CONFIG["block_out_channels"]))]
    names += [f"decoder.up_blocks.{i}" for i in range(len(CONFIG["block_out_channels"]))]
    modules = dict(vae.named_modules())
    for name in names:
        def keep(_module, _inputs, output, name=name):
            blocks[name] = output.detach().reshape(2, -1).clone()
        modules[name].register_forward_hook(keep)
    log_sigma = torch.tensor(0.3, requires_grad=True)
    x = (torch.rand(2, 3, 8, 8, generator=g) * 2 - 1).float()
    eps = torch.randn(2, 2, 4, 4, generator=g).float()

    posterior = vae.encode(x).latent_dist
    moments = vae.quant_conv(vae.encoder(x))
    mean, logvar = torch.chunk(moments, 2, dim=1)
    z = posterior.mean + posterior.std * eps
    out = vae.decode(z).sample
    r = (x - out) * torch.exp(-log_sigma)
    recon = (0.5 * r * r + log_sigma + 0.5 * math.log(2 * math.pi)).sum()
    kl = posterior.kl().sum()
    loss = recon + kl
    loss.backward()

    dump = {name: p.detach().clone() for name, p in vae.state_dict().items()}
    dump["log_sigma"] = log_sigma.detach().clone()
    for name, p in vae.named_parameters():
        dump[f"grad.{name}"] = p.grad.detach().clone()
    dump["grad.log_sigma"] = log_sigma.grad.detach().clone()
    dump.update(
        {
            "x": x.reshape(2, -1),
            "eps": eps.reshape(2, -1),
            "mean": mean.detach().reshape(2, -1),
            "logvar": logvar.detach().reshape(2, -1),
            "z": z.detach().reshape(2, -1),
            "output": out.detach().reshape(2, -1),
            "loss": loss.detach().reshape(1),
            "recon": recon.detach().reshape(1),
            "kl": kl.detach().reshape(1),
        }
    )
    dump.update({f"block.{name}": v for name, v in blocks.items()})
    config = dict(vae.config)
    config["_class_name"] = "AutoencoderKL"
    meta = {
        "config": json.dumps({k: v for k, v in config.items() if not k.startswith("_use")}),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
    }
    save_file({k: v.float().contiguous() for k, v in dump.items()}, out_path, metadata=meta)
    print(f"wrote {out_path}: loss {loss.item():.4f} (recon {recon.item():.4f}, kl {kl.item():.4f})")


if __name__ == "__main__":
    main()
