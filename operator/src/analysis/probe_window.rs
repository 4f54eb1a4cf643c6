//! What the gate's probe saw of one revision in one window, client-side: every request's
//! outcome and the TTFT of every request that got a first token.
//!
//! The server's counters (the metrics source) cannot hold every failure: a connection refused or
//! reset, a stream cut without `[DONE]`, or a request that hangs never reach its
//! `requests_total` (a hang reaches it as 499, "client went away", when the probe gives up, and
//! 499 is ignored). Those are added to the window's errors; see [`FailureCounts::unseen_by_server`].

/// How one probe request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The stream ended with `data: [DONE]`.
    Ok,
    /// The server answered with an error status before streaming.
    HttpStatus(u16),
    /// The stream's last event was an error (the server's way to fail after the headers).
    StreamError,
    /// No answer: connection refused, or reset or closed before the response headers.
    Transport,
    /// The body ended (cleanly or by a broken connection) without `[DONE]` or an error event.
    CutStream,
    /// Still open `probe.requestTimeoutSeconds` after it was sent.
    TimedOut,
}

/// Failed probe requests by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FailureCounts {
    pub http_status: u64,
    pub stream_error: u64,
    pub transport: u64,
    pub cut_stream: u64,
    pub timed_out: u64,
}

impl FailureCounts {
    pub fn total(&self) -> u64 {
        self.http_status + self.stream_error + self.transport + self.cut_stream + self.timed_out
    }

    /// Failures the server's `requests_total` cannot have counted, to be added to the window's
    /// errors. Not the HTTP error statuses nor error events: the server counts those itself
    /// (with their status) before answering, so adding them would count them twice. Transport
    /// errors never reached a live handler; a cut stream means the process or the connection
    /// died mid-answer (the server records a 499 at most, which is ignored); a timed-out request
    /// is recorded as 499 once the probe drops it.
    pub fn unseen_by_server(&self) -> u64 {
        self.transport + self.cut_stream + self.timed_out
    }
}

/// One revision's probe results over one window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProbeWindow {
    /// Client-side TTFT (request sent to the first SSE data event with a token) of every request
    /// that got one, in seconds, failed ones included (a stream cut later still had its TTFT).
    pub ttfts_seconds: Vec<f64>,
    /// Requests sent.
    pub sent: u64,
    /// Requests that ended with `[DONE]`.
    pub ok: u64,
    pub failed: FailureCounts,
    /// Requests still open, within their timeout, when the window ended: neither ok nor failed
    /// (the server records them as 499).
    pub unfinished: u64,
}

impl ProbeWindow {
    /// Records one finished request.
    pub fn record(&mut self, outcome: ProbeOutcome, ttft_seconds: Option<f64>) {
        if let Some(ttft) = ttft_seconds {
            self.ttfts_seconds.push(ttft);
        }
        let failed = &mut self.failed;
        match outcome {
            ProbeOutcome::Ok => self.ok += 1,
            ProbeOutcome::HttpStatus(_) => failed.http_status += 1,
            ProbeOutcome::StreamError => failed.stream_error += 1,
            ProbeOutcome::Transport => failed.transport += 1,
            ProbeOutcome::CutStream => failed.cut_stream += 1,
            ProbeOutcome::TimedOut => failed.timed_out += 1,
        }
    }

    /// Adds another run's results (several targets, several workers).
    pub fn merge(&mut self, other: ProbeWindow) {
        self.ttfts_seconds.extend(other.ttfts_seconds);
        self.sent += other.sent;
        self.ok += other.ok;
        self.unfinished += other.unfinished;
        let (a, b) = (&mut self.failed, other.failed);
        a.http_status += b.http_status;
        a.stream_error += b.stream_error;
        a.transport += b.transport;
        a.cut_stream += b.cut_stream;
        a.timed_out += b.timed_out;
    }

    /// A short account for messages: `"40 sent, 30 ok, 10 failed (10 timed out)"`.
    pub fn summary(&self) -> String {
        let f = &self.failed;
        let kinds: Vec<String> = [
            (f.http_status, "HTTP error"),
            (f.stream_error, "stream error"),
            (f.transport, "transport error"),
            (f.cut_stream, "cut stream"),
            (f.timed_out, "timed out"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        let mut text = format!("{} sent, {} ok, {} failed", self.sent, self.ok, f.total());
        if !kinds.is_empty() {
            text.push_str(&format!(" ({})", kinds.join(", ")));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_the_server_cannot_see_are_added() {
        let mut w = ProbeWindow { sent: 6, ..ProbeWindow::default() };
        for (outcome, ttft) in [
            (ProbeOutcome::Ok, Some(0.1)),
            (ProbeOutcome::HttpStatus(500), None),
            (ProbeOutcome::StreamError, Some(0.2)),
            (ProbeOutcome::Transport, None),
            (ProbeOutcome::CutStream, Some(0.3)),
            (ProbeOutcome::TimedOut, None),
        ] {
            w.record(outcome, ttft);
        }
        assert_eq!(w.ttfts_seconds, vec![0.1, 0.2, 0.3]);
        assert_eq!((w.ok, w.failed.total(), w.failed.unseen_by_server()), (1, 5, 3));
        assert_eq!(
            w.summary(),
            "6 sent, 1 ok, 5 failed (1 HTTP error, 1 stream error, 1 transport error, 1 cut stream, 1 timed out)"
        );
        let mut both = w.clone();
        both.merge(w);
        assert_eq!((both.sent, both.ok, both.failed.timed_out, both.ttfts_seconds.len()), (12, 2, 2, 6));
    }
}
