//! Adapter discovery and selection, device creation, error capture and waits.
//!
//! Selection order: an explicit adapter (index or name) if asked for, else discrete GPU, integrated
//! GPU, virtual GPU, then CPU (lavapipe / llvmpipe). `auto` tries Vulkan/Metal/DX12 first and falls
//! back to GL only when those find nothing, because GL is the least capable backend for compute.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::gpu::pipeline::PipelineCache;
use crate::gpu::tune_store::{TuneStore, default_cache_dir};

/// Environment variable that picks the backend when no flag does (`auto|vulkan|metal|dx12|gl`).
pub const BACKEND_ENV: &str = "VAE_WGPU_BACKEND";
/// Environment variable that picks an adapter by index (as `list_adapters` prints) or name substring.
pub const ADAPTER_ENV: &str = "VAE_WGPU_ADAPTER";
/// Environment variable that pins a matmul kernel variant (`tiled|direct|subgroup`; `auto`, the
/// default, autotunes).
pub const MATMUL_ENV: &str = "VAE_WGPU_MATMUL";

/// How long a blocking wait on the GPU may take before it is reported as a hang.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    #[default]
    Auto,
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

impl BackendChoice {
    /// The wgpu backend sets to try, in order.
    fn attempts(self) -> Vec<wgpu::Backends> {
        match self {
            BackendChoice::Auto => vec![wgpu::Backends::PRIMARY, wgpu::Backends::GL],
            BackendChoice::Vulkan => vec![wgpu::Backends::VULKAN],
            BackendChoice::Metal => vec![wgpu::Backends::METAL],
            BackendChoice::Dx12 => vec![wgpu::Backends::DX12],
            BackendChoice::Gl => vec![wgpu::Backends::GL],
        }
    }
}

impl FromStr for BackendChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(BackendChoice::Auto),
            "vulkan" | "vk" => Ok(BackendChoice::Vulkan),
            "metal" | "mtl" => Ok(BackendChoice::Metal),
            "dx12" | "d3d12" => Ok(BackendChoice::Dx12),
            "gl" | "gles" | "opengl" => Ok(BackendChoice::Gl),
            other => Err(Error::Config(format!(
                "unknown backend '{other}': expected auto, vulkan, metal, dx12 or gl"
            ))),
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Vulkan => "vulkan",
            BackendChoice::Metal => "metal",
            BackendChoice::Dx12 => "dx12",
            BackendChoice::Gl => "gl",
        };
        f.write_str(s)
    }
}

/// A cancellation token: raised once (by a Ctrl-C handler, another thread, a UI), seen by every
/// clone. The engine's long work on a context holding it (the autotunes' timings, the
/// steps-per-submit probe) gives up at its next safe point with [`crate::Error::Interrupted`];
/// a training loop asks it between steps. A value, not a process-wide flag: two contexts (two
/// jobs in one program) are stopped separately, and a fresh token is not raised.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<std::sync::atomic::AtomicBool>);

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask the work watching this token to stop.
    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[derive(Clone, Debug, Default)]
pub struct ContextOptions {
    pub backend: BackendChoice,
    /// Adapter index (as listed by [`list_adapters`]) or a case-insensitive name substring.
    pub adapter: Option<String>,
    /// Pin one matmul variant (`direct`, `tiled`, `subgroup`) for every product; `None` (the
    /// default) autotunes per problem (see `kernels::matmul::select`, which checks the name).
    pub matmul: Option<String>,
    /// Where the autotune cache lives; `None`: [`default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Keep a log of every buffer the context creates (name, size, usage, initial contents), so
    /// planned graphs can be exported as data ([`crate::export`]). Off by default: it keeps a
    /// host copy of every upload.
    pub record_buffers: bool,
    /// Time every matmul problem again instead of using the recorded choices (the new choices
    /// replace the old ones in the cache file).
    pub retune: bool,
    /// Stops the context's long work (see [`Cancel`]); a fresh token by default.
    pub cancel: Cancel,
}

impl ContextOptions {
    /// Options from the environment, overridden by command-line values where given.
    pub fn from_env_and_flags(backend: Option<&str>, adapter: Option<&str>) -> Result<Self> {
        let mut opts = Self::from_env()?;
        if let Some(b) = backend {
            opts.backend = b.parse()?;
        }
        if let Some(a) = adapter {
            opts.adapter = Some(a.to_string());
        }
        Ok(opts)
    }

    /// Options from `VAE_WGPU_BACKEND`, `VAE_WGPU_ADAPTER` and `VAE_WGPU_MATMUL`.
    pub fn from_env() -> Result<Self> {
        let backend = match std::env::var(BACKEND_ENV) {
            Ok(v) => v.parse()?,
            Err(_) => BackendChoice::Auto,
        };
        let adapter = std::env::var(ADAPTER_ENV)
            .ok()
            .filter(|s| !s.trim().is_empty());
        let matmul = match std::env::var(MATMUL_ENV) {
            Ok(v) if !v.trim().is_empty() && !v.trim().eq_ignore_ascii_case("auto") => {
                Some(v.trim().to_ascii_lowercase())
            }
            _ => None,
        };
        Ok(ContextOptions {
            backend,
            adapter,
            matmul,
            cache_dir: None,
            record_buffers: false,
            retune: false,
            cancel: Cancel::new(),
        })
    }
}

/// What a user needs to know about an adapter: identity and the limits this engine relies on.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub index: usize,
    pub name: String,
    pub backend: wgpu::Backend,
    pub device_type: wgpu::DeviceType,
    pub driver: String,
    pub driver_info: String,
    pub limits: wgpu::Limits,
}

impl AdapterSummary {
    fn new(index: usize, adapter: &wgpu::Adapter) -> Self {
        let info = adapter.get_info();
        AdapterSummary {
            index,
            name: info.name,
            backend: info.backend,
            device_type: info.device_type,
            driver: info.driver,
            driver_info: info.driver_info,
            limits: adapter.limits(),
        }
    }

    /// One line: name, backend, type and driver.
    pub fn short(&self) -> String {
        format!(
            "{} ({:?}, {:?}, driver {} {})",
            self.name, self.backend, self.device_type, self.driver, self.driver_info
        )
    }
}

impl fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.limits;
        writeln!(f, "[{}] {}", self.index, self.short())?;
        writeln!(
            f,
            "    max storage buffer binding {} MiB, uniform binding {} KiB, max buffer {} MiB, storage buffers/stage {}",
            l.max_storage_buffer_binding_size >> 20,
            l.max_uniform_buffer_binding_size >> 10,
            l.max_buffer_size >> 20,
            l.max_storage_buffers_per_shader_stage
        )?;
        write!(
            f,
            "    workgroups/dim {}, invocations/workgroup {}, workgroup memory {} KiB, storage offset align {}",
            l.max_compute_workgroups_per_dimension,
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroup_storage_size >> 10,
            l.min_storage_buffer_offset_alignment
        )
    }
}

/// A wgpu instance on `backends`. `WGPU_VALIDATION=1` (wgpu's own variable) turns on the
/// backends' validation: on Vulkan the Khronos validation layer, whose messages wgpu logs at
/// their severity (`scripts/test.sh` runs the parity suites so, and fails on any message).
fn instance_for(backends: wgpu::Backends) -> wgpu::Instance {
    let mut flags = wgpu::InstanceFlags::default().with_env();
    if flags.contains(wgpu::InstanceFlags::VALIDATION) {
        // The layer's messages reach wgpu (and its log) through VK_EXT_debug_utils, which wgpu
        // enables with its DEBUG flag; the labels it adds name our buffers and passes in them.
        flags |= wgpu::InstanceFlags::DEBUG;
    }
    wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends,
        flags,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    })
}

fn type_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

/// Every adapter wgpu sees for the given backend choice, in the order selection uses.
pub fn list_adapters(backend: BackendChoice) -> Vec<AdapterSummary> {
    let mut out = Vec::new();
    for backends in backend.attempts() {
        let instance = instance_for(backends);
        for adapter in pollster::block_on(instance.enumerate_adapters(backends)) {
            out.push(AdapterSummary::new(out.len(), &adapter));
        }
    }
    out
}

/// The device, its queue, the compiled pipelines, and what we know about the adapter.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterSummary,
    /// Autotuned matmul choices of this device, and the pinned one if any.
    pub tune_store: TuneStore,
    /// Whether the device was created with wgpu's `SUBGROUP` feature.
    pub subgroups: bool,
    /// The adapter's narrowest subgroup, in lanes (0 without subgroups).
    pub subgroup_min_size: u32,
    pub(crate) pipelines: PipelineCache,
    errors: Arc<Mutex<Vec<String>>>,
    /// A small zeroed buffer bound where a kernel's optional input (a bias) is absent.
    pub(crate) dummy: wgpu::Buffer,
    /// The same for an optional output nobody reads (never bound together with `dummy` writable).
    pub(crate) dummy_rw: wgpu::Buffer,
    /// With [`ContextOptions::record_buffers`]: every buffer created so far.
    buffer_log: Option<Mutex<HashMap<wgpu::Buffer, BufferInfo>>>,
    /// The options' token: the autotunes and probes on this context stop when it is raised.
    pub cancel: Cancel,
}

/// A logged buffer (see [`ContextOptions::record_buffers`]).
#[derive(Clone, Debug)]
pub struct BufferInfo {
    pub name: String,
    pub size: u64,
    pub usage: wgpu::BufferUsages,
    /// What it was created with (`None`: zeros).
    pub contents: Option<Arc<[u8]>>,
}

impl GpuContext {
    /// A context from `VAE_WGPU_*` environment variables (see [`ContextOptions::from_env`]).
    pub fn from_env() -> Result<Self> {
        Self::new(&ContextOptions::from_env()?)
    }

    pub fn new(opts: &ContextOptions) -> Result<Self> {
        let mut tried = Vec::new();
        let mut seen = Vec::new();
        for backends in opts.backend.attempts() {
            tried.push(format!("{backends:?}"));
            let instance = instance_for(backends);
            let adapters = pollster::block_on(instance.enumerate_adapters(backends));
            if adapters.is_empty() {
                continue;
            }
            let base = seen.len();
            let summaries: Vec<AdapterSummary> = adapters
                .iter()
                .enumerate()
                .map(|(i, a)| AdapterSummary::new(base + i, a))
                .collect();
            seen.extend(summaries.iter().map(|s| s.short()));
            let chosen = match &opts.adapter {
                Some(sel) => summaries.iter().position(|s| matches_selector(s, sel)),
                None => {
                    (0..summaries.len()).min_by_key(|&i| (type_rank(summaries[i].device_type), i))
                }
            };
            if let Some(i) = chosen {
                return Self::with_adapter(adapters[i].clone(), summaries[i].clone(), opts);
            }
        }
        let hint = match (&opts.adapter, seen.is_empty()) {
            (Some(sel), false) => format!(
                "No adapter matches '{sel}' ({ADAPTER_ENV} / --adapter). Adapters seen:\n  {}",
                seen.join("\n  ")
            ),
            _ => format!(
                "wgpu enumerated no adapters. Check the GPU driver, or pick another backend with \
                 {BACKEND_ENV}=vulkan|metal|dx12|gl."
            ),
        };
        Err(Error::NoAdapter {
            tried: tried.join(", then "),
            hint,
        })
    }

    fn with_adapter(
        adapter: wgpu::Adapter,
        summary: AdapterSummary,
        opts: &ContextOptions,
    ) -> Result<Self> {
        // Ask for everything the adapter has: the defaults cap storage bindings at 128 MiB and
        // storage buffers at 8 per stage, which real adapters exceed.
        let required_limits = adapter.limits();
        // Subgroups where the adapter has them (the subgroup matmul kernels check the lane count).
        let info = adapter.get_info();
        let subgroups = adapter.features().contains(wgpu::Features::SUBGROUP);
        let required_features = if subgroups {
            wgpu::Features::SUBGROUP
        } else {
            wgpu::Features::empty()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("vae-wgpu"),
            required_features,
            required_limits,
            ..Default::default()
        }))
        .map_err(|source| Error::RequestDevice {
            adapter: summary.name.clone(),
            source,
        })?;
        // wgpu panics on uncaptured errors by default; collect them and report them as values.
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy"),
            size: 256,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let dummy_rw = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy output"),
            size: 256,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let tune_store = TuneStore::new(
            &summary,
            opts.cache_dir.clone().or_else(default_cache_dir),
            opts.matmul.clone(),
            opts.retune,
            opts.cancel.clone(),
        );
        let buffer_log = opts.record_buffers.then(|| {
            let info = |b: &wgpu::Buffer, name: &str| {
                let i = BufferInfo {
                    name: name.into(),
                    size: b.size(),
                    usage: b.usage(),
                    contents: None,
                };
                (b.clone(), i)
            };
            Mutex::new(HashMap::from([
                info(&dummy, "dummy"),
                info(&dummy_rw, "dummy output"),
            ]))
        });
        Ok(GpuContext {
            device,
            queue,
            adapter: summary,
            tune_store,
            subgroups,
            subgroup_min_size: if subgroups { info.subgroup_min_size } else { 0 },
            pipelines: PipelineCache::default(),
            errors,
            dummy,
            dummy_rw,
            buffer_log,
            cancel: opts.cancel.clone(),
        })
    }

    /// Log a buffer just created (a no-op unless [`ContextOptions::record_buffers`]).
    pub(crate) fn log_buffer(&self, buffer: &wgpu::Buffer, name: &str, contents: Option<&[u8]>) {
        if let Some(log) = &self.buffer_log {
            let info = BufferInfo {
                name: name.into(),
                size: buffer.size(),
                usage: buffer.usage(),
                contents: contents.map(Arc::from),
            };
            log.lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(buffer.clone(), info);
        }
    }

    /// Whether buffers are being logged (see [`ContextOptions::record_buffers`]).
    pub fn records_buffers(&self) -> bool {
        self.buffer_log.is_some()
    }

    /// What the buffer log knows of `buffer` (`None` when not recording or not ours).
    pub fn buffer_info(&self, buffer: &wgpu::Buffer) -> Option<BufferInfo> {
        let log = self.buffer_log.as_ref()?;
        log.lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(buffer)
            .cloned()
    }

    /// The compute pipeline for `entry` of `shader` with override `constants`, compiled once and
    /// cached; a shader or pipeline the device rejects is an `Error::Device`, not a panic.
    pub fn pipeline(
        &self,
        shader: crate::gpu::Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Result<wgpu::ComputePipeline> {
        self.pipelines.get(&self.device, shader, entry, constants)
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.adapter.limits
    }

    /// Errors wgpu reported since the last check, as one `Error::Device`.
    pub fn check_errors(&self) -> Result<()> {
        let mut errs = self
            .errors
            .lock()
            .map_err(|_| Error::Device("error sink poisoned".into()))?;
        if errs.is_empty() {
            return Ok(());
        }
        let msg = errs.join("\n");
        errs.clear();
        Err(Error::Device(msg))
    }

    /// Block until all submitted work is done, or fail after [`WAIT_TIMEOUT`].
    pub fn wait_idle(&self, what: &str) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: Some(WAIT_TIMEOUT),
            })
            .map_err(|e| match e {
                wgpu::PollError::Timeout => Error::Timeout {
                    what: what.to_string(),
                    seconds: WAIT_TIMEOUT.as_secs(),
                },
                other => Error::Device(format!("while waiting for {what}: {other}")),
            })?;
        self.check_errors()
    }

    /// A buffer bound only through views of its parts (a parameter arena): `bytes` must fit
    /// `max_buffer_size`.
    pub fn check_buffer_size(&self, what: &str, bytes: u64) -> Result<()> {
        let max = self.limits().max_buffer_size;
        if bytes > max {
            return Err(Error::AdapterLimit {
                adapter: self.adapter.name.clone(),
                what: format!("{what} needs a {bytes}-byte buffer; max_buffer_size is {max} bytes"),
            });
        }
        Ok(())
    }

    /// A storage buffer check: `bytes` must fit one binding on this adapter.
    pub fn check_binding_size(&self, what: &str, bytes: u64) -> Result<()> {
        let max = self
            .limits()
            .max_storage_buffer_binding_size
            .min(self.limits().max_buffer_size);
        if bytes > max {
            return Err(Error::AdapterLimit {
                adapter: self.adapter.name.clone(),
                what: format!(
                    "{what} needs a {bytes}-byte storage buffer; max_storage_buffer_binding_size is {max} bytes"
                ),
            });
        }
        Ok(())
    }
}

fn matches_selector(s: &AdapterSummary, sel: &str) -> bool {
    match sel.trim().parse::<usize>() {
        Ok(i) => s.index == i,
        Err(_) => s
            .name
            .to_ascii_lowercase()
            .contains(&sel.trim().to_ascii_lowercase()),
    }
}
