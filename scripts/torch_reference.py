#!/usr/bin/env python3
"""PyTorch references of the engine's Bernoulli VAE, for tests/torch_parity.rs, and a strict
round trip of checkpoints in both directions.

The module is built from an architecture: the notebook's (784 -> 200 -> 10, ReLU, sigmoid output,
summed `binary_cross_entropy` + analytic KL, Adam lr 0.01) keeps the notebook's attribute names
(`linear_enc`, `enc_mu`, `enc_logvar`, `linear_dec`, `dec_mu`); any other depth is

    encoder    = nn.Sequential(Linear(D, h0), Act, Linear(h0, h1), Act, ...)   # encoder.0, .2, ...
    enc_mu     = Linear(h_last, K);   enc_logvar = Linear(h_last, K)
    decoder    = nn.Sequential(Linear(K, g0), Act, Linear(g0, g1), Act, ...)   # decoder.0, .2, ...
    dec_mu     = Linear(g_last, D)

with Act = ReLU or Tanh; with conv layers (`--conv 32,64`, each Conv2d(4, 2, 1) halving the sides)

    encoder    = nn.Sequential(Conv2d(C, c0, 4, 2, 1), Act, Conv2d(c0, c1, 4, 2, 1), Act, ...,
                               Flatten(), Linear(F, h0), Act, ...)  # encoder.0, .2, ..., Flatten at 2n
    enc_mu     = Linear(F or h_last, K);   enc_logvar = Linear(F or h_last, K)
    decoder    = nn.Sequential(Linear(K, g0), Act, ..., Linear(g_last or K, F), Act,
                               Unflatten(1, (c_last, S/2^n, S/2^n)),
                               ConvTranspose2d(c_last, c_{n-2}, 4, 2, 1), Act, ...,
                               ConvTranspose2d(c0, C, 4, 2, 1))    # the logits; no dec_mu

(F = c_last·(S/2^n)², images NCHW): the layout vae-wgpu writes (src/model/params.rs), so
`load_state_dict(strict=True)` works both ways. A class-conditional model (`--classes C`, vae-wgpu's
`--conditional`) concatenates the one-hot label to the input of the encoder's first Linear and of
the decoder's first Linear, so those weights are [h0, D + C] and [g0, K + C].

Fixture mode (default): seeds the module, takes the first 16 MNIST training images and fixed
noise, and writes one safetensors file with
  - the initial parameters under their state_dict names, and metadata giving the architecture
    (`hidden`, `decoder_hidden`, `activation`, `latent`, `input`) and `state_dict_keys` in order,
  - `x` [16, 784] and `eps.1`, `eps.2`, `eps.3` [16, K] (the noise of steps 1-3),
  - the step-1 intermediates `h_enc` / `h_enc.<i>`, `mu_e`, `logvar_e`, `z`, `h_dec` / `h_dec.<i>`,
    `logits`, `mu_d`, the scalars `loss`, `bce`, `kl`, the gradients `grad.<name>` and `grad.logits`,
  - the parameters after 3 Adam steps, `after3.<name>`, and the losses of steps 1-3 `losses`.

Check mode (`--check FILE`): builds the module from FILE's metadata (a model.safetensors or
checkpoint.safetensors from vae-wgpu), loads it with strict=True, evaluates the loss of the first
100 test images with mu as z, saves the state_dict back (`--save-back OUT`) for vae-wgpu to read.

Usage (needs `pip install torch safetensors numpy`):
    python3 scripts/torch_reference.py                       # tests/fixtures/torch_reference.safetensors
    python3 scripts/torch_reference.py --hidden 32,16 --latent 6 --activation tanh \
        --out tests/fixtures/torch_reference_deep_tanh.safetensors
    python3 scripts/torch_reference.py --hidden 32 --latent 6 --res-blocks 32,16 \
        --out tests/fixtures/torch_reference_residual.safetensors    # residual blocks (src/model/body.rs)
    python3 scripts/torch_reference.py --conv 4,8 --latent 6 --res-blocks 8,6 \
        --out tests/fixtures/torch_reference_conv_residual.safetensors  # conv residual blocks
    python3 scripts/torch_reference.py --check runs/X/model.safetensors --save-back /tmp/back.safetensors
"""
import argparse
import gzip
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file


ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh}


class ResBlock(nn.Module):
    """vae-wgpu's residual block (`--res-blocks`, src/model/body.rs): act(s + fc2(act(fc1(x)))),
    s = x, or shortcut(x) when the widths differ. `keep` collects its tensors in the engine's
    order: fc1's output, fc2's, the shortcut's, the sum."""

    def __init__(self, inp, out, activation):
        super().__init__()
        self.act = ACTS[activation]()
        self.fc1 = nn.Linear(inp, out)
        self.fc2 = nn.Linear(out, out)
        if inp != out:
            self.shortcut = nn.Linear(inp, out)

    def forward(self, x, keep=None):
        h = self.act(self.fc1(x))
        r = self.fc2(h)
        s = self.shortcut(x) if hasattr(self, "shortcut") else x
        y = self.act(s + r)
        if keep is not None:
            keep += [h, r] + ([s] if hasattr(self, "shortcut") else []) + [y]
        return y


class ConvResBlock(nn.Module):
    """vae-wgpu's conv residual block (`--conv … --res-blocks`, src/model/params.rs), diffusers'
    ResnetBlock2D without its norms: act(s + conv2(act(conv1(x)))), 3x3 convolutions at stride 1,
    s = x, or the 1x1 conv_shortcut(x) when the channels differ. `keep` collects its tensors
    flattened, in the engine's order: conv1's output, conv2's, the shortcut's, the sum."""

    def __init__(self, inp, out, activation):
        super().__init__()
        self.act = ACTS[activation]()
        self.conv1 = nn.Conv2d(inp, out, 3, 1, 1)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1)
        if inp != out:
            self.conv_shortcut = nn.Conv2d(inp, out, 1, 1, 0)

    def forward(self, x, keep=None):
        h = self.act(self.conv1(x))
        r = self.conv2(h)
        s = self.conv_shortcut(x) if hasattr(self, "conv_shortcut") else x
        y = self.act(s + r)
        if keep is not None:
            keep += [t.flatten(1) for t in [h, r] + ([s] if hasattr(self, "conv_shortcut") else []) + [y]]
        return y


class BernoulliVAE(nn.Module):
    def __init__(self, input_dim=784, hidden=(200,), latent_dim=10, decoder_hidden=None, activation="relu",
                 conv=None, image=(1, 28, 28), learned_sigma=False, classes=0, res_blocks=()):
        super().__init__()
        # A conditional model's one-hot label joins the first layer's input on each side.
        self.classes = classes
        self.res_blocks = list(res_blocks)
        self.build(input_dim, hidden, latent_dim, decoder_hidden, activation, conv, image)
        # A Gaussian decoder's learned log σ (`--likelihood gaussian` without --sigma): a 0-d
        # parameter after every layer's, 0 at initialisation.
        if learned_sigma:
            self.log_sigma = nn.Parameter(torch.zeros(()))

    def build(self, input_dim, hidden, latent_dim, decoder_hidden, activation, conv, image):
        hidden = list(hidden)
        decoder_hidden = list(reversed(hidden)) if decoder_hidden is None else list(decoder_hidden)
        self.act = ACTS[activation]()
        self.conv = list(conv or [])
        self.image = tuple(image)
        if self.conv:
            self.notebook = False
            self.build_conv(hidden, latent_dim, decoder_hidden, activation)
            return
        self.notebook = len(hidden) == 1 and len(decoder_hidden) == 1
        c = self.classes
        if self.notebook:
            self.linear_enc = nn.Linear(input_dim + c, hidden[0])
        else:
            self.encoder = self.sequential(input_dim + c, hidden, activation)
        width = hidden[-1]
        if self.res_blocks:
            self.enc_blocks, width = self.blocks(width, self.res_blocks, activation)
        self.enc_mu = nn.Linear(width, latent_dim)
        self.enc_logvar = nn.Linear(width, latent_dim)
        if self.notebook:
            self.linear_dec = nn.Linear(latent_dim + c, decoder_hidden[0])
        else:
            self.decoder = self.sequential(latent_dim + c, decoder_hidden, activation)
        width = decoder_hidden[-1]
        if self.res_blocks:
            self.dec_blocks, width = self.blocks(width, list(reversed(self.res_blocks)), activation)
        self.dec_mu = nn.Linear(width, input_dim)

    @staticmethod
    def blocks(inp, widths, activation, block=ResBlock):
        blocks = []
        for w in widths:
            blocks.append(block(inp, w, activation))
            inp = w
        return nn.ModuleList(blocks), inp

    def build_conv(self, hidden, latent_dim, decoder_hidden, activation):
        act = ACTS[activation]
        c, n = self.image[0], len(self.conv)
        rows, cols = self.image[1] >> n, self.image[2] >> n
        layers = []
        for w in self.conv:
            layers += [nn.Conv2d(c, w, 4, 2, 1), act()]
            c = w
        features = c * rows * cols
        # Residual blocks run on the last convolution's output, before the Flatten (encoder) and
        # after the Unflatten (decoder); registered after each side's Sequential.
        c_enc = self.res_blocks[-1] if self.res_blocks else c
        layers.append(nn.Flatten())
        inp = c_enc * rows * cols
        for w in hidden:
            layers += [nn.Linear(inp, w), act()]
            inp = w
        self.encoder = nn.Sequential(*layers)
        if self.res_blocks:
            self.enc_blocks, _ = self.blocks(c, self.res_blocks, activation, ConvResBlock)
        self.enc_mu = nn.Linear(inp, latent_dim)
        self.enc_logvar = nn.Linear(inp, latent_dim)
        dec, inp = [], latent_dim
        for w in decoder_hidden:
            dec += [nn.Linear(inp, w), act()]
            inp = w
        dec += [nn.Linear(inp, features), act(), nn.Unflatten(1, (c, rows, cols))]
        if self.res_blocks:
            dec_blocks, c_dec = self.blocks(c, list(reversed(self.res_blocks)), activation, ConvResBlock)
            c = c_dec
        channels = list(reversed(self.conv))[1:] + [self.image[0]]
        for j, out in enumerate(channels):
            dec.append(nn.ConvTranspose2d(c, out, 4, 2, 1))
            if j + 1 < len(channels):
                dec.append(act())
            c = out
        self.decoder = nn.Sequential(*dec)
        if self.res_blocks:
            self.dec_blocks = dec_blocks

    @staticmethod
    def sequential(inp, widths, activation):
        layers = []
        for w in widths:
            layers += [nn.Linear(inp, w), ACTS[activation]()]
            inp = w
        return nn.Sequential(*layers)

    def hidden_layers(self, side, x, keep_list):
        x = self.dense_layers(side, x, keep_list)
        if not self.conv:
            x = self.run_blocks(side, x, keep_list)
        return x

    def run_blocks(self, side, x, keep_list):
        for block in getattr(self, f"{side}_blocks", []):
            x = block(x, keep_list)
        return x

    def dense_layers(self, side, x, keep_list):
        if self.notebook:
            layer = self.linear_enc if side == "enc" else self.linear_dec
            h = self.act(layer(x))
            keep_list.append(h)
            return h
        for m in (self.encoder if side == "enc" else self.decoder):
            if isinstance(m, nn.Flatten):
                x = self.run_blocks(side, x, keep_list)
            x = m(x)
            if isinstance(m, nn.Unflatten):
                x = self.run_blocks(side, x, keep_list)
            if isinstance(m, tuple(ACTS.values())):
                # vae-wgpu's activations are [rows, features], images flattened NCHW.
                keep_list.append(x.flatten(1))
        return x

    def with_label(self, v, y):
        """`v` with the one-hot label of `y` appended (rows of v cycle over y: L samples of B
        images are sample-major); `v` itself for an unconditional model."""
        if not self.classes:
            return v
        onehot = F.one_hot(y.long(), self.classes).to(v.dtype)
        return torch.cat([v, onehot.repeat(v.shape[0] // onehot.shape[0], 1)], 1)

    def enc_mu_logvar(self, x, y=None):
        """The encoder's heads (for objectives that draw their own samples)."""
        h = self.hidden_layers("enc", x.view(-1, *self.image) if self.conv else self.with_label(x, y), [])
        return self.enc_mu(h), self.enc_logvar(h)

    def decode(self, z, y=None):
        """sigmoid(logits) of latent codes z (the logits kept in self.logits)."""
        h = self.hidden_layers("dec", self.with_label(z, y), [])
        self.logits = h.flatten(1) if self.conv else self.dec_mu(h)
        return torch.sigmoid(self.logits)

    def forward(self, x, eps, keep=None, y=None):
        enc, dec = [], []
        x_in = x.view(-1, *self.image) if self.conv else self.with_label(x, y)
        h_enc = self.hidden_layers("enc", x_in, enc)
        mu_e, logvar_e = self.enc_mu(h_enc), self.enc_logvar(h_enc)
        z = mu_e + torch.exp(0.5 * logvar_e) * eps
        h_dec = self.hidden_layers("dec", self.with_label(z, y), dec)
        # A conv decoder's last ConvTranspose2d gives the logits.
        logits = h_dec.flatten(1) if self.conv else self.dec_mu(h_dec)
        mu_d = torch.sigmoid(logits)
        self.logits = logits  # for likelihoods computed from the logits (scripts/torch_train.py)
        if keep is not None:
            logits.retain_grad()
            keep.update(mu_e=mu_e, logvar_e=logvar_e, z=z, logits=logits, mu_d=mu_d)
            if self.notebook and not self.res_blocks:
                keep.update(h_enc=enc[0], h_dec=dec[0])
            else:
                keep.update({f"h_enc.{i}": h for i, h in enumerate(enc)})
                keep.update({f"h_dec.{i}": h for i, h in enumerate(dec)})
        return mu_d, mu_e, logvar_e


def widths(s):
    return [int(w) for w in s.replace("-", ",").split(",") if w.strip()]


def architecture_metadata(model, args_like):
    conv = {}
    if args_like.get("conv"):
        c, r, w = args_like["image"]
        conv = {"conv": ",".join(map(str, args_like["conv"])), "channels": str(c), "image_rows": str(r),
                "image_cols": str(w)}
    classes = {"classes": str(args_like["classes"])} if args_like.get("classes") else {}
    blocks = {"res_blocks": ",".join(map(str, args_like["res_blocks"]))} if args_like.get("res_blocks") else {}
    return {
        **conv,
        **classes,
        **blocks,
        "input": str(args_like["input"]),
        "hidden": ",".join(map(str, args_like["hidden"])),
        "decoder_hidden": ",".join(map(str, args_like["decoder_hidden"])),
        "latent": str(args_like["latent"]),
        "activation": args_like["activation"],
        "state_dict_keys": ",".join(model.state_dict().keys()),
    }


def recon_nll(likelihood, mu_d, x, sigma=1.0):
    """-Σ log p(x | z) from the decoder's sigmoid output, as src/model/likelihood.rs defines it."""
    from torch.distributions import ContinuousBernoulli, Normal

    if likelihood == "continuous-bernoulli":
        return -ContinuousBernoulli(probs=mu_d).log_prob(x).sum()
    if likelihood == "gaussian":
        return -Normal(mu_d, sigma).log_prob(x).sum()
    return F.binary_cross_entropy(mu_d, x, reduction="sum")


def loss_fn(mu_d, x, mu_e, logvar_e):
    bce = F.binary_cross_entropy(mu_d, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar_e - mu_e.pow(2) - logvar_e.exp())
    return bce + kl, bce, kl


def read_labels(path, n=None):
    """The first `n` labels (all without `n`) of a gzipped IDX1 file, as int64."""
    with gzip.open(path, "rb") as f:
        magic, count = struct.unpack(">II", f.read(8))
        assert magic == 0x801, f"bad magic {magic:#x}"
        n = count if n is None else n
        data = np.frombuffer(f.read(n), dtype=np.uint8)
    return torch.from_numpy(data.astype(np.int64))


def read_images(path, n=None):
    """The first `n` images (all without `n`) of a gzipped IDX3 file, as floats in [0, 1]."""
    with gzip.open(path, "rb") as f:
        magic, count, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 0x803, f"bad magic {magic:#x}"
        n = count if n is None else n
        data = np.frombuffer(f.read(n * rows * cols), dtype=np.uint8)
    return torch.from_numpy(data.reshape(n, rows * cols).astype(np.float32) / 255.0)


def check(args):
    """Strict load of a vae-wgpu file into the module its metadata describes, and back."""
    from safetensors import safe_open

    with safe_open(args.check, "pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    hidden = widths(meta.get("hidden", "200"))
    arch = dict(
        input=int(meta.get("input", 784)),
        hidden=hidden,
        decoder_hidden=widths(meta["decoder_hidden"]) if "decoder_hidden" in meta else list(reversed(hidden)),
        latent=int(meta.get("latent", 10)),
        activation=meta.get("activation", "relu"),
        conv=widths(meta["conv"]) if "conv" in meta else [],
        image=(int(meta.get("channels", 1)), int(meta.get("image_rows", 28)), int(meta.get("image_cols", 28))),
        classes=int(meta.get("classes", 0)),
        res_blocks=widths(meta.get("res_blocks", "")),
    )
    likelihood = meta.get("likelihood", "gaussian" if "log_sigma" in tensors else "bernoulli")
    learned = likelihood == "gaussian" and "sigma" not in meta
    model = BernoulliVAE(arch["input"], arch["hidden"], arch["latent"], arch["decoder_hidden"], arch["activation"],
                         arch["conv"], arch["image"], learned_sigma=learned, classes=arch["classes"],
                         res_blocks=arch["res_blocks"])
    state = {k: v for k, v in tensors.items() if not k.startswith(("optimizer.", "trainer."))}
    model.load_state_dict(state, strict=True)
    x = read_images(f"{args.data_dir}/t10k-images-idx3-ubyte.gz", 100) if arch["input"] == 784 else None
    y = read_labels(f"{args.data_dir}/t10k-labels-idx1-ubyte.gz", 100) if arch["classes"] else None
    print(f"loaded {args.check} strictly: {len(state)} tensors, {sum(v.numel() for v in state.values())} parameters, "
          f"architecture {arch}")
    if x is not None:
        with torch.no_grad():
            mu_d, mu_e, logvar_e = model(x, torch.zeros(100, arch["latent"]), y=y)
            _, _, kl = loss_fn(mu_d, x, mu_e, logvar_e)
            sigma = model.log_sigma.exp() if learned else float(meta.get("sigma", 1.0))
            recon = recon_nll(likelihood, mu_d, x, sigma)
        print(f"first 100 test images, z = mu: loss per image {(recon + kl).item() / 100:.4f} "
              f"({likelihood} -log p {recon.item() / 100:.4f}, KL {kl.item() / 100:.4f})")
    if args.save_back:
        out = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        meta_back = architecture_metadata(model, arch)
        meta_back["likelihood"] = likelihood
        for key in ("sigma", "class_names"):
            if key in meta:
                meta_back[key] = meta[key]
        save_file(out, args.save_back, metadata=meta_back)
        print(f"wrote {args.save_back} from PyTorch's state_dict()")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="data/mnist")
    ap.add_argument("--out", default="tests/fixtures/torch_reference.safetensors")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", default=None, help="dense widths [default: 200, none with --conv]")
    ap.add_argument("--decoder-hidden", default=None)
    ap.add_argument("--latent", type=int, default=10)
    ap.add_argument("--activation", default="relu", choices=sorted(ACTS))
    ap.add_argument("--conv", default="", help="conv channel counts, e.g. 32,64 (MNIST, 1x28x28)")
    ap.add_argument("--classes", type=int, default=0, help="a class-conditional model on MNIST's labels (10)")
    ap.add_argument("--res-blocks", default="", help="residual blocks' widths after the hidden layers")
    ap.add_argument("--check", default=None, help="a vae-wgpu safetensors file to load strictly")
    ap.add_argument("--save-back", default=None)
    args = ap.parse_args()
    if args.check:
        return check(args)

    conv = widths(args.conv)
    hidden = widths(args.hidden) if args.hidden else ([] if conv else [200])
    dec = widths(args.decoder_hidden) if args.decoder_hidden else list(reversed(hidden))
    arch = dict(input=784, hidden=hidden, decoder_hidden=dec, latent=args.latent, activation=args.activation,
                conv=conv, image=(1, 28, 28), classes=args.classes, res_blocks=widths(args.res_blocks))
    torch.manual_seed(args.seed)
    model = BernoulliVAE(784, hidden, args.latent, dec, args.activation, conv, classes=args.classes,
                         res_blocks=widths(args.res_blocks))
    x = read_images(f"{args.data_dir}/train-images-idx3-ubyte.gz", args.batch)
    y = read_labels(f"{args.data_dir}/train-labels-idx1-ubyte.gz", args.batch) if args.classes else None
    eps = [torch.randn(args.batch, args.latent) for _ in range(3)]
    out = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    out["x"] = x.clone()
    if y is not None:
        out["labels"] = y.to(torch.float32)
    for i, e in enumerate(eps, 1):
        out[f"eps.{i}"] = e.clone()

    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for step in range(3):
        opt.zero_grad()
        keep = {} if step == 0 else None
        mu_d, mu_e, logvar_e = model(x, eps[step], keep, y=y)
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
    meta = architecture_metadata(model, arch)
    meta.update(torch=torch.__version__, seed=str(args.seed))
    save_file(out, args.out, metadata=meta)
    print(f"wrote {args.out}: losses {losses}")


if __name__ == "__main__":
    main()
