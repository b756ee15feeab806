//! Parameter arena layout. All parameters live in one flat f32 buffer (gradients and both Adam
//! moments in three more of the same layout), each tensor an (offset, shape) view. Offsets are
//! multiples of 64 floats (256 bytes), so every view can be bound on any adapter; the padding is
//! never written, its gradient stays 0 and Adam leaves it at 0.
//!
//! Every layer is a [`Layer`] (its kind, weight and bias views; see `model/layers/`), built in
//! forward order from the configuration by `LayerList::new`. The encoder's two heads are one
//! `Linear` `H -> 2K`: `enc_logvar.weight` follows `enc_mu.weight` with no padding
//! (together a `[2K, H]` matrix) and `enc_logvar.bias` follows `enc_mu.bias`, so both heads are
//! one product forward and one per gradient backward.
//!
//! Names, shapes and order are PyTorch's `state_dict`, weights `[out, in]`. With one hidden layer
//! per side, the notebook's module: `linear_enc`, `enc_mu`, `enc_logvar`, `linear_dec`, `dec_mu`.
//! Deeper models are this module (documented in `docs/ARCHITECTURE.md`, built by
//! `scripts/torch_reference.py` from a checkpoint's metadata):
//!
//! ```text
//! encoder    = nn.Sequential(Linear(D, h0), Act, Linear(h0, h1), Act, ...)  # encoder.0, encoder.2, ...
//! enc_mu     = Linear(h_last, K);  enc_logvar = Linear(h_last, K)
//! decoder    = nn.Sequential(Linear(K, g0), Act, Linear(g0, g1), Act, ...)  # decoder.0, decoder.2, ...
//! dec_mu     = Linear(g_last, D)                                             # logits; sigmoid outside
//! ```
//!
//! With conv layers (`--conv c0,c1,…`, each `Conv2d(4, 2, 1)` halving the image's sides):
//!
//! ```text
//! encoder = nn.Sequential(Conv2d(C, c0), Act, Conv2d(c0, c1), Act, …, Flatten(), Linear(F, h0), Act, …)
//! enc_mu, enc_logvar = Linear(h_last or F, K)
//! decoder = nn.Sequential(Linear(K, g0), Act, …, Linear(g_last or K, F), Act, Unflatten(1, (c_last, S/2^n, S/2^n)),
//!                         ConvTranspose2d(c_last, c_{n-2}), Act, …, ConvTranspose2d(c0, C))   # logits
//! ```
//!
//! (`F = c_last·(S/2^n)²`; Flatten and Unflatten take Sequential indices but hold no tensors.)

use super::VaeConfig;
use super::body::{Body, TensorId};
use super::config::{CONV_KERNEL, CONV_PADDING, CONV_STRIDE};
pub use super::layers::{ConvGeom, Init, Layer, LayerKind, ParamDecl};
use crate::ops::Act;
use crate::rng::{Between, Philox, domain};
use rand::Rng;

/// Alignment of every tensor in the arena, in f32 elements.
pub const ARENA_ALIGN: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
    /// How it starts (its layer's declaration, [`Layer::params`]).
    pub init: Init,
    /// A conditional layer's weight, stored in two pieces (see [`Layer::labels`]).
    pub split: Option<Split>,
}

/// Where a conditional Linear's `[out, in + classes]` weight lives: its first `inputs` columns
/// `[out, inputs]` at the spec's offset, its label columns `[out, classes]` at `label_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    pub inputs: usize,
    pub label_offset: usize,
}

impl ParamSpec {
    /// Values of the tensor (PyTorch's shape).
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The arena range of an unsplit tensor; of a split one, its input columns'
    /// (use [`ParamSpec::read`] / [`ParamSpec::write`] for the whole tensor).
    pub fn range(&self) -> std::ops::Range<usize> {
        let n = match self.split {
            None => self.len(),
            Some(sp) => self.shape[0] * sp.inputs,
        };
        self.offset..self.offset + n
    }

    /// The arena range of a split weight's label columns.
    fn label_range(&self) -> Option<std::ops::Range<usize>> {
        let sp = self.split?;
        Some(sp.label_offset..sp.label_offset + self.len() - self.range().len())
    }

    /// The arena ranges the tensor occupies (two for a split weight).
    pub fn ranges(&self) -> Vec<std::ops::Range<usize>> {
        [Some(self.range()), self.label_range()]
            .into_iter()
            .flatten()
            .collect()
    }

    /// The tensor's values in PyTorch's row-major order, from an arena of this layout.
    pub fn read<T: Copy>(&self, arena: &[T]) -> Vec<T> {
        let (Some(sp), Some(label_range)) = (self.split, self.label_range()) else {
            return arena[self.range()].to_vec();
        };
        let (inputs, classes) = (sp.inputs, self.shape[1] - sp.inputs);
        let (x, labels) = (&arena[self.range()], &arena[label_range]);
        (0..self.shape[0])
            .flat_map(|o| {
                x[o * inputs..(o + 1) * inputs]
                    .iter()
                    .chain(&labels[o * classes..(o + 1) * classes])
                    .copied()
            })
            .collect()
    }

    /// Store the tensor's values (PyTorch's row-major order) into an arena of this layout.
    pub fn write<T: Copy>(&self, arena: &mut [T], values: &[T]) {
        assert_eq!(values.len(), self.len(), "{}: values", self.name);
        let Some(sp) = self.split else {
            arena[self.range()].copy_from_slice(values);
            return;
        };
        let (inputs, cols) = (sp.inputs, self.shape[1]);
        let classes = cols - inputs;
        for (o, row) in values.chunks(cols).enumerate() {
            let x = self.offset + o * inputs;
            arena[x..x + inputs].copy_from_slice(&row[..inputs]);
            let l = sp.label_offset + o * classes;
            arena[l..l + classes].copy_from_slice(&row[inputs..]);
        }
    }
}

/// The layers of the default model were all `Linear`s; the name stays for them.
pub type Linear = Layer;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamLayout {
    /// Every tensor, in state_dict order.
    pub specs: Vec<ParamSpec>,
    /// Arena length in f32 (a multiple of [`ARENA_ALIGN`]).
    pub len: usize,
    /// The encoder's hidden layers, input side first (conv layers, then dense ones).
    pub encoder: Vec<Layer>,
    /// Both heads as one Linear `H -> 2K` (mu rows, then logvar rows).
    pub heads: Layer,
    /// The decoder's hidden layers, latent side first.
    pub decoder: Vec<Layer>,
    /// The output layer (logits): `dec_mu`, or a conv model's last ConvTranspose2d.
    pub output: Layer,
    /// The encoder's layers as a graph (before the heads, which read its last tensor), and the
    /// decoder's (before the output layer): a chain of the layers, with residual blocks
    /// (`model::body`).
    pub enc_body: Body,
    pub dec_body: Body,
    /// The arena offset of a learned-σ Gaussian decoder's `log_sigma` (a 0-d tensor, last in the
    /// state_dict, initialised to 0: σ = 1).
    pub log_sigma: Option<usize>,
}

/// A model's layers in forward order, with their state_dict names (offsets not yet placed).
struct LayerList {
    encoder: Vec<Layer>,
    heads: Layer,
    decoder: Vec<Layer>,
    output: Layer,
    enc_body: Body,
    dec_body: Body,
}

/// Append `l` to the side's `layers` and a node of it reading `input` to its graph; returns the
/// node's output tensor.
fn push_node(layers: &mut Vec<Layer>, body: &mut Body, l: Layer, input: TensorId) -> TensorId {
    layers.push(l);
    body.layer(layers.len() - 1, &layers[layers.len() - 1], input)
}

/// Residual blocks of output widths `widths` after `body`'s last tensor, their layers appended to
/// `layers` in state_dict order (`{prefix}.{j}.fc1`, `.fc2`, `.shortcut`); returns the width
/// they end with.
fn residual_blocks(
    prefix: &str,
    widths: impl Iterator<Item = usize>,
    act: Act,
    layers: &mut Vec<Layer>,
    body: &mut Body,
) -> usize {
    let mut t = body.output();
    for (j, o) in widths.enumerate() {
        let i = body.widths[t];
        let mut add = |l: Layer, input, body: &mut Body| push_node(layers, body, l, input);
        let h = add(
            Layer::linear(format!("{prefix}.{j}.fc1"), i, o, act),
            t,
            body,
        );
        let r = add(
            Layer::linear(format!("{prefix}.{j}.fc2"), o, o, Act::Identity),
            h,
            body,
        );
        let s = if i == o {
            t
        } else {
            let sc = Layer::linear(format!("{prefix}.{j}.shortcut"), i, o, Act::Identity);
            add(sc, t, body)
        };
        t = body.add(s, r, act);
    }
    body.widths[t]
}

/// Convolutional residual blocks on `[C, h, w]` images (`--conv` with `--res-blocks`), as
/// diffusers' `ResnetBlock2D` without its norms: `y = act(s + conv2(act(conv1(x))))`, conv1 and
/// conv2 3x3 at stride 1 with padding 1, `s` the input or a 1x1 `conv_shortcut` where the channels
/// differ. Layers appended to `layers` in state_dict order (`{prefix}.{j}.conv1`, `.conv2`,
/// `.conv_shortcut`); returns the channels they end with.
fn conv_residual_blocks(
    prefix: &str,
    [c, h, w]: [usize; 3],
    widths: impl Iterator<Item = usize>,
    act: Act,
    layers: &mut Vec<Layer>,
    body: &mut Body,
) -> usize {
    let mut t = body.output();
    let mut i = c;
    for (j, o) in widths.enumerate() {
        let mut add = |l: Layer, input, body: &mut Body| push_node(layers, body, l, input);
        let conv = |name: &str, from: usize, kernel: usize, a: Act| {
            let g = block_geom([from, h, w], o, kernel);
            Layer::conv(format!("{prefix}.{j}.{name}"), false, g, a)
        };
        let hid = add(conv("conv1", i, 3, act), t, body);
        let r = add(conv("conv2", o, 3, Act::Identity), hid, body);
        let s = if i == o {
            t
        } else {
            add(conv("conv_shortcut", i, 1, Act::Identity), t, body)
        };
        t = body.add(s, r, act);
        i = o;
    }
    i
}

impl LayerList {
    /// The layers of `cfg`, named as its PyTorch module names them (see the module docs), or as
    /// diffusers names an AutoencoderKL's (`model::autoencoder_kl`).
    fn new(cfg: &VaeConfig) -> Self {
        if let Some(k) = &cfg.kl {
            let l = super::autoencoder_kl::layers(&k.config, k.image);
            return LayerList {
                encoder: l.encoder,
                heads: l.heads,
                decoder: l.decoder,
                output: l.output,
                enc_body: l.enc_body,
                dec_body: l.dec_body,
            };
        }
        let (mut encoder, enc_body, width, conv_blocks) = encoder_side(cfg);
        let heads = Layer::linear("enc_mu|enc_logvar", width, 2 * cfg.latent, Act::Identity);
        let (mut decoder, dec_body, output) = decoder_side(cfg, conv_blocks);
        // A conditional model's label joins the first dense layer's input on each side (validation
        // allows it only for dense models, which have a hidden layer on each side).
        if cfg.classes > 0 {
            for side in [&mut encoder, &mut decoder] {
                if let Some(first) = side.first_mut() {
                    *first = first.clone().with_labels(cfg.classes);
                }
            }
        }
        LayerList {
            enc_body,
            dec_body,
            encoder,
            heads,
            decoder,
            output,
        }
    }
}

/// A dense layer's name: the notebook's (`linear_enc`) in a model with its names, else the
/// Sequential's (`encoder.2`).
fn dense_name(cfg: &VaeConfig, side: &str, notebook_name: &str, index: usize) -> String {
    if cfg.has_notebook_names() {
        notebook_name.to_string()
    } else {
        format!("{side}.{index}")
    }
}

/// The encoder before its heads: Conv2d, Act, …, Flatten (one Sequential index), then Linear,
/// Act, …, with the residual blocks; its graph, the width the heads read, and the last
/// convolution's `[C, h, w]` where a conv model has residual blocks there.
fn encoder_side(cfg: &VaeConfig) -> (Vec<Layer>, Body, usize, Option<[usize; 3]>) {
    let act = cfg.activation;
    let mut encoder = Vec::new();
    // The last convolution's output [C, h, w], where a conv model's residual blocks work.
    let mut conv_image = None;
    if let Some(c) = &cfg.conv {
        let mut image = c.image;
        for &w in &c.widths {
            let g = conv_geom(image, w, false);
            image = g.output;
            encoder.push(Layer::conv(
                format!("encoder.{}", 2 * encoder.len()),
                false,
                g,
                act,
            ));
        }
        conv_image = Some(image);
    }
    let conv_blocks = conv_image.filter(|_| !cfg.res_blocks.is_empty());
    let n_conv = encoder.len();
    // Sequential index of the first dense layer: past the Flatten after the convolutions.
    let dense_base = if n_conv > 0 { 2 * n_conv + 1 } else { 0 };
    let mut width = cfg.enc_features();
    for (i, &h) in cfg.hidden.iter().enumerate() {
        encoder.push(Layer::linear(
            dense_name(cfg, "encoder", "linear_enc", dense_base + 2 * i),
            width,
            h,
            act,
        ));
        width = h;
    }
    let blocks = cfg.res_blocks.iter().copied();
    let mut enc_body = Body::new(encoder.first().map_or(width, |l| l.inputs));
    let width = match conv_blocks {
        // Convolutions, their residual blocks (listed after the dense layers, as the PyTorch
        // module registers them), then the dense layers.
        Some(image) => {
            for (i, l) in encoder.iter().enumerate().take(n_conv) {
                enc_body.layer(i, l, i);
            }
            let n = encoder.len();
            conv_residual_blocks(
                "enc_blocks",
                image,
                blocks,
                act,
                &mut encoder,
                &mut enc_body,
            );
            for (i, l) in encoder.iter().enumerate().take(n).skip(n_conv) {
                let t = enc_body.output();
                enc_body.layer(i, l, t);
            }
            enc_body.widths[enc_body.output()]
        }
        // A chain from the input, then the residual blocks.
        None => {
            for (i, l) in encoder.iter().enumerate() {
                enc_body.layer(i, l, i);
            }
            residual_blocks("enc_blocks", blocks, act, &mut encoder, &mut enc_body)
        }
    };
    (encoder, enc_body, width, conv_blocks)
}

/// The decoder: Linear, Act, …; with conv layers a Linear to the last conv's features, Act,
/// Unflatten, then ConvTranspose2d, Act, …, ConvTranspose2d (the logits), with the residual
/// blocks; its graph and its output layer.
fn decoder_side(cfg: &VaeConfig, conv_blocks: Option<[usize; 3]>) -> (Vec<Layer>, Body, Layer) {
    let act = cfg.activation;
    let mut decoder = Vec::new();
    let mut width = cfg.latent;
    for (i, &h) in cfg.decoder_hidden.iter().enumerate() {
        decoder.push(Layer::linear(
            dense_name(cfg, "decoder", "linear_dec", 2 * i),
            width,
            h,
            act,
        ));
        width = h;
    }
    let mut dec_body = Body::new(cfg.latent);
    for (i, l) in decoder.iter().enumerate() {
        dec_body.layer(i, l, i);
    }
    let blocks = cfg.res_blocks.iter().rev().copied();
    let width = match conv_blocks {
        Some(_) => width,
        None => residual_blocks(
            "dec_blocks",
            blocks.clone(),
            act,
            &mut decoder,
            &mut dec_body,
        ),
    };
    let in_body = decoder.len();
    let output = match &cfg.conv {
        None => Layer::linear("dec_mu", width, cfg.input, Act::Identity),
        Some(c) => {
            let m = decoder.len();
            let features = cfg.conv_features();
            decoder.push(Layer::linear(
                format!("decoder.{}", 2 * m),
                width,
                features,
                act,
            ));
            // After the Unflatten at index 2m + 2.
            let mut index = 2 * m + 3;
            let div = 1usize << c.widths.len();
            let last = *c.widths.last().unwrap_or(&c.image[0]);
            // The transposed convolutions start from the residual blocks' last channels.
            let first = match conv_blocks {
                Some(_) => cfg.res_blocks.first().copied().unwrap_or(last),
                None => last,
            };
            let mut image = [first, c.image[1] / div, c.image[2] / div];
            // Each width in reverse but the first, with the activation; then the image's
            // channels, the logits.
            for &ch in c.widths.iter().rev().skip(1) {
                let g = conv_geom(image, ch, true);
                image = g.output;
                decoder.push(Layer::conv(format!("decoder.{index}"), true, g, act));
                index += 2;
            }
            let g = conv_geom(image, c.image[0], true);
            Layer::conv(format!("decoder.{index}"), true, g, Act::Identity)
        }
    };
    // A conv decoder's layers after the dense ones: the rest of the chain, with a conv model's
    // residual blocks right after the Unflatten (listed after every layer of the Sequential).
    let n = decoder.len();
    for i in in_body..n {
        let t = dec_body.output();
        dec_body.layer(i, &decoder[i], t);
        // The Unflatten gives the last convolution's [C, h, w], where the encoder's blocks
        // worked too.
        if i == in_body
            && let Some(image) = conv_blocks
        {
            conv_residual_blocks(
                "dec_blocks",
                image,
                blocks.clone(),
                act,
                &mut decoder,
                &mut dec_body,
            );
        }
    }
    (decoder, dec_body, output)
}

/// The geometry of `--conv`'s layers (kernel 4, stride 2, padding 1) on `image`; [`VaeConfig::validate`]
/// has checked that every side divides.
fn conv_geom(image: [usize; 3], c_out: usize, transposed: bool) -> ConvGeom {
    let g = if transposed {
        ConvGeom::conv_transpose2d(image, c_out, CONV_KERNEL, CONV_STRIDE, CONV_PADDING)
    } else {
        ConvGeom::conv2d(image, c_out, CONV_KERNEL, CONV_STRIDE, CONV_PADDING)
    };
    g.unwrap_or(ConvGeom {
        input: image,
        output: [c_out, 0, 0],
        kernel: CONV_KERNEL,
        stride: CONV_STRIDE,
        padding: CONV_PADDING,
    })
}

/// The geometry of a residual block's convolution: `kernel` (3, or 1 for the shortcut) at stride
/// 1, padding `kernel / 2`, which keeps the image's size.
fn block_geom(image: [usize; 3], c_out: usize, kernel: usize) -> ConvGeom {
    let padding = kernel / 2;
    ConvGeom::conv2d(image, c_out, kernel, 1, padding).unwrap_or(ConvGeom {
        input: image,
        output: [c_out, image[1], image[2]],
        kernel,
        stride: 1,
        padding,
    })
}

impl ParamLayout {
    /// Every layer with the rows it runs on: the encoder's and the heads on `batch`, the
    /// decoder's and the output layer on `lb` (L·B).
    pub fn layers_with_rows(&self, batch: usize, lb: usize) -> Vec<(&Layer, usize)> {
        let enc = self.encoder.iter().chain([&self.heads]).map(|l| (l, batch));
        let dec = self.decoder.iter().chain([&self.output]).map(|l| (l, lb));
        enc.chain(dec).collect()
    }

    pub fn new(cfg: &VaeConfig) -> Self {
        let list = LayerList::new(cfg);
        if cfg.kl.is_some() {
            return Self::autoencoder_kl(cfg, list);
        }
        // Every parameter tensor in state_dict order (the heads as their two modules).
        let k = cfg.latent;
        let mut specs: Vec<ParamSpec> = Vec::new();
        let push_layer = |l: &Layer, specs: &mut Vec<ParamSpec>| {
            for decl in l.params() {
                // A conditional layer's label columns are placed at the end (below).
                let split = (decl.suffix == "weight" && l.labels > 0).then_some(Split {
                    inputs: l.inputs,
                    label_offset: 0,
                });
                specs.push(ParamSpec {
                    name: format!("{}.{}", l.name, decl.suffix),
                    shape: decl.shape,
                    offset: 0,
                    init: decl.init,
                    split,
                });
            }
        };
        for l in &list.encoder {
            push_layer(l, &mut specs);
        }
        let h = list.heads.inputs;
        for name in ["enc_mu", "enc_logvar"] {
            push_layer(&Layer::linear(name, h, k, Act::Identity), &mut specs);
        }
        // PyTorch registers the decoder's modules in this order: its Sequential (a conv model's
        // output layer is the Sequential's last), the residual blocks, the dense output layer.
        let mut decoder: Vec<&Layer> = list.decoder.iter().chain([&list.output]).collect();
        decoder.sort_by_key(|l| match l.name.split('.').next() {
            Some("dec_blocks") => 1,
            Some("dec_mu") => 2,
            _ => 0,
        });
        for l in decoder {
            push_layer(l, &mut specs);
        }
        // Arena order: state_dict order, but each logvar tensor packed right behind its mu one.
        let mu = 2 * list.encoder.len();
        let (mu_w, mu_b, lv_w, lv_b) = (mu, mu + 1, mu + 2, mu + 3);
        let mut order: Vec<(usize, bool)> = (0..mu).map(|i| (i, true)).collect();
        order.extend([(mu_w, true), (lv_w, false), (mu_b, true), (lv_b, false)]);
        order.extend((mu + 4..specs.len()).map(|i| (i, true)));
        let mut offset = 0usize;
        for (i, aligned) in order {
            if aligned {
                offset = offset.div_ceil(ARENA_ALIGN) * ARENA_ALIGN;
            }
            specs[i].offset = offset;
            offset += specs[i].range().len();
        }
        // A conditional model's label columns, after everything else.
        for spec in &mut specs {
            if let Some(sp) = &mut spec.split {
                offset = offset.div_ceil(ARENA_ALIGN) * ARENA_ALIGN;
                sp.label_offset = offset;
                offset += spec.shape[0] * (spec.shape[1] - sp.inputs);
            }
        }
        let mut len = offset.div_ceil(ARENA_ALIGN) * ARENA_ALIGN;
        let log_sigma = cfg.likelihood.learns_scale().then(|| {
            specs.push(ParamSpec {
                name: "log_sigma".into(),
                shape: vec![],
                offset: len,
                init: Init::Zeros,
                split: None,
            });
            len += ARENA_ALIGN;
            len - ARENA_ALIGN
        });
        // Each layer's weight and bias are consecutive specs, found by the weight's name (the
        // heads' are enc_mu's, logvar's packed behind them).
        let weight_spec: std::collections::HashMap<&str, usize> = (specs.iter().enumerate())
            .filter_map(|(i, s)| Some((s.name.strip_suffix(".weight")?, i)))
            .collect();
        let placed = |mut l: Layer| {
            let name = if l.name == list.heads.name {
                "enc_mu"
            } else {
                &l.name
            };
            let spec = weight_spec[name];
            l.weight = specs[spec].offset;
            l.bias = specs[spec + 1].offset;
            l.label_weight = specs[spec].split.map_or(0, |sp| sp.label_offset);
            l
        };
        ParamLayout {
            encoder: list.encoder.into_iter().map(placed).collect(),
            heads: placed(list.heads.clone()),
            decoder: list.decoder.into_iter().map(placed).collect(),
            output: placed(list.output),
            enc_body: list.enc_body,
            dec_body: list.dec_body,
            specs,
            len,
            log_sigma,
        }
    }

    /// An AutoencoderKL's layout: every layer's tensors in diffusers' state_dict order, each
    /// aligned (its heads are one tensor pair, `quant_conv`, already mean | logvar); a learned
    /// σ's `log_sigma` last.
    fn autoencoder_kl(cfg: &VaeConfig, list: LayerList) -> Self {
        let mut layers: Vec<&Layer> = std::iter::once(&list.heads)
            .chain(&list.encoder)
            .chain(&list.decoder)
            .chain([&list.output])
            .collect();
        layers.sort_by_key(|l| super::autoencoder_kl::state_dict_rank(&l.name));
        let mut specs = Vec::new();
        let mut offset = 0;
        let mut at = std::collections::HashMap::new();
        for l in layers {
            let mut offsets = Vec::new();
            for decl in l.params() {
                let spec = ParamSpec {
                    name: format!("{}.{}", l.name, decl.suffix),
                    shape: decl.shape,
                    offset,
                    init: decl.init,
                    split: None,
                };
                offsets.push(offset);
                offset = (offset + spec.len()).div_ceil(ARENA_ALIGN) * ARENA_ALIGN;
                specs.push(spec);
            }
            at.insert(l.name.clone(), offsets);
        }
        let log_sigma = cfg.likelihood.learns_scale().then(|| {
            specs.push(ParamSpec {
                name: "log_sigma".into(),
                shape: vec![],
                offset,
                init: Init::Zeros,
                split: None,
            });
            offset += ARENA_ALIGN;
            offset - ARENA_ALIGN
        });
        let placed = |mut l: Layer| {
            let o = &at[&l.name];
            l.weight = o[0];
            l.bias = o[1];
            l
        };
        ParamLayout {
            encoder: list.encoder.into_iter().map(placed).collect(),
            heads: placed(list.heads),
            decoder: list.decoder.into_iter().map(placed).collect(),
            output: placed(list.output),
            enc_body: list.enc_body,
            dec_body: list.dec_body,
            specs,
            len: offset,
            log_sigma,
        }
    }

    /// Every layer in forward order: encoder layers, heads, decoder layers, output.
    pub fn layers(&self) -> impl Iterator<Item = &Layer> {
        self.encoder
            .iter()
            .chain([&self.heads])
            .chain(&self.decoder)
            .chain([&self.output])
    }

    /// Number of real (unpadded) parameters.
    pub fn num_params(&self) -> usize {
        self.specs.iter().map(|s| s.len()).sum()
    }

    pub fn get(&self, name: &str) -> Option<&ParamSpec> {
        self.specs.iter().find(|s| s.name == name)
    }

    /// Every tensor as its declaration says it starts ([`Init`]: PyTorch's default for its
    /// module), the uniform ones drawn from our Philox stream (tensor i from stream i), so the
    /// same seed gives the same arena on every machine. Padding is 0.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let mut arena = vec![0.0f32; self.len];
        for (i, spec) in self.specs.iter().enumerate() {
            let values: Vec<f32> = match spec.init {
                Init::FanInUniform(fan_in) => {
                    let bound = 1.0 / (fan_in as f64).sqrt();
                    let mut s = Philox::stream(seed, domain::INIT, i as u32);
                    (0..spec.len())
                        .map(|_| s.sample(Between(-bound, bound)) as f32)
                        .collect()
                }
                Init::Ones => vec![1.0; spec.len()],
                Init::Zeros => continue,
            };
            spec.write(&mut arena, &values);
        }
        arena
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Act;

    #[test]
    fn each_tensor_starts_as_its_declaration_says() {
        let mut l = ParamLayout::new(&VaeConfig::mirrored(45, &[37], 5));
        let uniform = l.init(7);
        // Every layer's tensors are fan-in uniform (nn.Linear's bounds), different per tensor.
        for s in &l.specs {
            let Init::FanInUniform(fan_in) = s.init else {
                panic!("{} is not fan-in uniform", s.name);
            };
            let bound = 1.0 / (fan_in as f32).sqrt();
            let v = &uniform[s.range()];
            assert!(v.iter().all(|x| x.abs() <= bound), "{}", s.name);
            assert!(v.iter().any(|x| x.abs() > bound / 2.0), "{}", s.name);
        }
        // A norm's declarations: ones and zeros; the other tensors keep their own streams.
        l.specs[0].init = Init::Ones;
        l.specs[1].init = Init::Zeros;
        let mixed = l.init(7);
        assert!(mixed[l.specs[0].range()].iter().all(|&x| x == 1.0));
        assert!(mixed[l.specs[1].range()].iter().all(|&x| x == 0.0));
        assert_eq!(mixed[l.specs[2].range()], uniform[l.specs[2].range()]);
    }

    #[test]
    fn heads_are_packed_everything_else_aligned_nothing_overlaps() {
        for cfg in [
            VaeConfig::default(),
            VaeConfig::mirrored(45, &[37], 5),
            VaeConfig {
                activation: Act::Tanh,
                ..VaeConfig::mirrored(45, &[37, 29, 11], 5)
            },
        ] {
            let l = ParamLayout::new(&cfg);
            let s = &l.specs;
            let find = |n: &str| s.iter().position(|p| p.name == n).unwrap();
            let (mu_w, mu_b) = (find("enc_mu.weight"), find("enc_mu.bias"));
            let (lv_w, lv_b) = (find("enc_logvar.weight"), find("enc_logvar.bias"));
            assert_eq!(s[lv_w].offset, s[mu_w].range().end);
            assert_eq!(s[lv_b].offset, s[mu_b].range().end);
            for (i, spec) in s.iter().enumerate() {
                if i != lv_w && i != lv_b {
                    assert_eq!(spec.offset % ARENA_ALIGN, 0, "{}", spec.name);
                }
                assert!(spec.range().end <= l.len);
                for other in &s[i + 1..] {
                    let (a, b) = (spec.range(), other.range());
                    assert!(
                        a.end <= b.start || b.end <= a.start,
                        "{} / {}",
                        spec.name,
                        other.name
                    );
                }
            }
            let h = *cfg.hidden.last().unwrap();
            assert_eq!(l.heads.weight_shape(), [2 * cfg.latent, h]);
            assert_eq!(
                (l.heads.weight, l.heads.bias),
                (s[mu_w].offset, s[mu_b].offset)
            );
            assert_eq!(l.len % ARENA_ALIGN, 0);
            // Every Linear's views are its specs'.
            let linears: Vec<&Linear> = l
                .encoder
                .iter()
                .chain(&l.decoder)
                .chain([&l.output])
                .collect();
            assert_eq!(
                linears.len(),
                cfg.hidden.len() + cfg.decoder_hidden.len() + 1
            );
            for lin in linears {
                let w = &s[find(&format!("{}.weight", lin.name))];
                let b = &s[find(&format!("{}.bias", lin.name))];
                assert_eq!(w.range(), lin.weight_range());
                assert_eq!(b.range(), lin.bias_range());
                assert_eq!(w.shape, lin.weight_shape().to_vec());
            }
            assert_eq!(l.num_params() as u64, cfg.num_params());
        }
    }

    #[test]
    fn a_conditional_layers_weight_is_its_input_columns_and_its_label_columns() {
        let cfg = VaeConfig {
            classes: 3,
            ..VaeConfig::mirrored(5, &[4, 2], 2)
        };
        let l = ParamLayout::new(&cfg);
        let (enc, dec) = (&l.encoder[0], &l.decoder[0]);
        assert_eq!((enc.labels, dec.labels), (3, 3));
        assert!(l.encoder[1].labels == 0 && l.heads.labels == 0 && l.output.labels == 0);
        assert_eq!(enc.weight_shape(), [4, 5]);
        assert_eq!(enc.torch_weight_shape(), [4, 8]);
        assert_eq!(dec.torch_weight_shape(), [2, 5]);
        // PyTorch's fan-in counts the one-hot inputs.
        assert_eq!(enc.fan_in(), 8);
        let spec = l.get("encoder.0.weight").unwrap();
        assert_eq!(spec.shape, [4, 8]);
        assert_eq!(
            spec.ranges(),
            [enc.weight_range(), enc.label_weight_range()]
        );
        assert_eq!(l.num_params() as u64, cfg.num_params());
        // Row o of PyTorch's [out, in + classes] is the input columns' row o, then the label
        // columns' row o; writing and reading back is the identity, and nothing else is touched.
        let values: Vec<f32> = (0..spec.len()).map(|i| i as f32 + 1.0).collect();
        let mut arena = vec![0.0f32; l.len];
        spec.write(&mut arena, &values);
        assert_eq!(spec.read(&arena), values);
        assert_eq!(
            &arena[enc.weight_range()][..6],
            [1.0, 2.0, 3.0, 4.0, 5.0, 9.0]
        );
        assert_eq!(&arena[enc.label_weight_range()][..4], [6.0, 7.0, 8.0, 14.0]);
        let touched = arena.iter().filter(|&&v| v != 0.0).count();
        assert_eq!(touched, spec.len());
        // Every tensor's ranges are disjoint and inside the arena.
        let mut all: Vec<std::ops::Range<usize>> =
            l.specs.iter().flat_map(|s| s.ranges()).collect();
        all.sort_by_key(|r| r.start);
        for w in all.windows(2) {
            assert!(w[0].end <= w[1].start, "{w:?}");
        }
        assert!(all.last().unwrap().end <= l.len);
    }

    #[test]
    fn names_are_the_notebooks_with_one_hidden_layer_and_sequential_indices_beyond() {
        let names = |cfg: &VaeConfig| -> Vec<String> {
            ParamLayout::new(cfg)
                .specs
                .iter()
                .map(|s| s.name.clone())
                .collect()
        };
        assert_eq!(
            names(&VaeConfig::default()),
            [
                "linear_enc.weight",
                "linear_enc.bias",
                "enc_mu.weight",
                "enc_mu.bias",
                "enc_logvar.weight",
                "enc_logvar.bias",
                "linear_dec.weight",
                "linear_dec.bias",
                "dec_mu.weight",
                "dec_mu.bias"
            ]
        );
        let deep = names(&VaeConfig::mirrored(784, &[400, 200], 20));
        assert_eq!(
            deep,
            [
                "encoder.0.weight",
                "encoder.0.bias",
                "encoder.2.weight",
                "encoder.2.bias",
                "enc_mu.weight",
                "enc_mu.bias",
                "enc_logvar.weight",
                "enc_logvar.bias",
                "decoder.0.weight",
                "decoder.0.bias",
                "decoder.2.weight",
                "decoder.2.bias",
                "dec_mu.weight",
                "dec_mu.bias"
            ]
        );
    }
}
