//! diffusers' `AutoencoderKL` (Stable Diffusion's VAE), built as diffusers builds it from its
//! `config.json` ([`KlConfig`]), with diffusers' tensor names, as the graph of layer modules the
//! engine trains.
//!
//! ```text
//! encoder: conv_in 3x3 → down_blocks[i]: layers_per_block × ResnetBlock2D, Downsample2D but the last
//!          → mid_block: ResnetBlock2D, Attention (unless `mid_block_add_attention: false`),
//!            ResnetBlock2D → conv_norm_out (GroupNorm + SiLU)
//!          → conv_out 3x3 to 2·latent_channels
//! heads:   quant_conv 1x1 (2·latent → 2·latent): mean | logvar, channel halves (so the [B, 2K]
//!          heads matrix is mean | logvar per row, K = latent_channels·h·w)
//! decoder: post_quant_conv 1x1 → conv_in 3x3 → mid_block → up_blocks[i] over the channels
//!          reversed: (layers_per_block + 1) × ResnetBlock2D, Upsample2D but the last
//!          → conv_norm_out (GroupNorm + SiLU) → conv_out 3x3 (the output: the likelihood's mean)
//! ResnetBlock2D(in, out): norm1 + SiLU, conv1 3x3, norm2 + SiLU, conv2 3x3, plus the input
//!          (through conv_shortcut 1x1 when in ≠ out)
//! Downsample2D: pad bottom and right by 1, conv 3x3 stride 2;  Upsample2D: nearest 2x, conv 3x3
//! Attention(C): group_norm (no SiLU), to_q / to_k / to_v (Linear over channels at every pixel),
//!          v·softmax(qᵀk/√C)ᵀ over the h·w positions, to_out.0, plus the input
//! ```
//!
//! Every GroupNorm has `norm_num_groups` groups and ε = 1e-6; the posterior's logvar is clamped to
//! [−30, 20] (`kernels::reparam_kl::Logvar::Clamped`).

use super::body::{Body, TensorId};
use super::layers::{ConvGeom, Layer, NormGeom};
use crate::error::{Error, Result};
use crate::ops::Act;
use serde_json::{Map, Value, json};

/// diffusers' ε of every GroupNorm of `AutoencoderKL` (`resnet_eps`, `conv_norm_out`).
pub const NORM_EPS: f32 = 1e-6;

/// The fields of diffusers' `AutoencoderKL` config that build the model; the others it writes
/// (`scaling_factor`, `shift_factor`, `latents_mean`, …) are kept in `extra` and written back.
#[derive(Clone, Debug, PartialEq)]
pub struct KlConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Channels of each down block (input side first); the up blocks take them reversed.
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    pub sample_size: usize,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
    /// The config's other fields, as read (written back by [`KlConfig::to_json`]).
    pub extra: Map<String, Value>,
}

impl KlConfig {
    /// A model of `block_out_channels` for `in_channels`-channel images of side `sample_size`,
    /// diffusers' defaults otherwise (SiLU, quant convs, the mid block's attention).
    pub fn new(
        in_channels: usize,
        block_out_channels: &[usize],
        layers_per_block: usize,
        latent_channels: usize,
        norm_num_groups: usize,
        sample_size: usize,
    ) -> Self {
        let mut extra = Map::new();
        extra.insert("scaling_factor".into(), json!(0.18215));
        KlConfig {
            in_channels,
            out_channels: in_channels,
            block_out_channels: block_out_channels.to_vec(),
            layers_per_block,
            latent_channels,
            norm_num_groups,
            sample_size,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
            extra,
        }
    }

    /// How many times the encoder halves the image's sides (a Downsample2D per block but the
    /// last).
    pub fn downsamples(&self) -> usize {
        self.block_out_channels.len().saturating_sub(1)
    }

    /// The latent's `[C, h, w]` for `[_, rows, cols]` images.
    pub fn latent_image(&self, [_, rows, cols]: [usize; 3]) -> [usize; 3] {
        let div = 1usize << self.downsamples().min(31);
        [self.latent_channels, rows / div, cols / div]
    }

    /// Read a diffusers `config.json` (`source` names it in errors): refuses what the engine
    /// cannot build, naming the field.
    pub fn from_json(v: &Value, source: &str) -> Result<Self> {
        let bad = |field: &str, why: String| {
            Error::Config(format!(
                "{source}: `{field}` {why}; the engine builds diffusers' AutoencoderKL with \
                 DownEncoderBlock2D / UpDecoderBlock2D blocks and SiLU"
            ))
        };
        let obj = match v.as_object() {
            Some(o) => o,
            None => return Err(bad("(top level)", "is not a JSON object".into())),
        };
        if let Some(class) = obj.get("_class_name").and_then(Value::as_str)
            && class != "AutoencoderKL"
        {
            return Err(bad(
                "_class_name",
                format!("is {class:?}, not \"AutoencoderKL\""),
            ));
        }
        let int = |field: &str, default: Option<usize>| -> Result<usize> {
            match obj.get(field) {
                None | Some(Value::Null) => match default {
                    Some(d) => Ok(d),
                    None => Err(bad(field, "is missing".into())),
                },
                Some(x) => match x.as_u64() {
                    Some(n) if (1..=1 << 20).contains(&n) => Ok(n as usize),
                    _ => Err(bad(
                        field,
                        format!("is {x}, not a whole number from 1 to 2^20"),
                    )),
                },
            }
        };
        let flag = |field: &str, default: bool| -> Result<bool> {
            match obj.get(field) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Bool(b)) => Ok(*b),
                Some(x) => Err(bad(field, format!("is {x}, not true or false"))),
            }
        };
        let block_out_channels: Vec<usize> = match obj.get("block_out_channels") {
            None => vec![64],
            Some(Value::Array(a)) if !a.is_empty() && a.len() <= 8 => {
                let mut v = Vec::new();
                for x in a {
                    match x.as_u64() {
                        Some(n) if (1..=4096).contains(&n) => v.push(n as usize),
                        _ => {
                            return Err(bad(
                                "block_out_channels",
                                format!("holds {x}, not 1 to 4096"),
                            ));
                        }
                    }
                }
                v
            }
            Some(x) => {
                return Err(bad(
                    "block_out_channels",
                    format!("is {x}, not 1 to 8 widths"),
                ));
            }
        };
        let blocks = block_out_channels.len();
        for (field, kind) in [
            ("down_block_types", "DownEncoderBlock2D"),
            ("up_block_types", "UpDecoderBlock2D"),
        ] {
            if let Some(x) = obj.get(field) {
                let ok = x.as_array().is_some_and(|a| {
                    a.len() == blocks && a.iter().all(|t| t.as_str() == Some(kind))
                });
                if !ok {
                    return Err(bad(
                        field,
                        format!("is {x}, not {blocks} × {kind:?} (one per block_out_channels)"),
                    ));
                }
            }
        }
        if let Some(act) = obj.get("act_fn")
            && act.as_str() != Some("silu")
        {
            return Err(bad("act_fn", format!("is {act}, not \"silu\"")));
        }
        let cfg = KlConfig {
            in_channels: int("in_channels", Some(3))?,
            out_channels: int("out_channels", Some(3))?,
            layers_per_block: int("layers_per_block", Some(1))?,
            latent_channels: int("latent_channels", Some(4))?,
            norm_num_groups: int("norm_num_groups", Some(32))?,
            sample_size: int("sample_size", Some(32))?,
            use_quant_conv: flag("use_quant_conv", true)?,
            use_post_quant_conv: flag("use_post_quant_conv", true)?,
            mid_block_add_attention: flag("mid_block_add_attention", true)?,
            block_out_channels,
            extra: obj
                .iter()
                // diffusers' bookkeeping (`_diffusers_version`, `_name_or_path`) is rewritten on save.
                .filter(|(k, _)| !Self::BUILT_FROM.contains(&k.as_str()) && !k.starts_with('_'))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        cfg.validate(source)?;
        Ok(cfg)
    }

    /// The config fields the model is built from (written by [`KlConfig::to_json`] itself).
    const BUILT_FROM: [&'static str; 14] = [
        "_class_name",
        "in_channels",
        "out_channels",
        "down_block_types",
        "up_block_types",
        "block_out_channels",
        "layers_per_block",
        "act_fn",
        "latent_channels",
        "norm_num_groups",
        "sample_size",
        "use_quant_conv",
        "use_post_quant_conv",
        "mid_block_add_attention",
    ];

    /// Every GroupNorm's channels divide into `norm_num_groups`.
    pub fn validate(&self, source: &str) -> Result<()> {
        let g = self.norm_num_groups;
        if let Some(c) = self.block_out_channels.iter().find(|&&c| c % g != 0) {
            return Err(Error::Config(format!(
                "{source}: block_out_channels {c} do not split into norm_num_groups = {g} groups: \
                 choose channels that are multiples of it"
            )));
        }
        if self.block_out_channels.is_empty() {
            return Err(Error::Config(format!(
                "{source}: block_out_channels is empty"
            )));
        }
        Ok(())
    }

    /// diffusers' `config.json` of this model (what `save_pretrained` writes; the `extra` fields
    /// kept).
    pub fn to_json(&self) -> Value {
        let n = self.block_out_channels.len();
        let mut o = self.extra.clone();
        for (k, v) in [
            ("_class_name", json!("AutoencoderKL")),
            ("in_channels", json!(self.in_channels)),
            ("out_channels", json!(self.out_channels)),
            ("down_block_types", json!(vec!["DownEncoderBlock2D"; n])),
            ("up_block_types", json!(vec!["UpDecoderBlock2D"; n])),
            ("block_out_channels", json!(self.block_out_channels)),
            ("layers_per_block", json!(self.layers_per_block)),
            ("act_fn", json!("silu")),
            ("latent_channels", json!(self.latent_channels)),
            ("norm_num_groups", json!(self.norm_num_groups)),
            ("sample_size", json!(self.sample_size)),
            ("use_quant_conv", json!(self.use_quant_conv)),
            ("use_post_quant_conv", json!(self.use_post_quant_conv)),
            (
                "mid_block_add_attention",
                json!(self.mid_block_add_attention),
            ),
        ] {
            o.insert(k.into(), v);
        }
        Value::Object(o)
    }
}

/// The model's layers and graphs (see `model::params::LayerList`).
pub struct KlLayers {
    pub encoder: Vec<Layer>,
    pub enc_body: Body,
    pub heads: Layer,
    pub decoder: Vec<Layer>,
    pub dec_body: Body,
    pub output: Layer,
    /// The tensors diffusers' blocks output, named as its modules (`encoder.down_blocks.0`,
    /// `decoder.mid_block`, `encoder.conv_act`: the norm and SiLU before `conv_out`), with the side
    /// (`false` the encoder's graph, `true` the decoder's): what the parity test compares block by
    /// block.
    pub blocks: Vec<(String, bool, TensorId)>,
}

/// A side's layers and graph while they are built, at image `[C, H, W]` of its last tensor.
struct Builder {
    layers: Vec<Layer>,
    body: Body,
    image: [usize; 3],
    groups: usize,
}

impl Builder {
    fn new(image: [usize; 3], groups: usize) -> Self {
        Builder {
            layers: Vec::new(),
            body: Body::new(image.iter().product()),
            image,
            groups,
        }
    }

    fn push(&mut self, l: Layer, input: TensorId) -> TensorId {
        self.layers.push(l);
        let i = self.layers.len() - 1;
        self.body.layer(i, &self.layers[i], input)
    }

    /// A `Conv2d(c, out, k, 1, k/2)` at the current image reading `input`.
    fn conv(&mut self, name: String, input: TensorId, out: usize, k: usize) -> TensorId {
        let t = self.body.widths[input];
        let image = self.image_of(t);
        let g = ConvGeom::conv2d(image, out, k, 1, k / 2).expect("a same-size convolution fits");
        self.push(Layer::conv(name, false, g, Act::Identity), input)
    }

    /// The image of a tensor of `width` values at the current sides.
    fn image_of(&self, width: usize) -> [usize; 3] {
        let [_, h, w] = self.image;
        [width / (h * w), h, w]
    }

    /// GroupNorm (+ SiLU) reading `input`.
    fn norm(&mut self, name: String, input: TensorId) -> TensorId {
        self.norm_then(name, input, true)
    }

    fn norm_then(&mut self, name: String, input: TensorId, silu: bool) -> TensorId {
        let image = self.image_of(self.body.widths[input]);
        let g = NormGeom::new(image, self.groups, NORM_EPS, silu);
        self.push(Layer::norm(name, g), input)
    }

    /// diffusers' `Attention` of the mid block (one head of all channels, its residual added),
    /// named `prefix`, reading `input`: group_norm, to_q / to_k / to_v, the core, to_out.0.
    fn attention(&mut self, prefix: &str, input: TensorId) -> TensorId {
        let image = self.image_of(self.body.widths[input]);
        let n = self.norm_then(format!("{prefix}.group_norm"), input, false);
        let proj = |b: &mut Self, name: &str, from: TensorId| {
            b.push(
                Layer::pixel_linear(format!("{prefix}.{name}"), image, image[0]),
                from,
            )
        };
        let q = proj(self, "to_q", n);
        let k = proj(self, "to_k", n);
        let v = proj(self, "to_v", n);
        let o = self.body.attention([q, k, v], image);
        let out = proj(self, "to_out.0", o);
        self.body.add(out, input, Act::Identity)
    }

    /// diffusers' `UNetMidBlock2D`: a ResNet, the attention (when `attention`), a ResNet.
    fn mid_block(&mut self, prefix: &str, input: TensorId, attention: bool) -> TensorId {
        let c = self.image_of(self.body.widths[input])[0];
        let mut t = self.resnet(&format!("{prefix}.resnets.0"), input, c);
        if attention {
            t = self.attention(&format!("{prefix}.attentions.0"), t);
        }
        self.resnet(&format!("{prefix}.resnets.1"), t, c)
    }

    /// diffusers' `ResnetBlock2D(in, out)` named `prefix`, reading `input`.
    fn resnet(&mut self, prefix: &str, input: TensorId, out: usize) -> TensorId {
        let c_in = self.image_of(self.body.widths[input])[0];
        let n1 = self.norm(format!("{prefix}.norm1"), input);
        let c1 = self.conv(format!("{prefix}.conv1"), n1, out, 3);
        let n2 = self.norm(format!("{prefix}.norm2"), c1);
        let c2 = self.conv(format!("{prefix}.conv2"), n2, out, 3);
        let s = if c_in == out {
            input
        } else {
            self.conv(format!("{prefix}.conv_shortcut"), input, out, 1)
        };
        self.body.add(s, c2, Act::Identity)
    }
}

/// The layers of `cfg` on `image` (`[C, H, W]`, sides divisible by 2^downsamples).
pub fn layers(cfg: &KlConfig, image: [usize; 3]) -> KlLayers {
    let ch = &cfg.block_out_channels;
    let groups = cfg.norm_num_groups;
    // ---- encoder
    let mut e = Builder::new(image, groups);
    let mut blocks = Vec::new();
    let mut t = e.conv("encoder.conv_in".into(), 0, ch[0], 3);
    blocks.push(("encoder.conv_in".to_string(), false, t));
    for (i, &out) in ch.iter().enumerate() {
        for j in 0..cfg.layers_per_block {
            t = e.resnet(&format!("encoder.down_blocks.{i}.resnets.{j}"), t, out);
        }
        if i + 1 < ch.len() {
            let from = e.image_of(e.body.widths[t]);
            let g = ConvGeom::conv2d_padded_end(from, out, 3, 2, 1).expect("a 3x3 fits");
            e.image = g.output;
            let name = format!("encoder.down_blocks.{i}.downsamplers.0.conv");
            t = e.push(Layer::conv(name, false, g, Act::Identity), t);
        }
        blocks.push((format!("encoder.down_blocks.{i}"), false, t));
    }
    let last = *ch.last().unwrap_or(&1);
    let attention = cfg.mid_block_add_attention;
    t = e.mid_block("encoder.mid_block", t, attention);
    blocks.push(("encoder.mid_block".to_string(), false, t));
    t = e.norm("encoder.conv_norm_out".into(), t);
    blocks.push(("encoder.conv_act".to_string(), false, t));
    let moments = 2 * cfg.latent_channels;
    let latent = e.image_of(moments * e.image[1] * e.image[2]);
    let conv_out = |image: [usize; 3]| {
        let g = ConvGeom::conv2d(image, moments, 3, 1, 1).expect("a 3x3 fits");
        Layer::conv("encoder.conv_out", false, g, Act::Identity)
    };
    let heads = if cfg.use_quant_conv {
        let from = e.image_of(e.body.widths[t]);
        let out = e.push(conv_out(from), t);
        blocks.push(("encoder.conv_out".to_string(), false, out));
        let g = ConvGeom::conv2d(latent, moments, 1, 1, 0).expect("a 1x1 fits");
        Layer::conv("quant_conv", false, g, Act::Identity)
    } else {
        conv_out(e.image_of(e.body.widths[t]))
    };
    // ---- decoder, from z [latent_channels, h, w]
    let z_image = [cfg.latent_channels, latent[1], latent[2]];
    let mut d = Builder::new(z_image, groups);
    let mut t = 0;
    if cfg.use_post_quant_conv {
        t = d.conv("post_quant_conv".into(), t, cfg.latent_channels, 1);
        blocks.push(("post_quant_conv".to_string(), true, t));
    }
    t = d.conv("decoder.conv_in".into(), t, last, 3);
    blocks.push(("decoder.conv_in".to_string(), true, t));
    t = d.mid_block("decoder.mid_block", t, attention);
    blocks.push(("decoder.mid_block".to_string(), true, t));
    for (i, &out) in ch.iter().rev().enumerate() {
        for j in 0..=cfg.layers_per_block {
            t = d.resnet(&format!("decoder.up_blocks.{i}.resnets.{j}"), t, out);
        }
        if i + 1 < ch.len() {
            let from = d.image_of(d.body.widths[t]);
            t = d.body.upsample(t, from);
            d.image = [from[0], 2 * from[1], 2 * from[2]];
            t = d.conv(
                format!("decoder.up_blocks.{i}.upsamplers.0.conv"),
                t,
                out,
                3,
            );
        }
        blocks.push((format!("decoder.up_blocks.{i}"), true, t));
    }
    t = d.norm("decoder.conv_norm_out".into(), t);
    blocks.push(("decoder.conv_act".to_string(), true, t));
    let from = d.image_of(d.body.widths[t]);
    let g = ConvGeom::conv2d(from, cfg.out_channels, 3, 1, 1).expect("a 3x3 fits");
    let output = Layer::conv("decoder.conv_out", false, g, Act::Identity);
    KlLayers {
        encoder: e.layers,
        enc_body: e.body,
        heads,
        decoder: d.layers,
        dec_body: d.body,
        output,
        blocks,
    }
}

/// diffusers' order of the state_dict's module prefixes: the encoder, the decoder (its up blocks
/// registered before its mid block), then the quant convs. A key to sort tensor names by.
pub fn state_dict_rank(name: &str) -> (usize, usize) {
    let group = match name.split('.').next() {
        Some("encoder") => 0,
        Some("decoder") => 1,
        Some("quant_conv") => 2,
        _ => 3,
    };
    let within = if name.starts_with("decoder.conv_in") {
        0
    } else if name.starts_with("decoder.up_blocks") {
        1
    } else if name.starts_with("decoder.mid_block") {
        2
    } else {
        3
    };
    (group, if group == 1 { within } else { 0 })
}
