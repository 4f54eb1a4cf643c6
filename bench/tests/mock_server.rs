//! The HTTP client and load loops against a scripted in-process SSE server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use infergate_bench::client::{closed_loop, open_loop, Target, CANCELLED};
use serde_json::Value;
use tokio::time::Instant;

#[derive(Clone, Copy)]
enum Behavior {
    /// `tokens` text chunks `gap_ms` apart, then (optionally) usage, then [DONE].
    Stream {
        tokens: usize,
        gap_ms: u64,
        usage: bool,
    },
    Status(u16),
    ErrorEvent,
    NoDone,
    Hang,
}

/// Starts a server on a free port; every request body is sent to the returned receiver.
fn serve(behavior: Behavior) -> (String, mpsc::Receiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let tx = tx.clone();
            thread::spawn(move || handle(conn, behavior, tx));
        }
    });
    (url, rx)
}

fn handle(conn: TcpStream, behavior: Behavior, tx: mpsc::Sender<Value>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut len = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    let _ = tx.send(serde_json::from_slice(&body).unwrap());
    let mut w = conn;
    let head =
        |status: &str| format!("HTTP/1.1 {status}\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n");
    let send = |w: &mut TcpStream, s: &str| {
        let _ = w.write_all(s.as_bytes());
        let _ = w.flush();
    };
    match behavior {
        Behavior::Stream { tokens, gap_ms, usage } => {
            send(&mut w, &head("200 OK"));
            for i in 0..tokens {
                if i > 0 {
                    thread::sleep(Duration::from_millis(gap_ms));
                }
                send(&mut w, &format!("data: {{\"choices\":[{{\"index\":0,\"text\":\"t{i}\"}}]}}\n\n"));
            }
            send(&mut w, "data: {\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":\"length\"}]}\n\n");
            if usage {
                let u = format!(
                    "data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":7,\"completion_tokens\":{tokens}}}}}\n\n"
                );
                send(&mut w, &u);
            }
            send(&mut w, "data: [DONE]\n\n");
        }
        Behavior::Status(code) => {
            let body = "{\"error\":{\"message\":\"busy\"}}";
            send(
                &mut w,
                &format!("HTTP/1.1 {code} Busy\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()),
            );
        }
        Behavior::ErrorEvent => {
            send(&mut w, &head("200 OK"));
            send(&mut w, "data: {\"choices\":[{\"text\":\"a\"}]}\n\n");
            send(&mut w, "data: {\"error\":{\"message\":\"engine stopped\",\"code\":503}}\n\n");
        }
        Behavior::NoDone => {
            send(&mut w, &head("200 OK"));
            send(&mut w, "data: {\"choices\":[{\"text\":\"a\"}]}\n\n");
        }
        Behavior::Hang => {
            send(&mut w, &head("200 OK"));
            thread::sleep(Duration::from_secs(30));
        }
    }
}

fn target(url: &str, timeout_s: f64, deadline_s: f64) -> Target {
    Target {
        client: reqwest::Client::new(),
        endpoint: format!("{url}/v1/completions"),
        max_tokens: 16,
        model: None,
        timeout: Duration::from_secs_f64(timeout_s),
        deadline: Instant::now() + Duration::from_secs_f64(deadline_s),
    }
}

#[tokio::test]
async fn streamed_request_is_measured() {
    let (url, bodies) = serve(Behavior::Stream { tokens: 5, gap_ms: 30, usage: true });
    let rec = target(&url, 10.0, 60.0).run("hello world").await;
    assert_eq!(rec.error, None);
    assert_eq!(rec.text_chunks, 5);
    assert_eq!(rec.usage_completion_tokens, Some(5));
    assert_eq!(rec.usage_prompt_tokens, Some(7));
    assert_eq!(rec.itl.len(), 4);
    assert!(rec.itl.iter().all(|&g| g > 0.015), "{:?}", rec.itl);
    let tpot = rec.tpot().unwrap();
    assert!((0.02..0.2).contains(&tpot), "tpot {tpot}");
    assert!(rec.ttft.unwrap() < rec.last_token.unwrap());
    assert!(rec.latency >= rec.last_token.unwrap());

    let body = bodies.recv().unwrap();
    assert_eq!(body["prompt"], "hello world");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["ignore_eos"], true);
    // Greedy; the typed request writes the number as 0.0, which every server reads as 0.
    assert_eq!(body["temperature"].as_f64(), Some(0.0));
    assert_eq!(body["max_tokens"], 16);
    assert!(body.get("model").is_none());
}

#[tokio::test]
async fn without_usage_tokens_are_text_chunks() {
    let (url, _bodies) = serve(Behavior::Stream { tokens: 3, gap_ms: 1, usage: false });
    let rec = target(&url, 10.0, 60.0).run("p").await;
    assert_eq!(rec.error, None);
    assert_eq!(rec.usage_completion_tokens, None);
    assert_eq!(rec.completion_tokens(), 3);
}

#[tokio::test]
async fn non_200_is_an_error() {
    let (url, _bodies) = serve(Behavior::Status(503));
    let rec = target(&url, 10.0, 60.0).run("p").await;
    let err = rec.error.unwrap();
    assert!(err.starts_with("HTTP 503"), "{err}");
}

#[tokio::test]
async fn error_in_stream_is_an_error() {
    let (url, _bodies) = serve(Behavior::ErrorEvent);
    let rec = target(&url, 10.0, 60.0).run("p").await;
    assert_eq!(rec.error.as_deref(), Some("SSE error: engine stopped"));
}

#[tokio::test]
async fn stream_without_done_is_an_error() {
    let (url, _bodies) = serve(Behavior::NoDone);
    let rec = target(&url, 10.0, 60.0).run("p").await;
    assert_eq!(rec.error.as_deref(), Some("stream ended without [DONE]"));
}

#[tokio::test]
async fn refused_connection_is_a_transport_error() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let rec = target(&format!("http://127.0.0.1:{port}"), 10.0, 60.0).run("p").await;
    assert!(rec.error.unwrap().starts_with("transport:"));
}

#[tokio::test]
async fn per_request_timeout() {
    let (url, _bodies) = serve(Behavior::Hang);
    let t0 = std::time::Instant::now();
    let rec = target(&url, 0.3, 60.0).run("p").await;
    assert!(rec.error.unwrap().starts_with("timeout"));
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn closed_loop_is_cut_at_the_deadline() {
    let (url, _bodies) = serve(Behavior::Hang);
    let t0 = std::time::Instant::now();
    let prompts = std::sync::Arc::new(vec!["p".to_string(); 6]);
    let records = closed_loop(&target(&url, 10.0, 0.4), prompts, 2).await;
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(records.len(), 6);
    assert!(records.iter().all(|r| r.error.as_deref() == Some(CANCELLED)));
}

#[tokio::test]
async fn closed_and_open_loops_complete_every_request() {
    let (url, bodies) = serve(Behavior::Stream { tokens: 2, gap_ms: 1, usage: true });
    let prompts = std::sync::Arc::new((0..5).map(|i| format!("prompt {i}")).collect::<Vec<_>>());
    let records = closed_loop(&target(&url, 10.0, 60.0), prompts.clone(), 3).await;
    assert_eq!(records.len(), 5);
    assert!(records.iter().all(|r| r.ok()));

    let start = Instant::now();
    let offsets = vec![0.05, 0.1, 0.15, 0.2, 0.25];
    let records = open_loop(&target(&url, 10.0, 60.0), prompts, offsets, start).await;
    assert_eq!(records.len(), 5);
    assert!(records.iter().all(|r| r.ok()));
    assert!(start.elapsed() >= Duration::from_millis(250));
    let mut seen: Vec<String> = bodies.try_iter().map(|b| b["prompt"].as_str().unwrap().to_string()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5);
}
