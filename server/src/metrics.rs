//! Prometheus metrics with vLLM-style names; every series carries `model` and `revision`.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use infergate_protocol::metrics::{
    self as names, E2E_BUCKETS, FAILURE_REASONS, MODEL_LABEL, PREFIX, QUEUE_BUCKETS, REASON_LABEL, REVISION_LABEL,
    STATUS_LABEL, TOKEN_BUCKETS, TTFT_BUCKETS,
};

use crate::device::MemorySampler;
use crate::error::Result;

pub struct Metrics {
    registry: Registry,
    pub time_to_first_token: Histogram,
    pub time_per_output_token: Histogram,
    pub inter_token_latency: Histogram,
    pub e2e_request_latency: Histogram,
    pub request_queue_time: Histogram,
    pub requests: IntCounterVec,
    /// Requests the server failed, by reason: timeout, cancelled, rejected, engine_error.
    pub request_failures: IntCounterVec,
    pub prompt_tokens: IntCounter,
    pub generation_tokens: IntCounter,
    /// Sequences preempted (KV freed, recomputed later) because the KV cache was full.
    pub preemptions: IntCounter,
    pub requests_running: IntGauge,
    pub requests_waiting: IntGauge,
    pub batch_size: IntGauge,
    /// Used share of the KV cache blocks: kv_cache_blocks_used / kv_cache_blocks_total.
    pub kv_cache_usage: Gauge,
    pub kv_cache_blocks_total: IntGauge,
    pub kv_cache_blocks_used: IntGauge,
    pub model_load_seconds: Gauge,
    resident_memory: IntGauge,
    /// VRAM gauges, registered only once a GPU is in use: CPU servers export no such series.
    gpu_memory: OnceLock<GpuMemoryGauges>,
}

struct GpuMemoryGauges {
    used: IntGauge,
    total: IntGauge,
    sampler: MemorySampler,
}

impl Metrics {
    pub fn new(model: &str, revision: &str) -> Result<Self> {
        let registry = Registry::new_custom(
            Some(PREFIX.into()),
            Some(
                [(MODEL_LABEL.to_string(), model.to_string()), (REVISION_LABEL.to_string(), revision.to_string())]
                    .into(),
            ),
        )
        .map_err(internal)?;
        let histogram = |name: &str, help: &str, buckets: &[f64]| -> Result<Histogram> {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())).map_err(internal)?;
            registry.register(Box::new(h.clone())).map_err(internal)?;
            Ok(h)
        };
        let counter = |name: &str, help: &str| -> Result<IntCounter> {
            let c = IntCounter::new(name, help).map_err(internal)?;
            registry.register(Box::new(c.clone())).map_err(internal)?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge> {
            let g = IntGauge::new(name, help).map_err(internal)?;
            registry.register(Box::new(g.clone())).map_err(internal)?;
            Ok(g)
        };
        let requests =
            IntCounterVec::new(Opts::new(names::REQUESTS.short, "Finished requests by HTTP status"), &[STATUS_LABEL])
                .map_err(internal)?;
        registry.register(Box::new(requests.clone())).map_err(internal)?;
        let request_failures = IntCounterVec::new(
            Opts::new(
                names::REQUEST_FAILURES.short,
                "Requests that failed, by reason (timeout, cancelled, rejected, engine_error)",
            ),
            &[REASON_LABEL],
        )
        .map_err(internal)?;
        registry.register(Box::new(request_failures.clone())).map_err(internal)?;
        // Every reason is exported from the start, so a rate over a window has both ends.
        for reason in FAILURE_REASONS {
            request_failures.with_label_values(&[reason]);
        }
        let kv_cache_usage =
            Gauge::new(names::KV_CACHE_USAGE.short, "Used share of the KV cache blocks").map_err(internal)?;
        registry.register(Box::new(kv_cache_usage.clone())).map_err(internal)?;
        let model_load_seconds =
            Gauge::new(names::MODEL_LOAD_SECONDS.short, "Seconds the model took to load").map_err(internal)?;
        registry.register(Box::new(model_load_seconds.clone())).map_err(internal)?;
        Ok(Self {
            time_to_first_token: histogram(
                names::TIME_TO_FIRST_TOKEN.short,
                "From request arrival until the first token leaves for the client",
                TTFT_BUCKETS,
            )?,
            time_per_output_token: histogram(
                names::TIME_PER_OUTPUT_TOKEN.short,
                "Mean time per output token after the first, per request",
                TOKEN_BUCKETS,
            )?,
            inter_token_latency: histogram(
                names::INTER_TOKEN_LATENCY.short,
                "Gap between consecutive tokens",
                TOKEN_BUCKETS,
            )?,
            e2e_request_latency: histogram(
                names::E2E_REQUEST_LATENCY.short,
                "From arrival to the last token",
                E2E_BUCKETS,
            )?,
            request_queue_time: histogram(
                names::REQUEST_QUEUE_TIME.short,
                "From arrival until the engine admits the request",
                QUEUE_BUCKETS,
            )?,
            requests,
            request_failures,
            prompt_tokens: counter(names::PROMPT_TOKENS.short, "Prompt tokens processed")?,
            generation_tokens: counter(names::GENERATION_TOKENS.short, "Tokens generated")?,
            preemptions: counter(
                names::PREEMPTIONS.short,
                "Sequences preempted for KV cache blocks, to be recomputed later",
            )?,
            requests_running: gauge(names::REQUESTS_RUNNING.short, "Sequences in the running batch")?,
            requests_waiting: gauge(names::REQUESTS_WAITING.short, "Requests waiting in the queue")?,
            batch_size: gauge(names::BATCH_SIZE.short, "Sequences in the last engine step")?,
            kv_cache_usage,
            kv_cache_blocks_total: gauge(
                names::KV_CACHE_BLOCKS_TOTAL.short,
                "KV cache blocks (of KV_BLOCK_TOKENS tokens) the memory budget allows",
            )?,
            kv_cache_blocks_used: gauge(
                names::KV_CACHE_BLOCKS_USED.short,
                "KV cache blocks held by running sequences",
            )?,
            model_load_seconds,
            resident_memory: gauge(names::RESIDENT_MEMORY.short, "Resident memory of the server process")?,
            gpu_memory: OnceLock::new(),
            registry,
        })
    }

    pub fn record_failure(&self, reason: &str) {
        self.request_failures.with_label_values(&[reason]).inc();
    }

    pub fn record_status(&self, status: u16) {
        self.requests.with_label_values(&[&status.to_string()]).inc();
    }

    /// Exports `gpu_memory_used_bytes` and `gpu_memory_total_bytes`, read from the device at
    /// every scrape. Called once, when the model is on a GPU.
    pub fn watch_gpu_memory(&self, sampler: MemorySampler) -> Result<()> {
        let register = |name: &str, help: &str| -> Result<IntGauge> {
            let g = IntGauge::new(name, help).map_err(internal)?;
            self.registry.register(Box::new(g.clone())).map_err(internal)?;
            Ok(g)
        };
        if self.gpu_memory.get().is_some() {
            return Err(crate::error::Error::Internal("GPU memory gauges are already registered".into()));
        }
        let gauges = GpuMemoryGauges {
            used: register(names::GPU_MEMORY_USED.short, "Memory in use on the GPU (all processes), from the driver")?,
            total: register(names::GPU_MEMORY_TOTAL.short, "Memory of the GPU, from the driver")?,
            sampler,
        };
        let _ = self.gpu_memory.set(gauges);
        Ok(())
    }

    /// The text exposition format, with process and GPU memory sampled now.
    pub fn render(&self) -> String {
        if let Some(rss) = resident_memory_bytes() {
            self.resident_memory.set(rss as i64);
        }
        // A failed read keeps the last values rather than exporting a false zero.
        if let Some(gpu) = self.gpu_memory.get() {
            if let Some(memory) = (gpu.sampler)() {
                gpu.used.set(memory.used as i64);
                gpu.total.set(memory.total as i64);
            }
        }
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

fn internal(e: prometheus::Error) -> crate::error::Error {
    crate::error::Error::Internal(format!("metrics registry: {e}"))
}

/// Resident set size from /proc (Linux); None elsewhere.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_has_model_and_revision_labels() {
        let m = Metrics::new("smol", "rev-1").unwrap();
        m.record_status(200);
        m.time_to_first_token.observe(0.2);
        let text = m.render();
        // Label order in the exposition is not fixed; match series by their labels.
        let value = |name: &str, labels: &[&str]| {
            text.lines()
                .find(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|lab| l.contains(lab)))
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_string)
        };
        assert_eq!(value(names::REQUESTS.full, &[r#"status="200""#]).as_deref(), Some("1"), "{text}");
        assert_eq!(
            value(&format!("{}_bucket", names::TIME_TO_FIRST_TOKEN.full), &[r#"le="0.2""#]).as_deref(),
            Some("1")
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.contains(r#"model="smol""#) && line.contains(r#"revision="rev-1""#), "{line}");
        }
        assert!(!text.contains("gpu_memory"), "a server without a GPU exports no VRAM series");
    }

    #[test]
    fn gpu_memory_is_sampled_at_every_scrape_with_the_common_labels() {
        let m = Metrics::new("smol", "rev-1").unwrap();
        let used = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1 << 30));
        let reading = used.clone();
        m.watch_gpu_memory(Box::new(move || {
            let used = reading.load(std::sync::atomic::Ordering::Relaxed);
            // u64::MAX stands for a failed driver call.
            (used != u64::MAX).then_some(crate::device::DeviceMemory { used, total: 80 << 30 })
        }))
        .unwrap();
        let series = |text: &str, name: &str| {
            let line = text.lines().find(|l| l.starts_with(&format!("{name}{{"))).unwrap_or_else(|| panic!("{text}"));
            assert!(line.contains(r#"model="smol""#) && line.contains(r#"revision="rev-1""#), "{line}");
            line.rsplit(' ').next().unwrap().to_string()
        };
        let text = m.render();
        assert_eq!(series(&text, names::GPU_MEMORY_USED.full), (1u64 << 30).to_string());
        assert_eq!(series(&text, names::GPU_MEMORY_TOTAL.full), (80u64 << 30).to_string());
        used.store(3 << 30, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(series(&m.render(), names::GPU_MEMORY_USED.full), (3u64 << 30).to_string());
        used.store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(series(&m.render(), names::GPU_MEMORY_USED.full), (3u64 << 30).to_string());
        assert!(m.watch_gpu_memory(Box::new(|| None)).is_err(), "registered twice");
    }
}
