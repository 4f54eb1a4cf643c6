//! How many KV cache blocks the engine has: derived from memory, not from logical tokens.
//!
//! - `--max-kv-tokens N` (explicit override): N tokens, rounded up to whole blocks.
//! - GPU: the device's total memory x `--gpu-memory-utilization`, less what is in use once the
//!   weights are loaded (vLLM's rule).
//! - CPU: `--kv-cache-memory-gib` (vLLM's `VLLM_CPU_KVCACHE_SPACE`), or by default half of the
//!   host memory available after loading (within the pod's cgroup limit).
//!
//! A derived budget is capped at what a full batch of full-context sequences can use: more
//! blocks than that can never be occupied.

use crate::device::DeviceMemory;
use crate::error::{Error, Result};

const GIB: f64 = (1u64 << 30) as f64;

/// Share of the available host memory the default CPU budget takes.
const HOST_AUTO_SHARE: f64 = 0.5;

/// What the budget is derived from.
#[derive(Debug, Clone, PartialEq)]
pub struct KvBudgetInputs {
    pub kv_bytes_per_token: usize,
    pub block_tokens: usize,
    pub context_length: usize,
    pub max_batch_size: usize,
    /// `--max-kv-tokens`; 0: derive from memory.
    pub max_kv_tokens: usize,
    /// `--kv-cache-memory-gib`; 0: half the available host memory (CPU only).
    pub kv_cache_memory_gib: f64,
    /// `--gpu-memory-utilization` (GPU only).
    pub gpu_memory_utilization: f64,
    /// The GPU's memory after the weights are loaded; None on the CPU.
    pub gpu: Option<DeviceMemory>,
    /// Host memory available after loading (MemAvailable); None when unknown.
    pub host_available_bytes: Option<u64>,
}

/// Where the number of blocks came from, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvBudgetSource {
    MaxKvTokens,
    GpuMemory,
    HostFlag,
    HostAvailable,
    /// Host memory unknown: a full batch of full-context sequences.
    FullBatch,
}

impl KvBudgetSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxKvTokens => "--max-kv-tokens",
            Self::GpuMemory => "free GPU memory x --gpu-memory-utilization",
            Self::HostFlag => "--kv-cache-memory-gib",
            Self::HostAvailable => "half the available host memory",
            Self::FullBatch => "max batch size x context (host memory unknown)",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvBudget {
    pub blocks: usize,
    /// Bytes the derivation allowed (before rounding down to whole blocks and capping).
    pub budget_bytes: u64,
    pub bytes_per_block: u64,
    pub source: KvBudgetSource,
    /// Whether the full-batch cap lowered the derived number.
    pub capped: bool,
}

/// Derives the number of KV blocks; an error when not even one block fits.
pub fn derive(inputs: &KvBudgetInputs) -> Result<KvBudget> {
    let block_tokens = inputs.block_tokens.max(1);
    let bytes_per_block = (inputs.kv_bytes_per_token.max(1) * block_tokens) as u64;
    let full_batch_blocks = (inputs.max_batch_size * inputs.context_length).div_ceil(block_tokens);
    if inputs.max_kv_tokens > 0 {
        return Ok(KvBudget {
            blocks: inputs.max_kv_tokens.div_ceil(block_tokens),
            budget_bytes: inputs.max_kv_tokens.div_ceil(block_tokens) as u64 * bytes_per_block,
            bytes_per_block,
            source: KvBudgetSource::MaxKvTokens,
            capped: false,
        });
    }
    let (budget_bytes, source) = match (inputs.gpu, inputs.host_available_bytes) {
        (Some(gpu), _) => {
            let allowed = gpu.total as f64 * inputs.gpu_memory_utilization;
            ((allowed - gpu.used as f64).max(0.0) as u64, KvBudgetSource::GpuMemory)
        }
        (None, _) if inputs.kv_cache_memory_gib > 0.0 => {
            ((inputs.kv_cache_memory_gib * GIB) as u64, KvBudgetSource::HostFlag)
        }
        (None, Some(available)) => ((available as f64 * HOST_AUTO_SHARE) as u64, KvBudgetSource::HostAvailable),
        (None, None) => (full_batch_blocks as u64 * bytes_per_block, KvBudgetSource::FullBatch),
    };
    let derived = (budget_bytes / bytes_per_block) as usize;
    // An explicit host budget is honoured as given; derived ones need no more than a full batch.
    let capped = source != KvBudgetSource::HostFlag && derived > full_batch_blocks;
    let blocks = if capped { full_batch_blocks } else { derived };
    if blocks == 0 {
        return Err(Error::Config(format!(
            "the KV cache budget ({}, {budget_bytes} bytes) holds no block of {block_tokens} tokens \
             ({bytes_per_block} bytes); raise it or set --max-kv-tokens",
            source.as_str()
        )));
    }
    Ok(KvBudget { blocks, budget_bytes, bytes_per_block, source, capped })
}

/// Host memory this process may still take: MemAvailable, or less when a memory cgroup (a
/// pod's limit) leaves less room, since /proc/meminfo shows the whole node. None when unknown.
pub fn host_available_bytes() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let meminfo = read("/proc/meminfo").and_then(|text| mem_available(&text));
    // cgroup v2, then v1.
    let cgroup = match (read("/sys/fs/cgroup/memory.max"), read("/sys/fs/cgroup/memory.current")) {
        (Some(limit), Some(usage)) => cgroup_room(&limit, &usage),
        _ => match (
            read("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
            read("/sys/fs/cgroup/memory/memory.usage_in_bytes"),
        ) {
            (Some(limit), Some(usage)) => cgroup_room(&limit, &usage),
            _ => None,
        },
    };
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// MemAvailable of a /proc/meminfo text, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Room left under a cgroup memory limit; None without a limit ("max", or v1's huge number).
fn cgroup_room(limit: &str, usage: &str) -> Option<u64> {
    let limit: u64 = limit.trim().parse().ok()?;
    let usage: u64 = usage.trim().parse().ok()?;
    // cgroup v1 writes "no limit" as a page-rounded i64::MAX.
    if limit >= 1 << 62 {
        return None;
    }
    Some(limit.saturating_sub(usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> KvBudgetInputs {
        KvBudgetInputs {
            kv_bytes_per_token: 1000,
            block_tokens: 16,
            context_length: 1024,
            max_batch_size: 4,
            max_kv_tokens: 0,
            kv_cache_memory_gib: 0.0,
            gpu_memory_utilization: 0.9,
            gpu: None,
            host_available_bytes: Some(10_000_000),
        }
    }

    #[test]
    fn max_kv_tokens_overrides_memory_in_whole_blocks() {
        let budget = derive(&KvBudgetInputs { max_kv_tokens: 100, ..inputs() }).unwrap();
        assert_eq!((budget.blocks, budget.source), (7, KvBudgetSource::MaxKvTokens));
    }

    #[test]
    fn the_cpu_default_is_half_the_available_memory() {
        // Blocks of 16 kB; a full batch of full contexts is 4 x 1024 / 16 = 256 blocks.
        // Half of 4 MB is 125 blocks; half of 10 MB (312 blocks) is capped at 256.
        let budget = derive(&KvBudgetInputs { host_available_bytes: Some(4_000_000), ..inputs() }).unwrap();
        assert_eq!((budget.blocks, budget.source, budget.capped), (125, KvBudgetSource::HostAvailable, false));
        let budget = derive(&inputs()).unwrap();
        assert_eq!((budget.blocks, budget.capped), (256, true), "capped at a full batch of full contexts");
    }

    #[test]
    fn the_host_flag_is_honoured_in_gib() {
        let budget = derive(&KvBudgetInputs { kv_cache_memory_gib: 0.5, ..inputs() }).unwrap();
        assert_eq!((budget.blocks, budget.source), ((1u64 << 29) as usize / 16_000, KvBudgetSource::HostFlag));
    }

    #[test]
    fn a_gpu_budget_is_utilization_of_total_less_what_is_used() {
        let gpu = Some(DeviceMemory { used: 2_000_000, total: 4_000_000 });
        let budget = derive(&KvBudgetInputs { gpu, kv_cache_memory_gib: 8.0, ..inputs() }).unwrap();
        // 0.9 x 4 MB - 2 MB = 1.6 MB = 100 blocks; the host flag does not apply on a GPU.
        assert_eq!((budget.blocks, budget.source), (100, KvBudgetSource::GpuMemory));
    }

    #[test]
    fn a_budget_without_one_block_fails_at_start() {
        let gpu = Some(DeviceMemory { used: 3_900_000, total: 4_000_000 });
        let err = derive(&KvBudgetInputs { gpu, ..inputs() }).unwrap_err().to_string();
        assert!(err.contains("holds no block") && err.contains("gpu-memory-utilization"), "{err}");
    }

    #[test]
    fn host_memory_is_bounded_by_the_cgroup_limit() {
        assert_eq!(mem_available("MemTotal: 100 kB\nMemAvailable:    2048 kB\n"), Some(2 << 20));
        assert_eq!(cgroup_room("4294967296\n", "1073741824\n"), Some(3 << 30));
        assert_eq!(cgroup_room("max\n", "1073741824\n"), None, "v2 without a limit");
        assert_eq!(cgroup_room("9223372036854771712", "5"), None, "v1 without a limit");
        assert_eq!(cgroup_room("100", "200"), Some(0), "over the limit leaves nothing");
    }

    #[test]
    fn unknown_host_memory_falls_back_to_a_full_batch() {
        let budget = derive(&KvBudgetInputs { host_available_bytes: None, ..inputs() }).unwrap();
        assert_eq!((budget.blocks, budget.source), (256, KvBudgetSource::FullBatch));
    }
}
