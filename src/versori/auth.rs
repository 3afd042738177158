//! The API token and the organisation-wide 401 breaker.
//!
//! - The token may come from a file (`VERSORI_API_TOKEN_FILE`, a mounted Secret). The file is
//!   re-read at most every [`TOKEN_FILE_CHECK_INTERVAL`] when a call is made, so a rotation
//!   (kubelet swaps the symlink of the mounted Secret) is used without a restart.
//! - A 401 opens one breaker for every call of the client and its clones: calls fail at once
//!   with [`ApiError::Unauthorized`] (nothing is sent) until the next probe, which lets one call
//!   through; the pause doubles from [`BREAKER_MIN_PAUSE`] to [`BREAKER_MAX_PAUSE`]. A new token
//!   (from the file) or a probe that is not refused closes it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;

use super::client::AuthHeaderScheme;
use super::error::ApiError;
use super::secret::SecretValue;

/// How often the token file is read again (on demand, when calls are made).
pub const TOKEN_FILE_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// The first pause after a 401.
pub const BREAKER_MIN_PAUSE: Duration = Duration::from_secs(2);
/// The longest pause between probes.
pub const BREAKER_MAX_PAUSE: Duration = Duration::from_secs(60);
/// How long a probe may take before another call may probe instead.
const PROBE_TIMEOUT: Duration = Duration::from_secs(45);

/// Told `true` when the breaker opens (the token was refused) and `false` when it closes.
pub type BreakerObserver = Arc<dyn Fn(bool) + Send + Sync>;

/// Builds the `Authorization` header for a token.
pub(crate) fn auth_header(scheme: AuthHeaderScheme, token: &str) -> Result<HeaderValue, ApiError> {
    let mut value =
        HeaderValue::from_str(&format!("{} {}", scheme.prefix(), token)).map_err(|_| {
            ApiError::InvalidConfig(
                "the API token contains characters not allowed in an HTTP header".to_owned(),
            )
        })?;
    value.set_sensitive(true);
    Ok(value)
}

#[derive(Debug, Default)]
struct BreakerState {
    open: bool,
    /// Consecutive refused probes (the pause doubles with each).
    failures: u32,
    /// When the next call may go out as a probe.
    next_probe: Option<Instant>,
}

/// The token in use, where it comes from, and the breaker.
pub(crate) struct Auth {
    scheme: AuthHeaderScheme,
    header: RwLock<HeaderValue>,
    file: Option<TokenFile>,
    breaker: Mutex<BreakerState>,
    observer: Option<BreakerObserver>,
}

struct TokenFile {
    path: PathBuf,
    state: Mutex<FileState>,
}

struct FileState {
    checked: Instant,
    token: SecretValue,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A call [`Auth::admit`] let through.
pub(crate) struct Admission {
    /// The `Authorization` header to send.
    pub header: HeaderValue,
    /// Whether this call probes an open breaker.
    pub probe: bool,
}

impl Auth {
    pub(crate) fn new(
        scheme: AuthHeaderScheme,
        token: &SecretValue,
        file: Option<PathBuf>,
        observer: Option<BreakerObserver>,
    ) -> Result<Self, ApiError> {
        let header = auth_header(scheme, token.expose())?;
        Ok(Self {
            scheme,
            header: RwLock::new(header),
            file: file.map(|path| TokenFile {
                path,
                state: Mutex::new(FileState {
                    checked: Instant::now(),
                    token: token.clone(),
                }),
            }),
            breaker: Mutex::new(BreakerState::default()),
            observer,
        })
    }

    /// Whether Versori refuses the token right now (the breaker is open).
    pub(crate) fn token_refused(&self) -> bool {
        lock(&self.breaker).open
    }

    /// Re-reads the token file when due; a changed, valid token replaces the header and closes
    /// the breaker.
    fn refresh(&self) {
        let Some(file) = &self.file else { return };
        let mut state = lock(&file.state);
        if state.checked.elapsed() < TOKEN_FILE_CHECK_INTERVAL {
            return;
        }
        state.checked = Instant::now();
        let content = match std::fs::read_to_string(&file.path) {
            Ok(content) => content,
            Err(error) => {
                tracing::warn!(path = %file.path.display(), kind = ?error.kind(), "cannot read VERSORI_API_TOKEN_FILE; keeping the token in use");
                return;
            }
        };
        let token = content.trim();
        if token.is_empty() || token == state.token.expose() {
            return;
        }
        match auth_header(self.scheme, token) {
            Ok(header) => {
                *self.header.write().unwrap_or_else(|p| p.into_inner()) = header;
                state.token = SecretValue::from(token);
                tracing::info!(path = %file.path.display(), "the Versori API token file changed; using the new token");
                drop(state);
                self.close();
            }
            Err(_) => {
                tracing::warn!(path = %file.path.display(), "VERSORI_API_TOKEN_FILE holds a token that cannot go in a header; keeping the token in use");
            }
        }
    }

    /// Lets a call through (with the header to send), or refuses it while the breaker is open
    /// and no probe is due.
    pub(crate) fn admit(&self) -> Result<Admission, ApiError> {
        self.refresh();
        let mut breaker = lock(&self.breaker);
        let mut probe = false;
        if breaker.open {
            let now = Instant::now();
            match breaker.next_probe {
                Some(at) if at > now => {
                    return Err(ApiError::Unauthorized { retry_in: at - now });
                }
                _ => {
                    // This call is the probe; the others wait for its answer.
                    breaker.next_probe = Some(now + PROBE_TIMEOUT);
                    probe = true;
                }
            }
        }
        drop(breaker);
        let header = self
            .header
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(Admission { header, probe })
    }

    /// Records the answer of an admitted call (`status` `None`: no answer).
    pub(crate) fn record(&self, status: Option<u16>, probe: bool) {
        match status {
            Some(401) => self.trip(probe),
            Some(_) => self.close(),
            None if probe => {
                // No answer says nothing about the token; let the next probe come soon.
                let mut breaker = lock(&self.breaker);
                if breaker.open {
                    breaker.next_probe = Some(Instant::now() + pause(breaker.failures));
                }
            }
            None => {}
        }
    }

    fn trip(&self, probe: bool) {
        let mut breaker = lock(&self.breaker);
        let now = Instant::now();
        let was_open = breaker.open;
        // Answers to calls sent before the breaker opened do not lengthen the pause; a refused
        // probe does.
        if was_open && !probe {
            return;
        }
        breaker.failures = breaker.failures.saturating_add(1);
        breaker.open = true;
        let wait = pause(breaker.failures);
        breaker.next_probe = Some(now + wait);
        drop(breaker);
        if !was_open {
            tracing::error!(
                pause_secs = wait.as_secs(),
                "Versori refused the API token (HTTP 401): pausing every Versori call; {}",
                super::error::TOKEN_HINT
            );
            if let Some(observer) = &self.observer {
                observer(true);
            }
        }
    }

    fn close(&self) {
        let mut breaker = lock(&self.breaker);
        let was_open = breaker.open;
        *breaker = BreakerState::default();
        drop(breaker);
        if was_open {
            tracing::info!("Versori accepts the API token again: Versori calls resume");
            if let Some(observer) = &self.observer {
                observer(false);
            }
        }
    }
}

/// The pause after `failures` refusals: 2 s, 4 s, 8 s ... up to 60 s.
fn pause(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    BREAKER_MIN_PAUSE
        .saturating_mul(1u32 << exponent)
        .min(BREAKER_MAX_PAUSE)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn pauses_double_up_to_a_minute() {
        assert_eq!(pause(1), Duration::from_secs(2));
        assert_eq!(pause(2), Duration::from_secs(4));
        assert_eq!(pause(5), Duration::from_secs(32));
        assert_eq!(pause(6), Duration::from_secs(60));
        assert_eq!(pause(100), Duration::from_secs(60));
    }

    #[test]
    fn a_401_opens_the_breaker_and_a_success_closes_it() {
        let opened = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&opened);
        let auth = Auth::new(
            AuthHeaderScheme::Bearer,
            &SecretValue::from("t"),
            None,
            Some(Arc::new(move |open| {
                if open {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            })),
        )
        .expect("auth");
        assert!(auth.admit().is_ok());
        auth.record(Some(401), false);
        auth.record(Some(401), false); // a second answer from before the trip
        assert!(auth.token_refused());
        assert_eq!(opened.load(Ordering::SeqCst), 1);
        let refused = auth.admit().err().expect("paused");
        assert!(matches!(refused, ApiError::Unauthorized { .. }));
        assert!(refused.to_string().contains("API token"));
        assert_eq!(lock(&auth.breaker).failures, 1);

        // The probe comes once the pause is over; it alone is let through.
        lock(&auth.breaker).next_probe = Some(Instant::now());
        let probe = auth.admit().expect("the probe");
        assert!(probe.probe);
        assert!(auth.admit().is_err());
        auth.record(Some(401), true);
        assert_eq!(lock(&auth.breaker).failures, 2);
        lock(&auth.breaker).next_probe = Some(Instant::now());
        assert!(auth.admit().is_ok());
        auth.record(Some(200), true);
        assert!(!auth.token_refused());
        assert!(auth.admit().is_ok());
    }

    #[test]
    fn a_changed_token_file_is_used_and_closes_the_breaker() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("token");
        std::fs::write(&path, "old\n").expect("write");
        let auth = Auth::new(
            AuthHeaderScheme::Bearer,
            &SecretValue::from("old"),
            Some(path.clone()),
            None,
        )
        .expect("auth");
        auth.record(Some(401), false);
        assert!(auth.token_refused());
        // kubelet-style swap: a new file renamed over the old one.
        let next = dir.path().join("token.new");
        std::fs::write(&next, "new-token\n").expect("write");
        std::fs::rename(&next, &path).expect("rename");
        if let Some(file) = &auth.file {
            lock(&file.state).checked = Instant::now() - TOKEN_FILE_CHECK_INTERVAL;
        }
        let admitted = auth.admit().expect("the new token closes the breaker");
        assert_eq!(admitted.header.to_str().ok(), Some("Bearer new-token"));
        assert!(!auth.token_refused());
    }
}
