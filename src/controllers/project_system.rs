//! The ProjectSystem adapter: a system linked to a project environment (a connection template).

use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::Shutdown;
use super::context::Context;
use super::error::Error;
use super::reconciler::{self, Managed, Named, Reconciling, Scope, adopt_by_name};
use crate::resources::common::{CommonStatus, DeletionPolicy};
use crate::resources::{Connection, ProjectSystem, ProjectSystemStatus, System};
use crate::versori::models as api;

impl Managed for ProjectSystem {
    type Status = ProjectSystemStatus;
    const KIND: &'static str = "ProjectSystem";

    fn status(&self) -> Option<&ProjectSystemStatus> {
        self.status.as_ref()
    }

    fn versori_id(status: &ProjectSystemStatus) -> Option<&str> {
        status.connection_template_id.as_deref()
    }

    fn common(status: &mut ProjectSystemStatus) -> &mut CommonStatus {
        &mut status.common
    }

    fn deletion_policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy.unwrap_or_default()
    }

    async fn apply(
        &self,
        rc: &Reconciling<'_, Self>,
        status: &mut ProjectSystemStatus,
    ) -> Result<String, Error> {
        let versori = &rc.ctx.versori;
        let project = self.spec.project_id.as_str();
        let name = self.template_name();
        let (system_id, system_schemes) = resolve_system(self, rc).await?;
        if let Some(wanted) = &self.spec.auth_scheme_config_id
            && !system_schemes.contains(wanted)
        {
            return Err(Error::InvalidReference {
                reason: "AuthSchemeNotFound",
                message: format!(
                    "the system has no auth scheme {wanted:?} (it has {system_schemes:?}): set authSchemeConfigId to one of them"
                ),
            });
        }
        let environment_id = resolve_environment(self, rc, status).await?;
        let dynamic = self.spec.dynamic.unwrap_or(false);

        let templates = versori
            .list_connection_templates(project, &environment_id)
            .await
            .map_err(Error::versori(
                "listing the environment's connection templates",
            ))?;
        let template = match observe(self, rc, status, &templates, &name, &system_id).await? {
            Some(template) => template,
            None => {
                rc.mark_create_pending().await?;
                let created = versori
                    .link_system(
                        project,
                        &api::LinkSystem {
                            system_id: system_id.clone(),
                            name: name.clone(),
                            environment_id: environment_id.clone(),
                            dynamic,
                        },
                    )
                    .await
                    .map_err(Error::versori("linking the system to the environment"))?;
                status.connection_template_id = Some(created.connection_template_id.clone());
                status.system_id = Some(system_id.clone());
                rc.persist(status).await?;
                rc.event(
                    "Created",
                    "Create",
                    format!(
                        "linked system {system_id} to environment {} as connection template {}",
                        self.spec.environment, created.connection_template_id
                    ),
                )
                .await;
                created
            }
        };
        let template_id = template.connection_template_id.clone();

        // What differs from the spec. Without authSchemeConfigId the template uses the system's
        // first scheme, as Versori does at creation.
        let desired_schemes: Vec<String> = self
            .spec
            .auth_scheme_config_id
            .clone()
            .or_else(|| system_schemes.first().cloned())
            .into_iter()
            .collect();
        let observed_schemes: Vec<String> = template
            .auth_scheme_configs
            .iter()
            .filter_map(|c| c.id().map(str::to_owned))
            .collect();
        let update = api::UpdateConnectionTemplate {
            name: (template.name != name).then(|| name.clone()),
            dynamic: (template.dynamic != dynamic).then_some(dynamic),
            auth_scheme_config_ids: (!desired_schemes.is_empty()
                && desired_schemes != observed_schemes)
                .then(|| desired_schemes.clone()),
        };
        let template = if update != api::UpdateConnectionTemplate::default() {
            let updated = versori
                .update_connection_template(project, &template_id, &update)
                .await
                .map_err(Error::versori("updating the connection template"))?;
            rc.event(
                "Updated",
                "Update",
                format!(
                    "updated connection template {template_id}: {}",
                    describe(&update)
                ),
            )
            .await;
            updated
        } else {
            template
        };

        let first = template.auth_scheme_configs.first();
        status.connection_template_id = Some(template_id.clone());
        status.system_id = Some(system_id);
        status.environment_id = Some(environment_id);
        status.name = Some(template.name.clone());
        status.template_base_url = Some(template.template_base_url.clone());
        status.dynamic = Some(template.dynamic);
        status.auth_scheme_config_ids = template
            .auth_scheme_configs
            .iter()
            .filter_map(|c| c.id().map(str::to_owned))
            .collect();
        status.auth_scheme_type = first.map(|c| c.type_.as_str().to_owned());
        status.oauth2_grant_type = first
            .and_then(|c| c.oauth2.as_ref())
            .map(|o| o.grant.type_.as_str().to_owned());
        Ok(format!(
            "linked to environment {:?} of project {project} as connection template {template_id}",
            self.spec.environment
        ))
    }

    async fn delete(
        &self,
        rc: &Reconciling<'_, Self>,
        status: &mut ProjectSystemStatus,
    ) -> Result<(), Error> {
        let versori = &rc.ctx.versori;
        let project = self.spec.project_id.as_str();
        let id = match (
            status.connection_template_id.clone(),
            status.environment_id.clone(),
        ) {
            (Some(id), _) => id,
            // An interrupted create may have linked the system without recording the ID.
            (None, Some(environment_id)) if rc.create_pending() => {
                let name = self.template_name();
                let templates = versori
                    .list_connection_templates(project, &environment_id)
                    .await
                    .map_err(Error::versori(
                        "listing the environment's connection templates",
                    ))?;
                match templates.into_iter().find(|t| t.name == name) {
                    Some(t) if Some(t.id.as_str()) == status.system_id.as_deref() => {
                        t.connection_template_id
                    }
                    _ => return Ok(()),
                }
            }
            _ => return Ok(()),
        };
        match versori.delete_connection_template(project, &id).await {
            Ok(()) => {
                rc.event("Deleted", "Delete", format!("removed connection template {id}")).await;
                Ok(())
            }
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) if e.is_conflict() => Err(Error::InUse(
                "connections still use this connection template: it is removed once they are deleted".into(),
            )),
            Err(e) => Err(Error::versori("removing the connection template")(e)),
        }
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
        let systems: Api<System> = Api::namespaced(rc.ctx.client.clone(), &rc.namespace);
        let system = systems
            .get_opt(&reference.name)
            .await
            .map_err(Error::kube("reading the referenced System"))?
            .ok_or_else(|| Error::Waiting {
                reason: "WaitingForSystem",
                message: format!(
                    "System {:?} does not exist in this namespace yet",
                    reference.name
                ),
            })?;
        let status = system.status.as_ref();
        let ready = status
            .map(|s| {
                s.common
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
            .unwrap_or(false);
        return match status.and_then(|s| s.id.clone()) {
            Some(id) if ready => Ok((
                id,
                status
                    .map(|s| s.auth_scheme_ids.clone())
                    .unwrap_or_default(),
            )),
            _ => Err(Error::Waiting {
                reason: "WaitingForSystem",
                message: format!(
                    "waiting for System {:?} to be ready in Versori",
                    reference.name
                ),
            }),
        };
    }
    let id = obj.spec.system_id.clone().unwrap_or_default();
    let system = rc.ctx.versori.get_system(&id).await.map_err(|e| {
        if e.is_not_found() {
            Error::InvalidReference {
                reason: "SystemNotFound",
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
    let project = rc
        .ctx
        .versori
        .get_project(&obj.spec.project_id)
        .await
        .map_err(|e| {
            if e.is_not_found() {
                Error::InvalidReference {
                    reason: "ProjectNotFound",
                    message: format!("Versori has no project with ID {}", obj.spec.project_id),
                }
            } else {
                Error::versori("reading the project")(e)
            }
        })?;
    match project.environment_by_name(&obj.spec.environment) {
        Some(environment) => Ok(environment.id.clone()),
        None => Err(Error::InvalidReference {
            reason: "EnvironmentNotFound",
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
        }),
    }
}

/// Finds the template this resource manages among the environment's templates. `None`: it
/// must be created.
async fn observe(
    obj: &ProjectSystem,
    rc: &Reconciling<'_, ProjectSystem>,
    status: &mut ProjectSystemStatus,
    templates: &[api::ConnectionTemplate],
    name: &str,
    system_id: &str,
) -> Result<Option<api::ConnectionTemplate>, Error> {
    let adopt = obj.spec.connection_template_id.as_deref();
    if let Some(id) = status
        .connection_template_id
        .clone()
        .or(adopt.map(str::to_owned))
    {
        if let Some(t) = templates.iter().find(|t| t.connection_template_id == id) {
            if status.connection_template_id.is_none() {
                status.connection_template_id = Some(id.clone());
                rc.event(
                    "Adopted",
                    "Adopt",
                    format!("adopted connection template {id} named in spec.connectionTemplateId"),
                )
                .await;
            }
            return Ok(Some(t.clone()));
        }
        if adopt == Some(id.as_str()) {
            return Err(Error::AdoptTargetNotFound {
                what: "connection template",
                id,
                field: "connectionTemplateId",
            });
        }
        tracing::info!(
            id,
            "the connection template is gone; linking the system again"
        );
        status.connection_template_id = None;
    }
    // Template names are unique in an environment, so at most one is found. One linking
    // another system is never ours, intent marker or not.
    let found: Vec<api::ConnectionTemplate> = templates
        .iter()
        .filter(|t| t.name == name)
        .cloned()
        .collect();
    let named = Named {
        what: "connection template",
        field: "connectionTemplateId",
        name,
    };
    if let Some(other) = found.iter().find(|t| t.system_id() != system_id) {
        return Err(Error::AlreadyExists {
            what: named.what,
            name: name.to_owned(),
            id: other.connection_template_id.clone(),
            field: named.field,
        });
    }
    adopt_by_name(
        rc,
        status,
        named,
        found,
        |t| t.connection_template_id.as_str(),
        |status, t| {
            status.connection_template_id = Some(t.connection_template_id.clone());
            status.system_id = Some(t.system_id().to_owned());
        },
    )
    .await
}

/// Runs the ProjectSystem controller: wakes on ProjectSystem changes, on changes to the Systems
/// they link (a System becoming ready), and on Connection changes (a template waiting to be
/// removed retries when its Connections go).
pub async fn run(scope: Scope, ctx: Arc<Context>, shutdown: Shutdown) {
    let (store, stream) = reconciler::primary_watch(scope.api::<ProjectSystem>(), "ProjectSystem");
    let controller = Controller::for_stream(stream, store.clone());
    let deleting = store.clone();
    controller
        .watches_stream(
            reconciler::related_watch(scope.api::<System>(), "System"),
            move |system| {
                let (namespace, name) = (system.namespace(), system.name_any());
                store
                    .state()
                    .into_iter()
                    .filter(|ps| {
                        ps.namespace() == namespace
                            && ps.spec.system_ref.as_ref().is_some_and(|r| r.name == name)
                    })
                    .map(|ps| ObjectRef::from_obj(&*ps))
                    .collect::<Vec<_>>()
            },
        )
        .watches_stream(
            reconciler::related_watch(scope.api::<Connection>(), "Connection"),
            move |connection| {
                // Only a ProjectSystem waiting for its Connections to go cares.
                let namespace = connection.namespace().unwrap_or_default();
                let key = ObjectRef::<ProjectSystem>::new(&connection.spec.project_system_ref.name)
                    .within(&namespace);
                deleting
                    .get(&key)
                    .filter(|ps| ps.metadata.deletion_timestamp.is_some())
                    .map(|_| key)
            },
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
        })
        .await;
}
