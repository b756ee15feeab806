//! A side of the model as a directed acyclic graph: the encoder up to its heads, the decoder up to
//! its output layer. Nodes over tensors, in topological order: a layer of the side's list
//! ([`Op::Layer`]) or a tensor operation ([`Op::Add`], a residual sum). Tensor 0 is the side's
//! input (x or z); node i writes tensor i + 1; the last tensor feeds the heads (or the output
//! layer). A tensor may be read by several nodes — a residual block reads its input twice — and
//! then gets the sum of their gradients.
//!
//! The forward walks the nodes in order, the backward in reverse: each node passes its output's
//! gradient to its inputs, the first contribution to a tensor written in place, later ones added
//! (`kernels::add::grad_act` with `ACCUMULATE`). A tensor's gradient is taken before the
//! activation that produced it (every contribution fuses that activation's backward, which
//! distributes over the sum). `GpuVae` plans this walk and `CpuVae` runs its twin
//! (`model/gpu.rs`, `cpu/model.rs`).
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
}
