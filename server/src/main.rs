use clap::Parser;
use infergate_server::{server, Config};

/// How long the exit waits for blocking tasks still running.
const RUNTIME_SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = infergate_server::cli::run_subcommand(&args) {
        std::process::exit(code);
    }
    let config = Config::parse_from(args);
    if let Err(e) = config.validate() {
        eprintln!("infergate-server: {e}");
        std::process::exit(2);
    }
    infergate_protocol::process::init_logging(config.log_format, "info");
    // candle's CPU pool reads these once; set them before any thread starts.
    let threads = server::engine_threads(&config).to_string();
    std::env::set_var("RAYON_NUM_THREADS", &threads);
    std::env::set_var("CANDLE_NUM_THREADS", &threads);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("infergate-server: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let served = runtime.block_on(server::serve(config));
    // Every request has been answered by now; a blocking task still running (a tokenization
    // whose client left) must not hold the exit. The engine thread (perhaps still loading a
    // model after an early SIGTERM) ends with the process.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_WAIT);
    if let Err(e) = served {
        eprintln!("infergate-server: {e}");
        std::process::exit(1);
    }
}
