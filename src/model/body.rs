//! A side of the model as a directed acyclic graph: the encoder up to its heads, the decoder up to
//! its output layer. Nodes over tensors, in topological order: a layer of the side's list
//! ([`Op::Layer`]) or a tensor operation ([`Op::Add`], a residual sum; [`Op::Upsample`], a
//! nearest-neighbour 2x; [`Op::Attention`], the attention between its projections). Tensor 0 is the side's
//! input (x or z); node i writes tensor i + 1; the last tensor feeds the heads (or the output
//! layer). A tensor may be read by several nodes — a residual block reads its input twice — and
//! then gets the sum of their gradients.
//!
//! The forward walks the nodes in order, the backward in reverse: each node passes its output's
//! gradient to its inputs, the first contribution to a tensor written in place, later ones added
//! (`kernels::add::grad_act` with `ACCUMULATE`). A tensor's gradient is taken before the
//! activation that produced it (every contribution fuses that activation's backward, which
//! distributes over the sum). `GpuVae` plans this walk and `CpuVae` runs its twin
//! (`model/gpu.rs`, `cpu/model.rs`). The gradients share buffers where their lifetimes in that
//! walk do not overlap ([`Body::gradient_slots`]).
//!
//! A plain chain of layers is the graph whose node i reads tensor i: the default model's encoder
//! is one node, `linear_enc`. A residual block (`--res-blocks`) is four or five nodes:
//!
//! ```text
//! h = act(fc1(x));  r = fc2(h);  s = x, or shortcut(x) when the widths differ;  y = act(s + r)
//! ```

use super::layers::Layer;
use crate::ops::Act;

/// A tensor of a side: 0 is the side's input.
pub type TensorId = usize;

/// What a node computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Layer `i` of the side's list (`ParamLayout::encoder` or `decoder`), with its activation.
    Layer(usize),
    /// `y = act(a + b)` of its two inputs.
    Add(Act),
    /// Nearest-neighbour 2x of its input's `[C, H, W]` images (diffusers' `Upsample2D` before
    /// its convolution); no activation.
    Upsample([usize; 3]),
    /// diffusers' attention core over the `[C, h, w]` images of its three inputs q, k, v (one
    /// head: `v·softmax(qᵀk/√C)ᵀ`, `kernels::attention`); no activation.
    Attention([usize; 3]),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<TensorId>,
}

/// One side's graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Body {
    /// Features per row of every tensor (tensor 0: the side's input).
    pub widths: Vec<usize>,
    /// The activation that produced every tensor (`None` for the input).
    pub acts: Vec<Option<Act>>,
    /// In topological order; node i writes tensor i + 1.
    pub nodes: Vec<Node>,
}

impl Body {
    /// A graph with only its input, of `width` features.
    pub fn new(width: usize) -> Self {
        Body {
            widths: vec![width],
            acts: vec![None],
            nodes: Vec::new(),
        }
    }

    /// Append layer `index` of the side's list reading `input`; returns its output tensor.
    pub fn layer(&mut self, index: usize, l: &Layer, input: TensorId) -> TensorId {
        debug_assert_eq!(self.widths[input], l.inputs, "{} reads {input}", l.name);
        self.push(Op::Layer(index), vec![input], l.outputs, l.act)
    }

    /// Append `act(a + b)`; returns its output tensor.
    pub fn add(&mut self, a: TensorId, b: TensorId, act: Act) -> TensorId {
        debug_assert_eq!(self.widths[a], self.widths[b], "an add of unequal widths");
        let w = self.widths[a];
        self.push(Op::Add(act), vec![a, b], w, act)
    }

    /// Append the nearest-neighbour 2x of `input`'s `[C, H, W]` images; returns its output
    /// tensor (`[C, 2H, 2W]`).
    pub fn upsample(&mut self, input: TensorId, image: [usize; 3]) -> TensorId {
        let [c, h, w] = image;
        debug_assert_eq!(
            self.widths[input],
            c * h * w,
            "an upsampling of another size"
        );
        self.push(
            Op::Upsample(image),
            vec![input],
            4 * c * h * w,
            Act::Identity,
        )
    }

    /// Append the attention core reading `q`, `k`, `v` (`[C, h, w]` images each); returns its
    /// output tensor.
    pub fn attention(&mut self, [q, k, v]: [TensorId; 3], image: [usize; 3]) -> TensorId {
        let n: usize = image.iter().product();
        debug_assert!([q, k, v].iter().all(|&t| self.widths[t] == n));
        self.push(Op::Attention(image), vec![q, k, v], n, Act::Identity)
    }

    fn push(&mut self, op: Op, inputs: Vec<TensorId>, width: usize, act: Act) -> TensorId {
        self.nodes.push(Node { op, inputs });
        self.widths.push(width);
        self.acts.push(Some(act));
        self.widths.len() - 1
    }

    /// The tensor the heads (or the output layer) read: the last one written.
    pub fn output(&self) -> TensorId {
        self.widths.len() - 1
    }

    /// Every tensor's readers (node indices, and `usize::MAX` for the heads or output layer that
    /// reads the last tensor).
    pub fn readers(&self) -> Vec<Vec<usize>> {
        let mut r = vec![Vec::new(); self.widths.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &t in &n.inputs {
                r[t].push(i);
            }
        }
        r[self.output()].push(usize::MAX);
        r
    }

    /// Whether some tensor has several readers (a gradient then sums several contributions).
    pub fn has_fan_out(&self) -> bool {
        self.readers().iter().any(|r| r.len() > 1)
    }

    /// A buffer slot for every tensor's gradient (index t − 1 for tensor t ≥ 1), shared where
    /// the gradients' lifetimes in the backward do not overlap. The backward visits the layer
    /// that reads the last tensor at time 0 and node i at time `nodes − i`; tensor t's gradient
    /// is first written at its earliest-visited reader and last read at its producer (node t − 1),
    /// both ends included (a node reads its output's gradient while it writes its inputs'), so a
    /// slot is reused only after the gradient in it has been read for the last time. A chain
    /// needs two slots, whatever its length. Returns (slot per gradient, number of slots).
    pub fn gradient_slots(&self) -> (Vec<usize>, usize) {
        let n = self.nodes.len();
        let time = |reader: usize| if reader == usize::MAX { 0 } else { n - reader };
        let readers = self.readers();
        let mut order: Vec<(usize, usize, usize)> = (1..self.widths.len())
            .map(|t| {
                let end = time(t - 1);
                let start = readers[t].iter().map(|&r| time(r)).min().unwrap_or(end);
                (start, end, t)
            })
            .collect();
        order.sort();
        let mut slot_free_after: Vec<usize> = Vec::new();
        let mut slots = vec![0; self.widths.len().saturating_sub(1)];
        for (start, end, t) in order {
            let slot = match slot_free_after.iter().position(|&e| e < start) {
                Some(s) => s,
                None => {
                    slot_free_after.push(0);
                    slot_free_after.len() - 1
                }
            };
            slot_free_after[slot] = end;
            slots[t - 1] = slot;
        }
        (slots, slot_free_after.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::layers::Layer;

    fn dense(w: usize) -> Layer {
        Layer::linear("l", w, w, Act::Relu)
    }

    #[test]
    fn a_chain_shares_two_gradient_buffers() {
        let mut b = Body::new(4);
        for i in 0..5 {
            b.layer(i, &dense(4), i);
        }
        let (slots, n) = b.gradient_slots();
        assert_eq!(n, 2);
        // Neighbours (one node reads the other's gradient while writing its own) never share.
        assert!(slots.windows(2).all(|w| w[0] != w[1]), "{slots:?}");
    }

    #[test]
    fn a_residual_input_keeps_its_gradient_until_its_producer_reads_it() {
        // x -> l0 -> t1; t1 -> l1 -> t2; t2 -> l2 -> t3; t4 = t1 + t3 (t1 read twice).
        let mut b = Body::new(4);
        let t1 = b.layer(0, &dense(4), 0);
        let t2 = b.layer(1, &dense(4), t1);
        let t3 = b.layer(2, &dense(4), t2);
        let t4 = b.add(t1, t3, Act::Relu);
        let (slots, _) = b.gradient_slots();
        let slot = |t: usize| slots[t - 1];
        // t1's gradient is written by the add (before t3's backward) and read by l0 last: no
        // other gradient alive meanwhile may share its buffer.
        for t in [t2, t3, t4] {
            assert_ne!(slot(t1), slot(t), "{slots:?}");
        }
        assert_ne!(slot(t2), slot(t3));
    }
}
