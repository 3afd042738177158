//! Errors of the Versori API client.
//!
//! Design rule: the `Display` of an error may end up in a Kubernetes status condition or
//! event, so it quotes only the error `code`, the HTTP status and field paths — never the
//! server's free-text `message` (available through [`ApiError::server_message`] for logs).

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use super::models::FieldError;

/// Longest error `code` quoted in `Display`; longer codes are cut.
const MAX_CODE_CHARS: usize = 64;
/// Most field paths quoted in `Display`.
const MAX_FIELDS_SHOWN: usize = 8;

/// An error from a Versori API call.
#[derive(thiserror::Error)]
pub enum ApiError {
    /// The API answered with a non-2xx status (for 429/503, `retry_after` holds the
    /// `Retry-After` delay when the server sent one).
    #[error("{}", DisplayApi { status: *status, code, fields })]
    Api {
        status: u16,
        code: String,
        message: String,
        fields: Vec<FieldError>,
        retry_after: Option<Duration>,
    },
    /// The request could not be sent or the answer could not be read. The stored error has
    /// its URL removed.
    #[error("Versori API transport error: {}", transport_summary(.0))]
    Transport(#[source] reqwest::Error),
    /// A 2xx answer whose body did not match the expected shape.
    #[error("could not decode the Versori API answer to {operation} (HTTP {status}): {reason}")]
    Decode {
        operation: &'static str,
        status: u16,
        reason: String,
    },
    /// A request body could not be encoded as JSON.
    #[error("could not encode the request body of {operation}: {reason}")]
    Encode {
        operation: &'static str,
        reason: String,
    },
    /// The request did not complete within the configured timeout.
    #[error("Versori API request timed out")]
    Timeout,
    /// The client (or a call's arguments) are not usable.
    #[error("invalid Versori client configuration: {0}")]
    InvalidConfig(String),
    /// Not sent: Versori refused the API token (401) and every call pauses until the next probe
    /// (one breaker for the whole organisation, so a bad token is not a storm of 401s).
    #[error(
        "Versori API calls are paused because Versori refused the API token (HTTP 401): {TOKEN_HINT}"
    )]
    Unauthorized { retry_in: Duration },
}

/// The longest an object waits to try again while the 401 breaker is open (its calls fail at
/// once, without a request, until the breaker's own probe succeeds).
pub const UNAUTHORIZED_RETRY_CAP: Duration = Duration::from_secs(15);

/// What to check when Versori answers 401.
pub const TOKEN_HINT: &str = "check the operator's Versori API token (VERSORI_API_TOKEN or the file in VERSORI_API_TOKEN_FILE, chart values versori.token or versori.existingSecret) is valid and belongs to this organisation";

struct DisplayApi<'a> {
    status: u16,
    code: &'a str,
    fields: &'a [FieldError],
}

impl fmt::Display for DisplayApi<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Versori API returned {}", self.status)?;
        if !self.code.is_empty() {
            let code: String = self
                .code
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_CODE_CHARS)
                .collect();
            write!(f, " (code {code:?})")?;
        }
        if !self.fields.is_empty() {
            f.write_str(" for fields [")?;
            for (i, field) in self.fields.iter().take(MAX_FIELDS_SHOWN).enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                let path: String = field.field.chars().filter(|c| !c.is_control()).collect();
                f.write_str(&path)?;
            }
            if self.fields.len() > MAX_FIELDS_SHOWN {
                write!(f, ", ... {} more", self.fields.len() - MAX_FIELDS_SHOWN)?;
            }
            f.write_str("]")?;
        }
        if self.status == 401 {
            write!(f, ": the API token was refused: {TOKEN_HINT}")?;
        }
        Ok(())
    }
}

/// A description of a transport error without its URL: its kind, plus the innermost cause
/// (e.g. "connection refused").
fn transport_summary(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else if err.is_redirect() {
        "redirect failed"
    } else if err.is_body() {
        "could not send or read the body"
    } else if err.is_decode() {
        "could not decode the answer"
    } else if err.is_builder() {
        "could not build the request"
    } else if err.is_request() {
        "request failed"
    } else {
        "error"
    };
    let mut root: Option<&(dyn std::error::Error + 'static)> = err.source();
    while let Some(next) = root.and_then(|e| e.source()) {
        root = Some(next);
    }
    match root {
        Some(cause) => format!("{kind}: {cause}"),
        None => kind.to_owned(),
    }
}

impl fmt::Debug for ApiError {
    /// Like a derived `Debug`, but leaves out the server's free-text message (which may
    /// echo request input) so `{:?}` is as safe to show as `Display`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Api {
                status,
                code,
                message: _,
                fields,
                retry_after,
            } => f
                .debug_struct("Api")
                .field("status", status)
                .field("code", code)
                .field(
                    "fields",
                    &fields.iter().map(|e| &e.field).collect::<Vec<_>>(),
                )
                .field("retry_after", retry_after)
                .finish_non_exhaustive(),
            Self::Transport(_) => f
                .debug_tuple("Transport")
                .field(&format_args!("{self}"))
                .finish(),
            Self::Decode {
                operation,
                status,
                reason,
            } => f
                .debug_struct("Decode")
                .field("operation", operation)
                .field("status", status)
                .field("reason", reason)
                .finish(),
            Self::Encode { operation, reason } => f
                .debug_struct("Encode")
                .field("operation", operation)
                .field("reason", reason)
                .finish(),
            Self::Timeout => f.write_str("Timeout"),
            Self::InvalidConfig(reason) => f.debug_tuple("InvalidConfig").field(reason).finish(),
            Self::Unauthorized { retry_in } => f
                .debug_struct("Unauthorized")
                .field("retry_in", retry_in)
                .finish(),
        }
    }
}

impl From<reqwest::Error> for ApiError {
    fn from(err: reqwest::Error) -> Self {
        if err.is_timeout() {
            Self::Timeout
        } else {
            Self::Transport(err.without_url())
        }
    }
}

impl ApiError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Decode { status, .. } => Some(*status),
            Self::Transport(err) => err.status().map(|s| s.as_u16()),
            Self::Unauthorized { .. } => Some(401),
            _ => None,
        }
    }

    /// The API's error `code`, for API errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The field-level problems the API reported.
    pub fn fields(&self) -> &[FieldError] {
        match self {
            Self::Api { fields, .. } => fields,
            _ => &[],
        }
    }

    /// The server's free-text message. For logs and events only: never put it in a status.
    pub fn server_message(&self) -> Option<&str> {
        match self {
            Self::Api { message, .. } if !message.is_empty() => Some(message),
            _ => None,
        }
    }

    /// 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Api { status: 404, .. })
    }

    /// 409.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Api { status: 409, .. })
    }

    /// 401 or 403.
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            Self::Api {
                status: 401 | 403,
                ..
            } | Self::Unauthorized { .. }
        )
    }

    /// Whether trying again later may succeed: 5xx, 429, transport errors and timeouts.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api { status, .. } => *status == 429 || (500..600).contains(status),
            Self::Transport(_) | Self::Timeout => true,
            Self::Decode { .. }
            | Self::Encode { .. }
            | Self::InvalidConfig(_)
            | Self::Unauthorized { .. } => false,
        }
    }

    /// How long the server asked us to wait (`Retry-After`), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } => *retry_after,
            // Not the whole pause: a rotated token file is read on the next call, and the
            // objects should find it well within a minute.
            Self::Unauthorized { retry_in } => Some((*retry_in).min(UNAUTHORIZED_RETRY_CAP)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANARY: &str = "canary-server-message-7c1d";

    fn api(status: u16, fields: &[&str]) -> ApiError {
        ApiError::Api {
            status,
            code: "conflict".into(),
            message: CANARY.into(),
            fields: fields
                .iter()
                .map(|f| FieldError {
                    field: (*f).to_owned(),
                    message: CANARY.into(),
                })
                .collect(),
            retry_after: None,
        }
    }

    #[test]
    fn display_quotes_status_code_and_fields_only() {
        let err = api(409, &["name"]);
        assert_eq!(
            err.to_string(),
            r#"Versori API returned 409 (code "conflict") for fields [name]"#
        );
        let err = api(400, &["authSchemeConfigs[0].oauth2.tokenUrl", "name"]);
        let shown = format!("{err} {err:?} {err:#?}");
        assert!(!shown.contains(CANARY), "leaked: {shown}");
        assert!(shown.contains("authSchemeConfigs[0].oauth2.tokenUrl, name"));
        assert_eq!(err.server_message(), Some(CANARY));
        assert_eq!(
            api(500, &[]).to_string(),
            r#"Versori API returned 500 (code "conflict")"#
        );
    }

    #[test]
    fn display_without_code_and_with_many_fields() {
        let err = ApiError::Api {
            status: 502,
            code: String::new(),
            message: String::new(),
            fields: Vec::new(),
            retry_after: None,
        };
        assert_eq!(err.to_string(), "Versori API returned 502");
        assert_eq!(err.server_message(), None);
        let many: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(api(400, &refs).to_string().ends_with("f7, ... 2 more]"));
    }

    #[test]
    fn a_401_names_the_token() {
        for err in [
            api(401, &[]),
            ApiError::Unauthorized {
                retry_in: Duration::from_secs(8),
            },
        ] {
            let shown = err.to_string();
            assert!(shown.contains("API token"), "{shown}");
            assert!(shown.contains("VERSORI_API_TOKEN_FILE"), "{shown}");
            assert!(!shown.contains(CANARY), "{shown}");
            assert_eq!(err.status(), Some(401));
            assert!(err.is_unauthorized());
            assert!(!err.is_retryable());
        }
    }

    #[test]
    fn classification() {
        assert!(api(404, &[]).is_not_found());
        assert!(api(409, &[]).is_conflict());
        assert!(api(401, &[]).is_unauthorized());
        assert!(api(429, &[]).is_retryable());
        assert!(api(503, &[]).is_retryable());
        assert!(!api(400, &[]).is_retryable());
        assert!(!api(409, &[]).is_retryable());
        assert!(ApiError::Timeout.is_retryable());
        assert!(!ApiError::InvalidConfig("x".into()).is_retryable());
        assert_eq!(api(418, &[]).status(), Some(418));
        assert_eq!(ApiError::Timeout.status(), None);
        let limited = ApiError::Api {
            status: 429,
            code: "rate_limited".into(),
            message: String::new(),
            fields: Vec::new(),
            retry_after: Some(Duration::from_secs(7)),
        };
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(api(429, &[]).retry_after(), None);
    }
}
