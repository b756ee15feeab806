//! Which matmul kernel runs a product: the kernel families ([`MatmulVariant`]), the entry point
//! and grid of each for a problem, and the choice — pinned (`VAE_WGPU_MATMUL`), else recorded in
//! the device's tune store, else timed now by `tune` and recorded.

use std::fmt;
use std::str::FromStr;

use super::Problem;
use crate::error::{Error, Result};
use crate::gpu::context::MATMUL_ENV;
use crate::gpu::{GpuContext, Shader};
use crate::ops::Layout;

/// Lanes the subgroup matmul kernels broadcast across (their workgroup size).
pub const SUBGROUP_LANES: u32 = 8;

/// A shape of the tiled kernel: each of its 16x16 threads owns `rm` x `rn` outputs, so a
/// workgroup covers a (16·rm) x (16·rn) tile of C, and K goes through workgroup memory `tk` at a
/// time, in one buffer or, with `stages` 2, double-buffered (override constants `TILE_RM`,
/// `TILE_RN`, `TILE_K`, `TILE_STAGES` of `matmul.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileShape {
    pub rm: u32,
    pub rn: u32,
    pub tk: u32,
    pub stages: u32,
}

impl TileShape {
    /// 64x64 tiles, 4x4 outputs per thread, K steps of 16 (the shape the kernel always had).
    pub const T64X64: TileShape = TileShape::new(4, 4, 16, 1);
    pub const T128X64: TileShape = TileShape::new(8, 4, 16, 1);
    pub const T64X128: TileShape = TileShape::new(4, 8, 16, 1);
    pub const T128X128: TileShape = TileShape::new(8, 8, 8, 1);
    /// The 64x64 and 128x128 shapes double-buffered: the next K tile's loads overlap this
    /// tile's multiply-adds, one barrier per tile.
    pub const T64X64_DB: TileShape = TileShape::new(4, 4, 16, 2);
    pub const T128X128_DB: TileShape = TileShape::new(8, 8, 8, 2);
    /// The candidates the autotune times (each within 2 x 2048 floats of workgroup memory).
    pub const ALL: [TileShape; 6] = [
        TileShape::T64X64,
        TileShape::T128X64,
        TileShape::T64X128,
        TileShape::T128X128,
        TileShape::T64X64_DB,
        TileShape::T128X128_DB,
    ];

    /// A shape the kernel can run, checked when the constant is built: at most 8x8 outputs per
    /// thread, the tiles of all stages within the kernel's 2048-float workgroup arrays, and whole
    /// elements per thread when the 256 threads fetch a tile.
    const fn new(rm: u32, rn: u32, tk: u32, stages: u32) -> TileShape {
        let widest = if rm > rn { rm } else { rn };
        assert!(rm >= 1 && rm <= 8 && rn >= 1 && rn <= 8);
        assert!(stages == 1 || stages == 2);
        assert!(stages * tk * 16 * widest <= 2048);
        assert!((tk * rm).is_multiple_of(16) && (tk * rn).is_multiple_of(16));
        TileShape { rm, rn, tk, stages }
    }

    /// Rows and columns of C per workgroup.
    pub fn tile(self) -> (u32, u32) {
        (16 * self.rm, 16 * self.rn)
    }

    /// The override constants that select this shape.
    pub fn constants(self) -> [(&'static str, f64); 4] {
        [
            ("TILE_RM", self.rm as f64),
            ("TILE_RN", self.rn as f64),
            ("TILE_K", self.tk as f64),
            ("TILE_STAGES", self.stages as f64),
        ]
    }
}

/// The matmul kernel families (every variant is under the parity tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulVariant {
    /// Workgroup-memory tiles of a given shape: the fast path on real GPUs.
    Tiled(TileShape),
    /// Register blocks read straight from storage: ~2.5x faster than tiling on CPU adapters (lavapipe).
    Direct,
    /// The direct kernels with the rows' operand shared across a subgroup by broadcasts (needs
    /// the `SUBGROUP` feature and subgroups of at least 8 lanes; see `matmul_subgroup.wgsl`).
    Subgroup,
    /// The subgroup kernels reading A and B from textures the dispatch fills first (see
    /// `matmul_subgroup_tex.wgsl`: ~5x faster on lavapipe, whose storage loads are per-lane loops).
    /// Where the operands do not fit the device's textures, or the context records buffers for
    /// an exported plan, it runs as `Subgroup`.
    SubgroupTexture,
}

impl MatmulVariant {
    /// The tiled kernel in its original 64x64 shape (`tiled`).
    pub const TILED: MatmulVariant = MatmulVariant::Tiled(TileShape::T64X64);

    pub const ALL: [MatmulVariant; 3 + TileShape::ALL.len()] = {
        let mut v = [MatmulVariant::Direct; 3 + TileShape::ALL.len()];
        v[1] = MatmulVariant::Subgroup;
        v[2] = MatmulVariant::SubgroupTexture;
        let mut i = 0;
        while i < TileShape::ALL.len() {
            v[3 + i] = MatmulVariant::Tiled(TileShape::ALL[i]);
            i += 1;
        }
        v
    };

    /// Whether this variant runs the subgroup kernels (and so needs usable subgroups).
    pub fn uses_subgroups(self) -> bool {
        matches!(
            self,
            MatmulVariant::Subgroup | MatmulVariant::SubgroupTexture
        )
    }
}

impl fmt::Display for MatmulVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MatmulVariant::Tiled(TileShape::T64X64) => f.write_str("tiled"),
            MatmulVariant::Tiled(t) => {
                let (bm, bn) = t.tile();
                let db = if t.stages == 2 { "-db" } else { "" };
                write!(f, "tiled-{bm}x{bn}{db}")
            }
            MatmulVariant::Direct => f.write_str("direct"),
            MatmulVariant::Subgroup => f.write_str("subgroup"),
            MatmulVariant::SubgroupTexture => f.write_str("subgroup-tex"),
        }
    }
}

impl FromStr for MatmulVariant {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        match MatmulVariant::ALL.iter().find(|v| v.to_string() == s) {
            Some(&v) => Ok(v),
            None => {
                let names: Vec<String> = MatmulVariant::ALL.iter().map(|v| v.to_string()).collect();
                Err(Error::Config(format!(
                    "unknown matmul variant '{s}': expected one of {} ({MATMUL_ENV} also takes auto)",
                    names.join(", ")
                )))
            }
        }
    }
}

/// Whether the device can run the subgroup kernels: created with subgroups, none narrower than
/// the kernels' 8 lanes.
pub fn subgroups_usable(ctx: &GpuContext) -> bool {
    ctx.subgroups && ctx.subgroup_min_size >= SUBGROUP_LANES
}

/// Every variant this device can run: all but the subgroup ones where subgroups are not usable
/// (the parity tests, the benchmarks and the speed report walk this list).
pub fn usable_variants(ctx: &GpuContext) -> Vec<MatmulVariant> {
    MatmulVariant::ALL
        .into_iter()
        .filter(|v| !v.uses_subgroups() || subgroups_usable(ctx))
        .collect()
}

/// The variant pinned for every product (`VAE_WGPU_MATMUL` / [`crate::gpu::ContextOptions::matmul`]),
/// checked against what the device can run.
pub fn pinned(ctx: &GpuContext) -> Result<Option<MatmulVariant>> {
    let Some(text) = ctx.tune_store.pin() else {
        return Ok(None);
    };
    let v: MatmulVariant = text.parse()?;
    if v.uses_subgroups() && !subgroups_usable(ctx) {
        return Err(Error::Config(format!(
            "matmul variant '{v}' needs subgroups of at least {SUBGROUP_LANES} lanes; {} has {}",
            ctx.adapter.name,
            if ctx.subgroups {
                format!("subgroups of {} lanes or more", ctx.subgroup_min_size)
            } else {
                "no subgroup support".to_string()
            }
        )));
    }
    Ok(Some(v))
}

/// The direct kernel for a product: a vec4-loading one when the dimensions that are contiguous in
/// memory are multiples of 4 (then every row starts 16-byte aligned), else the scalar one. Loads,
/// not arithmetic, bound the direct kernel on CPU drivers: vec4 loads make it ~1.8x faster there.
fn direct_entry(p: Problem) -> MatmulEntry {
    let Problem {
        layout,
        m,
        n,
        k,
        row_sums,
        ..
    } = p;
    match layout {
        // The NT/NN vec4 kernels load A along K in vec4s and do not keep row sums.
        Layout::NT | Layout::NN if row_sums => MatmulEntry::Direct,
        Layout::NT if k.is_multiple_of(4) => MatmulEntry::Vec4(Layout::NT),
        Layout::NN if k.is_multiple_of(4) && n.is_multiple_of(4) => MatmulEntry::Vec4(Layout::NN),
        Layout::TN if m.is_multiple_of(4) && n.is_multiple_of(4) => MatmulEntry::Vec4(Layout::TN),
        _ => MatmulEntry::Direct,
    }
}

/// The most columns `matmul_sg_skinny` takes (three vec4 accumulators per lane).
pub const SKINNY_MAX_N: usize = 12;

/// The subgroup kernel for a product, where one fits: `matmul_sg_skinny` for N <= 12 where the
/// direct variant runs the scalar kernel; else C, bias and mask are read and written as vec4s
/// (N % 4 == 0), and the operands as the vec4 kernels read them. Each gives the direct variant's
/// C bit for bit (`parity_kernels::subgroup_kernels_match_the_direct_variant_bit_for_bit`).
fn subgroup_entry(p: Problem) -> Option<MatmulEntry> {
    let Problem {
        layout,
        m,
        n,
        k,
        row_sums,
        ..
    } = p;
    // Products with few columns that the direct variant runs on its scalar kernel: one row per
    // lane, the scalar kernel's arithmetic (where the direct variant takes a vec4 kernel, the
    // other subgroup kernels match that one instead), so the autotune's choice never changes C.
    if n <= SKINNY_MAX_N && direct_entry(p) == MatmulEntry::Direct {
        return Some(MatmulEntry::SubgroupSkinny);
    }
    if !n.is_multiple_of(4) {
        return None;
    }
    let fits = match layout {
        Layout::NT | Layout::NN if row_sums => false,
        Layout::NT | Layout::NN => k.is_multiple_of(4),
        Layout::TN => m.is_multiple_of(4),
    };
    fits.then_some(MatmulEntry::Subgroup {
        layout,
        textures: false,
    })
}

/// The matmul variant for a problem: the pinned one if any; else the autotune cache's choice;
/// else the candidates are timed now, on this device, and the fastest is recorded. When the
/// context records its buffers (to export a plan, whose bindings are buffers), a texture-fed
/// choice becomes its storage twin: the same kernel and the same results without the copies.
pub fn variant_for(ctx: &GpuContext, problem: Problem) -> Result<MatmulVariant> {
    let chosen = match pinned(ctx)? {
        Some(v) => v,
        // A recorded choice this device cannot run (a subgroup kernel on a device without usable
        // subgroups), or one this version does not know, counts as none. The timing is the
        // bucketed problem's, with its epilogue (see `Problem::key`).
        None => ctx.tune_store.get_or_measure(
            &problem.key(),
            |v| {
                v.parse::<MatmulVariant>()
                    .ok()
                    .filter(|&v| !v.uses_subgroups() || subgroups_usable(ctx))
            },
            || super::tune::tune(ctx, problem.bucketed()),
        )?,
    };
    Ok(match chosen {
        MatmulVariant::SubgroupTexture if ctx.records_buffers() => MatmulVariant::Subgroup,
        v => v,
    })
}

/// The candidates for a problem, the reference first: the direct kernel; the subgroup ones where
/// the device has subgroups and the shape fits them (else they are the direct one); the tile
/// shapes. With `for_export` false, a CPU adapter (lavapipe, SwiftShader) gets no tile shape:
/// there workgroup memory is plain memory plus barriers, every tile shape runs 4-40x behind the
/// direct kernels (measured: 0.2-0.6 GFLOP/s against 2-8; no product of any model here ever chose
/// one), and each is one more pipeline a first run compiles per product and epilogue. An exported
/// plan (`for_export`) lists every shape, and not the texture-fed kernels: a plan's bindings are
/// buffers.
pub(super) fn candidates(
    ctx: &GpuContext,
    problem: Problem,
    for_export: bool,
) -> Vec<MatmulVariant> {
    let mut v = vec![MatmulVariant::Direct];
    let entry = subgroup_entry(problem);
    if subgroups_usable(ctx) && entry.is_some() {
        v.push(MatmulVariant::Subgroup);
        // Only a kernel with a texture twin (not the skinny one) has more to time.
        if !for_export
            && textures_fit(ctx, problem)
            && entry.is_some_and(|e| e.with_textures() != e)
        {
            v.push(MatmulVariant::SubgroupTexture);
        }
    }
    if for_export || ctx.adapter.device_type != wgpu::DeviceType::Cpu {
        v.extend(TileShape::ALL.map(MatmulVariant::Tiled));
    }
    v
}

/// Whether both operands of `problem` fit the device's largest 2D texture.
fn textures_fit(ctx: &GpuContext, p: Problem) -> bool {
    [p.m * p.k, p.n * p.k]
        .iter()
        .all(|&len| crate::kernels::texture::texture_fits(ctx, len))
}

/// A kernel launch for a problem: entry point (which says its module and whether A and B are
/// bound as textures), grid, and the variant's own override constants (the tile shape).
pub(super) struct Kernel {
    pub entry: MatmulEntry,
    pub groups: [u32; 3],
    pub constants: Vec<(&'static str, f64)>,
}

/// The kernel of a variant for a problem.
pub(super) fn kernel_for(
    ctx: &GpuContext,
    variant: MatmulVariant,
    problem: Problem,
) -> Result<Kernel> {
    let (m, n) = (problem.m, problem.n);
    let plain = |entry: MatmulEntry, groups: [u32; 3]| Kernel {
        entry,
        groups,
        constants: Vec::new(),
    };
    Ok(match variant {
        MatmulVariant::Tiled(t) => {
            let (bm, bn) = t.tile();
            Kernel {
                entry: MatmulEntry::Tiled,
                groups: [
                    n.div_ceil(bn as usize) as u32,
                    m.div_ceil(bm as usize) as u32,
                    1,
                ],
                constants: t.constants().to_vec(),
            }
        }
        // The direct kernels cover a 64x64 tile of C per workgroup.
        MatmulVariant::Direct => plain(direct_entry(problem), tiles_64(m, n)),
        MatmulVariant::Subgroup | MatmulVariant::SubgroupTexture => {
            if !subgroups_usable(ctx) {
                return Err(Error::Config(format!(
                    "the subgroup matmul kernels need subgroups, which this device ({}) was created without",
                    ctx.adapter.name
                )));
            }
            // Operands too large for the device's textures (a pinned subgroup-tex on a large
            // evaluation batch, say): the storage twin, same results.
            let textured = variant == MatmulVariant::SubgroupTexture && textures_fit(ctx, problem);
            match subgroup_entry(problem) {
                // One 8-lane workgroup per 8 rows of C, spilling into y past 65535.
                Some(MatmulEntry::SubgroupSkinny) => Kernel {
                    entry: MatmulEntry::SubgroupSkinny,
                    groups: crate::kernels::spill_groups(m.div_ceil(8)),
                    constants: Vec::new(),
                },
                // One 8-lane workgroup per 32x32 tile of C.
                Some(e) => Kernel {
                    entry: if textured { e.with_textures() } else { e },
                    groups: [n.div_ceil(32) as u32, m.div_ceil(32) as u32, 1],
                    constants: Vec::new(),
                },
                None => plain(direct_entry(problem), tiles_64(m, n)),
            }
        }
    })
}

/// Every matmul entry point, typed: what each is written for (its layout, its module, its
/// workgroup) in one table that the launcher, the loss-partial counts and the override sets read,
/// instead of names matched by prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulEntry {
    /// `matmul_direct`: any layout (it reads `LAYOUT`), 8x8 threads per 64x64 tile of C.
    Direct,
    /// `matmul_nt4`, `matmul_nn4`, `matmul_tn4`: one layout each, vec4 loads, 8x8 threads.
    Vec4(Layout),
    /// `matmul_tiled`: any layout, 256 threads per tile (the tile's shape is override constants).
    Tiled,
    /// `matmul_sg_{nt,nn,tn}`, and reading A and B through textures `matmul_sg_{nt,nn,tn}_tex`:
    /// one layout each, one subgroup-sized workgroup per 32x32 tile.
    Subgroup { layout: Layout, textures: bool },
    /// `matmul_sg_skinny`: N <= 12, any layout, one 8-lane workgroup per 8 rows of C (no texture
    /// twin: the subgroup-tex variant runs it too).
    SubgroupSkinny,
}

impl MatmulEntry {
    pub const ALL: [MatmulEntry; 12] = {
        use Layout::{NN, NT, TN};
        const fn sg(layout: Layout, textures: bool) -> MatmulEntry {
            MatmulEntry::Subgroup { layout, textures }
        }
        [
            MatmulEntry::Direct,
            MatmulEntry::Vec4(NT),
            MatmulEntry::Vec4(NN),
            MatmulEntry::Vec4(TN),
            MatmulEntry::Tiled,
            sg(NT, false),
            sg(NN, false),
            sg(TN, false),
            sg(NT, true),
            sg(NN, true),
            sg(TN, true),
            MatmulEntry::SubgroupSkinny,
        ]
    };

    /// The WGSL entry point's name.
    pub fn name(self) -> &'static str {
        use Layout::{NN, NT, TN};
        match self {
            MatmulEntry::Direct => "matmul_direct",
            MatmulEntry::Vec4(NT) => "matmul_nt4",
            MatmulEntry::Vec4(NN) => "matmul_nn4",
            MatmulEntry::Vec4(TN) => "matmul_tn4",
            MatmulEntry::Tiled => "matmul_tiled",
            MatmulEntry::Subgroup { layout, textures } => match (layout, textures) {
                (NT, false) => "matmul_sg_nt",
                (NN, false) => "matmul_sg_nn",
                (TN, false) => "matmul_sg_tn",
                (NT, true) => "matmul_sg_nt_tex",
                (NN, true) => "matmul_sg_nn_tex",
                (TN, true) => "matmul_sg_tn_tex",
            },
            MatmulEntry::SubgroupSkinny => "matmul_sg_skinny",
        }
    }

    /// The entry point of this name, if it is a matmul one.
    pub fn parse(name: &str) -> Option<MatmulEntry> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }

    /// The shader module that holds it.
    pub fn shader(self) -> Shader {
        match self {
            MatmulEntry::Subgroup {
                textures: false, ..
            }
            | MatmulEntry::SubgroupSkinny => Shader::MATMUL_SUBGROUP,
            MatmulEntry::Subgroup { textures: true, .. } => Shader::MATMUL_SUBGROUP_TEX,
            _ => Shader::MATMUL,
        }
    }

    /// The layout it is written for, where it is written for one (the vec4 and subgroup kernels,
    /// which never read the `LAYOUT` constant).
    pub fn fixed_layout(self) -> Option<Layout> {
        match self {
            MatmulEntry::Vec4(l) | MatmulEntry::Subgroup { layout: l, .. } => Some(l),
            MatmulEntry::Direct | MatmulEntry::Tiled | MatmulEntry::SubgroupSkinny => None,
        }
    }

    /// Threads per workgroup (each writes one loss partial in the likelihood epilogue).
    pub fn threads_per_group(self) -> usize {
        match self {
            MatmulEntry::Tiled => 256,
            MatmulEntry::Subgroup { .. } | MatmulEntry::SubgroupSkinny => SUBGROUP_LANES as usize,
            MatmulEntry::Direct | MatmulEntry::Vec4(_) => 64,
        }
    }

    /// Whether it reads A and B through textures (copied from them before each launch).
    pub fn reads_textures(self) -> bool {
        matches!(self, MatmulEntry::Subgroup { textures: true, .. })
    }

    /// A subgroup kernel's texture-fed twin (the same kernel for the others).
    pub fn with_textures(self) -> MatmulEntry {
        match self {
            MatmulEntry::Subgroup { layout, .. } => MatmulEntry::Subgroup {
                layout,
                textures: true,
            },
            e => e,
        }
    }
}

/// The layout an entry point of any module is written for, where it is a matmul entry point
/// written for one (what the override sets of `kernels::override_sets` follow).
pub fn fixed_layout(entry: &str) -> Option<Layout> {
    MatmulEntry::parse(entry).and_then(MatmulEntry::fixed_layout)
}

pub(super) fn tiles_64(m: usize, n: usize) -> [u32; 3] {
    [n.div_ceil(64) as u32, m.div_ceil(64) as u32, 1]
}

/// One line on the matmul kernels in use: pinned, or the autotuned choices made so far.
pub fn summary(ctx: &GpuContext) -> String {
    if let Some(v) = ctx.tune_store.pin() {
        return format!("matmul kernels: {v} (pinned)");
    }
    // The store also keeps other choices (Adam's read path, steps per submit): products only.
    let choices: Vec<_> = ctx
        .tune_store
        .choices()
        .into_iter()
        .filter(|c| c.1.variant.parse::<MatmulVariant>().is_ok())
        .collect();
    let mut counts: Vec<(MatmulVariant, usize)> = MatmulVariant::ALL
        .iter()
        .map(|&v| {
            (
                v,
                choices
                    .iter()
                    .filter(|c| c.1.variant == v.to_string())
                    .count(),
            )
        })
        .filter(|&(_, n)| n > 0)
        .collect();
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    let counts: Vec<String> = counts.iter().map(|(v, n)| format!("{v} {n}")).collect();
    format!(
        "matmul kernels: autotuned per shape, {} products ({}); cache {}; {MATMUL_ENV}=direct|tiled|subgroup|subgroup-tex pins one",
        choices.len(),
        counts.join(", "),
        ctx.tune_store
            .file()
            .map_or("in memory only".to_string(), |p| p.display().to_string())
    )
}
