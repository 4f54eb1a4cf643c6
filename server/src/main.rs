use clap::Parser;
use infergate_server::{server, Config};

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
    if let Err(e) = runtime.block_on(server::serve(config)) {
        eprintln!("infergate-server: {e}");
        std::process::exit(1);
    }
}
