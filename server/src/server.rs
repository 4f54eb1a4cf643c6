//! Startup, readiness and graceful drain around the HTTP server and the engine.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::engine::{Engine, EngineOptions, SchedulerConfig};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::{LoadOptions, ModelSource};

/// Serves until SIGTERM/SIGINT and a drain, or until the model fails to load.
pub async fn serve(config: Config) -> Result<()> {
    let source = ModelSource::parse(&config.model)?;
    let served_model_name = config.served_model_name.clone().unwrap_or_else(|| source.default_served_name());
    let metrics = Arc::new(Metrics::new(&served_model_name, &config.revision)?);
    let scheduler = SchedulerConfig {
        max_batch_size: config.effective_batch_size(),
        max_wait: Duration::from_millis(config.max_wait_time_ms),
        max_queue_size: config.max_queue_size,
        max_prefill_tokens: config.max_prefill_tokens,
        max_kv_tokens: config.max_kv_tokens,
        kv_cache_memory_gib: config.kv_cache_memory_gib,
        gpu_memory_utilization: config.gpu_memory_utilization,
        max_model_len: config.max_model_len,
    };
    let options = LoadOptions {
        quantize: config.quantize_dtype(),
        backend: config.backend,
        threads: engine_threads(&config),
        q8_block_columns: config.q8_block_columns,
        device: config.device,
        dtype: config.dtype,
        chat_template: config.chat_template_source()?,
    };
    tracing::info!(device = %config.device, backend = ?config.backend, kernel = crate::model::kernels::q8::kernel_name(), threads = options.threads, "compute");
    let listener = listen(SocketAddr::new(config.host, config.port))
        .map_err(|e| Error::Config(format!("cannot listen on {}:{}: {e}", config.host, config.port)))?;
    let address = listener.local_addr().map_err(|e| Error::Internal(e.to_string()))?;
    let engine_options = EngineOptions {
        shed_factor: config.shed_factor,
        inject_panic_after_steps: config.inject_engine_panic_after_steps,
    };
    let (engine, loaded) = Engine::spawn(source, options, scheduler, engine_options, metrics.clone())?;
    let state = Arc::new(AppState::new(engine, metrics, served_model_name.clone(), config.clone()));
    tracing::info!(%address, model = %config.model, served_model_name, revision = %config.revision, "listening; loading model");

    // Either a drain or a load failure stops the server; a failure is kept for the exit code.
    let (stop_tx, stop_rx) = watch::channel(false);
    let failure = Arc::new(std::sync::Mutex::new(None::<Error>));
    let load_stop = stop_tx.clone();
    let load_failure = failure.clone();
    tokio::spawn(async move {
        let mut loaded = loaded;
        match loaded.recv().await {
            Some(Ok(seconds)) => {
                tracing::info!(load_seconds = seconds, "model loaded and warmed up; ready");
            }
            Some(Err(e)) => {
                *load_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                let _ = load_stop.send(true);
            }
            None => {
                *load_failure.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Error::Internal("the engine thread exited while loading".into()));
                let _ = load_stop.send(true);
            }
        }
    });
    let drain_state = state.clone();
    let drain_timeout = Duration::from_secs(config.drain_timeout_seconds);
    tokio::spawn(async move {
        infergate_protocol::process::shutdown_signal().await;
        drain(&drain_state, drain_timeout).await;
        let _ = stop_tx.send(true);
    });

    let app = api::router(state.clone());
    let mut grace_rx = stop_rx.clone();
    let mut shutdown_rx = stop_rx;
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = shutdown_rx.changed().await;
    });
    // By the time the stop comes every request has been answered (the drain fails what is
    // left); a connection still open after the grace period (a client that does not read its
    // answer) must not keep the process alive until SIGKILL.
    let grace = async move {
        let _ = grace_rx.changed().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = server.into_future() => served.map_err(|e| Error::Internal(format!("HTTP server failed: {e}")))?,
        _ = grace => tracing::warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "connections still open after the drain; closing them"),
    }
    state.engine.shutdown();
    let failure = failure.lock().unwrap_or_else(|p| p.into_inner()).take();
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!("drained; exiting");
            Ok(())
        }
    }
}

/// Connections the kernel holds before the server accepts them (clamped to
/// `net.core.somaxconn`). The default of 128 overflows when a few hundred clients connect at
/// once while the engine's threads keep the CPUs busy: the kernel drops the SYNs past it and
/// each of those clients waits a whole SYN retransmit (1 s, then 3 s) before it is even heard,
/// which is the opposite of a fast refusal. uvicorn and Go listen with 2048 and somaxconn.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // As std's bind does: a restarted server can take its port while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// How long open connections may take to close after the drain, before the process exits.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// How long the engine may take to stop (one step) and answer what is left, after the drain
/// timeout.
const ENGINE_STOP_WAIT: Duration = Duration::from_secs(5);

/// Not ready, refuse new work, let in-flight requests (running and queued) finish until the
/// timeout, then stop the engine, which answers everything left: running requests with 503
/// (or a final SSE error event), queued ones with 503 `draining`.
async fn drain(state: &Arc<AppState>, timeout: Duration) {
    state.start_draining();
    tracing::info!(in_flight = state.in_flight(), timeout_s = timeout.as_secs(), "draining");
    if tokio::time::timeout(timeout, state.wait_idle()).await.is_err() {
        tracing::warn!(in_flight = state.in_flight(), "drain timeout reached; answering what is left with 503");
    }
    state.engine.shutdown();
    // The handlers answer as the engine fails their requests; wait (bounded) until they have.
    if tokio::time::timeout(ENGINE_STOP_WAIT, state.wait_idle()).await.is_err() {
        tracing::warn!(in_flight = state.in_flight(), "requests still in flight after the engine stopped");
    }
}

/// Compute threads for the engine: the flag, or every core.
pub fn engine_threads(config: &Config) -> usize {
    if config.threads > 0 {
        config.threads
    } else {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    }
}
