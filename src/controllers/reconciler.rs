//! The managed-resource loop every kind runs, once for all kinds (Crossplane's managed
//! reconciler on kube-runtime's `Controller`). It owns the protocol:
//!
//! 1. the finalizer (added with the first write that may lead to a Versori object);
//! 2. observe: the ID recorded in status (or by the create marker), else the ID named in spec
//!    (adoption), else, under this resource's own pending create attempt, the name;
//! 3. create: a marker written with a `resourceVersion` precondition (of two writers only one
//!    proceeds), the POST under a time limit, and the new ID recorded in the same write that ends
//!    the attempt ([`marker`](super::marker));
//! 4. update when the kind says the object drifted from the spec;
//! 5. delete, from a fresh read, through the same observe;
//! 6. the `Ready` and `Synced` conditions, events when a reason changes, and the requeue
//!    (resync when all is well or a change is awaited, per-object backoff or `Retry-After` on
//!    failure, 200 ms after a write conflict).
//!
//! A kind supplies only its mapping ([`External`]): what it wants, get by ID, find by name,
//! up to date or not, create, update, delete, and what to record in status. The kube side sits
//! behind [`Ops`], so the tests beside this file run every branch with fakes of both.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::conditions::{self, READY, Reason, SYNCED};
use super::context::{Context, MANAGER};
use super::error::Error;
use super::marker::{self, ATTEMPT_TIMEOUT, Pending, Record};
use super::organisations::Organisation;
use super::secrets::SecretReader;
use crate::resources::common::{CommonStatus, ConfigRef, DeletionPolicy, ManagementPolicy};
use crate::versori::VersoriClient;

/// The finalizer every kind carries while its Versori object may exist.
pub const FINALIZER: &str = "versori.com/finalizer";

/// The annotation that holds every write to Versori while it is `"true"` (Crossplane's
/// `crossplane.io/paused`).
pub const PAUSED: &str = "versori.com/paused";

/// What `Synced` says of a paused resource.
const PAUSED_MESSAGE: &str = "the versori.com/paused annotation is \"true\": nothing is written to Versori for this resource; remove the annotation to apply what the spec holds";

/// Whether the resource is paused.
pub fn is_paused<K: Resource>(obj: &K) -> bool {
    obj.annotations().get(PAUSED).is_some_and(|v| v == "true")
}

/// How soon a reconcile whose write lost a race (409/422) runs again: long enough for the
/// watch to bring the winner's version, too short to be a backoff.
pub const CONFLICT_REQUEUE: Duration = Duration::from_millis(200);

/// How soon a reconcile handed an object older than the operator's own last write to it runs
/// again (the watch brings the newer version within milliseconds).
pub const CACHE_CATCH_UP: Duration = Duration::from_millis(100);

/// How soon a reconcile that found the caches still listing runs again.
pub const STORES_NOT_READY: Duration = Duration::from_millis(250);

/// How often a resource whose create another instance is making is looked at again.
pub const IN_PROGRESS_POLL: Duration = Duration::from_secs(2);

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

/// What of a resource, when it changes, calls for a reconcile: the spec (its generation), the
/// deletion, and annotations other than the operator's own (the pause annotation is a person's,
/// so it counts). Status writes, the create marker and the finalizer are the operator's own
/// writes: waking on them would cut short the backoff a failing object was given (and cost a
/// reconcile round per write).
pub fn wakes_reconcile<K: Resource>(object: &K) -> Option<u64> {
    let meta = object.meta();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    meta.uid.hash(&mut hasher);
    meta.generation.hash(&mut hasher);
    meta.deletion_timestamp.is_some().hash(&mut hasher);
    for (key, value) in meta.annotations.iter().flatten() {
        if !marker::OWN_ANNOTATIONS.contains(&key.as_str()) {
            (key, value).hash(&mut hasher);
        }
    }
    Some(hasher.finish())
}

/// A controller's trigger from its kind's shared watch: only the changes that [wake a
/// reconcile](wakes_reconcile) pass (kube's `predicate_filter`, for a shared stream of `Arc`s).
pub fn own_changes<K>(
    objects: impl Stream<Item = Arc<K>> + Send + 'static,
) -> impl Stream<Item = Arc<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
{
    let mut seen: HashMap<ObjectRef<K>, u64> = HashMap::new();
    objects.filter(move |object| {
        let key = super::watches::bare_ref(object.as_ref());
        let wake = wakes_reconcile(object.as_ref());
        std::future::ready(wake.is_none() || seen.insert(key, wake.unwrap_or_default()) != wake)
    })
}

/// What a managed kind's cache entry keeps: no labels (the shard's selector is the apiserver's
/// business), and no create-attempt annotations once status records the ID (they are then only
/// history: observe and delete look at the recorded ID first, and a spent attempt is dropped by
/// a write that does not rely on the cache showing it).
pub fn trim_cached<K: External>(object: &mut K) {
    super::watches::trim_labels(object);
    if object.status().and_then(K::recorded_id).is_some()
        && let Some(annotations) = object.meta_mut().annotations.as_mut()
    {
        for key in marker::OWN_ANNOTATIONS {
            annotations.remove(key);
        }
    }
}

/// A kind the loop manages: its status shape.
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

    /// The conditions and observed generation inside a status.
    fn common(status: &mut Self::Status) -> &mut CommonStatus;

    /// The deletion policy the spec sets, if any (the loop supplies the default: see
    /// [`DeletionPolicy::effective`]).
    fn deletion_policy(&self) -> Option<DeletionPolicy>;

    /// The Versori config the spec names, if any.
    fn config_ref(&self) -> Option<&ConfigRef> {
        None
    }

    /// What the operator may do to the Versori object.
    fn management_policy(&self) -> ManagementPolicy {
        ManagementPolicy::Manage
    }
}

/// A kind's mapping to its Versori object (Crossplane's `ExternalClient`): everything the loop
/// cannot know. Methods take the reconcile ([`Reconciling`]) for the clients and Secrets.
pub trait External: Managed {
    /// What the spec wants, with Secrets and dependencies resolved.
    type Desired: Send + Sync;
    /// The Versori object as read.
    type Observed: Send + Sync;
    /// What finds the object by name, recorded with a create attempt so that a later reconcile
    /// (a delete too) can look for what the attempt may have made.
    type Locator: Serialize + DeserializeOwned + Send + Sync;

    /// What it is, for messages: "system".
    const WHAT: &'static str;
    /// The spec field that adopts by ID: "systemId".
    const ID_FIELD: &'static str;
    /// Whether Versori refuses a second object of the same name (409): then a create needs no
    /// lookup by name first, and a 409 is answered with one.
    const UNIQUE_NAMES: bool;

    /// The Versori ID recorded in status.
    fn recorded_id(status: &Self::Status) -> Option<&str>;
    /// Forgets the recorded object (it was deleted behind the operator's back).
    fn forget(status: &mut Self::Status);
    /// The ID named in spec for adoption.
    fn adopt_id(&self) -> Option<&str>;

    /// What the spec wants. Errors here (a missing Secret, a dependency not ready) stop the
    /// reconcile before any Versori call.
    fn desired(
        &self,
        rc: &Reconciling<'_, Self>,
    ) -> impl Future<Output = Result<Self::Desired, Error>> + Send;

    /// The locator of what `desired` would create.
    fn locator(desired: &Self::Desired) -> Self::Locator;

    /// The object with this ID, or `None` if Versori has none (`locator`: where to look).
    fn get(
        &self,
        rc: &Reconciling<'_, Self>,
        locator: &Self::Locator,
        id: &str,
    ) -> impl Future<Output = Result<Option<Self::Observed>, Error>> + Send;

    /// Observe-only (`managementPolicy: Observe`): where the object would be, without reading
    /// Secrets or anything else only a write needs.
    fn observe_locator(
        &self,
        rc: &Reconciling<'_, Self>,
    ) -> impl Future<Output = Result<Self::Locator, Error>> + Send;

    /// Observe-only: records what status keeps of the object as found; returns the `Ready`
    /// message.
    fn record_observed(
        &self,
        locator: &Self::Locator,
        observed: &Self::Observed,
        status: &mut Self::Status,
    ) -> String;

    /// The objects the locator names (by name; the kind drops those that are surely not this
    /// resource's, or refuses with `AlreadyExists`).
    fn find_by_name(
        &self,
        rc: &Reconciling<'_, Self>,
        locator: &Self::Locator,
    ) -> impl Future<Output = Result<Vec<Self::Observed>, Error>> + Send;

    /// The observed object's Versori ID.
    fn id_of(observed: &Self::Observed) -> &str;

    /// Whether the object may be created now; the place to refuse with a waiting error that
    /// carries state in status (a person must authorize first). Default: yes.
    fn before_create(
        &self,
        _rc: &Reconciling<'_, Self>,
        _desired: &Self::Desired,
        _status: &mut Self::Status,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        std::future::ready(Ok(()))
    }

    /// Creates the object.
    fn create(
        &self,
        rc: &Reconciling<'_, Self>,
        desired: &Self::Desired,
    ) -> impl Future<Output = Result<Self::Observed, Error>> + Send;

    /// Whether the observed object matches what is wanted (with what status remembers of
    /// write-only values, such as a hash of the secrets last sent).
    fn up_to_date(
        &self,
        desired: &Self::Desired,
        observed: &Self::Observed,
        status: &Self::Status,
    ) -> bool;

    /// Brings the object in line; returns it as it now is and what changed, for the event.
    /// It may note in status what it did (the auth schemes it created, say).
    fn update(
        &self,
        rc: &Reconciling<'_, Self>,
        desired: &Self::Desired,
        observed: Self::Observed,
        status: &mut Self::Status,
    ) -> impl Future<Output = Result<(Self::Observed, String), Error>> + Send;

    /// Records what status keeps of the object; returns the `Ready` message.
    fn record(
        &self,
        desired: &Self::Desired,
        observed: &Self::Observed,
        status: &mut Self::Status,
    ) -> String;

    /// Deletes the object. A 404 is success; a refusal because others use it is `InUse`.
    fn delete(
        &self,
        rc: &Reconciling<'_, Self>,
        id: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}

/// The loop's kube side: reads and writes of the resource itself, and its events. Real
/// implementation: [`KubeOps`]; the tests beside this file use a fake.
pub trait Ops<K: Managed>: Send + Sync {
    /// The resource as the apiserver has it now.
    fn get(&self, name: &str) -> impl Future<Output = Result<Option<K>, Error>> + Send;
    /// A JSON merge patch of `metadata` (annotations, finalizers), guarded by the resource's
    /// UID and, when `resource_version` is given, its version (a 409 when another writer came
    /// first). Returns the resource as written.
    fn patch_metadata(
        &self,
        obj: &K,
        resource_version: Option<&str>,
        metadata: serde_json::Value,
    ) -> impl Future<Output = Result<K, Error>> + Send;
    /// Writes the whole status.
    fn write_status(
        &self,
        obj: &K,
        status: &K::Status,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    /// Publishes an event about the resource.
    fn event(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) -> impl Future<Output = ()> + Send;
}

/// [`Ops`] on the apiserver.
pub struct KubeOps<'a, K: Managed> {
    api: Api<K>,
    ctx: &'a Context,
}

impl<'a, K: Managed> KubeOps<'a, K> {
    /// Ops on `namespace`.
    pub fn new(ctx: &'a Context, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(ctx.client.clone(), namespace),
            ctx,
        }
    }
}

impl<K: Managed> Ops<K> for KubeOps<'_, K> {
    async fn get(&self, name: &str) -> Result<Option<K>, Error> {
        self.api
            .get_opt(name)
            .await
            .map_err(Error::kube("reading the resource"))
    }

    async fn patch_metadata(
        &self,
        obj: &K,
        resource_version: Option<&str>,
        mut metadata: serde_json::Value,
    ) -> Result<K, Error> {
        // A UID differing from the stored one fails as an immutable-field change (422): a write
        // never lands on a same-named resource created since.
        metadata["uid"] = obj.uid().into();
        if let Some(version) = resource_version {
            metadata["resourceVersion"] = version.into();
        }
        let patch = serde_json::json!({ "metadata": metadata });
        self.api
            .patch(
                &obj.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(Error::kube("writing the create record or finalizer"))
            .inspect(|written| self.ctx.wrote(written))
    }

    async fn write_status(&self, obj: &K, status: &K::Status) -> Result<(), Error> {
        // A JSON patch whose first step tests the UID: the status subresource ignores every
        // metadata field of a merge or apply body, so only a `test` can keep a slow reconcile
        // from writing onto a same-named resource created since (it fails with 422). The whole
        // status is the operator's, so it is replaced whole.
        let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
            { "op": "test", "path": "/metadata/uid", "value": obj.uid().unwrap_or_default() },
            { "op": "add", "path": "/status", "value": status },
        ]))
        .map_err(|e| Error::Encode(e.to_string()))?;
        let params = PatchParams {
            field_manager: Some(MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let written = self
            .api
            .patch_status(&obj.name_any(), &params, &Patch::Json::<()>(patch))
            .await
            .map_err(Error::kube("writing status"))?;
        self.ctx.wrote(&written);
        Ok(())
    }

    async fn event(&self, obj: &K, type_: EventType, reason: &str, action: &str, note: String) {
        self.ctx
            .publish_event(&obj.object_ref(&()), type_, reason, action, note)
            .await;
    }
}

/// One reconcile of one object: the object, the organisation it is managed in, and the shared
/// context.
pub struct Reconciling<'a, K: Managed> {
    /// Shared context.
    pub ctx: &'a Context,
    /// The object being reconciled.
    pub obj: &'a K,
    /// The object's namespace.
    pub namespace: String,
    /// The Versori organisation (and client) the object is managed in.
    pub org: Organisation,
}

impl<'a, K: Managed> Reconciling<'a, K> {
    /// A reconcile of `obj` in `namespace`, in organisation `org`.
    pub fn new(ctx: &'a Context, obj: &'a K, namespace: &str, org: Organisation) -> Self {
        Self {
            ctx,
            obj,
            namespace: namespace.to_owned(),
            org,
        }
    }

    /// A reconcile of `obj` in the organisation its config names.
    pub async fn connect(ctx: &'a Context, obj: &'a K, namespace: &str) -> Result<Self, Error> {
        let org = ctx
            .organisations
            .for_resource(namespace, obj.config_ref())
            .await?;
        Ok(Self::new(ctx, obj, namespace, org))
    }

    /// The organisation's Versori client.
    pub fn versori(&self) -> &VersoriClient {
        &self.org.client
    }

    /// A key of a listing shared across reconciles, kept apart per organisation.
    pub fn listing_key(&self, key: &str) -> String {
        format!("{}|{key}", self.org.scope())
    }

    /// Refuses a dependency managed in another organisation: its Versori IDs mean nothing in
    /// this one.
    pub async fn same_organisation(
        &self,
        what: &str,
        name: &str,
        dependency_config: Option<&ConfigRef>,
    ) -> Result<(), Error> {
        let theirs = self
            .ctx
            .organisations
            .scope_of(&self.namespace, dependency_config)
            .await;
        match theirs {
            Some(theirs) if theirs != self.org.scope() => Err(Error::Unsatisfiable {
                reason: Reason::DependencyInOtherOrganisation,
                message: format!(
                    "{what} {name:?} is managed in another Versori organisation than this {} ({}, organisation {}): give both the same spec.configRef",
                    K::KIND,
                    self.org.describe(),
                    self.org.client.organisation()
                ),
            }),
            _ => Ok(()),
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

    /// Publishes a Normal event about the object (a kind's own news, such as an authorization
    /// to make; the loop's events go through [`Ops::event`]).
    pub async fn event(&self, reason: &str, action: &str, note: String) {
        KubeOps::<K>::new(self.ctx, &self.namespace)
            .event(self.obj, EventType::Normal, reason, action, note)
            .await;
    }
}

fn has_finalizer<K: Resource>(obj: &K) -> bool {
    obj.finalizers().iter().any(|f| f == FINALIZER)
}

fn finalizers_with<K: Resource>(obj: &K) -> Vec<String> {
    let mut finalizers = obj.finalizers().to_vec();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        finalizers.push(FINALIZER.to_owned());
    }
    finalizers
}

/// The reconcile function handed to `Controller::run`.
/// kube-runtime calls it only once the object holds one of the controller's `concurrency`
/// slots, with the object as the cache has it then; queued objects cost a key each.
pub async fn reconcile<K: External>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    // The state machine is large: on the heap, not in the controller's stream of futures.
    Box::pin(reconcile_boxed(obj, Arc::clone(&ctx))).await
}

async fn reconcile_boxed<K: External>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = obj.namespace().ok_or(Error::NoNamespace)?;
    // Until every watch has listed once, a dependency missing from the caches may only not be
    // listed yet: deciding now would flap a Ready resource after every restart.
    if !ctx.stores_ready() {
        return Ok(Action::requeue(STORES_NOT_READY));
    }
    // A cache that does not show this operator's own last write yet would report its own
    // object as someone else's, resend what was just sent, or write an old status back: wait
    // for the watch to catch up (it takes milliseconds) instead of acting on it.
    if ctx.behind_own_write(obj.as_ref()) {
        return Ok(Action::requeue(CACHE_CATCH_UP));
    }
    let ops = KubeOps::<K>::new(&ctx, &namespace);
    let timer = ctx.metrics.reconcile_started(K::KIND);
    let span = tracing::info_span!("reconcile", kind = K::KIND, namespace = %namespace, object = %obj.name_any());
    let result = tracing::Instrument::instrument(run(obj.as_ref(), &ctx, &ops), span).await;
    timer.finish(result.as_ref().err().map(|e| e.reason().as_str()));
    result
}

/// One reconcile of `obj`, its kube side through `ops`.
pub async fn run<K: External, O: Ops<K>>(obj: &K, ctx: &Context, ops: &O) -> Result<Action, Error> {
    let namespace = obj.namespace().ok_or(Error::NoNamespace)?;
    if obj.meta().deletion_timestamp.is_some() {
        cleanup(obj, ctx, ops, &namespace).await
    } else {
        apply(obj, ctx, ops, &namespace).await
    }
}

/// The error policy handed to `Controller::run`: a lost write race retries at once, a change
/// awaited resyncs, failures back off (at least as long as Versori's `Retry-After`).
pub fn error_policy<K: Managed>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    Action::requeue(requeue_after(
        error,
        &ctx,
        &obj.uid().unwrap_or_else(|| obj.name_any()),
    ))
}

fn requeue_after(error: &Error, ctx: &Context, key: &str) -> Duration {
    if error.is_write_conflict() {
        return CONFLICT_REQUEUE;
    }
    if let Error::CreateInProgress { left } = error {
        // The other attempt usually ends in well under a second: look again soon (a reconcile
        // from the cache costs nothing until it writes), and at the latest when it expires.
        return (*left).min(IN_PROGRESS_POLL);
    }
    if error.awaits_change() {
        return ctx.resync_delay();
    }
    let backoff = ctx.next_backoff(key);
    // While the organisation's token is refused, no call leaves and the breaker decides when
    // to try again: its word, not this object's backoff, and never longer than the cap, so that
    // a rotated token is found soon (a 401 answered to a call sent just before the rotation
    // included: after a minute of refusals this object's own backoff would be a minute).
    if let Error::Versori { source, .. } = error
        && source.is_unauthorized()
    {
        return error
            .retry_after()
            .unwrap_or(backoff)
            .min(crate::versori::error::UNAUTHORIZED_RETRY_CAP);
    }
    error.retry_after().map_or(backoff, |r| r.max(backoff))
}

/// What observing found.
enum Observation<T> {
    /// The object, found by its recorded or adopted ID, or by name after an interrupted attempt.
    Found(T),
    /// None: create it. `after_gone`: a recorded object vanished.
    Absent { after_gone: bool },
}

/// The non-deleting half: observe, then create or update, then conditions.
async fn apply<K: External, O: Ops<K>>(
    obj: &K,
    ctx: &Context,
    ops: &O,
    namespace: &str,
) -> Result<Action, Error> {
    let old = obj.status().cloned().unwrap_or_default();
    if is_paused(obj) {
        return hold(obj, ops, &old).await;
    }
    let mut status = old.clone();
    let mut config = None;
    let outcome = async {
        let rc = Reconciling::connect(ctx, obj, namespace).await?;
        config = rc.org.config.clone();
        check_organisation(&rc, &mut status)?;
        let message = match obj.management_policy() {
            ManagementPolicy::Manage => sync(&rc, ops, &mut status).await?,
            ManagementPolicy::Observe => observe_only(&rc, &mut status).await?,
        };
        K::common(&mut status).organisation_id = Some(rc.org.client.organisation().to_owned());
        Ok(message)
    };
    let result = match outcome.await {
        // Another instance holds the attempt, or another writer changed the resource under this
        // reconcile: that writer's status stands, and one from here would race it (and could
        // flip its Ready back). The retry comes soon (see `requeue_after`).
        Err(error)
            if matches!(error, Error::CreateInProgress { .. }) || error.is_write_conflict() =>
        {
            tracing::debug!(kind = K::KIND, name = %obj.name_any(), %error, "another writer is ahead; trying again shortly");
            return Err(error);
        }
        other => other,
    };
    let generation = obj.meta().generation;
    let key = obj.uid().unwrap_or_else(|| obj.name_any());
    let previous = reasons::<K>(&mut old.clone());
    let common = K::common(&mut status);
    common.observed_generation = generation;
    match &result {
        Ok(message) => {
            conditions::set(common, READY, true, Reason::Available, message, generation);
            conditions::set(
                common,
                SYNCED,
                true,
                Reason::ReconcileSuccess,
                "",
                generation,
            );
        }
        Err(error) => {
            let message = super::organisations::in_terms_of(config.as_ref(), error.to_string());
            // Ready says what was last observed of Versori: a passing failure changes nothing
            // there when the object was Ready for this very spec.
            if !(error.is_transient() && conditions::ready_for(common, generation)) {
                let reason = if error.is_transient() {
                    if K::recorded_id(&old).is_some() {
                        Reason::Unavailable
                    } else {
                        Reason::Creating
                    }
                } else {
                    error.reason()
                };
                conditions::set(common, READY, false, reason, &message, generation);
            }
            conditions::set(common, SYNCED, false, error.reason(), &message, generation);
        }
    }
    if status != old {
        ops.write_status(obj, &status).await?;
    }
    match result {
        Ok(_) => {
            ctx.reset_backoff(&key);
            Ok(Action::requeue(ctx.resync_delay()))
        }
        Err(error) => {
            // Waiting for a dependency is no failure: the condition says it, and a Warning for
            // every dependant of a System still being made would be noise (and a write each).
            if reasons::<K>(&mut status) != previous && !matches!(error, Error::Waiting { .. }) {
                ops.event(
                    obj,
                    EventType::Warning,
                    error.reason().as_str(),
                    "Reconcile",
                    error.to_string(),
                )
                .await;
            }
            tracing::warn!(
                kind = K::KIND,
                namespace,
                name = %obj.name_any(),
                reason = error.reason().as_str(),
                error = %error,
                "reconcile failed"
            );
            if let Some(server_message) = error.server_message() {
                tracing::debug!(kind = K::KIND, name = %obj.name_any(), server_message, "Versori's explanation");
            }
            Err(error)
        }
    }
}

/// A paused resource: `Synced` says so, `Ready` keeps what was last observed, and nothing
/// reaches Versori. Removing the annotation wakes the reconcile (it is not the operator's own).
async fn hold<K: Managed, O: Ops<K>>(obj: &K, ops: &O, old: &K::Status) -> Result<Action, Error> {
    let mut status = old.clone();
    let generation = obj.meta().generation;
    let common = K::common(&mut status);
    conditions::set(
        common,
        SYNCED,
        false,
        Reason::Paused,
        PAUSED_MESSAGE,
        generation,
    );
    if status != *old {
        ops.write_status(obj, &status).await?;
        ops.event(
            obj,
            EventType::Normal,
            Reason::Paused.as_str(),
            "Pause",
            PAUSED_MESSAGE.to_owned(),
        )
        .await;
    }
    Ok(Action::await_change())
}

/// Refuses to act in another organisation than the one the resource's object was found or
/// made in: its recorded ID means nothing there, and the object would be made a second time.
fn check_organisation<K: External>(
    rc: &Reconciling<'_, K>,
    status: &mut K::Status,
) -> Result<(), Error> {
    let now = rc.org.client.organisation();
    let recorded_id = K::recorded_id(status).map(str::to_owned);
    let common = K::common(status);
    match (&common.organisation_id, recorded_id) {
        (Some(then), Some(id)) if then != now => Err(Error::Unsatisfiable {
            reason: Reason::OrganisationChanged,
            message: format!(
                "the Versori {} {id} is in organisation {then}, but this resource now uses organisation {now} ({}): restore spec.configRef (or the namespace's default VersoriConfig), or delete the resource with deletionPolicy: Orphan and create it anew",
                K::WHAT,
                rc.org.describe()
            ),
        }),
        _ => Ok(()),
    }
}

/// Observe-only: finds the object (by the spec's ID, else the one recorded, else by name) and
/// records it. Never writes to Versori, and never adds the finalizer.
async fn observe_only<K: External>(
    rc: &Reconciling<'_, K>,
    status: &mut K::Status,
) -> Result<String, Error> {
    let obj = rc.obj;
    let locator = obj.observe_locator(rc).await?;
    let adopted = obj.adopt_id().map(str::to_owned);
    if let Some(id) = adopted
        .clone()
        .or_else(|| K::recorded_id(status).map(str::to_owned))
    {
        match obj.get(rc, &locator, &id).await? {
            Some(observed) => return Ok(obj.record_observed(&locator, &observed, status)),
            None if adopted.is_some() => {
                return Err(Error::ObservedNotFound {
                    what: K::WHAT,
                    how: format!("with ID {id} (spec.{})", K::ID_FIELD),
                });
            }
            None => K::forget(status),
        }
    }
    let mut found = obj.find_by_name(rc, &locator).await?;
    match found.len() {
        0 => Err(Error::ObservedNotFound {
            what: K::WHAT,
            how: format!("named {:?}", describe_locator::<K>(&locator)),
        }),
        1 => Ok(obj.record_observed(&locator, &found.swap_remove(0), status)),
        _ => Err(ambiguous::<K>(&locator, &found)),
    }
}

/// The reasons of `Ready` and `Synced`: an event is published when they change.
fn reasons<K: Managed>(status: &mut K::Status) -> (Option<String>, Option<String>) {
    let common = K::common(status);
    let reason = |t: &str| conditions::get(common, t).map(|c| c.reason.clone());
    (reason(READY), reason(SYNCED))
}

/// Observes, then creates or updates. Returns the `Ready` message.
async fn sync<K: External, O: Ops<K>>(
    rc: &Reconciling<'_, K>,
    ops: &O,
    status: &mut K::Status,
) -> Result<String, Error> {
    let obj = rc.obj;
    let desired = obj.desired(rc).await?;
    let uid = rc.uid();
    let record = Record::read(obj.annotations(), &uid);
    let observation = observe(rc, ops, &desired, &record, status).await?;
    let observed = match observation {
        Observation::Found(observed) => {
            if !has_finalizer(obj) {
                ops.patch_metadata(
                    obj,
                    obj.resource_version().as_deref(),
                    serde_json::json!({ "finalizers": finalizers_with(obj) }),
                )
                .await?;
            }
            observed
        }
        Observation::Absent { after_gone } => {
            let created = create(rc, ops, &desired, status, after_gone).await?;
            // What the create sent is now what status remembers (the secrets' hash, say), so
            // the check below sees only what a create cannot set (a template's auth scheme).
            obj.record(&desired, &created, status);
            created
        }
    };
    let observed = if obj.up_to_date(&desired, &observed, status) {
        observed
    } else {
        let (observed, what) = obj.update(rc, &desired, observed, status).await?;
        ops.event(
            obj,
            EventType::Normal,
            "Updated",
            "Update",
            format!(
                "updated Versori {} {}: {what}",
                K::WHAT,
                K::id_of(&observed)
            ),
        )
        .await;
        observed
    };
    Ok(obj.record(&desired, &observed, status))
}

/// Finds the Versori object: by the recorded ID, by the ID in spec, or, while an attempt of
/// this resource is pending and unrecorded, by name.
async fn observe<K: External, O: Ops<K>>(
    rc: &Reconciling<'_, K>,
    ops: &O,
    desired: &K::Desired,
    record: &Record,
    status: &mut K::Status,
) -> Result<Observation<K::Observed>, Error> {
    let obj = rc.obj;
    let recorded = K::recorded_id(status)
        .map(str::to_owned)
        .or_else(|| record.created().map(str::to_owned));
    let locator = K::locator(desired);
    if let Some(id) = recorded {
        return match obj.get(rc, &locator, &id).await? {
            Some(observed) => Ok(Observation::Found(observed)),
            None => {
                tracing::info!(
                    kind = K::KIND,
                    id,
                    "the Versori object is gone; creating it again"
                );
                K::forget(status);
                Ok(Observation::Absent { after_gone: true })
            }
        };
    }
    if let Some(id) = obj.adopt_id() {
        return match obj.get(rc, &locator, id).await? {
            Some(observed) => {
                ops.event(
                    obj,
                    EventType::Normal,
                    "Adopted",
                    "Adopt",
                    format!(
                        "adopted Versori {} {id} named in spec.{}",
                        K::WHAT,
                        K::ID_FIELD
                    ),
                )
                .await;
                Ok(Observation::Found(observed))
            }
            None => Err(Error::AdoptTargetNotFound {
                what: K::WHAT,
                id: id.to_owned(),
                field: K::ID_FIELD,
            }),
        };
    }
    let Record::Pending(pending) = record else {
        return Ok(Observation::Absent { after_gone: false });
    };
    if let Some(left) = pending.in_flight_for(&rc.ctx.attempter, jiff::Timestamp::now()) {
        return Err(Error::CreateInProgress { left });
    }
    // The attempt is over and its answer was not recorded: it may have created the object.
    let locator: K::Locator = serde_json::from_value(pending.locator.clone()).unwrap_or(locator);
    match adopt_interrupted(rc, ops, &locator).await? {
        Some(observed) => Ok(Observation::Found(observed)),
        None => Ok(Observation::Absent { after_gone: false }),
    }
}

/// After an attempt whose answer was lost: the one object the locator finds is the one it made,
/// adopted and recorded at once; none means it made none; several are ambiguous.
async fn adopt_interrupted<K: External, O: Ops<K>>(
    rc: &Reconciling<'_, K>,
    ops: &O,
    locator: &K::Locator,
) -> Result<Option<K::Observed>, Error> {
    let obj = rc.obj;
    let mut found = obj.find_by_name(rc, locator).await?;
    match found.len() {
        0 => Ok(None),
        1 => {
            // Recorded by this reconcile's status write, with the rest of status.
            let observed = found.swap_remove(0);
            let id = K::id_of(&observed).to_owned();
            ops.event(
                obj,
                EventType::Normal,
                "Adopted",
                "Adopt",
                format!(
                    "adopted Versori {} {id} left by an interrupted create",
                    K::WHAT
                ),
            )
            .await;
            Ok(Some(observed))
        }
        _ => Err(ambiguous::<K>(locator, &found)),
    }
}

fn ambiguous<K: External>(locator: &K::Locator, found: &[K::Observed]) -> Error {
    Error::Ambiguous {
        what: K::WHAT,
        name: describe_locator::<K>(locator),
        ids: found
            .iter()
            .map(|o| K::id_of(o))
            .collect::<Vec<_>>()
            .join(", "),
        field: K::ID_FIELD,
    }
}

fn describe_locator<K: External>(locator: &K::Locator) -> String {
    serde_json::to_value(locator)
        .ok()
        .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_owned))
        .unwrap_or_default()
}

/// Ends an attempt created outside the loop in one write: the attempt marker goes, the new ID
/// is recorded as an annotation (no status write of the loop follows it).
async fn record_created<K: Managed, O: Ops<K>>(ops: &O, obj: &K, id: &str) -> Result<(), Error> {
    let uid = obj.uid().unwrap_or_default();
    // No resourceVersion precondition: this write must land even though the resource changed
    // during the POST (a spec edit, a deletion); the UID keeps it on this very resource.
    ops.patch_metadata(
        obj,
        None,
        serde_json::json!({
            "annotations": marker::annotations_patch(None, Some(marker::created_annotation(&uid, id))),
        }),
    )
    .await
    .map(|_| ())
}

/// The create sequence: a same-named object someone else made is refused, the attempt is
/// claimed (marker and finalizer in one write, on the version observed), the POST runs under a
/// time limit, and its answer is recorded.
async fn create<K: External, O: Ops<K>>(
    rc: &Reconciling<'_, K>,
    ops: &O,
    desired: &K::Desired,
    status: &mut K::Status,
    after_gone: bool,
) -> Result<K::Observed, Error> {
    let obj = rc.obj;
    let locator = K::locator(desired);
    // Where Versori takes duplicate names, a name already taken is someone else's object (this
    // resource has no attempt pending: that case was observed by name already). After the
    // recorded object vanished a taken name is a stranger's as well, never adopted.
    if !K::UNIQUE_NAMES || after_gone {
        let found = obj.find_by_name(rc, &locator).await?;
        if let Some(other) = found.first() {
            // After a recorded object vanished the cache shows no marker (see `trim_cached`):
            // the spent one goes regardless.
            abandon_attempt(ops, obj, after_gone).await?;
            return Err(already_exists::<K>(&locator, K::id_of(other)));
        }
    }
    obj.before_create(rc, desired, status).await?;
    claim_attempt(rc, ops, &locator, obj.resource_version().as_deref()).await?;
    let created = match tokio::time::timeout(ATTEMPT_TIMEOUT, obj.create(rc, desired)).await {
        Ok(Ok(created)) => created,
        Ok(Err(error)) if K::UNIQUE_NAMES && is_versori_conflict(&error) => {
            // The attempt made nothing: the name is someone else's.
            abandon_attempt(ops, obj, true).await?;
            let found = obj.find_by_name(rc, &locator).await?;
            let id = found
                .first()
                .map(|o| K::id_of(o).to_owned())
                .unwrap_or_default();
            return Err(already_exists::<K>(&locator, &id));
        }
        Ok(Err(error)) => return Err(error),
        Err(_) => {
            return Err(Error::CreateTimedOut {
                what: K::WHAT,
                timeout: ATTEMPT_TIMEOUT,
            });
        }
    };
    // The ID goes into status with the reconcile's one status write (`sync` records it at
    // once, so a later step failing still writes it). No event: the `Ready` condition's
    // transition and the log say it, and an event per create would be a kube write per object.
    tracing::info!(kind = K::KIND, name = %obj.name_any(), id = K::id_of(&created), "created the Versori {}", K::WHAT);
    Ok(created)
}

/// Ends an attempt known to have made nothing because the name is taken (or an earlier one,
/// spent, whose object vanished): its marker goes, so that no later reconcile takes the
/// same-named object for what the attempt made and adopts (or deletes) it. Nothing to do when
/// there is no marker.
/// `force`: a marker may be there though the cached copy shows none (this reconcile wrote it,
/// or the cache trimmed a spent one).
async fn abandon_attempt<K: Managed, O: Ops<K>>(
    ops: &O,
    obj: &K,
    force: bool,
) -> Result<(), Error> {
    let marked = marker::OWN_ANNOTATIONS
        .iter()
        .any(|key| obj.annotations().contains_key(*key));
    if !(marked || force) {
        return Ok(());
    }
    ops.patch_metadata(
        obj,
        None,
        serde_json::json!({ "annotations": marker::annotations_patch(None, None) }),
    )
    .await
    .map(|_| ())
}

/// Claims a create attempt: the pending marker and the finalizer in one write, on
/// `resource_version` when given (of two writers, one gets a 409).
async fn claim_attempt<K: External, O: Ops<K>>(
    rc: &Reconciling<'_, K>,
    ops: &O,
    locator: &K::Locator,
    resource_version: Option<&str>,
) -> Result<(), Error> {
    let pending = Pending::new(
        &rc.uid(),
        &rc.ctx.attempter,
        serde_json::to_value(locator).unwrap_or_default(),
    );
    ops.patch_metadata(
        rc.obj,
        resource_version,
        serde_json::json!({
            "finalizers": finalizers_with(rc.obj),
            "annotations": marker::annotations_patch(Some(&pending), None),
        }),
    )
    .await
    .map(|_| ())
}

fn is_versori_conflict(error: &Error) -> bool {
    matches!(error, Error::Versori { source, .. } if source.is_conflict())
}

fn already_exists<K: External>(locator: &K::Locator, id: &str) -> Error {
    Error::AlreadyExists {
        what: K::WHAT,
        name: describe_locator::<K>(locator),
        id: id.to_owned(),
        field: K::ID_FIELD,
    }
}

/// The deleting half, from a fresh read: the Versori object the resource stands for (recorded,
/// adopted, or made by an interrupted attempt) goes unless the policy orphans it; then the
/// finalizer.
async fn cleanup<K: External, O: Ops<K>>(
    obj: &K,
    ctx: &Context,
    ops: &O,
    namespace: &str,
) -> Result<Action, Error> {
    let key = obj.uid().unwrap_or_else(|| obj.name_any());
    // The cache may not show the last create's record yet (that write may have come from a
    // reconcile that ended a moment ago): decide on the resource as it is now.
    let fresh = match ops.get(&obj.name_any()).await? {
        Some(fresh) if fresh.uid() == obj.uid() => fresh,
        _ => return Ok(Action::await_change()),
    };
    let obj = &fresh;
    if !has_finalizer(obj) {
        return Ok(Action::await_change());
    }
    if is_paused(obj) {
        // The delete of the Versori object waits too (Crossplane's paused resources do).
        let old = obj.status().cloned().unwrap_or_default();
        return hold(obj, ops, &old).await;
    }
    let result = delete_external(obj, ctx, ops, namespace).await;
    if let Err(error @ Error::CreateInProgress { .. }) = result {
        return Err(error);
    }
    match result {
        Ok(()) => {
            let finalizers: Vec<String> = obj
                .finalizers()
                .iter()
                .filter(|f| *f != FINALIZER)
                .cloned()
                .collect();
            ops.patch_metadata(
                obj,
                obj.resource_version().as_deref(),
                serde_json::json!({ "finalizers": finalizers }),
            )
            .await?;
            ctx.reset_backoff(&key);
            ctx.forget_written(&key);
            Ok(Action::await_change())
        }
        Err(error) => {
            let old = obj.status().cloned().unwrap_or_default();
            let mut status = old.clone();
            let previous = reasons::<K>(&mut old.clone());
            let generation = obj.meta().generation;
            let message = format!("deleting: {error}");
            let common = K::common(&mut status);
            conditions::set(common, READY, false, Reason::Deleting, &message, generation);
            conditions::set(common, SYNCED, false, error.reason(), &message, generation);
            if status != old {
                // A failed status write must not hide the delete error.
                if let Err(write_error) = ops.write_status(obj, &status).await {
                    tracing::debug!(error = %write_error, "could not write status while deleting");
                }
            }
            if reasons::<K>(&mut status) != previous {
                ops.event(
                    obj,
                    EventType::Warning,
                    error.reason().as_str(),
                    "Delete",
                    message,
                )
                .await;
            }
            tracing::warn!(kind = K::KIND, namespace, name = %obj.name_any(), reason = error.reason().as_str(), error = %error, "delete waits");
            Err(error)
        }
    }
}

/// Why the Versori object stays when the resource goes, if it does.
fn left_in_place<K: External>(obj: &K) -> Option<String> {
    if obj.management_policy() == ManagementPolicy::Observe {
        return Some("managementPolicy: Observe; the operator only looked at it".to_owned());
    }
    let set = obj.deletion_policy();
    let adopted = obj.adopt_id().is_some();
    match (DeletionPolicy::effective(set, adopted), set) {
        (DeletionPolicy::Delete, _) => None,
        (DeletionPolicy::Orphan, Some(_)) => Some("deletionPolicy: Orphan".to_owned()),
        (DeletionPolicy::Orphan, None) => Some(format!(
            "it was adopted by spec.{} and deletionPolicy is not set, so it is not this resource's to delete; set deletionPolicy: Delete to delete an adopted object with its resource",
            K::ID_FIELD
        )),
    }
}

/// Deletes the Versori object the resource stands for, if any.
async fn delete_external<K: External, O: Ops<K>>(
    obj: &K,
    ctx: &Context,
    ops: &O,
    namespace: &str,
) -> Result<(), Error> {
    if let Some(why) = left_in_place(obj) {
        ops.event(
            obj,
            EventType::Normal,
            "Orphaned",
            "Delete",
            format!(
                "{} deleted; the Versori {} was left in place ({why})",
                K::KIND,
                K::WHAT
            ),
        )
        .await;
        return Ok(());
    }
    // Only a delete needs the organisation: a resource left in place goes even when its
    // config is gone.
    let rc = &Reconciling::connect(ctx, obj, namespace).await?;
    let mut status = obj.status().cloned().unwrap_or_default();
    check_organisation(rc, &mut status)?;
    let record = Record::read(obj.annotations(), &rc.uid());
    let recorded = obj
        .status()
        .and_then(K::recorded_id)
        .map(str::to_owned)
        .or_else(|| record.created().map(str::to_owned))
        .or_else(|| obj.adopt_id().map(str::to_owned));
    let id = match (recorded, &record) {
        (Some(id), _) => id,
        (None, Record::Pending(pending)) => {
            if let Some(left) = pending.in_flight_for(&rc.ctx.attempter, jiff::Timestamp::now()) {
                return Err(Error::CreateInProgress { left });
            }
            let Ok(locator) = serde_json::from_value::<K::Locator>(pending.locator.clone()) else {
                return Ok(());
            };
            let mut found = obj.find_by_name(rc, &locator).await?;
            match found.len() {
                0 => return Ok(()),
                1 => K::id_of(&found.swap_remove(0)).to_owned(),
                _ => {
                    return Err(ambiguous::<K>(&locator, &found));
                }
            }
        }
        (None, _) => return Ok(()),
    };
    obj.delete(rc, &id).await?;
    ops.event(
        obj,
        EventType::Normal,
        "Deleted",
        "Delete",
        format!("deleted Versori {} {id}", K::WHAT),
    )
    .await;
    Ok(())
}

/// Creates the object outside the loop with the loop's protocol (the OAuth 2.0 callback, which
/// holds a person's single-use code): claim the attempt, POST, record the ID.
pub async fn create_outside_loop<K: External, O: Ops<K>, Fut>(
    rc: &Reconciling<'_, K>,
    ops: &O,
    locator: &K::Locator,
    create: impl FnOnce() -> Fut,
) -> Result<K::Observed, Error>
where
    Fut: Future<Output = Result<K::Observed, Error>>,
{
    // No resourceVersion precondition: the caller has just written status (spending the
    // person's single-use state, which is what keeps a replay out), so the version it read is
    // already old. The UID still pins the write to this very resource.
    claim_attempt(rc, ops, locator, None).await?;
    let created = create().await?;
    record_created(ops, rc.obj, K::id_of(&created)).await?;
    Ok(created)
}

#[cfg(test)]
#[path = "reconciler_tests.rs"]
mod tests;
