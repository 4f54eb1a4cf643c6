//! Polling with a deadline: every wait in the harness is bounded.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

const POLL: Duration = Duration::from_millis(250);

/// Calls `check` until it returns `Some`, an error counts as "not yet" and is reported if
/// time runs out.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last = format!(" (last error: {e})"),
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout { what: what.to_string(), seconds: timeout.as_secs(), detail: last });
        }
        tokio::time::sleep(POLL).await;
    }
}
