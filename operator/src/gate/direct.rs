//! The `Direct` source: scrape `/metrics` of every ready pod of a revision at the window's start
//! and end; the window is the increase in between ([`super::window_delta`]).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;

use super::exposition::Counters;
use super::pods::Target;
use super::source::{LoadReading, MetricsSource, Reading, SourceFailure};
use super::window_delta::window_delta;
use crate::error::{Error, Result};

/// A scrape slower than this is treated as a missing pod for the window.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Direct {
    pub http: reqwest::Client,
}

impl MetricsSource for Direct {
    type Mark = BTreeMap<String, Counters>;

    async fn start(&self, revision: &str, targets: &[Target]) -> (Self::Mark, Vec<SourceFailure>) {
        scrape_all(&self.http, targets, revision).await
    }

    async fn finish(&self, revision: &str, targets: &[Target], start: Self::Mark) -> Reading {
        let (end, failures) = scrape_all(&self.http, targets, revision).await;
        Reading { sample: window_delta(&start, &end), in_flight_per_pod: in_flight_per_pod(&start, &end), failures }
    }

    async fn load(&self, revision: &str, targets: &[Target], since: Option<Self::Mark>) -> (LoadReading, Self::Mark) {
        let (now, failures) = scrape_all(&self.http, targets, revision).await;
        (load_of(&now, since.as_ref(), failures), now)
    }
}

/// The autoscaler's reading from one scrape of every pod (`now`) and the previous one.
pub fn load_of(
    now: &BTreeMap<String, Counters>,
    since: Option<&BTreeMap<String, Counters>>,
    failures: Vec<SourceFailure>,
) -> LoadReading {
    LoadReading {
        pods: u32::try_from(now.len()).unwrap_or(u32::MAX),
        waiting: now.values().map(|c| c.requests_waiting).sum(),
        running: now.values().map(|c| c.requests_running).sum(),
        recent: since.map(|before| window_delta(before, now)),
        failures,
    }
}

/// Requests in flight per pod, the mean of the scrapes at the window's start and end (of the
/// pods each reached); `None` when neither reached a pod.
pub fn in_flight_per_pod(start: &BTreeMap<String, Counters>, end: &BTreeMap<String, Counters>) -> Option<f64> {
    let per_pod = |scrape: &BTreeMap<String, Counters>| {
        (!scrape.is_empty()).then(|| {
            scrape.values().map(|c| c.requests_running + c.requests_waiting).sum::<f64>() / scrape.len() as f64
        })
    };
    match (per_pod(start), per_pod(end)) {
        (Some(a), Some(b)) => Some((a + b) / 2.0),
        (one, other) => one.or(other),
    }
}

/// Scrapes `targets` concurrently; pods that fail are left out and named in the second value.
pub async fn scrape_all(
    http: &reqwest::Client,
    targets: &[Target],
    revision: &str,
) -> (BTreeMap<String, Counters>, Vec<SourceFailure>) {
    let results = join_all(targets.iter().map(|t| scrape(http, t, revision))).await;
    let mut counters = BTreeMap::new();
    let mut failed = Vec::new();
    for (target, result) in targets.iter().zip(results) {
        match result {
            Ok(c) => {
                counters.insert(target.pod.clone(), c);
            }
            Err(error) => failed
                .push(SourceFailure { pod: Some(target.pod.clone()), message: format!("{}: {error}", target.pod) }),
        }
    }
    (counters, failed)
}

async fn scrape(http: &reqwest::Client, target: &Target, revision: &str) -> Result<Counters> {
    let url = format!("{}/metrics", target.base_url);
    let response = http.get(&url).timeout(SCRAPE_TIMEOUT).send().await?;
    if !response.status().is_success() {
        return Err(Error::Gate(format!("GET {url}: HTTP {}", response.status())));
    }
    let text = response.text().await?;
    Ok(Counters::parse(&text, revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(pods: &[(f64, f64)]) -> BTreeMap<String, Counters> {
        pods.iter()
            .enumerate()
            .map(|(i, &(running, waiting))| {
                (
                    format!("pod-{i}"),
                    Counters { requests_running: running, requests_waiting: waiting, ..Counters::default() },
                )
            })
            .collect()
    }

    #[test]
    fn in_flight_is_per_pod_and_averaged_over_the_window_ends() {
        // Start: 2 pods holding 1 + 3 (running + waiting); end: 6 + 2.
        let (start, end) = (scrape(&[(1.0, 0.0), (2.0, 1.0)]), scrape(&[(4.0, 2.0), (2.0, 0.0)]));
        assert_eq!(in_flight_per_pod(&start, &end), Some((2.0 + 4.0) / 2.0));
        // One end unread: the other alone; neither: unknown.
        assert_eq!(in_flight_per_pod(&BTreeMap::new(), &end), Some(4.0));
        assert_eq!(in_flight_per_pod(&BTreeMap::new(), &BTreeMap::new()), None);
    }
}
