//! Runs the real `infergate-server` binary on the real default model for HTTP tests.
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The default model (make model puts it there); INFERGATE_TEST_MODEL overrides.
pub fn model_path() -> PathBuf {
    let path = std::env::var("INFERGATE_TEST_MODEL").map(PathBuf::from).unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        PathBuf::from(home).join(".cache/infergate/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    assert!(path.exists(), "test model {} is missing: run `make model`", path.display());
    path
}

/// A file under the cache folder `~/.cache/infergate` (where `make test-data` puts things).
fn cached(env: &str, relative: &str) -> PathBuf {
    std::env::var(env).map(PathBuf::from).unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        PathBuf::from(home).join(".cache/infergate").join(relative)
    })
}

/// llama.cpp's models/ folder (vocab GGUFs with tokenizer vectors, real chat templates) from
/// the llama-cpp-python sdist; INFERGATE_LLAMA_CPP_MODELS overrides.
pub fn llama_cpp_models() -> PathBuf {
    let dir = cached("INFERGATE_LLAMA_CPP_MODELS", "llama-src-0.3.36/llama_cpp_python-0.3.36/vendor/llama.cpp/models");
    assert!(
        dir.join("ggml-vocab-llama-spm.gguf").exists() && dir.join("templates").is_dir(),
        "llama.cpp's models/ folder (test vocabularies, templates) is missing at {} \
         (set INFERGATE_LLAMA_CPP_MODELS or run `make test-data`, which fetches it)",
        dir.display()
    );
    dir
}

/// The second real model, Gemma 3 270M Q4_K_M; INFERGATE_GEMMA_MODEL overrides.
pub fn gemma_model_path() -> PathBuf {
    let path = cached("INFERGATE_GEMMA_MODEL", "models/gemma-3-270m-q4_k_m.gguf");
    assert!(path.exists(), "Gemma model {} is missing: run `make test-data`", path.display());
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

pub struct Server {
    pub child: Child,
    pub port: u16,
    pub base: String,
}

impl Server {
    /// Starts the server with extra flags/env and waits until /ready answers 200.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut server = Self::spawn(args, env);
        server.wait_ready(Duration::from_secs(60));
        server
    }

    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_infergate-server"));
        if !args.contains(&"--model") {
            cmd.arg("--model").arg(model_path());
        }
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(args)
            .env(infergate_protocol::server_flags::THREADS.env, "1")
            .env(infergate_protocol::server_flags::REVISION.env, "test-rev")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        // The server dies with the test process even if a test panics.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn infergate-server");
        Server { child, port, base: format!("http://127.0.0.1:{port}") }
    }

    pub fn wait_ready(&mut self, limit: Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("server exited before it was ready: {status}");
            }
            if let Ok(resp) = reqwest::blocking_get(&format!("{}/ready", self.base)) {
                if resp == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("server not ready after {limit:?}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn sigterm(&self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(started.elapsed() < limit, "server did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod reqwest {
    //! A tiny blocking status probe so readiness polling needs no runtime.
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    pub fn blocking_get(url: &str) -> std::io::Result<u16> {
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
        let mut stream = TcpStream::connect(host)?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
        let mut buf = String::new();
        stream.read_to_string(&mut buf)?;
        let code = buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok(code)
    }
}

/// One server shared by the tests of a binary, started on a thread that lives as long as
/// the process (so the parent-death signal fires only when the test binary exits).
pub fn shared() -> &'static str {
    static BASE: OnceLock<String> = OnceLock::new();
    BASE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let server = Server::start(&[], &[]);
            tx.send(server.base.clone()).expect("send base url");
            let _keep = server;
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("shared server started")
    })
}

pub fn client() -> ::reqwest::Client {
    ::reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("client")
}

/// POSTs JSON and returns status and parsed body.
pub async fn post_json(url: &str, body: &Value) -> (u16, Value) {
    let resp = client().post(url).json(body).send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON body ({status}): {text}"));
    (status, value)
}

/// POSTs raw bytes with a content type and returns status and parsed body.
pub async fn post_raw(url: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = client().post(url).header("content-type", "application/json").body(body).send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON body ({status}): {text}"));
    (status, value)
}

/// Reads an SSE response into its `data:` payloads, through the client the bench and the
/// operator's probe use.
pub async fn sse(url: &str, body: &Value) -> (u16, Vec<String>) {
    let mut events = Vec::new();
    match infergate_protocol::client::stream(&client(), url, body, |event| events.push(event.data.clone())).await {
        Ok(_) => (200, events),
        Err(infergate_protocol::client::RequestFailure::Status { status, .. }) => (status, events),
        Err(infergate_protocol::client::RequestFailure::Transport(e)) => panic!("request: {e}"),
    }
}

/// The value of the first sample line of a `/metrics` text that starts with `prefix` (a series
/// name, or a name and the start of its labels).
pub fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

/// `metric_value`, 0 for a series not exported (yet).
pub fn metric_or_zero(text: &str, prefix: &str) -> f64 {
    metric_value(text, prefix).unwrap_or(0.0)
}

/// Asserts OpenAI's error shape and returns the message.
pub fn assert_openai_error(body: &Value) -> String {
    let error = body.get("error").unwrap_or_else(|| panic!("no `error` object in {body}"));
    for field in ["message", "type", "param", "code"] {
        assert!(error.get(field).is_some(), "error lacks `{field}`: {body}");
    }
    error["message"].as_str().expect("message is a string").to_string()
}
