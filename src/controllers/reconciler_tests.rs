//! Table-driven tests of the loop's protocol (in the style of Crossplane's managed reconciler
//! tests): a fake kind (`Widget`) whose Versori is an in-memory map with programmable faults,
//! and a fake kube side ([`Ops`]) that checks UID and `resourceVersion` preconditions as the
//! apiserver does. Every branch of observe, create, update and delete has a case.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::CustomResource;
use kube::api::ObjectMeta;
use kube::runtime::events::EventType;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::*;
use crate::controllers::marker::{ATTEMPT_WINDOW, Attempter, CREATE_PENDING, CREATED, Pending};
use crate::metrics::Metrics;
use crate::versori::{ApiError, ClientConfig, SecretValue, VersoriClient};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "test.versori.com",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
pub struct WidgetSpec {
    name: String,
    value: String,
    adopt_id: Option<String>,
    orphan: bool,
    /// `deletionPolicy: Delete` set explicitly.
    delete: bool,
    observe: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct WidgetStatus {
    id: Option<String>,
    #[serde(flatten)]
    common: CommonStatus,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Thing {
    id: String,
    name: String,
    value: String,
}

#[derive(Serialize, Deserialize)]
pub struct WidgetLocator {
    name: String,
}

/// A Versori answer the fake gives instead of doing the call.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    Status(u16),
    RateLimited(u64),
    /// The create is done, then its answer lost (503).
    CommitThenFail,
}

#[derive(Default)]
struct FakeVersori {
    things: BTreeMap<String, Thing>,
    next: u32,
    calls: Vec<String>,
    create_fault: Option<Fault>,
    get_fault: Option<Fault>,
    delete_fault: Option<Fault>,
}

thread_local! {
    static VERSORI: RefCell<FakeVersori> = RefCell::new(FakeVersori::default());
}

fn versori<T>(f: impl FnOnce(&mut FakeVersori) -> T) -> T {
    VERSORI.with(|v| f(&mut v.borrow_mut()))
}

fn api_error(fault: Fault) -> Error {
    let (status, retry_after) = match fault {
        Fault::Status(s) => (s, None),
        Fault::RateLimited(secs) => (429, Some(Duration::from_secs(secs))),
        Fault::CommitThenFail => (503, None),
    };
    Error::Versori {
        context: "fake",
        source: ApiError::Api {
            status,
            code: "fault".into(),
            message: String::new(),
            fields: Vec::new(),
            retry_after,
        },
    }
}

impl Managed for Widget {
    type Status = WidgetStatus;
    const KIND: &'static str = "Widget";
    fn status(&self) -> Option<&WidgetStatus> {
        self.status.as_ref()
    }
    fn common(status: &mut WidgetStatus) -> &mut CommonStatus {
        &mut status.common
    }
    fn deletion_policy(&self) -> Option<DeletionPolicy> {
        if self.spec.orphan {
            Some(DeletionPolicy::Orphan)
        } else if self.spec.delete {
            Some(DeletionPolicy::Delete)
        } else {
            None
        }
    }
    fn management_policy(&self) -> ManagementPolicy {
        if self.spec.observe {
            ManagementPolicy::Observe
        } else {
            ManagementPolicy::Manage
        }
    }
}

impl External for Widget {
    type Desired = (String, String);
    type Observed = Thing;
    type Locator = WidgetLocator;
    const WHAT: &'static str = "widget";
    const ID_FIELD: &'static str = "adoptId";
    const UNIQUE_NAMES: bool = true;

    fn recorded_id(status: &WidgetStatus) -> Option<&str> {
        status.id.as_deref()
    }
    fn forget(status: &mut WidgetStatus) {
        status.id = None;
    }
    fn adopt_id(&self) -> Option<&str> {
        self.spec.adopt_id.as_deref()
    }
    async fn desired(&self, _rc: &Reconciling<'_, Self>) -> Result<(String, String), Error> {
        if self.spec.value == "missing-secret" {
            return Err(Error::SecretNotFound {
                name: "creds".into(),
                key: "value".into(),
            });
        }
        Ok((self.spec.name.clone(), self.spec.value.clone()))
    }
    fn locator(desired: &(String, String)) -> WidgetLocator {
        WidgetLocator {
            name: desired.0.clone(),
        }
    }
    async fn get(
        &self,
        _rc: &Reconciling<'_, Self>,
        _locator: &WidgetLocator,
        id: &str,
    ) -> Result<Option<Thing>, Error> {
        versori(|v| {
            v.calls.push(format!("get {id}"));
            match v.get_fault {
                Some(fault) => Err(api_error(fault)),
                None => Ok(v.things.get(id).cloned()),
            }
        })
    }
    async fn find_by_name(
        &self,
        _rc: &Reconciling<'_, Self>,
        locator: &WidgetLocator,
    ) -> Result<Vec<Thing>, Error> {
        versori(|v| {
            v.calls.push(format!("find {}", locator.name));
            Ok(v.things
                .values()
                .filter(|t| t.name == locator.name)
                .cloned()
                .collect())
        })
    }
    fn id_of(observed: &Thing) -> &str {
        &observed.id
    }
    async fn observe_locator(&self, _rc: &Reconciling<'_, Self>) -> Result<WidgetLocator, Error> {
        Ok(WidgetLocator {
            name: self.spec.name.clone(),
        })
    }
    fn record_observed(
        &self,
        _locator: &WidgetLocator,
        observed: &Thing,
        status: &mut WidgetStatus,
    ) -> String {
        status.id = Some(observed.id.clone());
        format!("observed widget {}", observed.id)
    }
    async fn create(
        &self,
        _rc: &Reconciling<'_, Self>,
        desired: &(String, String),
    ) -> Result<Thing, Error> {
        versori(|v| {
            v.calls.push(format!("create {}", desired.0));
            match v.create_fault {
                Some(Fault::CommitThenFail) | None => {}
                Some(fault) => return Err(api_error(fault)),
            }
            if v.things.values().any(|t| t.name == desired.0) {
                return Err(api_error(Fault::Status(409)));
            }
            v.next += 1;
            // Like a template's auth scheme: a value the create cannot set.
            let value = if desired.1 == "set-later" {
                "default".to_owned()
            } else {
                desired.1.clone()
            };
            let thing = Thing {
                id: format!("ID{}", v.next),
                name: desired.0.clone(),
                value,
            };
            v.things.insert(thing.id.clone(), thing.clone());
            match v.create_fault {
                Some(fault) => Err(api_error(fault)),
                None => Ok(thing),
            }
        })
    }
    fn up_to_date(
        &self,
        desired: &(String, String),
        observed: &Thing,
        _status: &WidgetStatus,
    ) -> bool {
        observed.name == desired.0 && observed.value == desired.1
    }
    async fn update(
        &self,
        _rc: &Reconciling<'_, Self>,
        desired: &(String, String),
        observed: Thing,
        _status: &mut WidgetStatus,
    ) -> Result<(Thing, String), Error> {
        versori(|v| {
            v.calls.push(format!("update {}", observed.id));
            let thing = Thing {
                id: observed.id.clone(),
                name: desired.0.clone(),
                value: desired.1.clone(),
            };
            v.things.insert(thing.id.clone(), thing.clone());
            Ok((thing, "value".into()))
        })
    }
    fn record(
        &self,
        _desired: &(String, String),
        observed: &Thing,
        status: &mut WidgetStatus,
    ) -> String {
        status.id = Some(observed.id.clone());
        format!("widget {}", observed.id)
    }
    async fn delete(&self, _rc: &Reconciling<'_, Self>, id: &str) -> Result<(), Error> {
        versori(|v| {
            v.calls.push(format!("delete {id}"));
            match v.delete_fault {
                Some(Fault::Status(409)) => Err(Error::InUse("still used".into())),
                Some(fault) => Err(api_error(fault)),
                None => {
                    v.things.remove(id);
                    Ok(())
                }
            }
        })
    }
}

/// The apiserver's copy of the one Widget, with the writes made to it.
#[derive(Default)]
struct FakeKube {
    stored: Mutex<Option<Widget>>,
    writes: Mutex<Vec<String>>,
    events: Mutex<Vec<String>>,
}

fn kube_error(code: u16) -> Error {
    let status: kube::core::Status =
        serde_json::from_value(serde_json::json!({ "code": code, "message": "fake" }))
            .unwrap_or_default();
    Error::Kube {
        context: "fake",
        source: kube::Error::Api(Box::new(status)),
    }
}

impl FakeKube {
    fn stored(&self) -> Widget {
        self.stored
            .lock()
            .ok()
            .and_then(|s| s.clone())
            .expect("the fake holds a widget")
    }
    fn writes(&self) -> Vec<String> {
        self.writes.lock().map(|w| w.clone()).unwrap_or_default()
    }
    fn events(&self) -> Vec<String> {
        self.events.lock().map(|w| w.clone()).unwrap_or_default()
    }
}

impl Ops<Widget> for FakeKube {
    async fn get(&self, _name: &str) -> Result<Option<Widget>, Error> {
        Ok(self.stored.lock().ok().and_then(|s| s.clone()))
    }

    async fn patch_metadata(
        &self,
        obj: &Widget,
        resource_version: Option<&str>,
        metadata: serde_json::Value,
    ) -> Result<Widget, Error> {
        let mut guard = self.stored.lock().map_err(|_| kube_error(500))?;
        let Some(stored) = guard.as_mut() else {
            return Err(kube_error(404));
        };
        if stored.metadata.uid != obj.metadata.uid {
            return Err(kube_error(422));
        }
        if let Some(version) = resource_version
            && stored.metadata.resource_version.as_deref() != Some(version)
        {
            return Err(kube_error(409));
        }
        if let Some(finalizers) = metadata.get("finalizers").and_then(|f| f.as_array()) {
            stored.metadata.finalizers = Some(
                finalizers
                    .iter()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect(),
            );
        }
        if let Some(annotations) = metadata.get("annotations").and_then(|a| a.as_object()) {
            let current = stored.metadata.annotations.get_or_insert_default();
            for (key, value) in annotations {
                match value.as_str() {
                    Some(v) => {
                        current.insert(key.clone(), v.to_owned());
                    }
                    None => {
                        current.remove(key);
                    }
                }
            }
        }
        let version: u64 = stored
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        stored.metadata.resource_version = Some((version + 1).to_string());
        let keys: Vec<&str> = metadata
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        if let Ok(mut writes) = self.writes.lock() {
            writes.push(format!("metadata {}", keys.join("+")));
        }
        Ok(stored.clone())
    }

    async fn write_status(&self, obj: &Widget, status: &WidgetStatus) -> Result<(), Error> {
        let mut guard = self.stored.lock().map_err(|_| kube_error(500))?;
        if let Some(stored) = guard.as_mut()
            && stored.metadata.uid == obj.metadata.uid
        {
            stored.status = Some(status.clone());
        }
        if let Ok(mut writes) = self.writes.lock() {
            writes.push("status".into());
        }
        Ok(())
    }

    async fn event(&self, _obj: &Widget, _type: EventType, reason: &str, _a: &str, _n: String) {
        if let Ok(mut events) = self.events.lock() {
            events.push(reason.to_owned());
        }
    }
}

fn context() -> Context {
    let config = kube::Config::new("http://127.0.0.1:9".parse().expect("a URI"));
    let client = kube::Client::try_from(config).expect("a client for nowhere");
    let versori = VersoriClient::new(ClientConfig::new(
        "http://127.0.0.1:9/".parse().expect("a URL"),
        "org",
        SecretValue::from("token".to_owned()),
    ))
    .expect("a Versori client for nowhere");
    let mut ctx = Context::new(
        client,
        versori,
        std::sync::Arc::new(Metrics::new()),
        Duration::from_secs(300),
        4,
        None,
    );
    ctx.attempter = Attempter::new("pod-a");
    // No Versori configs: every widget uses the operator's own settings.
    ctx.organisations
        .use_stores(crate::controllers::organisations::ConfigStores {
            namespaced: kube::runtime::reflector::store::Writer::default().as_reader(),
            cluster: kube::runtime::reflector::store::Writer::default().as_reader(),
        });
    ctx
}

fn widget() -> Widget {
    let mut w = Widget::new(
        "w",
        WidgetSpec {
            name: "thing".into(),
            value: "v1".into(),
            adopt_id: None,
            orphan: false,
            delete: false,
            observe: false,
        },
    );
    w.metadata = ObjectMeta {
        name: Some("w".into()),
        namespace: Some("ns".into()),
        uid: Some("uid-1".into()),
        resource_version: Some("1".into()),
        generation: Some(1),
        ..ObjectMeta::default()
    };
    w
}

fn with_annotation(mut w: Widget, key: &str, value: String) -> Widget {
    w.metadata
        .annotations
        .get_or_insert_default()
        .insert(key.into(), value);
    w
}

fn with_finalizer(mut w: Widget) -> Widget {
    w.metadata.finalizers = Some(vec![FINALIZER.into()]);
    w
}

fn recorded(mut w: Widget, id: &str, ready: bool) -> Widget {
    let mut status = WidgetStatus {
        id: Some(id.into()),
        ..WidgetStatus::default()
    };
    // Found or made in the context's organisation.
    status.common.organisation_id = Some("org".into());
    if ready {
        let message = format!("widget {id}");
        conditions::set(
            &mut status.common,
            READY,
            true,
            Reason::Available,
            &message,
            Some(1),
        );
        conditions::set(
            &mut status.common,
            SYNCED,
            true,
            Reason::ReconcileSuccess,
            "",
            Some(1),
        );
        status.common.observed_generation = Some(1);
    }
    w.status = Some(status);
    w
}

fn deleting(mut w: Widget) -> Widget {
    w.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now(),
    ));
    w
}

fn pending_by(instance: &str, age: Duration) -> String {
    let mut pending = Pending::new(
        "uid-1",
        &Attempter::new(instance),
        serde_json::json!({ "name": "thing" }),
    );
    let at = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::try_from(age).unwrap_or_default())
        .unwrap_or_else(|_| jiff::Timestamp::now());
    pending.at = at.to_string();
    pending.to_annotation()
}

fn thing(id: &str, name: &str, value: &str) -> Thing {
    Thing {
        id: id.into(),
        name: name.into(),
        value: value.into(),
    }
}

/// What a case expects after one reconcile.
struct Expect {
    /// Versori calls, in order.
    calls: &'static [&'static str],
    /// Kube writes, in order.
    writes: &'static [&'static str],
    /// Events published.
    events: &'static [&'static str],
    /// The error's reason, or `None` for success.
    error: Option<Reason>,
    /// `Ready` (status, reason) afterwards, if the case checks it.
    ready: Option<(&'static str, Reason)>,
    /// `Synced` reason afterwards, if the case checks it.
    synced: Option<Reason>,
    /// The ID recorded in status afterwards.
    id: Option<&'static str>,
    /// The Versori objects afterwards (ID, name, value).
    things: &'static [(&'static str, &'static str, &'static str)],
    /// Whether the finalizer is on the stored object afterwards.
    finalizer: bool,
    /// The `versori.com/created` annotation afterwards.
    created: Option<&'static str>,
    /// Whether a pending marker is left afterwards.
    pending_left: bool,
}

impl Default for Expect {
    fn default() -> Self {
        Self {
            calls: &[],
            writes: &[],
            events: &[],
            error: None,
            ready: None,
            synced: None,
            id: None,
            things: &[],
            finalizer: true,
            created: None,
            pending_left: false,
        }
    }
}

struct Case {
    name: &'static str,
    /// The object the reconcile is handed (from the cache).
    given: Widget,
    /// The object the apiserver holds, when it differs from `given` (a stale cache).
    stored: Option<Widget>,
    things: Vec<Thing>,
    faults: (Option<Fault>, Option<Fault>, Option<Fault>),
    expect: Expect,
}

fn cases() -> Vec<Case> {
    let ready = |id| with_finalizer(recorded(widget(), id, true));
    vec![
        Case {
            name: "absent: marker and finalizer in one write, POST, the ID recorded with status",
            given: widget(),
            stored: None,
            things: vec![],
            faults: (None, None, None),
            expect: Expect {
                calls: &["create thing"],
                writes: &["metadata annotations+finalizers", "status"],
                ready: Some(("True", Reason::Available)),
                synced: Some(Reason::ReconcileSuccess),
                id: Some("ID1"),
                things: &[("ID1", "thing", "v1")],
                pending_left: true,
                ..Expect::default()
            },
        },
        Case {
            name: "created, and what a create cannot set is updated at once",
            given: {
                let mut w = widget();
                w.spec.value = "set-later".into();
                w
            },
            stored: None,
            things: vec![],
            faults: (None, None, None),
            expect: Expect {
                calls: &["create thing", "update ID1"],
                writes: &["metadata annotations+finalizers", "status"],
                events: &["Updated"],
                ready: Some(("True", Reason::Available)),
                id: Some("ID1"),
                things: &[("ID1", "thing", "set-later")],
                pending_left: true,
                ..Expect::default()
            },
        },
        Case {
            name: "found and up to date: no write at all",
            given: ready("X"),
            stored: None,
            things: vec![thing("X", "thing", "v1")],
            faults: (None, None, None),
            expect: Expect {
                calls: &["get X"],
                id: Some("X"),
                ready: Some(("True", Reason::Available)),
                things: &[("X", "thing", "v1")],
                ..Expect::default()
            },
        },
        Case {
            name: "found and drifted: updated",
            given: ready("X"),
            stored: None,
            things: vec![thing("X", "thing", "changed behind our back")],
            faults: (None, None, None),
            expect: Expect {
                calls: &["get X", "update X"],
                events: &["Updated"],
                id: Some("X"),
                things: &[("X", "thing", "v1")],
                ..Expect::default()
            },
        },
        Case {
            name: "found without the finalizer: the finalizer is added",
            given: recorded(widget(), "X", true),
            stored: None,
            things: vec![thing("X", "thing", "v1")],
            faults: (None, None, None),
            expect: Expect {
                calls: &["get X"],
                writes: &["metadata finalizers"],
                id: Some("X"),
                things: &[("X", "thing", "v1")],
                ..Expect::default()
            },
        },
        Case {
            name: "recorded object gone, name free: created anew",
            given: with_annotation(ready("X"), CREATED, "uid-1/X".into()),
            stored: None,
            things: vec![],
            faults: (None, None, None),
            expect: Expect {
                calls: &["get X", "find thing", "create thing"],
                writes: &["metadata annotations+finalizers", "status"],
                id: Some("ID1"),
                things: &[("ID1", "thing", "v1")],
                pending_left: true,
                ..Expect::default()
            },
        },
        Case {
            name: "recorded object gone, a stranger took the name: never adopted; a spent marker the cache trimmed is dropped too",
            given: ready("X"),
            stored: None,
            things: vec![thing("S", "thing", "the stranger's")],
            faults: (None, None, None),
            expect: Expect {
                calls: &["get X", "find thing"],
                writes: &["metadata annotations", "status"],
                events: &["AlreadyExists"],
                error: Some(Reason::AlreadyExists),
                ready: Some(("False", Reason::AlreadyExists)),
                things: &[("S", "thing", "the stranger's")],
                ..Expect::default()
            },
        },
        Case {
            name: "a same-named object without our marker: refused on the POST's 409",
            given: widget(),
            stored: None,
            things: vec![thing("S", "thing", "someone's")],
            faults: (None, None, None),
            expect: Expect {
                calls: &["create thing", "find thing"],
                writes: &[
                    "metadata annotations+finalizers",
                    "metadata annotations",
                    "status",
                ],
                events: &["AlreadyExists"],
                error: Some(Reason::AlreadyExists),
                things: &[("S", "thing", "someone's")],
                ..Expect::default()
            },
        },
        Case {
            name: "a marker copied from another resource means nothing",
            given: with_annotation(
                widget(),
                CREATE_PENDING,
                pending_by("pod-a", Duration::ZERO).replace("uid-1", "uid-other"),
            ),
            stored: None,
            things: vec![thing("S", "thing", "someone's")],
            faults: (None, None, None),
            expect: Expect {
                calls: &["create thing", "find thing"],
                writes: &[
                    "metadata annotations+finalizers",
                    "metadata annotations",
                    "status",
                ],
                events: &["AlreadyExists"],
                error: Some(Reason::AlreadyExists),
                things: &[("S", "thing", "someone's")],
                ..Expect::default()
            },
        },
        Case {
            name: "adopted by the ID in spec",
            given: {
                let mut w = widget();
                w.spec.adopt_id = Some("A".into());
                w
            },
            stored: None,
            things: vec![thing("A", "thing", "v1")],
            faults: (None, None, None),
            expect: Expect {
                calls: &["get A"],
                writes: &["metadata finalizers", "status"],
                events: &["Adopted"],
                id: Some("A"),
                things: &[("A", "thing", "v1")],
                ..Expect::default()
            },
        },
        Case {
            name: "the ID in spec does not exist",
            given: {
                let mut w = widget();
                w.spec.adopt_id = Some("A".into());
                w
            },
            stored: None,
            things: vec![],
            faults: (None, None, None),
            expect: Expect {
                calls: &["get A"],
                writes: &["status"],
                events: &["AdoptTargetNotFound"],
                error: Some(Reason::AdoptTargetNotFound),
                ready: Some(("False", Reason::AdoptTargetNotFound)),
                finalizer: false,
                ..Expect::default()
            },
        },
        Case {
            name: "our interrupted attempt made the object: adopted and recorded, no POST",
            given: with_finalizer(with_annotation(
                widget(),
                CREATE_PENDING,
                pending_by("pod-a", Duration::from_secs(1)),
            )),
            stored: None,
            things: vec![thing("P", "thing", "v1")],
            faults: (None, None, None),
            expect: Expect {
                calls: &["find thing"],
                writes: &["status"],
                events: &["Adopted"],
                id: Some("P"),
                things: &[("P", "thing", "v1")],
                pending_left: true,
                ..Expect::default()
            },
        },
        Case {
            name: "our interrupted attempt made nothing: created",
            given: with_finalizer(with_annotation(
                widget(),
                CREATE_PENDING,
                pending_by("pod-a", Duration::from_secs(1)),
            )),
            stored: None,
            things: vec![],
            faults: (None, None, None),
            expect: Expect {
                calls: &["find thing", "create thing"],
                writes: &["metadata annotations+finalizers", "status"],
                id: Some("ID1"),
                things: &[("ID1", "thing", "v1")],
                pending_left: true,
                ..Expect::default()
            },
        },
        Case {
            name: "an interrupted attempt and two same-named objects: ambiguous",
            given: with_finalizer(with_annotation(
                widget(),
                CREATE_PENDING,
                pending_by("pod-a", Duration::from_secs(1)),
            )),
            stored: None,
            things: vec![thing("P", "thing", "v1"), thing("Q", "thing", "v1")],
            faults: (None, None, None),
            expect: Expect {
                calls: &["find thing"],
                writes: &["status"],
                events: &["AmbiguousName"],
                error: Some(Reason::AmbiguousName),
                things: &[("P", "thing", "v1"), ("Q", "thing", "v1")],
                pending_left: true,
                ..Expect::default()
            },
        },
        Case {
            name: "another instance's attempt in flight: wait, no Versori call, no write",
            given: with_finalizer(with_annotation(
                widget(),
                CREATE_PENDING,
                pending_by("pod-b", Duration::from_secs(5)),
            )),
            stored: None,
            things: vec![],
            faults: (None, None, None),
            expect: Expect {
                error: Some(Reason::CreateInProgress),
                pending_left: true,
                ..Expect::default()
            },
        },
        Case {
            name: "another instance's attempt long over: looked up, then created",
            given: with_finalizer(with_annotation(
                widget(),
                CREATE_PENDING,
                pending_by("pod-b", ATTEMPT_WINDOW + Duration::from_secs(1)),
            )),
            stored: None,
            things: vec![],
            faults: (None, None, None),
            expect: Expect {
                calls: &["find thing", "create thing"],
                writes: &["metadata annotations+finalizers", "status"],
                id: Some("ID1"),
                things: &[("ID1", "thing", "v1")],
                pending_left: true,
                ..Expect::default()
            },
        },
        Case {
            name: "the marker write loses to another writer: 409, no POST, no write",
            given: widget(),
            stored: Some({
                let mut w = widget();
                w.metadata.resource_version = Some("7".into());
                w
            }),
            things: vec![],
            faults: (None, None, None),
            expect: Expect {
                error: Some(Reason::KubernetesAPIError),
                finalizer: false,
                ..Expect::default()
            },
        },
        Case {
            name: "the POST fails: Creating, the attempt left pending",
            given: widget(),
            stored: None,
            things: vec![],
            faults: (Some(Fault::Status(503)), None, None),
            expect: Expect {
                calls: &["create thing"],
                writes: &["metadata annotations+finalizers", "status"],
                events: &["VersoriAPIError"],
                error: Some(Reason::VersoriAPIError),
                ready: Some(("False", Reason::Creating)),
                synced: Some(Reason::VersoriAPIError),
                pending_left: true,
                ..Expect::default()
            },
        },
        Case {
            name: "the POST commits and its answer is lost: pending, adopted next time",
            given: widget(),
            stored: None,
            things: vec![],
            faults: (Some(Fault::CommitThenFail), None, None),
            expect: Expect {
                calls: &["create thing"],
                writes: &["metadata annotations+finalizers", "status"],
                events: &["VersoriAPIError"],
                error: Some(Reason::VersoriAPIError),
                things: &[("ID1", "thing", "v1")],
                pending_left: true,
                ..Expect::default()
            },
        },
        Case {
            name: "the POST is rate limited",
            given: widget(),
            stored: None,
            things: vec![],
            faults: (Some(Fault::RateLimited(20)), None, None),
            expect: Expect {
                calls: &["create thing"],
                writes: &["metadata annotations+finalizers", "status"],
                events: &["VersoriRateLimited"],
                error: Some(Reason::VersoriRateLimited),
                ready: Some(("False", Reason::Creating)),
                pending_left: true,
                ..Expect::default()
            },
        },
        Case {
            name: "a Ready object's read fails in passing: Ready stays, Synced says so",
            given: ready("X"),
            stored: None,
            things: vec![thing("X", "thing", "v1")],
            faults: (None, Some(Fault::Status(503)), None),
            expect: Expect {
                calls: &["get X"],
                writes: &["status"],
                events: &["VersoriAPIError"],
                error: Some(Reason::VersoriAPIError),
                ready: Some(("True", Reason::Available)),
                synced: Some(Reason::VersoriAPIError),
                id: Some("X"),
                things: &[("X", "thing", "v1")],
                ..Expect::default()
            },
        },
        Case {
            name: "what the spec needs is missing: a condition, no Versori call",
            given: {
                let mut w = widget();
                w.spec.value = "missing-secret".into();
                w
            },
            stored: None,
            things: vec![],
            faults: (None, None, None),
            expect: Expect {
                writes: &["status"],
                events: &["SecretNotFound"],
                error: Some(Reason::SecretNotFound),
                ready: Some(("False", Reason::SecretNotFound)),
                finalizer: false,
                ..Expect::default()
            },
        },
        Case {
            name: "delete: the recorded object goes, then the finalizer",
            given: deleting(ready("X")),
            stored: None,
            things: vec![thing("X", "thing", "v1")],
            faults: (None, None, None),
            expect: Expect {
                calls: &["delete X"],
                writes: &["metadata finalizers"],
                events: &["Deleted"],
                id: Some("X"),
                finalizer: false,
                ..Expect::default()
            },
        },
        Case {
            name: "recorded object gone, a stranger took the name: refused, the spent marker goes",
            given: with_annotation(
                ready("X"),
                CREATE_PENDING,
                pending_by("pod-a", Duration::from_secs(600)),
            ),
            stored: None,
            things: vec![thing("S", "thing", "someone's")],
            faults: (None, None, None),
            expect: Expect {
                calls: &["get X", "find thing"],
                writes: &["metadata annotations", "status"],
                events: &["AlreadyExists"],
                error: Some(Reason::AlreadyExists),
                things: &[("S", "thing", "someone's")],
                ..Expect::default()
            },
        },
        Case {
            name: "paused: Synced says so, Ready stays, nothing reaches Versori",
            given: with_annotation(ready("X"), PAUSED, "true".into()),
            stored: None,
            things: vec![thing("X", "thing", "drifted")],
            faults: (None, None, None),
            expect: Expect {
                writes: &["status"],
                events: &["Paused"],
                ready: Some(("True", Reason::Available)),
                synced: Some(Reason::Paused),
                id: Some("X"),
                things: &[("X", "thing", "drifted")],
                ..Expect::default()
            },
        },
        Case {
            name: "paused is only \"true\": another value changes nothing",
            given: with_annotation(ready("X"), PAUSED, "false".into()),
            stored: None,
            things: vec![thing("X", "thing", "drifted")],
            faults: (None, None, None),
            expect: Expect {
                calls: &["get X", "update X"],
                events: &["Updated"],
                synced: Some(Reason::ReconcileSuccess),
                id: Some("X"),
                things: &[("X", "thing", "v1")],
                ..Expect::default()
            },
        },
        Case {
            name: "paused while deleting: the delete waits, the finalizer stays",
            given: with_annotation(deleting(ready("X")), PAUSED, "true".into()),
            stored: None,
            things: vec![thing("X", "thing", "v1")],
            faults: (None, None, None),
            expect: Expect {
                writes: &["status"],
                events: &["Paused"],
                synced: Some(Reason::Paused),
                id: Some("X"),
                things: &[("X", "thing", "v1")],
                ..Expect::default()
            },
        },
        Case {
            name: "observe: found by name and recorded; no finalizer, no Versori write",
            given: {
                let mut w = widget();
                w.spec.observe = true;
                w
            },
            stored: None,
            things: vec![thing("O", "thing", "not what the spec says")],
            faults: (None, None, None),
            expect: Expect {
                calls: &["find thing"],
                writes: &["status"],
                ready: Some(("True", Reason::Available)),
                id: Some("O"),
                things: &[("O", "thing", "not what the spec says")],
                finalizer: false,
                ..Expect::default()
            },
        },
        Case {
            name: "observe: by the spec's ID",
            given: {
                let mut w = widget();
                w.spec.observe = true;
                w.spec.adopt_id = Some("A".into());
                w
            },
            stored: None,
            things: vec![thing("A", "other name", "v0")],
            faults: (None, None, None),
            expect: Expect {
                calls: &["get A"],
                writes: &["status"],
                ready: Some(("True", Reason::Available)),
                id: Some("A"),
                things: &[("A", "other name", "v0")],
                finalizer: false,
                ..Expect::default()
            },
        },
        Case {
            name: "observe: nothing there is a condition, never a create",
            given: {
                let mut w = widget();
                w.spec.observe = true;
                w
            },
            stored: None,
            things: vec![],
            faults: (None, None, None),
            expect: Expect {
                calls: &["find thing"],
                writes: &["status"],
                events: &["ObservedNotFound"],
                error: Some(Reason::ObservedNotFound),
                ready: Some(("False", Reason::ObservedNotFound)),
                finalizer: false,
                ..Expect::default()
            },
        },
        Case {
            name: "observe while deleting (a finalizer from when it was managed): left in place",
            given: {
                let mut w = deleting(ready("X"));
                w.spec.observe = true;
                w
            },
            stored: None,
            things: vec![thing("X", "thing", "v1")],
            faults: (None, None, None),
            expect: Expect {
                writes: &["metadata finalizers"],
                events: &["Orphaned"],
                id: Some("X"),
                things: &[("X", "thing", "v1")],
                finalizer: false,
                ..Expect::default()
            },
        },
        Case {
            name: "adopted by ID, no deletionPolicy: deleting leaves the object",
            given: {
                let mut w = deleting(ready("A"));
                w.spec.adopt_id = Some("A".into());
                w
            },
            stored: None,
            things: vec![thing("A", "thing", "v1")],
            faults: (None, None, None),
            expect: Expect {
                writes: &["metadata finalizers"],
                events: &["Orphaned"],
                id: Some("A"),
                things: &[("A", "thing", "v1")],
                finalizer: false,
                ..Expect::default()
            },
        },
        Case {
            name: "adopted by ID with deletionPolicy Delete: deleted",
            given: {
                let mut w = deleting(ready("A"));
                w.spec.adopt_id = Some("A".into());
                w.spec.delete = true;
                w
            },
            stored: None,
            things: vec![thing("A", "thing", "v1")],
            faults: (None, None, None),
            expect: Expect {
                calls: &["delete A"],
                writes: &["metadata finalizers"],
                events: &["Deleted"],
                id: Some("A"),
                finalizer: false,
                ..Expect::default()
            },
        },
        Case {
            name: "made in another organisation than the config now names: refused, nothing sent",
            given: {
                let mut w = ready("X");
                if let Some(status) = w.status.as_mut() {
                    status.common.organisation_id = Some("another-org".into());
                }
                w
            },
            stored: None,
            things: vec![thing("X", "thing", "v1")],
            faults: (None, None, None),
            expect: Expect {
                writes: &["status"],
                events: &["OrganisationChanged"],
                error: Some(Reason::OrganisationChanged),
                ready: Some(("False", Reason::OrganisationChanged)),
                id: Some("X"),
                things: &[("X", "thing", "v1")],
                ..Expect::default()
            },
        },
        Case {
            name: "delete with Orphan: the object stays",
            given: {
                let mut w = deleting(ready("X"));
                w.spec.orphan = true;
                w
            },
            stored: None,
            things: vec![thing("X", "thing", "v1")],
            faults: (None, None, None),
            expect: Expect {
                writes: &["metadata finalizers"],
                events: &["Orphaned"],
                id: Some("X"),
                things: &[("X", "thing", "v1")],
                finalizer: false,
                ..Expect::default()
            },
        },
        Case {
            name: "delete refused because others use it: Deleting, the finalizer stays",
            given: deleting(ready("X")),
            stored: None,
            things: vec![thing("X", "thing", "v1")],
            faults: (None, None, Some(Fault::Status(409))),
            expect: Expect {
                calls: &["delete X"],
                writes: &["status"],
                events: &["InUse"],
                error: Some(Reason::InUse),
                ready: Some(("False", Reason::Deleting)),
                synced: Some(Reason::InUse),
                id: Some("X"),
                things: &[("X", "thing", "v1")],
                ..Expect::default()
            },
        },
        Case {
            name: "delete mid-create: a stale cache has no ID, the fresh read has the record",
            given: deleting(with_finalizer(widget())),
            stored: Some(deleting(with_finalizer(with_annotation(
                widget(),
                CREATED,
                "uid-1/ID9".into(),
            )))),
            things: vec![thing("ID9", "thing", "v1")],
            faults: (None, None, None),
            expect: Expect {
                calls: &["delete ID9"],
                writes: &["metadata finalizers"],
                events: &["Deleted"],
                finalizer: false,
                created: Some("uid-1/ID9"),
                ..Expect::default()
            },
        },
        Case {
            name: "delete after an interrupted attempt: found by name and deleted",
            given: deleting(with_finalizer(with_annotation(
                widget(),
                CREATE_PENDING,
                pending_by("pod-a", Duration::from_secs(1)),
            ))),
            stored: None,
            things: vec![thing("P", "thing", "v1")],
            faults: (None, None, None),
            expect: Expect {
                calls: &["find thing", "delete P"],
                writes: &["metadata finalizers"],
                events: &["Deleted"],
                finalizer: false,
                pending_left: true,
                ..Expect::default()
            },
        },
        Case {
            name: "delete while another instance's attempt is in flight: wait for it",
            given: deleting(with_finalizer(with_annotation(
                widget(),
                CREATE_PENDING,
                pending_by("pod-b", Duration::from_secs(1)),
            ))),
            stored: None,
            things: vec![],
            faults: (None, None, None),
            expect: Expect {
                error: Some(Reason::CreateInProgress),
                pending_left: true,
                ..Expect::default()
            },
        },
        Case {
            name: "delete of a resource that never had a Versori object",
            given: deleting(with_finalizer(widget())),
            stored: None,
            things: vec![],
            faults: (None, None, None),
            expect: Expect {
                writes: &["metadata finalizers"],
                finalizer: false,
                ..Expect::default()
            },
        },
        Case {
            name: "a deleted resource without our finalizer: nothing to do",
            given: deleting(widget()),
            stored: None,
            things: vec![thing("X", "thing", "v1")],
            faults: (None, None, None),
            expect: Expect {
                things: &[("X", "thing", "v1")],
                finalizer: false,
                ..Expect::default()
            },
        },
    ]
}

#[tokio::test]
async fn every_branch_of_the_protocol() {
    let ctx = context();
    let mut failures = Vec::new();
    for case in cases() {
        versori(|v| {
            *v = FakeVersori {
                things: case
                    .things
                    .iter()
                    .map(|t| (t.id.clone(), t.clone()))
                    .collect(),
                create_fault: case.faults.0,
                get_fault: case.faults.1,
                delete_fault: case.faults.2,
                ..FakeVersori::default()
            }
        });
        let kube = FakeKube::default();
        if let Ok(mut stored) = kube.stored.lock() {
            *stored = Some(case.stored.clone().unwrap_or_else(|| case.given.clone()));
        }
        let result = run(&case.given, &ctx, &kube).await;
        let stored = kube.stored();
        let status = stored.status.clone().unwrap_or_default();
        let condition = |t: &str| conditions::get(&status.common, t).cloned();
        let annotations = stored.metadata.annotations.clone().unwrap_or_default();
        let e = &case.expect;
        let mut wrong = Vec::new();
        let calls = versori(|v| v.calls.clone());
        if calls != e.calls {
            wrong.push(format!("calls {calls:?}, expected {:?}", e.calls));
        }
        if kube.writes() != e.writes {
            wrong.push(format!(
                "writes {:?}, expected {:?}",
                kube.writes(),
                e.writes
            ));
        }
        if kube.events() != e.events {
            wrong.push(format!(
                "events {:?}, expected {:?}",
                kube.events(),
                e.events
            ));
        }
        let error = result.as_ref().err().map(Error::reason);
        if error != e.error {
            wrong.push(format!(
                "error {error:?} ({result:?}), expected {:?}",
                e.error
            ));
        }
        if let Some((want_status, want_reason)) = e.ready {
            let got = condition(READY).map(|c| (c.status, c.reason));
            if got != Some((want_status.to_owned(), want_reason.to_string())) {
                wrong.push(format!("Ready {got:?}, expected {:?}", e.ready));
            }
        }
        if let Some(want) = e.synced {
            let got = condition(SYNCED).map(|c| c.reason);
            if got != Some(want.to_string()) {
                wrong.push(format!("Synced {got:?}, expected {want:?}"));
            }
        }
        if status.id.as_deref() != e.id {
            wrong.push(format!("id {:?}, expected {:?}", status.id, e.id));
        }
        let things: Vec<(String, String, String)> = versori(|v| {
            v.things
                .values()
                .map(|t| (t.id.clone(), t.name.clone(), t.value.clone()))
                .collect()
        });
        let want_things: Vec<(String, String, String)> = e
            .things
            .iter()
            .map(|(a, b, c)| ((*a).into(), (*b).into(), (*c).into()))
            .collect();
        if things != want_things {
            wrong.push(format!(
                "Versori holds {things:?}, expected {want_things:?}"
            ));
        }
        if has_finalizer(&stored) != e.finalizer {
            wrong.push(format!(
                "finalizer {}, expected {}",
                has_finalizer(&stored),
                e.finalizer
            ));
        }
        if annotations.get(CREATED).map(String::as_str) != e.created {
            wrong.push(format!(
                "created {:?}, expected {:?}",
                annotations.get(CREATED),
                e.created
            ));
        }
        if annotations.contains_key(CREATE_PENDING) != e.pending_left {
            wrong.push(format!(
                "pending marker left: {}",
                annotations.contains_key(CREATE_PENDING)
            ));
        }
        if !wrong.is_empty() {
            failures.push(format!("{}:\n    {}", case.name, wrong.join("\n    ")));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test]
async fn requeue_follows_the_error() {
    let ctx = context();
    let conflict = kube_error(409);
    assert_eq!(requeue_after(&conflict, &ctx, "a"), CONFLICT_REQUEUE);
    let invalid = kube_error(422);
    assert_eq!(requeue_after(&invalid, &ctx, "a"), CONFLICT_REQUEUE);
    let in_flight = Error::CreateInProgress {
        left: Duration::from_secs(12),
    };
    assert_eq!(requeue_after(&in_flight, &ctx, "a"), IN_PROGRESS_POLL);
    let ending = Error::CreateInProgress {
        left: Duration::from_millis(300),
    };
    assert_eq!(
        requeue_after(&ending, &ctx, "a"),
        Duration::from_millis(300)
    );
    // A change is awaited: the resync, not a backoff.
    let waiting = Error::SecretNotFound {
        name: "x".into(),
        key: "k".into(),
    };
    let resync = requeue_after(&waiting, &ctx, "a");
    assert!(resync >= Duration::from_secs(270) && resync <= Duration::from_secs(330));
    // Failures back off exponentially per object, from 1 s, jittered, capped at 60 s.
    let failure = api_error(Fault::Status(503));
    let delays: Vec<Duration> = (0..10)
        .map(|_| requeue_after(&failure, &ctx, "b"))
        .collect();
    assert!(
        delays[0] >= Duration::from_secs(1) && delays[0] <= Duration::from_secs(2),
        "{delays:?}"
    );
    assert!(delays[3] >= Duration::from_secs(8), "{delays:?}");
    assert!(
        delays.iter().all(|d| *d <= Duration::from_secs(120)),
        "{delays:?}"
    );
    // Another object's backoff is its own.
    assert!(requeue_after(&failure, &ctx, "c") <= Duration::from_secs(2));
    // A 429 waits at least Retry-After, and longer once the backoff has grown.
    let limited = api_error(Fault::RateLimited(20));
    assert!(requeue_after(&limited, &ctx, "d") >= Duration::from_secs(20));
    ctx.reset_backoff("b");
    assert!(requeue_after(&failure, &ctx, "b") <= Duration::from_secs(2));
    // While the token is refused, the breaker's word: soon, however long the object failed.
    let refused = Error::Versori {
        context: "fake",
        source: ApiError::Unauthorized {
            retry_in: Duration::from_secs(40),
        },
    };
    for _ in 0..8 {
        assert!(requeue_after(&refused, &ctx, "e") <= Duration::from_secs(15));
    }
    // A 401 answered by Versori itself (a call sent just before the token was rotated): the
    // same cap, however long this object has been failing.
    let answered_401 = api_error(Fault::Status(401));
    assert!(requeue_after(&answered_401, &ctx, "e") <= Duration::from_secs(15));
}

#[test]
fn only_spec_deletion_and_foreign_annotations_wake_a_reconcile() {
    let base = widget();
    let key = wakes_reconcile(&base);
    let mut own = with_annotation(base.clone(), CREATE_PENDING, "x".into());
    own.metadata.resource_version = Some("2".into());
    own.metadata.finalizers = Some(vec![FINALIZER.into()]);
    own.status = recorded(widget(), "X", true).status;
    assert_eq!(wakes_reconcile(&own), key, "the operator's own writes");
    let mut spec = base.clone();
    spec.metadata.generation = Some(2);
    assert_ne!(wakes_reconcile(&spec), key, "a spec change");
    assert_ne!(wakes_reconcile(&deleting(base.clone())), key, "a deletion");
    let foreign = with_annotation(base, "example.com/note", "x".into());
    assert_ne!(wakes_reconcile(&foreign), key, "someone else's annotation");
}

#[test]
fn the_cache_keeps_an_attempt_only_while_status_lacks_the_id() {
    let mut labelled = widget();
    labelled
        .metadata
        .labels
        .get_or_insert_default()
        .insert("team".into(), "a".into());
    let mut pending = with_annotation(
        labelled,
        CREATE_PENDING,
        pending_by("pod-a", Duration::from_secs(1)),
    );
    trim_cached(&mut pending);
    assert!(pending.metadata.labels.is_none(), "labels are not cached");
    assert!(
        pending.annotations().contains_key(CREATE_PENDING),
        "an unrecorded attempt is kept: a reconcile needs it"
    );
    let mut recorded = with_annotation(
        with_annotation(ready("X"), CREATE_PENDING, "x".into()),
        "team.example/note",
        "kept".into(),
    );
    trim_cached(&mut recorded);
    assert!(!recorded.annotations().contains_key(CREATE_PENDING));
    assert_eq!(
        recorded
            .annotations()
            .get("team.example/note")
            .map(String::as_str),
        Some("kept"),
        "a person's annotations stay"
    );
}

fn ready(id: &str) -> Widget {
    with_finalizer(recorded(widget(), id, true))
}
