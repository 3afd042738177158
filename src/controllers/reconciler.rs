//! The generic managed-resource loop every kind runs (Crossplane's managed reconciler, on
//! kube-runtime's `Controller` and `finalizer`): the finalizer first, then the kind's adapter
//! observes Versori and creates, updates or deletes; the outcome becomes the `Ready` condition,
//! an event when it changes, and the next requeue (resync when Ready or waiting, per-object
//! exponential backoff or Versori's `Retry-After` on failure).

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{self, Event};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::{Context, MANAGER};
use super::error::Error;
use super::secrets::SecretReader;
use crate::resources::common::{CREATE_PENDING_ANNOTATION, CommonStatus, DeletionPolicy};

/// The finalizer every kind carries while its Versori object may exist.
pub const FINALIZER: &str = "versori.com/finalizer";

/// Where a controller watches.
#[derive(Clone)]
pub struct Scope {
    /// Kubernetes client.
    pub client: kube::Client,
    /// The namespace to watch, or all.
    pub namespace: Option<String>,
}

impl Scope {
    /// An API for `K` over the watched namespace(s).
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.namespace {
            Some(namespace) => Api::namespaced(self.client.clone(), namespace),
            None => Api::all(self.client.clone()),
        }
    }
}

fn watch_config() -> watcher::Config {
    watcher::Config::default().any_semantic()
}

/// Drops a watch error after logging it. kube-runtime backs off all of a controller's triggers
/// together on any error that reaches it, so after an apiserver restart (every watch answers
/// 410 Expired once) the shared backoff would stack to tens of seconds of blindness. Each watch
/// below restarts on its own backoff instead.
fn log_and_drop<K>(
    watch: &'static str,
) -> impl FnMut(Result<K, watcher::Error>) -> std::future::Ready<Option<Result<K, watcher::Error>>>
{
    move |event| {
        std::future::ready(match event {
            Ok(object) => Some(Ok(object)),
            Err(error) => {
                tracing::warn!(watch, %error, "watch failed; it restarts on its own backoff");
                None
            }
        })
    }
}

/// A controller's own watch, with its cache: `Controller::for_stream(stream, store)`.
pub fn primary_watch<K>(
    api: Api<K>,
    watch: &'static str,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watch_config())
        .default_backoff()
        // managedFields are most of a cached object and the operator never reads them.
        .modify(|object: &mut K| object.meta_mut().managed_fields = None)
        .reflect(writer)
        .applied_objects()
        .filter_map(log_and_drop(watch));
    (reader, stream)
}

/// A watch of related objects (created, changed or deleted): `watches_stream(stream, mapper)`.
pub fn related_watch<K>(
    api: Api<K>,
    watch: &'static str,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watcher(api, watch_config())
        .default_backoff()
        .touched_objects()
        .filter_map(log_and_drop(watch))
}

/// A kind the generic loop manages: its status shape and its Versori adapter.
pub trait Managed:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The kind's status.
    type Status: Clone + Default + PartialEq + Serialize + Debug + Send + Sync + 'static;

    /// The kind's name, for metrics, logs and events.
    const KIND: &'static str;

    /// The current status, if any.
    fn status(&self) -> Option<&Self::Status>;

    /// The Versori ID recorded in a status, if any.
    fn versori_id(status: &Self::Status) -> Option<&str>;

    /// The conditions and observed generation inside a status.
    fn common(status: &mut Self::Status) -> &mut CommonStatus;

    /// What happens to the Versori object on delete.
    fn deletion_policy(&self) -> DeletionPolicy;

    /// Observes the Versori object and creates or updates it to match the spec. Returns the
    /// `Ready` message on success. IDs go into `status` (and are persisted with
    /// [`Reconciling::persist`] right after a create).
    fn apply(
        &self,
        rc: &Reconciling<'_, Self>,
        status: &mut Self::Status,
    ) -> impl Future<Output = Result<String, Error>> + Send;

    /// Deletes the Versori object. Called only with `deletionPolicy: Delete`.
    fn delete(
        &self,
        rc: &Reconciling<'_, Self>,
        status: &mut Self::Status,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}

/// One reconcile of one object: the object, its API and the shared context.
pub struct Reconciling<'a, K: Managed> {
    /// Shared context.
    pub ctx: &'a Context,
    /// The object being reconciled.
    pub obj: &'a K,
    /// The object's namespace.
    pub namespace: String,
    api: Api<K>,
}

impl<'a, K: Managed> Reconciling<'a, K> {
    /// A reconcile of `obj` outside the controller loop (the OAuth 2.0 callback).
    pub fn new(ctx: &'a Context, obj: &'a K, namespace: &str) -> Self {
        Self {
            ctx,
            obj,
            namespace: namespace.to_owned(),
            api: Api::namespaced(ctx.client.clone(), namespace),
        }
    }

    /// A Secret reader bound to the object's namespace (no other namespace can be read).
    pub fn secrets(&self) -> SecretReader {
        SecretReader::new(self.ctx.client.clone(), &self.namespace)
            .with_policy(&self.ctx.secret_settings.policy)
    }

    /// The object's UID (salt for credential hashes).
    pub fn uid(&self) -> String {
        self.obj.uid().unwrap_or_default()
    }

    /// Whether an earlier attempt recorded its intent to create the Versori object.
    pub fn create_pending(&self) -> bool {
        self.obj
            .annotations()
            .contains_key(CREATE_PENDING_ANNOTATION)
    }

    /// Records the intent to create, before the POST: a later reconcile that finds it without an
    /// ID in status adopts the object the interrupted attempt may have made.
    pub async fn mark_create_pending(&self) -> Result<(), Error> {
        let now = jiff::Timestamp::now().to_string();
        let patch = serde_json::json!({
            "metadata": { "annotations": { CREATE_PENDING_ANNOTATION: now } }
        });
        self.api
            .patch(
                &self.obj.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(Error::kube("recording the intent to create"))?;
        Ok(())
    }

    /// Writes `status` now (used right after a create so the new ID is never lost).
    pub async fn persist(&self, status: &K::Status) -> Result<(), Error> {
        write_status(&self.api, self.obj, status).await
    }

    /// Publishes a Normal event (create, update, delete, adopt).
    pub async fn event(&self, reason: &str, action: &str, note: String) {
        publish(self.ctx, self.obj, EventType::Normal, reason, action, note).await;
    }
}

/// Which Versori object a resource stands for, when it is looked up by name.
#[derive(Clone, Copy)]
pub struct Named<'n> {
    /// What it is, for messages: "system", "connection".
    pub what: &'static str,
    /// The spec field that adopts by ID: "systemId".
    pub field: &'static str,
    /// The name looked up.
    pub name: &'n str,
}

/// What the ID a resource carries says about its Versori object.
pub enum ById<T> {
    /// Found by the ID recorded in status, or adopted by the one named in spec (announced).
    Found(T),
    /// The recorded object was deleted behind the operator's back: forget it and create again.
    Gone,
    /// No ID yet: look it up by name, or create it.
    Unknown,
}

/// Reads the Versori object by the ID in status or, for adoption, the ID in spec. An adoption
/// target that does not exist is an error; a recorded object that vanished is `Gone`.
pub async fn observe_by_id<K: Managed, T, Fut>(
    rc: &Reconciling<'_, K>,
    named: Named<'_>,
    recorded: Option<&str>,
    adopt: Option<&str>,
    get: impl FnOnce(String) -> Fut,
) -> Result<ById<T>, Error>
where
    Fut: Future<Output = Result<T, crate::versori::ApiError>>,
{
    let Some(id) = recorded.or(adopt).map(str::to_owned) else {
        return Ok(ById::Unknown);
    };
    let Named { what, field, .. } = named;
    match get(id.clone()).await {
        Ok(object) => {
            if recorded.is_none() {
                rc.event(
                    "Adopted",
                    "Adopt",
                    format!("adopted Versori {what} {id} named in spec.{field}"),
                )
                .await;
            }
            Ok(ById::Found(object))
        }
        Err(e) if e.is_not_found() && adopt == Some(id.as_str()) => {
            Err(Error::AdoptTargetNotFound { what, id, field })
        }
        Err(e) if e.is_not_found() => {
            tracing::info!(what, id, "the Versori object is gone; creating it again");
            Ok(ById::Gone)
        }
        Err(e) => Err(Error::versori("reading the Versori object by its ID")(e)),
    }
}

/// Adoption by name after an interrupted create (Crossplane's external-create-pending protocol):
/// with this resource's intent marker the one same-named object is the one it created, and is
/// adopted (its ID recorded at once); without the marker a same-named object is someone else's
/// (`AlreadyExists`); several are ambiguous. `Ok(None)`: none exists, create it.
pub async fn adopt_by_name<K: Managed, T>(
    rc: &Reconciling<'_, K>,
    status: &mut K::Status,
    named: Named<'_>,
    mut found: Vec<T>,
    id_of: impl Fn(&T) -> &str,
    record: impl FnOnce(&mut K::Status, &T),
) -> Result<Option<T>, Error> {
    let Named { what, field, name } = named;
    match found.len() {
        0 => Ok(None),
        1 if rc.create_pending() => {
            let object = found.swap_remove(0);
            record(status, &object);
            rc.persist(status).await?;
            rc.event(
                "Adopted",
                "Adopt",
                format!(
                    "adopted Versori {what} {} left by an interrupted create",
                    id_of(&object)
                ),
            )
            .await;
            Ok(Some(object))
        }
        1 => Err(Error::AlreadyExists {
            what,
            name: name.to_owned(),
            id: id_of(&found[0]).to_owned(),
            field,
        }),
        _ => Err(Error::Ambiguous {
            what,
            name: name.to_owned(),
            ids: found.iter().map(&id_of).collect::<Vec<_>>().join(", "),
            field,
        }),
    }
}

async fn publish<K: Managed>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(super::events::truncate_note(note)),
        action: action.into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(%error, kind = K::KIND, name = %obj.name_any(), "could not publish an event");
    }
}

async fn write_status<K: Managed>(api: &Api<K>, obj: &K, status: &K::Status) -> Result<(), Error> {
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::kube("writing status"))?;
    Ok(())
}

/// Sets the `Ready` condition, keeping `lastTransitionTime` when its status did not change.
pub fn set_ready(
    common: &mut CommonStatus,
    ready: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let status = if ready { "True" } else { "False" };
    let previous = common.conditions.iter().find(|c| c.type_ == "Ready");
    let last_transition_time = match previous {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(jiff::Timestamp::now()),
    };
    let condition = Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    };
    common.conditions.retain(|c| c.type_ != "Ready");
    common.conditions.push(condition);
    common.observed_generation = generation;
}

fn ready_reason(status: &mut CommonStatus) -> Option<(String, String)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.reason.clone(), c.message.clone()))
}

/// The reconcile function handed to `Controller::run`.
pub async fn reconcile<K: Managed>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _slot = ctx.reconcile_slot(K::KIND).await;
    // The reconcile's own (large) future exists only once it holds a slot: every object waiting
    // for one costs a few words, not the whole state machine.
    Box::pin(reconcile_in_slot(obj, Arc::clone(&ctx))).await
}

async fn reconcile_in_slot<K: Managed>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = obj.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let timer = ctx.metrics.reconcile_started(K::KIND);
    let span = tracing::info_span!("reconcile", kind = K::KIND, namespace = %namespace, object = %obj.name_any());
    let result = tracing::Instrument::instrument(
        finalizer::finalizer(&api, FINALIZER, obj, |event| async {
            match event {
                Event::Apply(obj) => apply(obj.as_ref(), &ctx, &api, &namespace).await,
                Event::Cleanup(obj) => cleanup(obj.as_ref(), &ctx, &api, &namespace).await,
            }
        }),
        span,
    )
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    timer.finish(result.as_ref().err().map(|e| inner(e).reason()));
    result
}

/// The error the adapter returned, unwrapped from the finalizer's.
fn inner(error: &Error) -> &Error {
    match error {
        Error::Finalizer(boxed) => match boxed.as_ref() {
            finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
            _ => error,
        },
        _ => error,
    }
}

/// The error policy handed to `Controller::run`: waiting states resync, failures back off
/// (Versori's `Retry-After` first).
pub fn error_policy<K: Managed>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    // The finalizer patch tests the finalizers it saw; on a cache a write behind it fails with
    // 409/422 and succeeds once the watch catches up: retry soon, without backing off.
    if let Error::Finalizer(boxed) = error
        && let finalizer::Error::AddFinalizer(kube::Error::Api(status))
        | finalizer::Error::RemoveFinalizer(kube::Error::Api(status)) = boxed.as_ref()
        && matches!(status.code, 409 | 422)
    {
        return Action::requeue(std::time::Duration::from_millis(200));
    }
    let error = inner(error);
    if error.is_waiting() {
        return Action::requeue(ctx.resync_delay());
    }
    let key = obj.uid().unwrap_or_else(|| obj.name_any());
    let backoff = ctx.next_backoff(&key);
    Action::requeue(error.retry_after().map_or(backoff, |r| r.max(backoff / 4)))
}

async fn apply<K: Managed>(
    obj: &K,
    ctx: &Context,
    api: &Api<K>,
    namespace: &str,
) -> Result<Action, Error> {
    // Without a Versori ID the next step may create or adopt: decide that on the object as it
    // is now, not on a cache that may not show this operator's last write yet (the ID it just
    // recorded, its intent marker): a stale view would report its own object as someone else's,
    // or write an old status back.
    let fresh;
    let obj = match obj.status().and_then(K::versori_id) {
        Some(_) => obj,
        None => match api.get_opt(&obj.name_any()).await {
            Ok(Some(current)) => {
                fresh = current;
                &fresh
            }
            Ok(None) => return Ok(Action::await_change()),
            Err(error) => return Err(Error::kube("reading the object")(error)),
        },
    };
    let rc = Reconciling {
        ctx,
        obj,
        namespace: namespace.to_owned(),
        api: api.clone(),
    };
    let old = obj.status().cloned().unwrap_or_default();
    let mut status = old.clone();
    let previous = ready_reason(K::common(&mut status.clone()));
    let result = obj.apply(&rc, &mut status).await;
    let generation = obj.meta().generation;
    // A passing failure (a 5xx or 429 on a resync read, say) on an object that was Ready for this
    // very spec leaves Ready alone: Versori still matched that spec when last seen. Flipping it
    // would write status, wake every dependant (a ProjectSystem waits for its System to be
    // Ready) and bypass the backoff; the failure shows in logs and metrics instead.
    let keep_ready = matches!(&result, Err(e) if e.is_transient())
        && K::common(&mut old.clone()).conditions.iter().any(|c| {
            c.type_ == "Ready" && c.status == "True" && c.observed_generation == generation
        });
    match &result {
        Ok(message) => set_ready(
            K::common(&mut status),
            true,
            "Available",
            message,
            generation,
        ),
        Err(_) if keep_ready => {}
        Err(error) => set_ready(
            K::common(&mut status),
            false,
            error.reason(),
            &error.to_string(),
            generation,
        ),
    }
    if status != old {
        write_status(api, obj, &status).await?;
    }
    let key = obj.uid().unwrap_or_else(|| obj.name_any());
    match result {
        Ok(_) => {
            ctx.reset_backoff(&key);
            Ok(Action::requeue(ctx.resync_delay()))
        }
        Err(error) => {
            let now = ready_reason(K::common(&mut status));
            if now != previous {
                publish(
                    ctx,
                    obj,
                    EventType::Warning,
                    error.reason(),
                    "Reconcile",
                    error.to_string(),
                )
                .await;
            }
            tracing::warn!(
                kind = K::KIND,
                namespace,
                name = %obj.name_any(),
                reason = error.reason(),
                error = %error,
                "not ready"
            );
            if let Some(server_message) = error.server_message() {
                tracing::debug!(kind = K::KIND, name = %obj.name_any(), server_message, "Versori's explanation");
            }
            Err(error)
        }
    }
}

async fn cleanup<K: Managed>(
    obj: &K,
    ctx: &Context,
    api: &Api<K>,
    namespace: &str,
) -> Result<Action, Error> {
    let rc = Reconciling {
        ctx,
        obj,
        namespace: namespace.to_owned(),
        api: api.clone(),
    };
    let key = obj.uid().unwrap_or_else(|| obj.name_any());
    if obj.deletion_policy() == DeletionPolicy::Orphan {
        rc.event(
            "Orphaned",
            "Delete",
            format!(
                "{} deleted; the Versori object was left in place (deletionPolicy: Orphan)",
                K::KIND
            ),
        )
        .await;
        ctx.reset_backoff(&key);
        return Ok(Action::await_change());
    }
    let old = obj.status().cloned().unwrap_or_default();
    let mut status = old.clone();
    match obj.delete(&rc, &mut status).await {
        Ok(()) => {
            ctx.reset_backoff(&key);
            Ok(Action::await_change())
        }
        Err(error) => {
            let generation = obj.meta().generation;
            let previous = ready_reason(K::common(&mut status.clone()));
            let message = format!("deleting: {error}");
            set_ready(
                K::common(&mut status),
                false,
                error.reason(),
                &message,
                generation,
            );
            if status != old {
                // The object may already be gone from the apiserver's point of view; a failed
                // status write must not hide the delete error.
                if let Err(write_error) = write_status(api, obj, &status).await {
                    tracing::debug!(error = %write_error, "could not write status while deleting");
                }
            }
            if ready_reason(K::common(&mut status)) != previous {
                publish(
                    ctx,
                    obj,
                    EventType::Warning,
                    error.reason(),
                    "Delete",
                    message,
                )
                .await;
            }
            tracing::warn!(kind = K::KIND, namespace, name = %obj.name_any(), reason = error.reason(), error = %error, "delete waits");
            Err(error)
        }
    }
}
