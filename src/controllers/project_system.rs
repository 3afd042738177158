//! The ProjectSystem adapter: a system linked to a project environment (a connection template).

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Config, Controller};
use kube::{Api, ResourceExt};

use super::conditions::{self, Reason};
use super::context::Context;
use super::error::Error;
use super::listings::environment_key;
use super::reconciler::{self, External, Managed, Reconciling};
use super::versori_config::users_of;
use super::watches::{RefIndex, outside_shard};
use super::{Shutdown, Watches};
use crate::resources::common::{CommonStatus, ConfigRef, DeletionPolicy, ManagementPolicy};
use crate::resources::{ClusterVersoriConfig, VersoriConfig};
use crate::resources::{ProjectSystem, ProjectSystemStatus, System};
use crate::versori::models as api;
use serde::{Deserialize, Serialize};

impl Managed for ProjectSystem {
    type Status = ProjectSystemStatus;
    const KIND: &'static str = "ProjectSystem";

    fn status(&self) -> Option<&ProjectSystemStatus> {
        self.status.as_ref()
    }

    fn common(status: &mut ProjectSystemStatus) -> &mut CommonStatus {
        &mut status.common
    }

    fn deletion_policy(&self) -> Option<DeletionPolicy> {
        self.spec.deletion_policy
    }

    fn config_ref(&self) -> Option<&ConfigRef> {
        self.spec.config_ref.as_ref()
    }

    fn management_policy(&self) -> ManagementPolicy {
        self.spec.management_policy.unwrap_or_default()
    }
}

/// What a ProjectSystem's spec wants: its system linked to an environment under a name.
pub struct DesiredTemplate {
    name: String,
    system_id: String,
    environment_id: String,
    dynamic: bool,
    /// The scheme the template should use: the spec's, else the system's first (as Versori
    /// picks at creation).
    schemes: Vec<String>,
}

/// A template is found by its name within its environment; one linking another system is never
/// this resource's.
#[derive(Serialize, Deserialize)]
pub struct TemplateLocator {
    name: String,
    environment_id: String,
    system_id: String,
}

impl External for ProjectSystem {
    type Desired = DesiredTemplate;
    type Observed = api::ConnectionTemplate;
    type Locator = TemplateLocator;
    const WHAT: &'static str = "connection template";
    const ID_FIELD: &'static str = "connectionTemplateId";
    const UNIQUE_NAMES: bool = true;

    fn recorded_id(status: &ProjectSystemStatus) -> Option<&str> {
        status.connection_template_id.as_deref()
    }

    fn forget(status: &mut ProjectSystemStatus) {
        status.connection_template_id = None;
    }

    fn adopt_id(&self) -> Option<&str> {
        self.spec.connection_template_id.as_deref()
    }

    async fn desired(&self, rc: &Reconciling<'_, Self>) -> Result<DesiredTemplate, Error> {
        let (system_id, system_schemes) = resolve_system(self, rc).await?;
        if let Some(wanted) = &self.spec.auth_scheme_config_id
            && !system_schemes.contains(wanted)
        {
            return Err(Error::Unsatisfiable {
                reason: Reason::AuthSchemeNotFound,
                message: format!(
                    "the system has no auth scheme {wanted:?} (it has {system_schemes:?}): set authSchemeConfigId to one of them"
                ),
            });
        }
        let status = self.status.clone().unwrap_or_default();
        let environment_id = resolve_environment(self, rc, &status).await?;
        Ok(DesiredTemplate {
            name: self.template_name(),
            system_id,
            environment_id,
            dynamic: self.spec.dynamic.unwrap_or(false),
            schemes: self
                .spec
                .auth_scheme_config_id
                .clone()
                .or_else(|| system_schemes.first().cloned())
                .into_iter()
                .collect(),
        })
    }

    fn locator(desired: &DesiredTemplate) -> TemplateLocator {
        TemplateLocator {
            name: desired.name.clone(),
            environment_id: desired.environment_id.clone(),
            system_id: desired.system_id.clone(),
        }
    }

    async fn get(
        &self,
        rc: &Reconciling<'_, Self>,
        locator: &TemplateLocator,
        id: &str,
    ) -> Result<Option<api::ConnectionTemplate>, Error> {
        // Versori has no GET of one template: it is read from its environment's listing, and
        // read anew before it is taken as gone.
        for fresh in [false, true] {
            let templates = list_templates(self, rc, &locator.environment_id, fresh).await?;
            if let Some(template) = templates.iter().find(|t| t.connection_template_id == id) {
                return Ok(Some(template.clone()));
            }
        }
        Ok(None)
    }

    async fn find_by_name(
        &self,
        rc: &Reconciling<'_, Self>,
        locator: &TemplateLocator,
    ) -> Result<Vec<api::ConnectionTemplate>, Error> {
        // Template names are unique in an environment, so at most one is found.
        let found: Vec<_> = list_templates(self, rc, &locator.environment_id, true)
            .await?
            .iter()
            .filter(|t| t.name == locator.name)
            .cloned()
            .collect();
        if let Some(other) = found.iter().find(|t| t.system_id() != locator.system_id) {
            return Err(Error::AlreadyExists {
                what: Self::WHAT,
                name: locator.name.clone(),
                id: other.connection_template_id.clone(),
                field: Self::ID_FIELD,
            });
        }
        Ok(found)
    }

    fn id_of(observed: &api::ConnectionTemplate) -> &str {
        &observed.connection_template_id
    }

    async fn observe_locator(&self, rc: &Reconciling<'_, Self>) -> Result<TemplateLocator, Error> {
        let (system_id, _) = resolve_system(self, rc).await?;
        let status = self.status.clone().unwrap_or_default();
        Ok(TemplateLocator {
            name: self.template_name(),
            environment_id: resolve_environment(self, rc, &status).await?,
            system_id,
        })
    }

    fn record_observed(
        &self,
        locator: &TemplateLocator,
        template: &api::ConnectionTemplate,
        status: &mut ProjectSystemStatus,
    ) -> String {
        let desired = DesiredTemplate {
            name: template.name.clone(),
            system_id: locator.system_id.clone(),
            environment_id: locator.environment_id.clone(),
            dynamic: template.dynamic,
            schemes: status.auth_scheme_config_ids.clone(),
        };
        self.record(&desired, template, status);
        format!(
            "observed connection template {} in environment {:?} of project {} (managementPolicy: Observe)",
            template.connection_template_id, self.spec.environment, self.spec.project_id
        )
    }

    async fn create(
        &self,
        rc: &Reconciling<'_, Self>,
        desired: &DesiredTemplate,
    ) -> Result<api::ConnectionTemplate, Error> {
        changed_templates(self, rc, &desired.environment_id);
        rc.versori()
            .link_system(
                &self.spec.project_id,
                &api::LinkSystem {
                    system_id: desired.system_id.clone(),
                    name: desired.name.clone(),
                    environment_id: desired.environment_id.clone(),
                    dynamic: desired.dynamic,
                },
            )
            .await
            .map_err(Error::versori("linking the system to the environment"))
    }

    fn up_to_date(
        &self,
        desired: &DesiredTemplate,
        observed: &api::ConnectionTemplate,
        status: &ProjectSystemStatus,
    ) -> bool {
        template_update(desired, observed, status) == api::UpdateConnectionTemplate::default()
    }

    async fn update(
        &self,
        rc: &Reconciling<'_, Self>,
        desired: &DesiredTemplate,
        observed: api::ConnectionTemplate,
        status: &mut ProjectSystemStatus,
    ) -> Result<(api::ConnectionTemplate, String), Error> {
        let update = template_update(desired, &observed, status);
        changed_templates(self, rc, &desired.environment_id);
        let updated = rc
            .versori()
            .update_connection_template(
                &self.spec.project_id,
                &observed.connection_template_id,
                &update,
            )
            .await
            .map_err(Error::versori("updating the connection template"))?;
        changed_templates(self, rc, &desired.environment_id);
        Ok((updated, describe(&update)))
    }

    fn record(
        &self,
        desired: &DesiredTemplate,
        template: &api::ConnectionTemplate,
        status: &mut ProjectSystemStatus,
    ) -> String {
        let first = template.auth_scheme_configs.first();
        status.connection_template_id = Some(template.connection_template_id.clone());
        status.system_id = Some(desired.system_id.clone());
        status.environment_id = Some(desired.environment_id.clone());
        status.name = Some(template.name.clone());
        status.template_base_url = Some(template.template_base_url.clone());
        status.dynamic = Some(template.dynamic);
        // The template was linked or updated to the schemes the spec asks for.
        status.auth_scheme_config_ids = scheme_ids(template, &desired.schemes);
        status.auth_scheme_type = first.map(|c| c.type_.as_str().to_owned());
        status.oauth2_grant_type = first
            .and_then(|c| c.oauth2.as_ref())
            .map(|o| o.grant.type_.as_str().to_owned());
        format!(
            "linked to environment {:?} of project {} as connection template {}",
            self.spec.environment, self.spec.project_id, template.connection_template_id
        )
    }

    async fn delete(&self, rc: &Reconciling<'_, Self>, id: &str) -> Result<(), Error> {
        if let Some(environment_id) = self
            .status
            .as_ref()
            .and_then(|s| s.environment_id.as_deref())
        {
            changed_templates(self, rc, environment_id);
        }
        match rc.versori()
            .delete_connection_template(&self.spec.project_id, id)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) if e.is_conflict() => Err(Error::InUse(
                "connections still use this connection template: it is removed once they are deleted".into(),
            )),
            Err(e) => Err(Error::versori("removing the connection template")(e)),
        }
    }
}

/// The environment's templates, from the listing the environment's reconciles share; `fresh`
/// fetches anew (before concluding that a template is missing).
async fn list_templates(
    obj: &ProjectSystem,
    rc: &Reconciling<'_, ProjectSystem>,
    environment_id: &str,
    fresh: bool,
) -> Result<Arc<Vec<api::ConnectionTemplate>>, Error> {
    let key = rc.listing_key(&environment_key(&obj.spec.project_id, environment_id));
    if fresh {
        rc.ctx.templates.invalidate(&key);
    }
    rc.ctx
        .templates
        .get(&key, || {
            rc.versori()
                .list_connection_templates(&obj.spec.project_id, environment_id)
        })
        .await
        .map_err(Error::versori(
            "listing the environment's connection templates",
        ))
}

/// Forgets the environment's shared listing after this operator changed it.
fn changed_templates(
    obj: &ProjectSystem,
    rc: &Reconciling<'_, ProjectSystem>,
    environment_id: &str,
) {
    rc.ctx
        .templates
        .invalidate(&rc.listing_key(&environment_key(&obj.spec.project_id, environment_id)));
}

/// The IDs of the template's auth scheme configs, in order. A jwt-bearer or secret config reads
/// back without an ID: it is the one `known` holds at its position.
fn scheme_ids(template: &api::ConnectionTemplate, known: &[String]) -> Vec<String> {
    template
        .auth_scheme_configs
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.id().map(str::to_owned).or_else(|| known.get(i).cloned()))
        .collect()
}

/// What differs between the template and the spec.
fn template_update(
    desired: &DesiredTemplate,
    template: &api::ConnectionTemplate,
    status: &ProjectSystemStatus,
) -> api::UpdateConnectionTemplate {
    let observed_schemes = scheme_ids(template, &status.auth_scheme_config_ids);
    api::UpdateConnectionTemplate {
        name: (template.name != desired.name).then(|| desired.name.clone()),
        dynamic: (template.dynamic != desired.dynamic).then_some(desired.dynamic),
        auth_scheme_config_ids: (!desired.schemes.is_empty()
            && desired.schemes != observed_schemes)
            .then(|| desired.schemes.clone()),
    }
}

impl ProjectSystem {
    /// The template's name, as project code refers to it.
    pub fn template_name(&self) -> String {
        self.spec.name.clone().unwrap_or_else(|| self.name_any())
    }
}

fn describe(update: &api::UpdateConnectionTemplate) -> String {
    let mut parts = Vec::new();
    if let Some(name) = &update.name {
        parts.push(format!("name {name:?}"));
    }
    if let Some(dynamic) = update.dynamic {
        parts.push(format!("dynamic {dynamic}"));
    }
    if let Some(ids) = &update.auth_scheme_config_ids {
        parts.push(format!("auth schemes {ids:?}"));
    }
    parts.join(", ")
}

/// The linked system's ID and its auth scheme IDs (in order).
async fn resolve_system(
    obj: &ProjectSystem,
    rc: &Reconciling<'_, ProjectSystem>,
) -> Result<(String, Vec<String>), Error> {
    if let Some(reference) = &obj.spec.system_ref {
        let system = match rc.ctx.cached_system(&rc.namespace, &reference.name) {
            Some(Some(system)) => Some(system),
            Some(None) => {
                outside_shard::<System>(rc, "System", &reference.name).await?;
                None
            }
            None => {
                let systems: Api<System> = Api::namespaced(rc.ctx.client.clone(), &rc.namespace);
                systems
                    .get_opt(&reference.name)
                    .await
                    .map_err(Error::kube("reading the referenced System"))?
                    .map(Arc::new)
            }
        };
        let system = system.ok_or_else(|| Error::Waiting {
            reason: Reason::WaitingForSystem,
            message: format!(
                "System {:?} does not exist in this namespace yet",
                reference.name
            ),
        })?;
        rc.same_organisation("System", &reference.name, system.spec.config_ref.as_ref())
            .await?;
        let status = system.status.as_ref();
        let ready = status.is_some_and(|s| conditions::is_ready(&s.common));
        return match status.and_then(|s| s.id.clone()) {
            Some(id) if ready => Ok((
                id,
                status
                    .map(|s| s.auth_scheme_ids.clone())
                    .unwrap_or_default(),
            )),
            _ => Err(Error::Waiting {
                reason: Reason::WaitingForSystem,
                message: format!(
                    "waiting for System {:?} to be ready in Versori",
                    reference.name
                ),
            }),
        };
    }
    let id = obj.spec.system_id.clone().unwrap_or_default();
    let system = rc.versori().get_system(&id).await.map_err(|e| {
        if e.is_not_found() {
            Error::Unsatisfiable {
                reason: Reason::SystemNotFound,
                message: format!("Versori has no system with ID {id} (spec.systemId)"),
            }
        } else {
            Error::versori("reading the linked Versori system")(e)
        }
    })?;
    let schemes = system
        .auth_scheme_configs
        .iter()
        .filter_map(|c| c.id().map(str::to_owned))
        .collect();
    Ok((system.id, schemes))
}

/// The environment's ID. Project and environment are immutable in the spec, so the ID resolved
/// once is kept in status and not looked up again.
async fn resolve_environment(
    obj: &ProjectSystem,
    rc: &Reconciling<'_, ProjectSystem>,
    status: &ProjectSystemStatus,
) -> Result<String, Error> {
    if let Some(id) = &status.environment_id {
        return Ok(id.clone());
    }
    // Shared by the project's ProjectSystems: N links to one project read it once.
    let project_key = rc.listing_key(&obj.spec.project_id);
    let project = rc
        .ctx
        .projects
        .get(&project_key, || {
            rc.versori().get_project(&obj.spec.project_id)
        })
        .await
        .map_err(|e| {
            if e.is_not_found() {
                Error::Unsatisfiable {
                    reason: Reason::ProjectNotFound,
                    message: format!("Versori has no project with ID {}", obj.spec.project_id),
                }
            } else {
                Error::versori("reading the project")(e)
            }
        })?;
    match project.environment_by_name(&obj.spec.environment) {
        Some(environment) => Ok(environment.id.clone()),
        None => Err({
            // The environment may be made next: read the project anew then.
            rc.ctx.projects.invalidate(&project_key);
            Error::Unsatisfiable {
                reason: Reason::EnvironmentNotFound,
                message: format!(
                    "project {} has no environment named {:?} (it has {:?})",
                    obj.spec.project_id,
                    obj.spec.environment,
                    project
                        .environments
                        .iter()
                        .map(|e| e.name.as_str())
                        .collect::<Vec<_>>()
                ),
            }
        }),
    }
}

/// The ProjectSystem controller: wakes on ProjectSystem changes, on changes to the Systems
/// they link (a System becoming ready; found through an index), and on Connection changes (a
/// template waiting to be removed retries when its Connections go).
pub fn controller(
    watches: &Watches,
    ctx: Arc<Context>,
    shutdown: Shutdown,
) -> Result<impl Future<Output = ()> + Send + 'static, Error> {
    let store = watches.project_systems.store.clone();
    let by_system = Arc::new(RefIndex::<ProjectSystem>::default());
    let follow = by_system
        .follow(|ps: &ProjectSystem| ps.spec.system_ref.iter().map(|r| r.name.clone()).collect());
    let trigger = reconciler::own_changes(watches.project_systems.subscribe()?.inspect(follow));
    let live = store.clone();
    let deleting = store.clone();
    let users = store.clone();
    let controller = Controller::for_shared_stream(trigger, store)
        .with_config(Config::default().concurrency(ctx.concurrency))
        .watches_shared_stream(watches.systems.subscribe()?, move |system| {
            let key = RefIndex::<ProjectSystem>::key(
                &system.namespace().unwrap_or_default(),
                &system.name_any(),
            );
            by_system
                .lookup(&key)
                .into_iter()
                .filter(|ps| live.get(ps).is_some())
                .collect::<Vec<_>>()
        })
        .watches_shared_stream(watches.connections.subscribe()?, move |connection| {
            // Only a ProjectSystem waiting for its Connections to go cares.
            let namespace = connection.namespace().unwrap_or_default();
            let key = ObjectRef::<ProjectSystem>::new(&connection.spec.project_system_ref.name)
                .within(&namespace);
            deleting
                .get(&key)
                .filter(|ps| ps.metadata.deletion_timestamp.is_some())
                .map(|_| key)
        })
        .watches_shared_stream(
            watches.configs.subscribe()?,
            users_of::<ProjectSystem, VersoriConfig>(users.clone()),
        )
        .watches_shared_stream(
            watches.cluster_configs.subscribe()?,
            users_of::<ProjectSystem, ClusterVersoriConfig>(users),
        )
        .graceful_shutdown_on(shutdown)
        .run(
            reconciler::reconcile::<ProjectSystem>,
            reconciler::error_policy::<ProjectSystem>,
            ctx,
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "ProjectSystem reconcile ended with an error");
            }
        });
    Ok(controller)
}
