//! The System adapter: a Versori system and its auth schemes.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::Controller;
use kube::runtime::reflector::ObjectRef;

use super::Shutdown;
use super::context::Context;
use super::error::Error;
use super::reconciler::{
    self, ById, Managed, Named, Reconciling, Scope, adopt_by_name, observe_by_id,
};
use super::secrets::hash_secrets;
use crate::resources::common::{CommonStatus, DeletionPolicy};
use crate::resources::system::{
    AuthScheme, AuthSchemeType, DigestInput, HmacAlgorithm, HmacEncoding, OAuth2GrantType,
    ParameterLocation,
};
use crate::resources::{ProjectSystem, System, SystemStatus};
use crate::versori::models::{self as api};

impl Managed for System {
    type Status = SystemStatus;
    const KIND: &'static str = "System";

    fn status(&self) -> Option<&SystemStatus> {
        self.status.as_ref()
    }

    fn versori_id(status: &SystemStatus) -> Option<&str> {
        status.id.as_deref()
    }

    fn common(status: &mut SystemStatus) -> &mut CommonStatus {
        &mut status.common
    }

    fn deletion_policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy.unwrap_or_default()
    }

    async fn apply(
        &self,
        rc: &Reconciling<'_, Self>,
        status: &mut SystemStatus,
    ) -> Result<String, Error> {
        let name = self.versori_name();
        // Secrets first: a missing one stops here, before any Versori call.
        let (schemes, secret_hash) = desired_schemes(self, rc).await?;
        let versori = &rc.ctx.versori;

        let system = match observe(self, rc, status, &name).await? {
            Some(system) => system,
            None => {
                rc.mark_create_pending().await?;
                let created = versori
                    .create_system(&api::SystemCreate {
                        name: name.clone(),
                        domain: self.spec.domain.clone(),
                        template_base_url: self.spec.template_base_url.clone(),
                        auth_scheme_configs: schemes.clone(),
                        labels: self.spec.labels.clone(),
                    })
                    .await
                    .map_err(Error::versori("creating the Versori system"))?;
                status.id = Some(created.id.clone());
                status.auth_scheme_ids = scheme_ids(&schemes);
                status.secret_hash = Some(secret_hash.clone());
                rc.persist(status).await?;
                rc.event(
                    "Created",
                    "Create",
                    format!("created Versori system {name:?} with ID {}", created.id),
                )
                .await;
                created
            }
        };
        let id = system.id.clone();
        status.id = Some(id.clone());

        if system.name != name
            || system.domain != self.spec.domain
            || system.template_base_url != self.spec.template_base_url
        {
            versori
                .update_system(
                    &id,
                    &api::UpdateSystem {
                        name: Some(name.clone()),
                        domain: Some(self.spec.domain.clone()),
                        template_base_url: Some(self.spec.template_base_url.clone()),
                    },
                )
                .await
                .map_err(Error::versori("updating the Versori system"))?;
            rc.event(
                "Updated",
                "Update",
                format!("updated name, domain or base URL of Versori system {id}"),
            )
            .await;
        }

        let secrets_changed = status.secret_hash.as_deref() != Some(secret_hash.as_str());
        let mut upserted = Vec::new();
        for desired in &schemes {
            let scheme_id = desired.id().unwrap_or_default();
            let observed = system.auth_scheme_config(scheme_id);
            let differs = observed.is_none_or(|o| comparable(o) != comparable(desired));
            if differs || (secrets_changed && has_secret(desired)) {
                versori
                    .upsert_auth_scheme(&id, desired)
                    .await
                    .map_err(Error::versori("updating an auth scheme"))?;
                upserted.push(scheme_id.to_owned());
            }
        }
        status.secret_hash = Some(secret_hash);
        let mut removed = Vec::new();
        for observed in &system.auth_scheme_configs {
            let Some(scheme_id) = observed.id() else {
                continue;
            };
            if schemes.iter().any(|d| d.id() == Some(scheme_id)) {
                continue;
            }
            match versori.delete_auth_scheme(&id, scheme_id).await {
                Ok(()) => removed.push(scheme_id.to_owned()),
                Err(e) if e.is_not_found() => {}
                Err(e) if e.is_conflict() => {
                    return Err(Error::InUse(format!(
                        "auth scheme {scheme_id:?} was removed from the spec but a connection template still uses it: point the ProjectSystems that use it at another authSchemeConfigId"
                    )));
                }
                Err(e) => return Err(Error::versori("deleting an auth scheme")(e)),
            }
        }
        status.auth_scheme_ids = scheme_ids(&schemes);
        if !upserted.is_empty() || !removed.is_empty() {
            rc.event(
                "Updated",
                "Update",
                format!(
                    "auth schemes of Versori system {id}: updated {upserted:?}, removed {removed:?}"
                ),
            )
            .await;
        }
        Ok(format!("Versori system {name:?} has ID {id}"))
    }

    async fn delete(
        &self,
        rc: &Reconciling<'_, Self>,
        status: &mut SystemStatus,
    ) -> Result<(), Error> {
        let versori = &rc.ctx.versori;
        let id = match status.id.clone() {
            Some(id) => id,
            // An interrupted create may have made the system without recording its ID.
            None if rc.create_pending() => {
                let name = self.versori_name();
                let found: Vec<_> = versori
                    .list_systems(Some(&name))
                    .await
                    .map_err(Error::versori("looking up the Versori system by name"))?
                    .into_iter()
                    .filter(|s| s.name == name)
                    .collect();
                match found.as_slice() {
                    [one] => one.id.clone(),
                    _ => return Ok(()),
                }
            }
            None => return Ok(()),
        };
        match versori.delete_system(&id).await {
            Ok(()) => {
                rc.event("Deleted", "Delete", format!("deleted Versori system {id}")).await;
                Ok(())
            }
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) if e.is_conflict() => Err(Error::InUse(
                "the Versori system is still linked to a project environment by a connection template: it is deleted once no ProjectSystem uses it".into(),
            )),
            Err(e) => Err(Error::versori("deleting the Versori system")(e)),
        }
    }
}

impl System {
    /// The system's name in Versori.
    pub fn versori_name(&self) -> String {
        self.spec.name.clone().unwrap_or_else(|| self.name_any())
    }

    /// Whether the System references the Secret `name`.
    fn uses_secret(&self, name: &str) -> bool {
        self.spec.auth_schemes.iter().any(|s| {
            s.oauth2
                .as_ref()
                .and_then(|o| o.grant.client_secret_ref.as_ref())
                .is_some_and(|r| r.name == name)
        })
    }
}

/// Finds the Versori system this resource manages: by the ID in status, the ID in spec
/// (adoption), or by name after an interrupted create. `None`: it must be created.
async fn observe(
    obj: &System,
    rc: &Reconciling<'_, System>,
    status: &mut SystemStatus,
    name: &str,
) -> Result<Option<api::System>, Error> {
    let versori = &rc.ctx.versori;
    let named = Named {
        what: "system",
        field: "systemId",
        name,
    };
    let recorded = status.id.clone();
    let by_id = observe_by_id(
        rc,
        named,
        recorded.as_deref(),
        obj.spec.system_id.as_deref(),
        |id| async move { versori.get_system(&id).await },
    );
    match by_id.await? {
        ById::Found(system) => {
            status.id = Some(system.id.clone());
            return Ok(Some(system));
        }
        ById::Gone => status.id = None,
        ById::Unknown => {}
    }
    let found: Vec<api::System> = versori
        .list_systems(Some(name))
        .await
        .map_err(Error::versori("looking up the Versori system by name"))?
        .into_iter()
        .filter(|s| s.name == name)
        .collect();
    adopt_by_name(
        rc,
        status,
        named,
        found,
        |s| s.id.as_str(),
        |status, s| {
            status.id = Some(s.id.clone());
        },
    )
    .await
}

fn scheme_ids(schemes: &[api::AuthSchemeConfig]) -> Vec<String> {
    schemes
        .iter()
        .filter_map(|s| s.id().map(str::to_owned))
        .collect()
}

fn has_secret(scheme: &api::AuthSchemeConfig) -> bool {
    scheme.oauth2.as_ref().is_some_and(|o| {
        [&o.grant.authorization_code, &o.grant.password]
            .into_iter()
            .flatten()
            .any(|g| g.client_secret.is_some())
    })
}

/// A scheme without what Versori generates or redacts, for comparing desired with observed.
fn comparable(scheme: &api::AuthSchemeConfig) -> api::AuthSchemeConfig {
    let mut scheme = scheme.clone();
    for simple in [
        &mut scheme.none,
        &mut scheme.basic_auth,
        &mut scheme.certificate,
        &mut scheme.oauth1,
    ]
    .into_iter()
    .flatten()
    {
        simple.validation_messages = None;
    }
    if let Some(k) = scheme.api_key.as_mut() {
        k.validation_messages = None;
    }
    if let Some(h) = scheme.hmac.as_mut() {
        h.validation_messages = None;
    }
    if let Some(o) = scheme.oauth2.as_mut() {
        o.validation_messages = None;
        for grant in [&mut o.grant.authorization_code, &mut o.grant.password]
            .into_iter()
            .flatten()
        {
            grant.client_secret = None;
            grant.credential_id = None;
            grant.organisation_id = None;
        }
    }
    scheme
}

/// The auth schemes as Versori takes them, client secrets read from Secrets, and the hash of
/// those secrets.
async fn desired_schemes(
    obj: &System,
    rc: &Reconciling<'_, System>,
) -> Result<(Vec<api::AuthSchemeConfig>, String), Error> {
    let mut secrets = rc.secrets().single_line();
    let mut schemes = Vec::new();
    let mut secret_values = Vec::new();
    for scheme in &obj.spec.auth_schemes {
        let client_secret = match scheme
            .oauth2
            .as_ref()
            .and_then(|o| o.grant.client_secret_ref.as_ref())
        {
            Some(r) => Some(secrets.read(&r.name, &r.key).await?),
            None => None,
        };
        if let Some(value) = &client_secret {
            secret_values.push((scheme.id.clone(), value.expose().to_owned()));
        }
        schemes.push(to_api(scheme, client_secret));
    }
    let hash = hash_secrets(
        Some(&rc.ctx.secret_settings.hash_key),
        &rc.uid(),
        secret_values
            .iter()
            .map(|(id, v)| (id.as_str(), v.as_str())),
    );
    Ok((schemes, hash))
}

fn location(l: ParameterLocation) -> api::ApiKeyLocation {
    match l {
        ParameterLocation::Query => api::ApiKeyLocation::Query,
        ParameterLocation::Header => api::ApiKeyLocation::Header,
        ParameterLocation::Cookie => api::ApiKeyLocation::Cookie,
    }
}

/// One spec auth scheme as Versori's `AuthSchemeConfig`.
fn to_api(
    scheme: &AuthScheme,
    client_secret: Option<crate::versori::SecretValue>,
) -> api::AuthSchemeConfig {
    let id = scheme.id.clone();
    let description = scheme.description.clone().unwrap_or_default();
    match scheme.type_ {
        AuthSchemeType::None => api::AuthSchemeConfig::none(id, description),
        AuthSchemeType::BasicAuth => api::AuthSchemeConfig::basic_auth(id, description),
        AuthSchemeType::Certificate => api::AuthSchemeConfig::certificate(id, description),
        AuthSchemeType::ApiKey => match &scheme.api_key {
            Some(k) => {
                api::AuthSchemeConfig::api_key(id, description, k.name.clone(), location(k.in_))
            }
            // CEL makes apiKey present for this type; keep a valid body regardless.
            None => {
                api::AuthSchemeConfig::api_key(id, description, "", api::ApiKeyLocation::Header)
            }
        },
        AuthSchemeType::Hmac => {
            let h = scheme.hmac.clone();
            api::AuthSchemeConfig::hmac(api::HmacScheme {
                id,
                description,
                validation_messages: None,
                name: h.as_ref().map(|h| h.name.clone()).unwrap_or_default(),
                in_: location(h.as_ref().map_or(ParameterLocation::Header, |h| h.in_)),
                algorithm: match h.as_ref().map(|h| h.algorithm) {
                    Some(HmacAlgorithm::Sha1) => api::HmacAlgorithm::Sha1,
                    Some(HmacAlgorithm::Sha512) => api::HmacAlgorithm::Sha512,
                    _ => api::HmacAlgorithm::Sha256,
                },
                digest_inputs: h
                    .as_ref()
                    .map(|h| {
                        h.digest_inputs
                            .iter()
                            .map(|d| match d {
                                DigestInput::Body => api::DigestInput::Body,
                                DigestInput::Url => api::DigestInput::Url,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                encoding: match h.as_ref().map(|h| h.encoding) {
                    Some(HmacEncoding::Base64) => api::HmacEncoding::Base64,
                    Some(HmacEncoding::Base64url) => api::HmacEncoding::Base64url,
                    _ => api::HmacEncoding::Hex,
                },
            })
        }
        AuthSchemeType::OAuth2 => {
            let Some(o) = scheme.oauth2.as_ref() else {
                return api::AuthSchemeConfig::oauth2(api::OAuth2Scheme::new(
                    id,
                    description,
                    "",
                    api::OAuth2Grant::client_credentials(),
                ));
            };
            let client = api::OAuth2ClientGrant {
                client_id: o.grant.client_id.clone(),
                client_secret,
                credential_id: None,
                organisation_id: None,
            };
            let grant = match o.grant.type_ {
                OAuth2GrantType::AuthorizationCode => api::OAuth2Grant::authorization_code(client),
                OAuth2GrantType::ClientCredentials => api::OAuth2Grant::client_credentials(),
                OAuth2GrantType::Password => api::OAuth2Grant::password(client),
            };
            let mut out = api::OAuth2Scheme::new(id, description, o.token_url.clone(), grant);
            out.scopes = o
                .scopes
                .iter()
                .map(|s| api::OAuth2Scope {
                    name: s.name.clone(),
                    description: s.description.clone(),
                })
                .collect();
            out.default_scopes = o.default_scopes.clone();
            out.authorize_url = o.authorize_url.clone();
            out.additional_authorize_params = o.additional_authorize_params.clone();
            out.additional_token_params = o.additional_token_params.clone();
            out.mtls_enabled = o.mtls_enabled;
            out.mtls_credential_id = o.mtls_credential_id.clone();
            out.pkce = o.pkce;
            api::AuthSchemeConfig::oauth2(out)
        }
    }
}

/// Runs the System controller: wakes on System changes, on changes to the Secrets they
/// reference, and on ProjectSystem changes (a System waiting to be deleted retries when the
/// ProjectSystems using it go).
pub async fn run(scope: Scope, ctx: Arc<Context>, shutdown: Shutdown) {
    let (store, stream) = reconciler::primary_watch(scope.api::<System>(), "System");
    let controller = Controller::for_stream(stream, store.clone());
    let by_secret = store.clone();
    let deleting = store.clone();
    controller
        .watches_stream(
            reconciler::related_watch(scope.api::<PartialObjectMeta<Secret>>(), "Secret"),
            move |secret| {
                let (namespace, name) = (secret.namespace(), secret.name_any());
                by_secret
                    .state()
                    .into_iter()
                    .filter(|s| s.namespace() == namespace && s.uses_secret(&name))
                    .map(|s| ObjectRef::from_obj(&*s))
                    .collect::<Vec<_>>()
            },
        )
        .watches_stream(
            reconciler::related_watch(scope.api::<ProjectSystem>(), "ProjectSystem"),
            move |ps| {
                // Only a System waiting for its ProjectSystems to go cares.
                let namespace = ps.namespace().unwrap_or_default();
                ps.spec
                    .system_ref
                    .as_ref()
                    .map(|r| ObjectRef::<System>::new(&r.name).within(&namespace))
                    .filter(|key| {
                        deleting
                            .get(key)
                            .is_some_and(|s| s.metadata.deletion_timestamp.is_some())
                    })
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(
            reconciler::reconcile::<System>,
            reconciler::error_policy::<System>,
            ctx,
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "System reconcile ended with an error");
            }
        })
        .await;
}
