//! Which device computes (`--device`), opening it, and reading its memory for the metrics.
//!
//! CUDA is only compiled with the `cuda` feature; a CPU build names the missing feature
//! instead of failing somewhere inside candle.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use crate::error::{Error, Result};

/// The `--device` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA device 0 when the build has CUDA and a GPU is visible; the CPU otherwise.
    #[default]
    Auto,
    Cpu,
    /// A CUDA device by ordinal (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map(Self::Cuda)
                    .map_err(|_| format!("`{s}`: the CUDA ordinal must be a number, as in cuda:1")),
                None => Err(format!("`{s}` is not one of auto, cpu, cuda, cuda:N")),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Whether this binary was built with the CUDA backend.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

impl DeviceChoice {
    /// Rejects choices this build can never satisfy, before anything starts.
    pub fn check_build(self) -> Result<()> {
        match self {
            Self::Cuda(_) if !CUDA_BUILT => Err(no_cuda_in_build(self)),
            _ => Ok(()),
        }
    }

    /// Opens the device. `Auto` falls back to the CPU when no GPU can be opened; an explicit
    /// `cuda` fails with the driver's reason instead.
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(ordinal) => open_cuda(ordinal).and_then(|device| check_device(ordinal, device)),
            Self::Auto if CUDA_BUILT => match open_cuda(0) {
                Ok(device) => check_device(0, device),
                Err(e) => {
                    tracing::warn!(error = %e, "--device auto: no usable GPU; computing on the CPU");
                    Ok(Device::Cpu)
                }
            },
            Self::Auto => {
                tracing::info!("--device auto: this build has no CUDA; computing on the CPU");
                Ok(Device::Cpu)
            }
        }
    }
}

fn no_cuda_in_build(choice: DeviceChoice) -> Error {
    Error::Device(format!(
        "--device {choice}: this binary was built without CUDA; use the CUDA build (make build-cuda) or --device cpu"
    ))
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Device> {
    // The driver's error (no device, no driver, bad ordinal) comes back as an error, not a
    // panic, and is reported as the one-line reason.
    Device::new_cuda(ordinal)
        .map_err(|e| Error::Device(format!("cannot open CUDA device {ordinal}: {}", without_backtrace(e))))
}

/// An opened GPU this build has no kernels for is an error, with `--device auto` too: the
/// CPU fallback is for machines where no GPU opens, not for GPUs that would fail later.
#[cfg(feature = "cuda")]
fn check_device(ordinal: usize, device: Device) -> Result<Device> {
    if let Device::Cuda(cuda) = &device {
        let (major, minor) =
            cuda.cuda_stream().context().compute_capability().map_err(|e| {
                Error::Device(format!("cannot read the compute capability of CUDA device {ordinal}: {e}"))
            })?;
        check_compute_capability(ordinal, major, minor)?;
    }
    Ok(device)
}

#[cfg(not(feature = "cuda"))]
fn check_device(_ordinal: usize, device: Device) -> Result<Device> {
    Ok(device)
}

/// The GPU architectures scripts/build-cuda.sh compiles kernels for: PTX for compute_80,
/// which the driver JITs for any newer GPU, and SASS for these four, which the statically
/// linked quantized-matmul kernels need (sm_80 SASS also runs on the other 8.x GPUs).
pub const BUILT_COMPUTE_CAPABILITIES: [(i32, i32); 4] = [(8, 0), (8, 6), (8, 9), (9, 0)];

/// Fails, naming the device's compute capability, when the build has no kernels for it
/// (a T4 is 7.5, a B200 10.0): better at start-up than a launch failure at the first request.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub fn check_compute_capability(ordinal: usize, major: i32, minor: i32) -> Result<()> {
    let runs = BUILT_COMPUTE_CAPABILITIES.iter().any(|&(ma, mi)| ma == major && (mi == minor || ma == 8));
    if runs {
        return Ok(());
    }
    let built: Vec<String> = BUILT_COMPUTE_CAPABILITIES.iter().map(|(a, b)| format!("sm_{a}{b}")).collect();
    Err(Error::Device(format!(
        "CUDA device {ordinal} has compute capability {major}.{minor} (sm_{major}{minor}), which this build does not \
         support: it has kernels for {} (set CUDA_ARCHS for scripts/build-cuda.sh)",
        built.join(", ")
    )))
}

/// candle attaches a backtrace (with RUST_BACKTRACE set) that would bury the reason.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn without_backtrace(e: candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => without_backtrace(*inner),
        other => other.to_string(),
    }
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(ordinal: usize) -> Result<Device> {
    Err(no_cuda_in_build(DeviceChoice::Cuda(ordinal)))
}

/// Device memory in bytes, device-wide (as nvidia-smi shows it: other processes count too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceMemory {
    pub used: u64,
    pub total: u64,
}

/// Reads a device's memory on demand (at every scrape); `None` when the read fails.
pub type MemorySampler = Box<dyn Fn() -> Option<DeviceMemory> + Send + Sync>;

/// A sampler for GPU devices; `None` for the CPU, whose memory is the resident-memory gauge.
#[cfg(feature = "cuda")]
pub fn memory_sampler(device: &Device) -> Option<MemorySampler> {
    let Device::Cuda(cuda) = device else { return None };
    let context = cuda.cuda_stream().context().clone();
    Some(Box::new(move || {
        // Binds the context to the scraping thread; cuMemGetInfo is thread-safe.
        let (free, total) = context.mem_get_info().ok()?;
        Some(DeviceMemory { used: total.saturating_sub(free) as u64, total: total as u64 })
    }))
}

/// Without CUDA there is no GPU memory to report.
#[cfg(not(feature = "cuda"))]
pub fn memory_sampler(_device: &Device) -> Option<MemorySampler> {
    None
}

/// A short description for the startup log.
pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => match device.location() {
            candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            other => format!("{other:?}"),
        },
        Device::Metal(_) => "metal".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_gpu_architectures_pass_and_others_are_named() {
        for (major, minor) in [(8, 0), (8, 6), (8, 7), (8, 9), (9, 0)] {
            assert!(check_compute_capability(0, major, minor).is_ok(), "{major}.{minor}");
        }
        for (major, minor) in [(7, 5), (10, 0), (12, 0), (9, 1)] {
            let message = check_compute_capability(1, major, minor).unwrap_err().to_string();
            assert!(message.contains(&format!("compute capability {major}.{minor}")), "{message}");
            assert!(message.contains("sm_80, sm_86, sm_89, sm_90"), "{message}");
        }
    }

    #[test]
    fn device_values_parse() {
        for (text, want) in [
            ("auto", DeviceChoice::Auto),
            ("CPU", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda(0)),
            ("gpu", DeviceChoice::Cuda(0)),
            ("cuda:3", DeviceChoice::Cuda(3)),
            (" cuda:0 ", DeviceChoice::Cuda(0)),
        ] {
            assert_eq!(text.parse::<DeviceChoice>(), Ok(want), "{text}");
        }
        for bad in ["", "tpu", "cuda:", "cuda:x", "cuda:-1", "cuda0"] {
            assert!(bad.parse::<DeviceChoice>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn display_round_trips() {
        for choice in [DeviceChoice::Auto, DeviceChoice::Cpu, DeviceChoice::Cuda(2)] {
            assert_eq!(choice.to_string().parse::<DeviceChoice>(), Ok(choice));
        }
    }

    #[test]
    fn cpu_opens_and_has_no_gpu_memory() {
        let device = DeviceChoice::Cpu.open().unwrap();
        assert!(device.is_cpu());
        assert!(memory_sampler(&device).is_none());
        assert_eq!(describe(&device), "cpu");
    }

    #[test]
    fn reasons_drop_candles_backtrace() {
        let e = candle_core::Error::WithBacktrace {
            inner: Box::new(candle_core::Error::Msg("no CUDA-capable device is detected".into())),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        assert!(e.to_string().lines().count() > 1, "candle's message carries the backtrace");
        assert_eq!(without_backtrace(e), "no CUDA-capable device is detected");
    }

    /// Holds with and without a GPU: either the device opens and reports its memory, or the
    /// driver's refusal comes back as an error (and `auto` falls back to the CPU).
    #[cfg(feature = "cuda")]
    #[test]
    fn a_cuda_build_opens_the_gpu_or_says_why() {
        match DeviceChoice::Cuda(0).open() {
            Ok(device) => {
                assert_eq!(describe(&device), "cuda:0");
                let memory = memory_sampler(&device).expect("a GPU has a memory sampler")().expect("mem_get_info");
                assert!(memory.total > 0 && memory.used <= memory.total, "{memory:?}");
                assert!(DeviceChoice::Auto.open().unwrap().is_cuda());
            }
            Err(e) => {
                assert_eq!(e.metric_label(), "device");
                assert!(e.to_string().starts_with("cannot open CUDA device 0: "), "{e}");
                assert_eq!(e.to_string().lines().count(), 1, "{e}");
                assert!(DeviceChoice::Auto.open().unwrap().is_cpu());
            }
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_cpu_build_refuses_cuda_with_the_reason() {
        for choice in [DeviceChoice::Cuda(0), DeviceChoice::Cuda(1)] {
            let err = choice.check_build().unwrap_err();
            assert_eq!(err.metric_label(), "device");
            assert!(err.to_string().contains("built without CUDA"), "{err}");
            let err = choice.open().unwrap_err().to_string();
            assert!(err.contains("built without CUDA") && err.contains(&choice.to_string()), "{err}");
        }
        assert!(DeviceChoice::Auto.open().unwrap().is_cpu());
        assert!(DeviceChoice::Auto.check_build().is_ok());
    }
}
