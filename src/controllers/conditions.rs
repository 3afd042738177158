//! The two conditions every kind carries, as Crossplane has them, and the one list of reasons.
//!
//! - `Ready` says whether the Versori object matches the spec: `Available` when it does; `Creating`,
//!   `Deleting` or `Unavailable` while the operator works on it; otherwise the reason it cannot
//!   (a dependency to wait for, a Secret to create, a refusal to fix).
//! - `Synced` says how the last reconcile went: `ReconcileSuccess`, or the reason of its error. A
//!   passing failure on a Ready object shows here alone: `Ready` stays what was last observed.
//!
//! docs/conditions.md, the Argo CD health scripts and their tests enumerate [`Reason`].

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use strum::{AsRefStr, Display, EnumIter, EnumString, IntoStaticStr};

use crate::resources::common::CommonStatus;

/// The `Ready` condition's type.
pub const READY: &str = "Ready";
/// The `Synced` condition's type.
pub const SYNCED: &str = "Synced";

/// Every reason the operator writes into a condition.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, AsRefStr, Display, EnumIter, EnumString, IntoStaticStr,
)]
pub enum Reason {
    // Ready
    /// The Versori object exists and matches the spec.
    Available,
    /// The Versori object does not exist yet: the operator is creating it.
    Creating,
    /// The resource is being deleted: the operator is removing the Versori object.
    Deleting,
    /// The Versori object exists but could not be brought in line with the spec yet.
    Unavailable,
    // Synced
    /// The last reconcile did all it had to.
    ReconcileSuccess,
    /// Another attempt to create the Versori object is in flight (another operator instance).
    CreateInProgress,
    /// The `versori.com/paused: "true"` annotation holds every write to Versori.
    Paused,
    // Waiting for another resource or a person
    /// The System named in `spec.systemRef` is missing or not Ready.
    WaitingForSystem,
    /// The ProjectSystem named in `spec.projectSystemRef` is missing or not Ready.
    WaitingForProjectSystem,
    /// A person must authorize the connection in a browser.
    AuthorizationRequired,
    // The user's to fix
    /// A referenced Secret or key does not exist.
    SecretNotFound,
    /// A Secret value is not usable (not UTF-8 text, or a line break where none may be).
    InvalidSecret,
    /// A Secret of a type that never holds credentials (a service account token, a docker
    /// config) is named.
    SecretTypeRefused,
    /// Only Secrets labelled `versori.com/credential: "true"` may be read, and this one is not.
    SecretNotLabelled,
    /// A URL override names a host outside the allowed list.
    HostNotAllowed,
    /// The template needs a credential the Connection does not give.
    MissingCredential,
    /// The System has no auth scheme named by `spec.authSchemeConfigId`.
    AuthSchemeNotFound,
    /// Versori has no project with `spec.projectId`.
    ProjectNotFound,
    /// The project has no environment named `spec.environment`.
    EnvironmentNotFound,
    /// Versori has no system with `spec.systemId`.
    SystemNotFound,
    /// The `VersoriConfig` or `ClusterVersoriConfig` named by `spec.configRef` does not exist.
    ConfigNotFound,
    /// A Versori config cannot be used (its token Secret is empty, its URL is no URL).
    ConfigUnusable,
    /// A dependency is managed in another Versori organisation than this resource.
    DependencyInOtherOrganisation,
    /// The resource's Versori object lives in another organisation than its config now names.
    OrganisationChanged,
    /// An observed (`managementPolicy: Observe`) object does not exist in Versori.
    ObservedNotFound,
    /// `spec.externalId` does not fit the template (dynamic or static).
    ExternalIdMismatch,
    /// The operator cannot build a credential for the template's auth scheme.
    UnsupportedAuthScheme,
    /// A same-named Versori object exists that this resource did not create.
    AlreadyExists,
    /// Several Versori objects carry the name.
    AmbiguousName,
    /// A dependency exists outside this operator's shard (its label selector).
    DependencyOutsideShard,
    /// The object named by the spec's ID field does not exist.
    AdoptTargetNotFound,
    /// Versori refuses to remove an object others still use.
    InUse,
    // Versori and Kubernetes answering
    /// Versori answered 429.
    VersoriRateLimited,
    /// Versori answered 400 or 422.
    VersoriRejected,
    /// Versori answered 401 or 403.
    VersoriUnauthorized,
    /// Versori could not be reached or answered 5xx.
    VersoriAPIError,
    /// A Kubernetes API call failed.
    KubernetesAPIError,
}

/// What Argo CD should make of a `Ready=False` condition with this reason (outside deletion,
/// where every `Ready=False` is Progressing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Display, AsRefStr)]
pub enum Health {
    /// All is well.
    Healthy,
    /// It clears without anyone acting.
    Progressing,
    /// It waits for a person (authorizing in a browser).
    Suspended,
    /// It stays until someone changes the spec, a Secret or Versori.
    Degraded,
}

impl Reason {
    /// The reason as written into a condition.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The Argo CD health of a `Ready` condition with this reason (`True` only for `Available`).
    pub fn health(self) -> Health {
        use Reason::*;
        match self {
            Available | ReconcileSuccess => Health::Healthy,
            Creating
            | Deleting
            | Unavailable
            | CreateInProgress
            | WaitingForSystem
            | WaitingForProjectSystem
            | VersoriRateLimited
            | VersoriAPIError
            | KubernetesAPIError => Health::Progressing,
            AuthorizationRequired | Paused => Health::Suspended,
            SecretNotFound
            | InvalidSecret
            | SecretTypeRefused
            | SecretNotLabelled
            | HostNotAllowed
            | MissingCredential
            | AuthSchemeNotFound
            | ProjectNotFound
            | EnvironmentNotFound
            | SystemNotFound
            | ConfigNotFound
            | ConfigUnusable
            | DependencyInOtherOrganisation
            | OrganisationChanged
            | ObservedNotFound
            | ExternalIdMismatch
            | UnsupportedAuthScheme
            | AlreadyExists
            | AmbiguousName
            | DependencyOutsideShard
            | AdoptTargetNotFound
            | InUse
            | VersoriRejected
            | VersoriUnauthorized => Health::Degraded,
        }
    }

    /// Whether this reason can be `Ready`'s (every reason but `Synced`'s own success).
    pub fn is_ready_reason(self) -> bool {
        self != Reason::ReconcileSuccess
    }
}

/// Sets condition `type_`, keeping `lastTransitionTime` when its status did not change.
pub fn set(
    common: &mut CommonStatus,
    type_: &str,
    ok: bool,
    reason: Reason,
    message: &str,
    generation: Option<i64>,
) {
    let status = if ok { "True" } else { "False" };
    let last_transition_time = match common.conditions.iter().find(|c| c.type_ == type_) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(jiff::Timestamp::now()),
    };
    let condition = Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.as_str().into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    };
    match common.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => *existing = condition,
        None => common.conditions.push(condition),
    }
}

/// The condition of `type_`, if any.
pub fn get<'c>(common: &'c CommonStatus, type_: &str) -> Option<&'c Condition> {
    common.conditions.iter().find(|c| c.type_ == type_)
}

/// Whether `Ready` is True for this very generation.
pub fn ready_for(common: &CommonStatus, generation: Option<i64>) -> bool {
    get(common, READY).is_some_and(|c| c.status == "True" && c.observed_generation == generation)
}

/// Whether `Ready` is True (for any generation): dependants may use the object's IDs.
pub fn is_ready(common: &CommonStatus) -> bool {
    get(common, READY).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use strum::IntoEnumIterator;

    use super::*;

    #[test]
    fn set_keeps_the_transition_time_while_the_status_holds() {
        let mut common = CommonStatus::default();
        set(&mut common, READY, false, Reason::Creating, "a", Some(1));
        let first = get(&common, READY).map(|c| c.last_transition_time.clone());
        set(
            &mut common,
            READY,
            false,
            Reason::VersoriAPIError,
            "b",
            Some(1),
        );
        assert_eq!(
            get(&common, READY).map(|c| c.last_transition_time.clone()),
            first
        );
        assert_eq!(common.conditions.len(), 1);
        set(
            &mut common,
            SYNCED,
            true,
            Reason::ReconcileSuccess,
            "",
            Some(1),
        );
        assert_eq!(common.conditions.len(), 2);
        assert!(!ready_for(&common, Some(1)));
        set(&mut common, READY, true, Reason::Available, "c", Some(1));
        assert!(ready_for(&common, Some(1)));
        assert!(!ready_for(&common, Some(2)));
        assert!(is_ready(&common));
    }

    #[test]
    fn reasons_round_trip_as_strings() {
        for reason in Reason::iter() {
            assert_eq!(reason.as_str().parse::<Reason>().ok(), Some(reason));
            assert_eq!(reason.to_string(), reason.as_str());
        }
        assert_eq!(Reason::VersoriAPIError.as_str(), "VersoriAPIError");
    }
}
