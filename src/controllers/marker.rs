//! The create protocol's record on the resource (Crossplane's external-create-pending
//! annotation, tied to the resource's UID).
//!
//! - `versori.com/create-attempt` is written, with the finalizer and a `resourceVersion`
//!   precondition, right before the POST: of two writers only one gets it, the other sees a 409.
//!   It names the attempt (operator instance, process, time) and what a later reconcile needs
//!   to find, by name, an object the attempt may have made (its [locator](crate::controllers::reconciler::External::Locator)).
//! - The POST's answer, the new ID, goes into status with the reconcile's one status write
//!   (one write per step: no separate record patch). From then on the recorded ID is looked at
//!   first and the attempt annotation is only the history of the last attempt. Should that
//!   status write be lost, the attempt is over and unrecorded: the next reconcile finds the
//!   object by name and records it, as after a crash.
//! - `versori.com/created` (the ID as an annotation) is what earlier versions wrote; it is still
//!   read, and still written by the OAuth 2.0 callback, which creates outside the loop.
//!
//! Both carry the resource's UID: copied into another manifest (`kubectl get -o yaml`) they
//! mean nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Annotation of the last attempt to create the Versori object.
pub const CREATE_PENDING: &str = "versori.com/create-attempt";
/// The same, as versions before it was renamed wrote it (read, never written).
pub const LEGACY_CREATE_PENDING: &str = "versori.com/create-pending";
/// Annotation of the Versori ID an attempt created.
pub const CREATED: &str = "versori.com/created";
/// The annotations the operator writes: changes to them never trigger a reconcile (the primary
/// watch filters them). `versori.com/paused` is a person's, and does.
pub const OWN_ANNOTATIONS: [&str; 3] = [CREATE_PENDING, LEGACY_CREATE_PENDING, CREATED];

/// The longest one create attempt may take, from the marker to the POST's answer (the wait for
/// a Versori request slot included): the loop gives up on the POST after it.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long another instance's pending attempt is presumed alive: the attempt's timeout plus
/// time for a request already sent to land. After it, the attempt is over, whatever its fate.
pub const ATTEMPT_WINDOW: Duration = Duration::from_secs(45);

/// Who is making attempts: the operator instance (the pod name, stable across container
/// restarts) and this process (new on every start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempter {
    /// The instance, e.g. the pod name.
    pub instance: String,
    /// This process.
    pub process: String,
}

impl Attempter {
    /// `instance` with a new process ID.
    pub fn new(instance: impl Into<String>) -> Self {
        Self {
            instance: instance.into(),
            process: format!("{:016x}", rand::random::<u64>()),
        }
    }
}

/// A pending attempt, as the annotation holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// The resource this attempt is for.
    pub uid: String,
    /// The operator instance that made it.
    pub instance: String,
    /// The process that made it.
    pub process: String,
    /// When it started (RFC 3339).
    pub at: String,
    /// What finds the object by name (kind-specific JSON).
    pub locator: serde_json::Value,
}

/// What the resource's annotations say about its Versori object.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// No attempt of this resource is known.
    None,
    /// An attempt started and its answer was not recorded.
    Pending(Pending),
    /// An attempt created this ID.
    Created(String),
}

impl Record {
    /// Reads the annotations of the resource with UID `uid`; markers of another UID are ignored.
    pub fn read(annotations: &BTreeMap<String, String>, uid: &str) -> Record {
        if let Some(pending) = annotations
            .get(CREATE_PENDING)
            .or_else(|| annotations.get(LEGACY_CREATE_PENDING))
            .and_then(|v| serde_json::from_str::<Pending>(v).ok())
            .filter(|p| p.uid == uid)
        {
            return Record::Pending(pending);
        }
        match annotations
            .get(CREATED)
            .and_then(|v| v.split_once('/'))
            .filter(|(marked, _)| *marked == uid)
        {
            Some((_, id)) if !id.is_empty() => Record::Created(id.to_owned()),
            _ => Record::None,
        }
    }

    /// The ID an earlier attempt created, if recorded.
    pub fn created(&self) -> Option<&str> {
        match self {
            Record::Created(id) => Some(id),
            _ => None,
        }
    }
}

impl Pending {
    /// A new attempt by `attempter` on the resource `uid`.
    pub fn new(uid: &str, attempter: &Attempter, locator: serde_json::Value) -> Self {
        Self {
            uid: uid.to_owned(),
            instance: attempter.instance.clone(),
            process: attempter.process.clone(),
            at: jiff::Timestamp::now().to_string(),
            locator,
        }
    }

    /// The annotation's value.
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// How long the attempt may still be in flight, as seen by `attempter` at `now`; `None` when
    /// it is surely over: made by this process (which never reconciles one object twice at once),
    /// by an earlier process of this instance (that one is gone), or longer ago than
    /// [`ATTEMPT_WINDOW`].
    pub fn in_flight_for(&self, attempter: &Attempter, now: jiff::Timestamp) -> Option<Duration> {
        if self.instance == attempter.instance {
            return None;
        }
        let at = self.at.parse::<jiff::Timestamp>().ok()?;
        let age = now.duration_since(at);
        let window = jiff::SignedDuration::try_from(ATTEMPT_WINDOW).ok()?;
        let left = window.checked_sub(age)?;
        Duration::try_from(left).ok().filter(|d| !d.is_zero())
    }
}

/// The `versori.com/created` value for `id` on the resource `uid`.
pub fn created_annotation(uid: &str, id: &str) -> String {
    format!("{uid}/{id}")
}

/// The operator's annotations as a merge patch sets them: the attempt `pending` and the ID
/// record `created` (`None` removes each); the name earlier versions used always goes.
pub fn annotations_patch(pending: Option<&Pending>, created: Option<String>) -> serde_json::Value {
    serde_json::json!({
        CREATE_PENDING: pending.map(Pending::to_annotation),
        LEGACY_CREATE_PENDING: serde_json::Value::Null,
        CREATED: created,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn a_marker_means_something_only_on_its_own_resource() {
        let me = Attempter::new("pod-a");
        let pending = Pending::new("uid-1", &me, serde_json::json!({"name": "x"}));
        let a = annotations(&[(CREATE_PENDING, pending.to_annotation())]);
        assert_eq!(Record::read(&a, "uid-1"), Record::Pending(pending.clone()));
        assert_eq!(Record::read(&a, "uid-2"), Record::None);
        let c = annotations(&[(CREATED, created_annotation("uid-1", "01ID"))]);
        assert_eq!(Record::read(&c, "uid-1"), Record::Created("01ID".into()));
        assert_eq!(Record::read(&c, "uid-2"), Record::None);
        let broken = annotations(&[(CREATE_PENDING, "2024-01-01T00:00:00Z".into())]);
        assert_eq!(Record::read(&broken, "uid-1"), Record::None);
    }

    #[test]
    fn another_instances_attempt_is_in_flight_for_the_window() {
        let other = Attempter::new("pod-b");
        let pending = Pending::new("uid", &other, serde_json::Value::Null);
        let now = jiff::Timestamp::now();
        let me = Attempter::new("pod-a");
        let left = pending.in_flight_for(&me, now);
        assert!(left.is_some_and(|d| d <= ATTEMPT_WINDOW && d > ATTEMPT_WINDOW / 2));
        // The same instance after a restart (another process), or this very process: over.
        let restarted = Attempter::new("pod-b");
        assert_eq!(pending.in_flight_for(&restarted, now), None);
        assert_eq!(pending.in_flight_for(&other, now), None);
        // Older than the window: over.
        let later = now
            .checked_add(jiff::SignedDuration::from_secs(46))
            .unwrap_or(now);
        assert_eq!(pending.in_flight_for(&me, later), None);
    }
}
