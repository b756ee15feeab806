//! Descriptors shared by the GPU kernels and their CPU twins.

pub mod likelihood;

pub use likelihood::Likelihood;

/// Operand layouts of `C = op(A) · op(B)` (row-major; weights `[out, in]` as PyTorch stores them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// A `[M,K]`, B `[K,N]`: input gradients, `dX = dY · W`.
    NN,
    /// A `[M,K]`, B `[N,K]`: Linear forward, `Y = X · Wᵀ`.
    NT,
    /// A `[K,M]`, B `[K,N]`: weight gradients, `dW = dYᵀ · X`.
    TN,
}

impl Layout {
    pub const ALL: [Layout; 3] = [Layout::NN, Layout::NT, Layout::TN];

    /// Shapes of A and B for a product of size M x N over K.
    ///
    /// ```
    /// use vae_wgpu::ops::Layout;
    /// // The Linear forward Y[B,out] = X[B,in]·W[out,in]ᵀ is an NT product over K = in.
    /// assert_eq!(Layout::NT.operand_shapes(128, 200, 784), ([128, 784], [200, 784]));
    /// // Its weight gradient dW[out,in] = dY[B,out]ᵀ·X[B,in] is TN over K = B.
    /// assert_eq!(Layout::TN.operand_shapes(200, 784, 128), ([128, 200], [128, 784]));
    /// ```
    pub fn operand_shapes(self, m: usize, n: usize, k: usize) -> ([usize; 2], [usize; 2]) {
        match self {
            Layout::NN => ([m, k], [k, n]),
            Layout::NT => ([m, k], [n, k]),
            Layout::TN => ([k, m], [k, n]),
        }
    }

    pub(crate) fn code(self) -> u32 {
        match self {
            Layout::NN => 0,
            Layout::NT => 1,
            Layout::TN => 2,
        }
    }
}

/// Elementwise activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Act {
    Identity,
    Relu,
    Sigmoid,
    /// Kingma & Welling's choice for the AEVB experiments' hidden layers.
    Tanh,
}

impl Act {
    pub const ALL: [Act; 4] = [Act::Identity, Act::Relu, Act::Sigmoid, Act::Tanh];

    /// The activations a hidden layer may use (`--activation`), with their flag names.
    pub const HIDDEN: [(Act, &'static str); 2] = [(Act::Relu, "relu"), (Act::Tanh, "tanh")];

    /// The override-constant value the shaders switch on (`ACT`, `ACT_GRAD`).
    pub(crate) fn code(self) -> u32 {
        match self {
            Act::Identity => 0,
            Act::Relu => 1,
            Act::Sigmoid => 2,
            Act::Tanh => 3,
        }
    }

    /// The lower-case name (`relu`, `tanh`, ...), as flags and checkpoints spell it.
    pub fn name(self) -> &'static str {
        match self {
            Act::Identity => "identity",
            Act::Relu => "relu",
            Act::Sigmoid => "sigmoid",
            Act::Tanh => "tanh",
        }
    }

    /// A hidden-layer activation by name (`relu` or `tanh`).
    pub fn hidden_from_name(name: &str) -> Option<Act> {
        Self::HIDDEN
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name.trim()))
            .map(|(a, _)| *a)
    }
}

impl std::fmt::Display for Act {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `1 - β` as PyTorch computes it: in f64 from the decimal value meant (the f32's shortest
/// decimal form, 0.999 for `0.999f32`), then rounded to f32 once. `1.0 - 0.999f32` in f32 is
/// 1.3e-5 (relative) away from that, which would scale `exp_avg_sq` against PyTorch's.
pub fn one_minus(beta: f32) -> f32 {
    (1.0 - meant(beta)) as f32
}

/// The decimal value an f32 hyperparameter stands for, as an f64 (PyTorch keeps Python floats):
/// the f32's shortest decimal form, parsed as f64 (0.999 for `0.999f32`).
pub fn meant(value: f32) -> f64 {
    value.to_string().parse().unwrap_or(value as f64)
}

/// Split a `[B, 2K]` heads matrix (row b = mu_b then logvar_b, as the heads' product writes it)
/// into its `[B, K]` mu and logvar halves.
pub fn split_heads<T: Copy>(heads: &[T], latent: usize) -> (Vec<T>, Vec<T>) {
    let mut mu = Vec::with_capacity(heads.len() / 2);
    let mut logvar = Vec::with_capacity(heads.len() / 2);
    for row in heads.chunks_exact(2 * latent) {
        mu.extend_from_slice(&row[..latent]);
        logvar.extend_from_slice(&row[latent..]);
    }
    (mu, logvar)
}

/// A 2-D convolution (NCHW) as the kernels (`shaders/conv.wgsl`) and their CPU twins see it: `batch` images, the lo side `[C, H, W]` (each
/// pixel (y, x) sees `hi[y·s − p + ky, x·s − p + kx]`), the hi side, and the weight
/// `[lo[0], hi[0], kernel, kernel]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvShape {
    pub batch: usize,
    pub lo: [usize; 3],
    pub hi: [usize; 3],
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvShape {
    pub fn lo_len(&self) -> usize {
        self.batch * self.lo.iter().product::<usize>()
    }

    pub fn hi_len(&self) -> usize {
        self.batch * self.hi.iter().product::<usize>()
    }

    pub fn weight_len(&self) -> usize {
        self.lo[0] * self.hi[0] * self.kernel * self.kernel
    }

    /// Multiply-adds of one pass (any of the three: each pairs every weight with every lo pixel).
    pub fn macs(&self) -> u64 {
        (self.weight_len() * self.batch * self.lo[1] * self.lo[2]) as u64
    }

    /// Rows of the GEMM formulation's products: one per lo pixel of every image.
    pub fn gemm_rows(&self) -> usize {
        self.batch * self.lo[1] * self.lo[2]
    }

    /// `C_hi·k·k`: a row of `cols` (a window of the hi side).
    pub fn window(&self) -> usize {
        self.hi[0] * self.kernel * self.kernel
    }

    /// (cols, rows) scratch values the GEMM formulation needs.
    pub fn scratch_len(&self) -> (usize, usize) {
        let r = self.gemm_rows();
        (r * self.window(), r * self.lo[0])
    }
}

/// A GroupNorm as its kernels (`shaders/group_norm.wgsl`) and CPU twins see it: `batch` NCHW
/// images of `channels` channels of `plane` pixels, normalised over `groups` groups of
/// `channels / groups` channels each, `eps` inside the square root (PyTorch's `nn.GroupNorm`;
/// diffusers uses 1e-6).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupNormShape {
    pub batch: usize,
    pub channels: usize,
    pub groups: usize,
    pub plane: usize,
    pub eps: f32,
}

impl GroupNormShape {
    /// Values of the tensor normalised.
    pub fn len(&self) -> usize {
        self.batch * self.channels * self.plane
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values of one group of one image.
    pub fn group_len(&self) -> usize {
        self.channels / self.groups.max(1) * self.plane
    }

    /// (image, group) pairs: the statistics are `[batch·groups, 2]` (mean, 1/σ).
    pub fn stats_rows(&self) -> usize {
        self.batch * self.groups
    }
}
