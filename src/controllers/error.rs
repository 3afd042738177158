//! Why a reconcile did not reach Ready, as a condition reason and a sentence for people.
//!
//! Messages are the operator's own words: they may quote a Versori error's HTTP status, code and
//! field paths (the `Display` of [`ApiError`] does no more), never the server's free text nor a
//! secret value.

use std::time::Duration;

use super::conditions::Reason;
use crate::versori::ApiError;

/// A reconcile that did not reach Ready.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A referenced Secret, or a key in it, does not exist.
    #[error("Secret {name:?} has no key {key:?}: create it in this namespace")]
    SecretKeyNotFound { name: String, key: String },
    /// A referenced Secret does not exist. The key is named too, so that one message says the
    /// whole fix.
    #[error("Secret {name:?} was not found in this namespace: create it with key {key:?}")]
    SecretNotFound { name: String, key: String },
    /// A Secret the operator may not read or send (its type, the consent label, a line break in
    /// a value, a host outside the allow-list); the message names the Secret and key.
    #[error("{message}")]
    InvalidSecret { reason: Reason, message: String },
    /// A value in a Secret is not UTF-8 text.
    #[error("key {key:?} of Secret {name:?} is not UTF-8 text")]
    SecretNotText { name: String, key: String },
    /// The template needs a credential the Connection does not give (the CLI's words).
    #[error("{0}")]
    MissingCredential(String),
    /// The template uses the authorization code grant: a person must authorize in a browser.
    #[error("{0}")]
    AuthorizationRequired(String),
    /// A dependency (System or ProjectSystem) is not ready yet.
    #[error("{message}")]
    Waiting { reason: Reason, message: String },
    /// The spec asks for what Versori does not have or the operator cannot do (an environment
    /// or auth scheme that does not exist, an externalId that does not fit the template).
    #[error("{message}")]
    Unsatisfiable { reason: Reason, message: String },
    /// Another operator instance is creating the Versori object; its attempt ends within `left`.
    #[error(
        "another operator instance is creating the Versori object; waiting up to {}s for its attempt to end",
        left.as_secs().max(1)
    )]
    CreateInProgress { left: Duration },
    /// The create did not answer within the attempt's time.
    #[error("creating the Versori {what} took longer than {}s; it is looked up by name before trying again", timeout.as_secs())]
    CreateTimedOut {
        what: &'static str,
        timeout: Duration,
    },
    /// A same-named Versori object exists that this resource did not create.
    #[error(
        "a Versori {what} named {name:?} already exists (ID {id}) and this resource did not create it: set spec.{field} to {id} to adopt it, or choose another name"
    )]
    AlreadyExists {
        what: &'static str,
        name: String,
        id: String,
        field: &'static str,
    },
    /// Several Versori objects carry the name: adoption by name is ambiguous.
    #[error(
        "several Versori {what}s are named {name:?} (IDs {ids}): set spec.{field} to the one this resource manages"
    )]
    Ambiguous {
        what: &'static str,
        name: String,
        ids: String,
        field: &'static str,
    },
    /// The Versori object named by the spec (for adoption) does not exist.
    #[error("the Versori {what} {id} named in spec.{field} does not exist")]
    AdoptTargetNotFound {
        what: &'static str,
        id: String,
        field: &'static str,
    },
    /// The Versori config a resource uses cannot be used.
    #[error("{config} cannot be used: {message}")]
    ConfigUnusable { config: String, message: String },
    /// The token Secret of a Versori config cannot be read.
    #[error("the token of {config}: {source}")]
    ConfigToken {
        config: String,
        #[source]
        source: Box<Error>,
    },
    /// An observed object was not found in Versori.
    #[error(
        "managementPolicy is Observe and Versori has no {what} {how}: the operator only looks, so create it in Versori (or set managementPolicy: Manage)"
    )]
    ObservedNotFound { what: &'static str, how: String },
    /// Versori refused to delete the object because others still use it.
    #[error("{0}")]
    InUse(String),
    /// A Versori API call failed.
    #[error("{context}: {source}")]
    Versori {
        context: &'static str,
        #[source]
        source: ApiError,
    },
    /// A Kubernetes API call failed.
    #[error("{context}: {source}")]
    Kube {
        context: &'static str,
        #[source]
        source: kube::Error,
    },
    /// A request body could not be encoded (a bug).
    #[error("could not encode a Kubernetes request: {0}")]
    Encode(String),
    /// A watch was subscribed to after it started (a bug in the controllers' wiring).
    #[error("a shared watch was subscribed to after it started")]
    WatchNotShared,
    /// The object has no namespace (every kind is namespaced, so this is a bug).
    #[error("the object has no namespace")]
    NoNamespace,
}

impl Error {
    /// Wraps a Versori API error with what the operator was doing.
    pub fn versori(context: &'static str) -> impl FnOnce(ApiError) -> Error {
        move |source| Error::Versori { context, source }
    }

    /// Wraps a Kubernetes API error with what the operator was doing.
    pub fn kube(context: &'static str) -> impl FnOnce(kube::Error) -> Error {
        move |source| Error::Kube { context, source }
    }

    /// The condition reason for this error.
    pub fn reason(&self) -> Reason {
        match self {
            Error::SecretKeyNotFound { .. } | Error::SecretNotFound { .. } => {
                Reason::SecretNotFound
            }
            Error::SecretNotText { .. } => Reason::InvalidSecret,
            Error::InvalidSecret { reason, .. } => *reason,
            Error::MissingCredential(_) => Reason::MissingCredential,
            Error::AuthorizationRequired(_) => Reason::AuthorizationRequired,
            Error::Waiting { reason, .. } | Error::Unsatisfiable { reason, .. } => *reason,
            Error::CreateInProgress { .. } => Reason::CreateInProgress,
            Error::CreateTimedOut { .. } => Reason::VersoriAPIError,
            Error::AlreadyExists { .. } => Reason::AlreadyExists,
            Error::Ambiguous { .. } => Reason::AmbiguousName,
            Error::AdoptTargetNotFound { .. } => Reason::AdoptTargetNotFound,
            Error::InUse(_) => Reason::InUse,
            Error::ConfigUnusable { .. } => Reason::ConfigUnusable,
            Error::ConfigToken { source, .. } => source.reason(),
            Error::ObservedNotFound { .. } => Reason::ObservedNotFound,
            Error::Versori { source, .. } => match source.status() {
                Some(429) => Reason::VersoriRateLimited,
                Some(400 | 422) => Reason::VersoriRejected,
                Some(401 | 403) => Reason::VersoriUnauthorized,
                _ => Reason::VersoriAPIError,
            },
            Error::Kube { .. } | Error::NoNamespace | Error::WatchNotShared | Error::Encode(_) => {
                Reason::KubernetesAPIError
            }
        }
    }

    /// Whether this waits for a change (the user's, another object's, a person's) rather than
    /// failing: the watches (Secrets, Systems, ProjectSystems) and the periodic resync bring the
    /// retry, not an exponential backoff.
    pub fn awaits_change(&self) -> bool {
        matches!(
            self,
            Error::SecretKeyNotFound { .. }
                | Error::SecretNotFound { .. }
                | Error::SecretNotText { .. }
                | Error::InvalidSecret { .. }
                | Error::MissingCredential(_)
                | Error::AuthorizationRequired(_)
                | Error::Waiting { .. }
                | Error::Unsatisfiable { .. }
                | Error::AlreadyExists { .. }
                | Error::Ambiguous { .. }
                | Error::AdoptTargetNotFound { .. }
                | Error::ConfigUnusable { .. }
                | Error::ConfigToken { .. }
                | Error::ObservedNotFound { .. }
        )
    }

    /// Whether the apiserver refused one of the operator's own writes on a precondition (409
    /// Conflict, 422 on a finalizer or UID test): the object changed under it, and a retry on
    /// the fresh object goes through at once.
    pub fn is_write_conflict(&self) -> bool {
        matches!(self, Error::Kube { source: kube::Error::Api(status), .. } if matches!(status.code, 409 | 422))
    }

    /// Whether this is a passing failure (Versori 5xx, 429, timeout or transport error, or a
    /// Kubernetes API error) that says nothing about the Versori object itself.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Versori { source, .. } => source.is_retryable(),
            Error::Kube { .. } | Error::CreateTimedOut { .. } | Error::CreateInProgress { .. } => {
                true
            }
            _ => false,
        }
    }

    /// The delay Versori asked for (429 `Retry-After`), if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Versori { source, .. } => source.retry_after(),
            _ => None,
        }
    }

    /// The Versori server's own words, for events and logs only (never status).
    pub fn server_message(&self) -> Option<&str> {
        match self {
            Error::Versori { source, .. } => source.server_message(),
            _ => None,
        }
    }
}
