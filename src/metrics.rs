//! Prometheus metrics of the operator, rendered as OpenMetrics text on `/metrics`.
//!
//! Series (label values in braces):
//!
//! | name | type | labels |
//! |---|---|---|
//! | `versori_operator_reconciliations_total` | counter | `kind` |
//! | `versori_operator_reconcile_errors_total` | counter | `kind`, `reason` |
//! | `versori_operator_reconcile_duration_seconds` | histogram | `kind` |
//! | `versori_operator_reconciles_in_flight` | gauge | `kind` |
//! | `versori_api_requests_total` | counter | `operation`, `method`, `status` (HTTP code, or `error` when no answer arrived) |
//! | `versori_api_request_duration_seconds` | histogram | `operation` |
//!
//! Label values must come from small fixed sets (kinds, error reasons, client operations): every
//! distinct value is a new series that lives until the process exits.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::versori::{CallObserver, CallRecord};

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `status` label of a Versori call that got no HTTP answer (transport error, timeout).
pub const TRANSPORT_ERROR_STATUS: &str = "error";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiCallLabels {
    operation: &'static str,
    method: &'static str,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// 5 ms to ~41 s, doubling.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// The operator's metrics and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    reconciliations: Family<KindLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: HistogramFamily<KindLabels>,
    reconciles_in_flight: Family<KindLabels, Gauge>,
    api_requests: Family<ApiCallLabels, Counter>,
    api_request_duration: HistogramFamily<OperationLabels>,
    token_refused: Gauge,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry holding every series, all empty.
    pub fn new() -> Self {
        let mut registry = Registry::default();

        let reconciliations = Family::<KindLabels, Counter>::default();
        registry.register(
            "versori_operator_reconciliations",
            "Reconciliations started, by kind",
            reconciliations.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "versori_operator_reconcile_errors",
            "Reconciliations that ended in an error, by kind and reason",
            reconcile_errors.clone(),
        );
        let reconcile_duration: HistogramFamily<KindLabels> =
            Family::new_with_constructor(duration_histogram);
        registry.register_with_unit(
            "versori_operator_reconcile_duration",
            "Time spent in one reconciliation, by kind",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let reconciles_in_flight = Family::<KindLabels, Gauge>::default();
        registry.register(
            "versori_operator_reconciles_in_flight",
            "Reconciliations running now, by kind",
            reconciles_in_flight.clone(),
        );
        let api_requests = Family::<ApiCallLabels, Counter>::default();
        registry.register(
            "versori_api_requests",
            "Requests sent to the Versori API, by client operation, HTTP method and status (error: no answer)",
            api_requests.clone(),
        );
        let api_request_duration: HistogramFamily<OperationLabels> =
            Family::new_with_constructor(duration_histogram);
        registry.register_with_unit(
            "versori_api_request_duration",
            "Duration of Versori API requests, by client operation",
            Unit::Seconds,
            api_request_duration.clone(),
        );

        let token_refused = Gauge::default();
        registry.register(
            "versori_operator_api_token_refused",
            "1 while Versori refuses the API token (HTTP 401) and every Versori call is paused, else 0",
            token_refused.clone(),
        );

        Self {
            registry,
            token_refused,
            reconciliations,
            reconcile_errors,
            reconcile_duration,
            reconciles_in_flight,
            api_requests,
            api_request_duration,
        }
    }

    /// Creates the per-kind series at zero, so dashboards show `0` instead of no data before the
    /// first reconciliation of that kind.
    pub fn init_kind(&self, kind: &'static str) {
        let labels = KindLabels { kind };
        let _ = self.reconciliations.get_or_create(&labels);
        let _ = self.reconcile_duration.get_or_create(&labels);
        let _ = self.reconciles_in_flight.get_or_create(&labels);
    }

    /// Counts a reconciliation of `kind` and marks it in flight until the returned timer is
    /// finished or dropped.
    pub fn reconcile_started(&self, kind: &'static str) -> ReconcileTimer {
        let labels = KindLabels { kind };
        self.reconciliations.get_or_create(&labels).inc();
        let in_flight = self.reconciles_in_flight.get_or_create_owned(&labels);
        in_flight.inc();
        ReconcileTimer {
            kind,
            started: Instant::now(),
            in_flight,
            duration: self.reconcile_duration.get_or_create_owned(&labels),
            errors: self.reconcile_errors.clone(),
            done: false,
        }
    }

    /// Records one Versori API request.
    pub fn observe_versori_call(&self, record: &CallRecord) {
        let status = match record.status {
            Some(code) => code.to_string(),
            None => TRANSPORT_ERROR_STATUS.to_owned(),
        };
        self.api_requests
            .get_or_create(&ApiCallLabels {
                operation: record.operation,
                method: record.method,
                status,
            })
            .inc();
        self.api_request_duration
            .get_or_create(&OperationLabels {
                operation: record.operation,
            })
            .observe(record.elapsed.as_secs_f64());
    }

    /// An observer for [`crate::versori::ClientConfig::with_observer`] that feeds
    /// [`Metrics::observe_versori_call`].
    pub fn versori_call_observer(self: &Arc<Self>) -> CallObserver {
        let metrics = Arc::clone(self);
        Arc::new(move |record: &CallRecord| metrics.observe_versori_call(record))
    }

    /// Records whether Versori refuses the API token (the 401 breaker is open).
    pub fn set_token_refused(&self, refused: bool) {
        self.token_refused.set(i64::from(refused));
    }

    /// Every series as OpenMetrics text (ends with `# EOF`); serve it with
    /// [`OPENMETRICS_CONTENT_TYPE`].
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(error) = encode(&mut out, &self.registry) {
            tracing::error!(%error, "cannot encode the metrics");
        }
        out
    }
}

/// Measures one reconciliation; see [`Metrics::reconcile_started`].
///
/// Dropping it without [`ReconcileTimer::finish`] (e.g. when the reconcile future is cancelled)
/// records it as finished without error.
#[must_use = "a reconcile timer measures until it is finished or dropped"]
pub struct ReconcileTimer {
    kind: &'static str,
    started: Instant,
    in_flight: Gauge,
    duration: Histogram,
    errors: Family<ErrorLabels, Counter>,
    done: bool,
}

impl fmt::Debug for ReconcileTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconcileTimer")
            .field("kind", &self.kind)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl ReconcileTimer {
    /// Records the duration, leaves the in-flight gauge and, with `Some(reason)`, counts an
    /// error with that reason (use a short fixed word such as `VersoriAPIError`).
    pub fn finish(mut self, error_reason: Option<&str>) {
        self.record(error_reason);
    }

    fn record(&mut self, error_reason: Option<&str>) {
        if self.done {
            return;
        }
        self.done = true;
        self.duration.observe(self.started.elapsed().as_secs_f64());
        self.in_flight.dec();
        if let Some(reason) = error_reason {
            self.errors
                .get_or_create(&ErrorLabels {
                    kind: self.kind,
                    reason: reason.to_owned(),
                })
                .inc();
        }
    }
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.record(None);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn line_value(rendered: &str, series: &str) -> Option<String> {
        rendered.lines().find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')
                .map(str::to_owned)
        })
    }

    #[test]
    fn every_family_is_described_once_it_has_a_series() {
        let empty = Metrics::new().render();
        assert_eq!(
            empty
                .lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>(),
            vec!["versori_operator_api_token_refused 0"],
            "empty families are not rendered; the token gauge always is: {empty}"
        );

        let metrics = Arc::new(Metrics::new());
        metrics.init_kind("System");
        metrics
            .reconcile_started("System")
            .finish(Some("VersoriAPIError"));
        (metrics.versori_call_observer())(&CallRecord {
            operation: "get_system",
            method: "GET",
            route: "/o/{org}/systems/{system_id}",
            status: Some(200),
            elapsed: Duration::from_millis(3),
        });
        let text = metrics.render();
        for name in [
            "versori_operator_reconciliations",
            "versori_operator_reconcile_errors",
            "versori_operator_reconcile_duration_seconds",
            "versori_operator_reconciles_in_flight",
            "versori_api_requests",
            "versori_api_request_duration_seconds",
            "versori_operator_api_token_refused",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} missing in:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        metrics.set_token_refused(true);
        assert_eq!(
            line_value(&metrics.render(), "versori_operator_api_token_refused").as_deref(),
            Some("1")
        );
    }

    #[test]
    fn reconcile_timer_counts_total_in_flight_duration_and_errors() {
        let metrics = Metrics::new();
        let first = metrics.reconcile_started("Connection");
        let second = metrics.reconcile_started("Connection");
        let text = metrics.render();
        assert_eq!(
            line_value(
                &text,
                r#"versori_operator_reconciliations_total{kind="Connection"}"#
            )
            .as_deref(),
            Some("2")
        );
        assert_eq!(
            line_value(
                &text,
                r#"versori_operator_reconciles_in_flight{kind="Connection"}"#
            )
            .as_deref(),
            Some("2")
        );

        first.finish(Some("SecretNotFound"));
        drop(second); // dropped without finish: done, no error
        let third = metrics.reconcile_started("System");
        third.finish(None);

        let text = metrics.render();
        assert_eq!(
            line_value(
                &text,
                r#"versori_operator_reconciles_in_flight{kind="Connection"}"#
            )
            .as_deref(),
            Some("0")
        );
        assert_eq!(
            line_value(
                &text,
                r#"versori_operator_reconcile_errors_total{kind="Connection",reason="SecretNotFound"}"#
            )
            .as_deref(),
            Some("1")
        );
        assert!(
            !text.contains(r#"reconcile_errors_total{kind="System""#),
            "{text}"
        );
        assert_eq!(
            line_value(
                &text,
                r#"versori_operator_reconcile_duration_seconds_count{kind="Connection"}"#
            )
            .as_deref(),
            Some("2")
        );
        assert_eq!(
            line_value(
                &text,
                r#"versori_operator_reconcile_duration_seconds_count{kind="System"}"#
            )
            .as_deref(),
            Some("1")
        );
        assert!(
            text.contains(
                r#"versori_operator_reconcile_duration_seconds_bucket{le="+Inf",kind="System"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn init_kind_creates_zero_series() {
        let metrics = Metrics::new();
        metrics.init_kind("System");
        let text = metrics.render();
        assert_eq!(
            line_value(
                &text,
                r#"versori_operator_reconciliations_total{kind="System"}"#
            )
            .as_deref(),
            Some("0")
        );
    }

    #[test]
    fn versori_observer_counts_by_status_and_transport_errors() {
        let metrics = Arc::new(Metrics::new());
        let observer = metrics.versori_call_observer();
        let record = |status| CallRecord {
            operation: "create_system",
            method: "POST",
            route: "/o/{org}/systems",
            status,
            elapsed: Duration::from_millis(12),
        };
        observer(&record(Some(201)));
        observer(&record(Some(201)));
        observer(&record(Some(429)));
        observer(&record(None));

        let text = metrics.render();
        assert_eq!(
            line_value(
                &text,
                r#"versori_api_requests_total{operation="create_system",method="POST",status="201"}"#
            )
            .as_deref(),
            Some("2")
        );
        assert_eq!(
            line_value(
                &text,
                r#"versori_api_requests_total{operation="create_system",method="POST",status="429"}"#
            )
            .as_deref(),
            Some("1")
        );
        assert_eq!(
            line_value(
                &text,
                r#"versori_api_requests_total{operation="create_system",method="POST",status="error"}"#
            )
            .as_deref(),
            Some("1")
        );
        assert_eq!(
            line_value(
                &text,
                r#"versori_api_request_duration_seconds_count{operation="create_system"}"#
            )
            .as_deref(),
            Some("4")
        );
        assert!(
            text.contains("# UNIT versori_api_request_duration_seconds seconds"),
            "{text}"
        );
    }
}
