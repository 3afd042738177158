//! Fault injection settings (`/_emulator/faults`) and request counters.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What `PUT /_emulator/faults` takes and `GET` returns. Every field is optional
/// on input; a `PUT` replaces the whole set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Faults {
    /// Added to every API request before anything else.
    pub latency_ms: u64,
    /// Share of requests answered 503 (no state change).
    pub error_rate: f64,
    /// Share of requests answered 429 with `Retry-After` (no state change).
    pub rate_limit_rate: f64,
    /// The `Retry-After` of those 429s.
    pub retry_after_seconds: u64,
    /// Share of requests whose connection is reset without a response (no state change).
    pub drop_rate: f64,
    /// Share of write requests applied, then their connection reset without a response.
    pub commit_then_drop_rate: f64,
    /// The next N write requests are applied, then their connection reset.
    pub commit_then_drop_next: u64,
    /// When set, faults hit only these `"METHOD /route/{template}"` keys
    /// (e.g. `"POST /o/{org}/systems"`); latency too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<String>>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            error_rate: 0.0,
            rate_limit_rate: 0.0,
            retry_after_seconds: 1,
            drop_rate: 0.0,
            commit_then_drop_rate: 0.0,
            commit_then_drop_next: 0,
            routes: None,
        }
    }
}

impl Faults {
    /// The fields that are out of range, as `(field, message)`.
    pub fn check(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        for (name, rate) in [
            ("errorRate", self.error_rate),
            ("rateLimitRate", self.rate_limit_rate),
            ("dropRate", self.drop_rate),
            ("commitThenDropRate", self.commit_then_drop_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                errors.push((name.to_owned(), "must be between 0 and 1".to_owned()));
            }
        }
        for (i, route) in self.routes.iter().flatten().enumerate() {
            if route
                .split_once(' ')
                .is_none_or(|(m, p)| m.is_empty() || !p.starts_with('/'))
            {
                errors.push((
                    format!("routes[{i}]"),
                    "must look like \"POST /o/{org}/systems\"".to_owned(),
                ));
            }
        }
        errors
    }

    pub fn applies_to(&self, key: &str) -> bool {
        self.routes
            .as_ref()
            .is_none_or(|routes| routes.iter().any(|r| r == key))
    }
}

/// What the fault middleware decided for one request before running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Pass,
    Unavailable,
    RateLimited { retry_after: u64 },
    Drop,
    CommitThenDrop,
}

impl Faults {
    /// Rolls the dice for one request (and spends one `commitThenDropNext`).
    pub fn decide(&mut self, key: &str, is_write: bool) -> Decision {
        if !self.applies_to(key) {
            return Decision::Pass;
        }
        if self.drop_rate > 0.0 && rand::random::<f64>() < self.drop_rate {
            return Decision::Drop;
        }
        if self.rate_limit_rate > 0.0 && rand::random::<f64>() < self.rate_limit_rate {
            return Decision::RateLimited {
                retry_after: self.retry_after_seconds,
            };
        }
        if self.error_rate > 0.0 && rand::random::<f64>() < self.error_rate {
            return Decision::Unavailable;
        }
        if is_write {
            if self.commit_then_drop_next > 0 {
                self.commit_then_drop_next -= 1;
                return Decision::CommitThenDrop;
            }
            if self.commit_then_drop_rate > 0.0
                && rand::random::<f64>() < self.commit_then_drop_rate
            {
                return Decision::CommitThenDrop;
            }
        }
        Decision::Pass
    }
}

/// API request counts, by `"METHOD /route/{template}"` and by method.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    pub requests: BTreeMap<String, u64>,
    pub requests_by_method: BTreeMap<String, u64>,
    pub requests_total: u64,
}

impl Counters {
    pub fn count(&mut self, method: &str, key: &str) {
        *self.requests.entry(key.to_owned()).or_default() += 1;
        *self
            .requests_by_method
            .entry(method.to_owned())
            .or_default() += 1;
        self.requests_total += 1;
    }
}
