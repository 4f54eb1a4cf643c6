//! `infergate-bench`: streaming load generator for OpenAI-compatible `/v1/completions`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use infergate_bench::benchmarks::{self, results::RunSet};
use infergate_bench::client::{closed_loop, open_loop, Target};
use infergate_bench::error::{Error, Result};
use infergate_bench::report::{render, Summary};
use infergate_bench::run_report::{CpuUsage, LoadMode, RunParams, RunReport, PERCENTILE_METHOD};
use infergate_bench::{arrivals, cpu, prompt};
use infergate_protocol::process::{init_logging, LogFormat};
use infergate_protocol::server_flags::LOG_FORMAT;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

const ABOUT: &str = "Streaming load generator for OpenAI-compatible servers (POST /v1/completions with \
stream, stream_options.include_usage, ignore_eos, temperature 0).";

const LONG_ABOUT: &str = "Streaming load generator for OpenAI-compatible servers: POST {url}/v1/completions \
with stream=true, stream_options.include_usage=true, ignore_eos=true, temperature=0, max_tokens=N.

Modes: closed loop (--concurrency C: C workers share --requests M) or open loop (--rate R: Poisson \
arrivals at R req/s, each request its own task). Every run is bounded by --requests and \
--max-duration-seconds; work left at the deadline is cancelled and counted as errors.

Prompts: random English-like words from a built-in list, about 0.9 words per token \
(round(0.9 * P) words for --prompt-tokens P; calibrated on SmolLM2's tokenizer, the JSON report \
has the servers' own usage.prompt_tokens mean); freshly random every run unless --seed is given.

Metrics (successful requests): TTFT = send -> first SSE chunk carrying text; ITL = gaps between \
text-carrying chunks; TPOT = (last - first) / (tokens - 1); completion tokens from the final usage \
chunk if present, else the number of text chunks. Output tok/s = completion tokens of successful \
requests / wall time of the run; req/s = successful requests / wall time. Errors: non-200, SSE \
error event, stream ending without [DONE], transport error, timeout, cancellation.

Percentiles use the NEAREST-RANK method: the value at rank ceil(p/100 * n) of the sorted samples.

With --server-pid, /proc/PID/status VmRSS is sampled every 200 ms (maximum reported) and VmHWM is \
read at the end. Every request uses a fresh connection (no keep-alive reuse). CPU seconds of the server, the bench and the rest of the machine (from /proc) \
are reported too: a large \"other\" share means the machine was busy with something else.

`infergate-bench report` writes BENCHMARKS.md from a scripts/bench.sh run (see `report --help`).";

#[derive(Parser, Debug)]
#[command(name = "infergate-bench", version, about = ABOUT, long_about = LONG_ABOUT, args_override_self = true,
    args_conflicts_with_subcommands = true)]
struct Cli {
    /// How logs (stderr) are written; `RUST_LOG` picks what is logged (default: info).
    #[arg(long, global = true, env = LOG_FORMAT.env, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    load: Args,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write BENCHMARKS.md from the JSON reports and meta file of one scripts/bench.sh run.
    Report(ReportArgs),
}

#[derive(clap::Args, Debug)]
struct ReportArgs {
    /// scripts/bench.sh's results folder.
    #[arg(long, default_value = "bench-results")]
    results_dir: std::path::PathBuf,
    /// The run to report (its stamp, e.g. 20261128T064451Z); the newest in the folder when absent.
    #[arg(long)]
    stamp: Option<String>,
    /// Template with `{{placeholder}}`s; the built-in bench/templates/BENCHMARKS.md.tmpl when absent.
    #[arg(long)]
    template: Option<std::path::PathBuf>,
    /// Where to write the document.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: std::path::PathBuf,
}
/// The load generator's options (the tool without a subcommand).
#[derive(clap::Args, Debug, Clone)]
struct Args {
    /// Base URL of the server (without /v1).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Closed loop: number of concurrent workers.
    #[arg(long, conflicts_with = "rate")]
    concurrency: Option<usize>,
    /// Open loop: Poisson arrival rate in requests per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Total number of requests.
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// Approximate prompt length in tokens (0.9 words per token).
    #[arg(long, default_value_t = 100)]
    prompt_tokens: usize,
    /// Mixed lengths: each request's prompt length is drawn uniformly from
    /// --prompt-tokens ..= this (with the run's seed).
    #[arg(long)]
    prompt_tokens_max: Option<usize>,
    /// max_tokens of every request (ignore_eos makes the server generate all of them).
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Seed for prompts and arrivals; from the clock when absent.
    #[arg(long)]
    seed: Option<u64>,
    /// Hard bound on the run; remaining work is cancelled and counted as errors.
    #[arg(long, default_value_t = 600.0)]
    max_duration_seconds: f64,
    /// Per-request timeout (send -> end of stream).
    #[arg(long, default_value_t = 300.0)]
    request_timeout_seconds: f64,
    /// `model` field of the requests; omitted when absent.
    #[arg(long)]
    model: Option<String>,
    /// PID of the server: sample its VmRSS every 200 ms and read VmHWM at the end.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the JSON report (parameters + results) to this file.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
    /// Label of the run, copied into the reports.
    #[arg(long, default_value = "run")]
    label: String,
}

/// Samples VmRSS of a process every 200 ms until stopped.
struct RssSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Option<u64>, usize)>,
    pid: u32,
}

fn status_field_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .and_then(|l| l[field.len() + 1..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut peak: Option<u64> = None;
            let mut samples = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                if let Some(kib) = status_field_kib(pid, "VmRSS") {
                    peak = Some(peak.map_or(kib, |p| p.max(kib)));
                    samples += 1;
                }
                if flag.load(Ordering::Relaxed) {
                    return (peak, samples);
                }
            }
        });
        RssSampler { stop, task, pid }
    }

    /// (peak sampled VmRSS, VmHWM, number of samples), KiB.
    async fn finish(self) -> (Option<u64>, Option<u64>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let (peak, samples) = self.task.await.unwrap_or((None, 0));
        (peak, status_field_kib(self.pid, "VmHWM"), samples)
    }
}

/// CPU tick counters at one instant (see `infergate_bench::cpu`).
struct CpuSnap {
    machine: Option<cpu::MachineTicks>,
    server: Option<u64>,
    bench: Option<u64>,
}

impl CpuSnap {
    fn take(server_pid: Option<u32>) -> Self {
        let read = |path: String| std::fs::read_to_string(path).ok();
        CpuSnap {
            machine: read("/proc/stat".into()).as_deref().and_then(cpu::parse_proc_stat),
            server: server_pid.and_then(|p| read(format!("/proc/{p}/stat"))).as_deref().and_then(cpu::parse_pid_stat),
            bench: read("/proc/self/stat".into()).as_deref().and_then(cpu::parse_pid_stat),
        }
    }

    /// CPU seconds used between `self` and `end` by the server, the bench, the whole machine,
    /// stolen by the hypervisor, and by everything else; plus "other" as % of the machine.
    fn usage(&self, end: &CpuSnap, wall: f64) -> CpuUsage {
        let secs = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / cpu::TICKS_PER_S),
            _ => None,
        };
        let server = secs(self.server, end.server);
        let bench = secs(self.bench, end.bench);
        let machine = secs(self.machine.map(|m| m.busy), end.machine.map(|m| m.busy));
        let steal = secs(self.machine.map(|m| m.steal), end.machine.map(|m| m.steal));
        let other = match (machine, server, bench) {
            (Some(m), Some(s), Some(b)) => Some((m - s - b).max(0.0)),
            _ => None,
        };
        let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let pct = |v: Option<f64>| v.filter(|_| wall > 0.0).map(|v| 100.0 * v / (wall * ncpu));
        CpuUsage {
            server_cpu_s: server,
            bench_cpu_s: bench,
            machine_busy_cpu_s: machine,
            steal_cpu_s: steal,
            other_cpu_s: other,
            other_cpu_pct_of_machine: pct(other),
            server_cpu_pct_of_machine: pct(server),
            ncpu,
        }
    }
}

// One thread is enough to drive dozens of streams, and leaves the cores to the server.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    init_logging(cli.log_format, "info");
    let outcome = match cli.command {
        Some(Command::Report(args)) => report(&args),
        None => real_main(cli.load).await,
    };
    if let Err(e) = outcome {
        eprintln!("infergate-bench: {e}");
        std::process::exit(2);
    }
}

/// `report`: renders the run's document and writes it.
fn report(args: &ReportArgs) -> Result<()> {
    let set = RunSet::load(&args.results_dir, args.stamp.as_deref())?;
    let template = match &args.template {
        Some(path) => std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?,
        None => benchmarks::DEFAULT_TEMPLATE.to_string(),
    };
    let doc = benchmarks::render(&set, &template)?;
    std::fs::write(&args.out, doc).map_err(|e| Error::io(&args.out, e))?;
    tracing::info!(out = %args.out.display(), stamp = %set.stamp, runs = set.runs.len(), "wrote the report");
    Ok(())
}

async fn real_main(args: Args) -> Result<()> {
    let usage = |m: &str| Err(Error::Usage(m.into()));
    let mode = match (args.concurrency, args.rate) {
        (Some(c), None) if c > 0 => LoadMode::Closed,
        (None, Some(r)) if r > 0.0 && r.is_finite() => LoadMode::Open,
        (None, None) => return usage("give --concurrency C (closed loop) or --rate R (open loop)"),
        _ => return usage("--concurrency must be > 0 and --rate a positive number"),
    };
    if args.max_duration_seconds <= 0.0 || args.request_timeout_seconds <= 0.0 {
        return usage("durations must be positive");
    }
    let seed = args.seed.unwrap_or_else(|| {
        let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        d.as_nanos() as u64 ^ (std::process::id() as u64) << 32
    });
    if args.prompt_tokens_max.is_some_and(|max| max < args.prompt_tokens) {
        return usage("--prompt-tokens-max must be at least --prompt-tokens");
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let prompts: Arc<Vec<String>> = Arc::new(
        (0..args.requests)
            .map(|_| {
                let tokens = match args.prompt_tokens_max {
                    Some(max) => rng.random_range(args.prompt_tokens..=max),
                    None => args.prompt_tokens,
                };
                prompt::generate(&mut rng, tokens)
            })
            .collect(),
    );
    let offsets = args.rate.map(|r| arrivals::arrival_offsets(&mut rng, r, args.requests));

    // A fresh connection per request (localhost: ~0.1 ms). Reusing keep-alive connections
    // races with servers that close idle ones (llama-server's HTTP library does): the next
    // request then fails with "error sending request" although the server is fine.
    let client = reqwest::Client::builder().tcp_nodelay(true).pool_max_idle_per_host(0).build()?;
    let base = args.url.trim_end_matches('/');
    let sampler = args.server_pid.map(RssSampler::start);
    let cpu_start = CpuSnap::take(args.server_pid);
    let start = Instant::now();
    let target = Target {
        client,
        endpoint: format!("{base}/v1/completions"),
        max_tokens: args.max_tokens,
        model: args.model.clone(),
        timeout: Duration::from_secs_f64(args.request_timeout_seconds),
        deadline: start + Duration::from_secs_f64(args.max_duration_seconds),
    };
    let records = match (args.concurrency, offsets) {
        (Some(c), _) => closed_loop(&target, prompts, c).await,
        (None, Some(offsets)) => open_loop(&target, prompts, offsets, start).await,
        (None, None) => unreachable!("mode checked above"),
    };
    let wall = start.elapsed().as_secs_f64();
    let cpu_usage = cpu_start.usage(&CpuSnap::take(args.server_pid), wall);
    let (peak, hwm, samples) = match sampler {
        Some(s) => s.finish().await,
        None => (None, None, 0),
    };
    let summary = Summary::new(&records, wall);
    print!("{}", render(&args.label, &summary, peak, hwm));
    let all_failed = summary.successes == 0 && summary.count > 0;
    let f = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
    println!(
        "CPU s: server {} bench {} other {} ({} % of the machine; steal {})",
        f(cpu_usage.server_cpu_s),
        f(cpu_usage.bench_cpu_s),
        f(cpu_usage.other_cpu_s),
        f(cpu_usage.other_cpu_pct_of_machine),
        f(cpu_usage.steal_cpu_s)
    );

    if let Some(path) = &args.json_out {
        let report = RunReport {
            label: args.label.clone(),
            timestamp_unix: SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs(),
            percentile_method: PERCENTILE_METHOD.into(),
            params: RunParams {
                url: base.to_string(),
                mode,
                concurrency: args.concurrency,
                rate: args.rate,
                requests: args.requests,
                prompt_tokens: args.prompt_tokens,
                prompt_tokens_max: args.prompt_tokens_max,
                prompt_words: prompt::word_count(args.prompt_tokens),
                words_per_token: prompt::WORDS_PER_TOKEN,
                max_tokens: args.max_tokens,
                seed,
                max_duration_seconds: args.max_duration_seconds,
                request_timeout_seconds: args.request_timeout_seconds,
                model: args.model.clone(),
                server_pid: args.server_pid,
            },
            server_peak_rss_kib: peak,
            server_vmhwm_kib: hwm,
            rss_samples: samples,
            cpu: cpu_usage,
            summary,
        };
        let text = serde_json::to_string_pretty(&report).map_err(Error::Encode)?;
        std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))?;
    }
    if all_failed {
        std::process::exit(3);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_is_taken_by_the_load_run_and_by_report() {
        let run = Cli::try_parse_from(["infergate-bench", "--log-format", "json", "--concurrency", "2"]).unwrap();
        assert_eq!((run.log_format, run.load.concurrency), (LogFormat::Json, Some(2)));
        let report = Cli::try_parse_from(["infergate-bench", "report", "--log-format", "json"]).unwrap();
        assert!(matches!(report.command, Some(Command::Report(_))));
        assert_eq!(report.log_format, LogFormat::Json);
        assert!(Cli::try_parse_from(["infergate-bench", "--log-format", "xml"]).is_err());
    }
}
