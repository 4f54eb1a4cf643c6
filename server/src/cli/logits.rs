//! `infergate-server logits --model M [--device D] [--backend B]`: one prompt of
//! space-separated token ids per stdin line; per line, the logits after its last token
//! (space-separated) on stdout. scripts/gpu-check.sh compares them with torch fp32.

use std::ffi::OsString;
use std::io::{BufRead, BufWriter, Write};

use clap::Parser;

use crate::device::DeviceChoice;
use crate::model::{self, Backend, ForwardItem, LoadOptions, ModelDtype, ModelSource};

#[derive(Debug, Parser)]
#[command(
    name = "infergate-server logits",
    bin_name = "infergate-server logits",
    about = "Logits after each stdin line of token ids (one line of space-separated floats per input line)"
)]
struct Args {
    /// The model (any `--model` source of the server).
    #[arg(long)]
    model: String,
    /// Where the model runs: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// candle (the device-resident path on every device) or native (CPU kernels).
    #[arg(long, value_enum, default_value_t = Backend::Candle)]
    backend: Backend,
    /// Dense weights and KV cache type (as the server's --dtype).
    #[arg(long, default_value = "auto")]
    dtype: ModelDtype,
}

/// Exit status: 0 done, 1 the model or the input failed, 2 bad flags.
pub fn run(args: &[OsString]) -> i32 {
    super::run_parsed::<Args>("logits", args, logits)
}

fn logits(args: &Args) -> Result<(), String> {
    let source = ModelSource::parse(&args.model).map_err(|e| e.to_string())?;
    let options = LoadOptions {
        backend: args.backend,
        device: args.device,
        dtype: args.dtype,
        threads: 1,
        q8_block_columns: 64,
        ..Default::default()
    };
    let loaded = model::load(&source, &options).map_err(|e| e.to_string())?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for (number, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        let tokens = line
            .split_whitespace()
            .map(|t| t.parse::<u32>().map_err(|_| format!("line {}: `{t}` is not a token id", number + 1)))
            .collect::<Result<Vec<u32>, String>>()?;
        if tokens.is_empty() {
            return Err(format!("line {}: no token ids", number + 1));
        }
        let mut kv = loaded.model.new_kv(tokens.len());
        let rows = loaded
            .model
            .forward(&mut [ForwardItem { tokens: &tokens, kv: &mut kv, want_logits: true }])
            .map_err(|e| e.to_string())?;
        let row = rows.first().ok_or("the model returned no logits")?;
        let text: Vec<String> = row.iter().map(|v| v.to_string()).collect();
        writeln!(out, "{}", text.join(" ")).map_err(|e| format!("writing stdout: {e}"))?;
    }
    out.flush().map_err(|e| format!("writing stdout: {e}"))
}
