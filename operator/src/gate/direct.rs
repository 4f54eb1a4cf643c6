//! The `Direct` source: scrape `/metrics` of every ready pod of a revision.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;

use super::exposition::Counters;
use super::pods::Target;
use crate::error::{Error, Result};

/// A scrape slower than this is treated as a missing pod for the window.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Scrapes `targets` concurrently; pods that fail are left out and named in the second value.
pub async fn scrape_all(
    http: &reqwest::Client,
    targets: &[Target],
    revision: &str,
) -> (BTreeMap<String, Counters>, Vec<String>) {
    let results = join_all(targets.iter().map(|t| scrape(http, t, revision))).await;
    let mut counters = BTreeMap::new();
    let mut failed = Vec::new();
    for (target, result) in targets.iter().zip(results) {
        match result {
            Ok(c) => {
                counters.insert(target.pod.clone(), c);
            }
            Err(error) => failed.push(format!("{}: {error}", target.pod)),
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
