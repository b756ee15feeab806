//! One error type for the engine: every failure a user can cause or meet (no adapter, a shape
//! mismatch, bad data, a device problem) becomes a value that says what happened and what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter matched: lists what was tried and how to get one.
    #[error(
        "no GPU adapter found (backends tried: {tried}).\n{hint}\n\
         On Linux without a GPU, install the software Vulkan driver lavapipe: \
         `apt-get update && apt-get install -y mesa-vulkan-drivers`."
    )]
    NoAdapter { tried: String, hint: String },

    /// The adapter exists but cannot give what the run needs.
    #[error("adapter '{adapter}' cannot run this: {what}")]
    AdapterLimit { adapter: String, what: String },

    #[error("could not open a device on adapter '{adapter}': {source}")]
    RequestDevice {
        adapter: String,
        #[source]
        source: wgpu::RequestDeviceError,
    },

    /// A launcher was given tensors whose shapes do not fit together.
    #[error("shape mismatch in {op}: {detail}")]
    Shape { op: &'static str, detail: String },

    /// Errors wgpu reported (validation, out of memory, internal), collected instead of panicking.
    #[error(
        "GPU error: {0}\nIf this is out of memory, try a smaller batch or model; \
             if it persists, try another backend (--backend vulkan|gl|metal|dx12)."
    )]
    Device(String),

    /// A wait on the GPU did not finish in time.
    #[error("GPU did not finish {what} within {seconds} s (device hung or lost?)")]
    Timeout { what: String, seconds: u64 },

    /// A data file is missing, unreadable or malformed.
    #[error("{path}: {detail}")]
    Data { path: PathBuf, detail: String },

    /// A configuration value that makes no sense.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// Images whose sides a model's downsampling layers do not divide (`layers` says which, as
    /// the library names them); the programs add the flags that would fix it, where any apply.
    #[error(
        "{layers} halve the images' sides {halvings} time(s), so the sides must be divisible by \
         {}; the images are {rows}x{cols}, {}",
        1u64 << .halvings.min(&63),
        halvings_allowed(*.rows, *.cols)
    )]
    ImageSides {
        /// The setting that sets the layers (`conv`, `block out channels`).
        setting: &'static str,
        layers: String,
        halvings: u32,
        rows: usize,
        cols: usize,
    },

    /// A setting out of its range, named as the library names it (`batch size`, `hidden`); the
    /// programs name their flag instead (`--batch-size`), see `cli::exit_with`.
    #[error("{setting} {problem}")]
    Setting {
        setting: &'static str,
        problem: String,
    },

    /// The loss became NaN or infinite.
    #[error(
        "training diverged: the loss became NaN or infinite by epoch {epoch}, step {step}. \
         Lower --lr (the notebook uses 0.01) or check the data."
    )]
    Diverged { epoch: usize, step: usize },

    /// Stopped by the caller (Ctrl-C, SIGTERM) before the work was done.
    #[error("interrupted: {0}")]
    Interrupted(String),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How many times both sides halve exactly: 2^n divides both.
pub fn halvings_fit(rows: usize, cols: usize) -> u32 {
    (rows | cols).trailing_zeros().min(31)
}

fn halvings_allowed(rows: usize, cols: usize) -> String {
    match halvings_fit(rows, cols) {
        0 => "whose sides are not even: no halving fits them".to_string(),
        n => format!("whose sides halve exactly at most {n} time(s)"),
    }
}

impl Error {
    pub(crate) fn setting(setting: &'static str, problem: impl Into<String>) -> Self {
        Error::Setting {
            setting,
            problem: problem.into(),
        }
    }

    pub(crate) fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Shape {
            op,
            detail: detail.into(),
        }
    }
}

/// A number as a message shows it: in exponent form when it is huge or tiny (`1e300`, `1e-50`,
/// not 300 digits), as written otherwise.
pub(crate) fn number(v: f64) -> String {
    if v != 0.0 && v.is_finite() && !(1e-4..1e7).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        v.to_string()
    }
}
