//! Leaf helpers shared by [`crate::operator`] and [`crate::leader`]: one-line kube errors and the
//! shutdown signal. This module depends on nothing else in the crate.

use std::future::Future;

use tracing::{error, info, warn};

/// A kube error as one line: for API errors the apiserver's message and code, never a Debug dump.
pub fn kube_error_message(error: &kube::Error) -> String {
    let text = match error {
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() {
                status.reason.clone()
            } else {
                status.message.clone()
            };
            format!("{message} (HTTP {})", status.code)
        }
        other => {
            // The source chain says what really happened ("Connection refused", a TLS problem).
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !text.contains(&cause_text) {
                    text.push_str(": ");
                    text.push_str(&cause_text);
                }
                source = cause.source();
            }
            text
        }
    };
    text.replace(['\n', '\r'], " ")
}

/// A future that resolves on the first SIGTERM or SIGINT (Ctrl-C).
///
/// The handlers are installed when this function is called (inside the Tokio runtime), not when
/// the future is first polled, so a signal arriving in between is not lost.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + Sync + 'static {
    #[cfg(unix)]
    let streams = {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(terminate), Ok(interrupt)) => Some((terminate, interrupt)),
            (Err(error), _) | (_, Err(error)) => {
                warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the operator");
                None
            }
        }
    };
    async move {
        #[cfg(unix)]
        if let Some((mut terminate, mut interrupt)) = streams {
            tokio::select! {
                _ = terminate.recv() => info!(signal = "SIGTERM", "shutting down"),
                _ = interrupt.recv() => info!(signal = "SIGINT", "shutting down"),
            }
            return;
        }
        match tokio::signal::ctrl_c().await {
            Ok(()) => info!(signal = "SIGINT", "shutting down"),
            Err(error) => {
                error!(%error, "cannot listen for Ctrl-C; the operator stops only when killed");
                std::future::pending::<()>().await;
            }
        }
    }
}
