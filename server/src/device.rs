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
            Self::Cuda(ordinal) => open_cuda(ordinal),
            Self::Auto if CUDA_BUILT => match open_cuda(0) {
                Ok(device) => Ok(device),
                Err(e) => {
                    tracing::warn!(error = %e, "--device auto: no usable GPU; computing on the CPU");
                    Ok(Device::Cpu)
                }
            },
            Self::Auto => Ok(Device::Cpu),
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
