//! The System adapter: a Versori system and its auth schemes.

use std::sync::Arc;

use std::future::Future;

use futures::StreamExt;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Config, Controller};

use super::context::Context;
use super::error::Error;
use super::reconciler::{self, External, Managed, Reconciling};
use super::secrets::hash_secrets;
use super::versori_config::users_of;
use super::watches::RefIndex;
use super::{Shutdown, Watches};
use crate::resources::common::{CommonStatus, ConfigRef, DeletionPolicy, ManagementPolicy};
use crate::resources::system::{
    AuthScheme, AuthSchemeType, AuthSchemesPolicy, DigestInput, HmacAlgorithm, HmacEncoding,
    OAuth1Endpoint, OAuth1SignatureMethod, OAuth2GrantType, ParameterLocation,
    ParameterTransmission,
};
use crate::resources::{ClusterVersoriConfig, VersoriConfig};
use crate::resources::{System, SystemStatus};
use crate::versori::models::{self as api};
use serde::{Deserialize, Serialize};

impl Managed for System {
    type Status = SystemStatus;
    const KIND: &'static str = "System";

    fn status(&self) -> Option<&SystemStatus> {
        self.status.as_ref()
    }

    fn common(status: &mut SystemStatus) -> &mut CommonStatus {
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

/// What a System's spec wants of Versori, its client secrets read.
pub struct DesiredSystem {
    name: String,
    schemes: Vec<api::AuthSchemeConfig>,
    /// The spec's scheme IDs, in the order of `schemes`: a jwt-bearer or secret scheme carries
    /// no ID in its body, so this is the only place it has one.
    scheme_ids: Vec<String>,
    secret_hash: String,
}

impl DesiredSystem {
    /// The schemes with their IDs.
    fn with_ids(&self) -> impl Iterator<Item = (&str, &api::AuthSchemeConfig)> {
        self.scheme_ids
            .iter()
            .map(String::as_str)
            .zip(self.schemes.iter())
    }
}

/// A Versori system is found by its name (names may repeat in Versori).
#[derive(Serialize, Deserialize)]
pub struct SystemLocator {
    name: String,
}

impl External for System {
    type Desired = DesiredSystem;
    type Observed = api::System;
    type Locator = SystemLocator;
    const WHAT: &'static str = "system";
    const ID_FIELD: &'static str = "systemId";
    const UNIQUE_NAMES: bool = false;

    fn recorded_id(status: &SystemStatus) -> Option<&str> {
        status.id.as_deref()
    }

    fn forget(status: &mut SystemStatus) {
        status.id = None;
    }

    fn adopt_id(&self) -> Option<&str> {
        self.spec.system_id.as_deref()
    }

    async fn desired(&self, rc: &Reconciling<'_, Self>) -> Result<DesiredSystem, Error> {
        let (schemes, secret_hash) = desired_schemes(self, rc).await?;
        Ok(DesiredSystem {
            name: self.versori_name(),
            schemes,
            scheme_ids: self
                .spec
                .auth_schemes
                .iter()
                .map(|s| s.id.clone())
                .collect(),
            secret_hash,
        })
    }

    fn locator(desired: &DesiredSystem) -> SystemLocator {
        SystemLocator {
            name: desired.name.clone(),
        }
    }

    async fn get(
        &self,
        rc: &Reconciling<'_, Self>,
        _locator: &SystemLocator,
        id: &str,
    ) -> Result<Option<api::System>, Error> {
        match rc.versori().get_system(id).await {
            Ok(system) => Ok(Some(system)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(Error::versori("reading the Versori system")(e)),
        }
    }

    async fn find_by_name(
        &self,
        rc: &Reconciling<'_, Self>,
        locator: &SystemLocator,
    ) -> Result<Vec<api::System>, Error> {
        let name = locator.name.as_str();
        Ok(rc
            .versori()
            .list_systems(Some(name))
            .await
            .map_err(Error::versori("looking up the Versori system by name"))?
            .into_iter()
            .filter(|s| s.name == name)
            .collect())
    }

    fn id_of(observed: &api::System) -> &str {
        &observed.id
    }

    async fn observe_locator(&self, _rc: &Reconciling<'_, Self>) -> Result<SystemLocator, Error> {
        Ok(SystemLocator {
            name: self.versori_name(),
        })
    }

    fn record_observed(
        &self,
        _locator: &SystemLocator,
        observed: &api::System,
        status: &mut SystemStatus,
    ) -> String {
        status.id = Some(observed.id.clone());
        status.auth_scheme_ids = observed
            .auth_scheme_configs
            .iter()
            .filter_map(|c| c.id().map(str::to_owned))
            .collect();
        format!(
            "observed Versori system {:?} with ID {} (managementPolicy: Observe)",
            observed.name, observed.id
        )
    }

    async fn create(
        &self,
        rc: &Reconciling<'_, Self>,
        desired: &DesiredSystem,
    ) -> Result<api::System, Error> {
        // jwt-bearer and secret schemes have no member to carry an ID in a create body: they
        // are PUT at their ID right after, in spec order (a crash between is an update later).
        let (named, memberless): (Vec<_>, Vec<_>) =
            desired.with_ids().partition(|(_, s)| s.id().is_some());
        let mut created = rc
            .versori()
            .create_system(&api::SystemCreate {
                name: desired.name.clone(),
                domain: self.spec.domain.clone(),
                template_base_url: self.spec.template_base_url.clone(),
                auth_scheme_configs: named.into_iter().map(|(_, s)| s.clone()).collect(),
                labels: self.spec.labels.clone(),
            })
            .await
            .map_err(Error::versori("creating the Versori system"))?;
        for (id, scheme) in memberless {
            let answer = rc
                .versori()
                .upsert_auth_scheme_at(&created.id, id, scheme)
                .await
                .map_err(Error::versori("adding an auth scheme"))?;
            created.auth_scheme_configs.push(answer);
        }
        Ok(created)
    }

    fn up_to_date(
        &self,
        desired: &DesiredSystem,
        observed: &api::System,
        status: &SystemStatus,
    ) -> bool {
        !self.settings_differ(desired, observed)
            && stale_schemes(desired, observed, status).is_empty()
            && removable_schemes(self.auth_schemes_policy(), desired, observed, status).is_empty()
    }

    async fn update(
        &self,
        rc: &Reconciling<'_, Self>,
        desired: &DesiredSystem,
        observed: api::System,
        status: &mut SystemStatus,
    ) -> Result<(api::System, String), Error> {
        let versori = rc.versori();
        let id = observed.id.clone();
        let mut changed = Vec::new();
        if self.settings_differ(desired, &observed) {
            versori
                .update_system(
                    &id,
                    &api::UpdateSystem {
                        name: Some(desired.name.clone()),
                        domain: Some(self.spec.domain.clone()),
                        template_base_url: Some(self.spec.template_base_url.clone()),
                    },
                )
                .await
                .map_err(Error::versori("updating the Versori system"))?;
            changed.push("name, domain or base URL".to_owned());
        }
        let upserted = stale_schemes(desired, &observed, status);
        let absent = absent_schemes(desired, &observed);
        for (scheme_id, scheme) in &upserted {
            // Versori keeps a scheme's client secret as a credential: naming the one it holds
            // updates it in place (and keeps a secret the spec does not name, such as one typed
            // into the Versori UI), where an upsert without it would store a new credential,
            // and drop the secret, every time.
            let scheme = with_held_credential(scheme, observed.auth_scheme_config(scheme_id));
            versori
                .upsert_auth_scheme_at(&id, scheme_id, &scheme)
                .await
                .map_err(Error::versori("updating an auth scheme"))?;
            if absent.contains(scheme_id)
                && !status
                    .created_auth_scheme_ids
                    .iter()
                    .any(|c| c == scheme_id)
            {
                status.created_auth_scheme_ids.push((*scheme_id).to_owned());
            }
        }
        let mut removed = Vec::new();
        for scheme_id in removable_schemes(self.auth_schemes_policy(), desired, &observed, status) {
            match versori.delete_auth_scheme(&id, &scheme_id).await {
                Ok(()) => {
                    status.created_auth_scheme_ids.retain(|c| *c != scheme_id);
                    removed.push(scheme_id);
                }
                Err(e) if e.is_not_found() => {}
                Err(e) if e.is_conflict() => {
                    return Err(Error::InUse(format!(
                        "auth scheme {scheme_id:?} was removed from the spec but a connection template still uses it: point the ProjectSystems that use it at another authSchemeConfigId"
                    )));
                }
                Err(e) => return Err(Error::versori("deleting an auth scheme")(e)),
            }
        }
        if !upserted.is_empty() || !removed.is_empty() {
            changed.push(format!(
                "auth schemes updated {:?}, removed {removed:?}",
                upserted.iter().map(|(id, _)| id).collect::<Vec<_>>()
            ));
        }
        Ok((observed, changed.join("; ")))
    }

    fn record(
        &self,
        desired: &DesiredSystem,
        observed: &api::System,
        status: &mut SystemStatus,
    ) -> String {
        if status.id.is_none() && self.spec.system_id.is_none() {
            // The first record after this resource made the system (a create, or an
            // interrupted one adopted): every scheme on it is its own.
            status.created_auth_scheme_ids = desired.scheme_ids.clone();
        }
        status.id = Some(observed.id.clone());
        status.auth_scheme_ids = desired.scheme_ids.clone();
        status.secret_hash = Some(desired.secret_hash.clone());
        format!("Versori system {:?} has ID {}", desired.name, observed.id)
    }

    async fn delete(&self, rc: &Reconciling<'_, Self>, id: &str) -> Result<(), Error> {
        match rc.versori().delete_system(id).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) if e.is_conflict() => Err(Error::InUse(
                "the Versori system is still linked to a project environment by a connection template: it is deleted once no ProjectSystem uses it".into(),
            )),
            Err(e) => Err(Error::versori("deleting the Versori system")(e)),
        }
    }
}

/// The desired schemes (with their IDs) that differ from what Versori holds, or whose secret
/// changed since it was last sent (Versori never returns it). A jwt-bearer or secret scheme
/// reads back as its type alone, without an ID: it counts as held while Versori holds at least
/// as many of that type as the spec asks for and status records its ID as sent.
fn stale_schemes<'d>(
    desired: &'d DesiredSystem,
    observed: &api::System,
    status: &SystemStatus,
) -> Vec<(&'d str, &'d api::AuthSchemeConfig)> {
    let secrets_changed = status.secret_hash.as_deref() != Some(desired.secret_hash.as_str());
    let memberless_held = |t: api::AuthSchemeType| {
        observed
            .auth_scheme_configs
            .iter()
            .filter(|o| o.type_ == t && o.id().is_none())
            .count()
    };
    let memberless_wanted = |t: api::AuthSchemeType| {
        desired
            .schemes
            .iter()
            .filter(|d| d.type_ == t && d.id().is_none())
            .count()
    };
    desired
        .with_ids()
        .filter(|(id, scheme)| {
            if scheme.id().is_none() {
                return memberless_held(scheme.type_) < memberless_wanted(scheme.type_)
                    || !status.auth_scheme_ids.iter().any(|s| s == id);
            }
            let current = observed.auth_scheme_config(id);
            current.is_none_or(|o| comparable(o) != comparable(scheme))
                || (secrets_changed && has_secret(scheme))
        })
        .collect()
}

/// The IDs of schemes Versori holds that the spec no longer lists: those read back with an ID,
/// and those status recorded as sent (a jwt-bearer or secret scheme reads back without one).
fn extra_schemes(
    desired: &DesiredSystem,
    observed: &api::System,
    status: &SystemStatus,
) -> Vec<String> {
    let mut extra: Vec<String> = observed
        .auth_scheme_configs
        .iter()
        .filter_map(|o| o.id())
        .chain(status.auth_scheme_ids.iter().map(String::as_str))
        .filter(|id| !desired.scheme_ids.iter().any(|d| d == id))
        .map(str::to_owned)
        .collect();
    extra.dedup();
    extra.sort();
    extra.dedup();
    extra
}

/// The schemes the policy lets the operator delete: under `Exclusive` every scheme the spec no
/// longer lists, under `Additive` only those among them this resource created.
fn removable_schemes(
    policy: AuthSchemesPolicy,
    desired: &DesiredSystem,
    observed: &api::System,
    status: &SystemStatus,
) -> Vec<String> {
    let mut extra = extra_schemes(desired, observed, status);
    if policy == AuthSchemesPolicy::Additive {
        extra.retain(|id| status.created_auth_scheme_ids.iter().any(|c| c == id));
    }
    extra
}

/// The desired schemes Versori does not hold at all (an upsert of them creates them). A
/// jwt-bearer or secret scheme reads back without an ID: it is absent while Versori holds fewer
/// of its type than the spec asks for.
fn absent_schemes<'d>(desired: &'d DesiredSystem, observed: &api::System) -> Vec<&'d str> {
    let mut absent = Vec::new();
    let mut memberless_seen: Vec<api::AuthSchemeType> = Vec::new();
    for (id, scheme) in desired.with_ids() {
        if scheme.id().is_some() {
            if observed.auth_scheme_config(id).is_none() {
                absent.push(id);
            }
            continue;
        }
        memberless_seen.push(scheme.type_);
        let wanted = memberless_seen
            .iter()
            .filter(|t| **t == scheme.type_)
            .count();
        let held = observed
            .auth_scheme_configs
            .iter()
            .filter(|o| o.type_ == scheme.type_ && o.id().is_none())
            .count();
        if held < wanted {
            absent.push(id);
        }
    }
    absent
}

/// The scheme to upsert, naming the credential Versori holds for the same grant (or oauth1
/// consumer), if any.
fn with_held_credential(
    scheme: &api::AuthSchemeConfig,
    held: Option<&api::AuthSchemeConfig>,
) -> api::AuthSchemeConfig {
    let mut scheme = scheme.clone();
    let Some(held) = held else { return scheme };
    if let (Some(want), Some(have)) = (scheme.oauth2.as_mut(), held.oauth2.as_ref()) {
        for (w, h) in [
            (
                want.grant.authorization_code.as_mut(),
                have.grant.authorization_code.as_ref(),
            ),
            (want.grant.password.as_mut(), have.grant.password.as_ref()),
        ] {
            if let (Some(w), Some(h)) = (w, h)
                && w.credential_id.is_none()
            {
                w.credential_id = h.credential_id.clone();
            }
        }
    }
    if let (Some(want), Some(have)) = (scheme.oauth1.as_mut(), held.oauth1.as_ref())
        && want.credential_id.is_none()
    {
        want.credential_id = have.credential_id.clone();
    }
    scheme
}

impl System {
    /// The auth schemes policy in force: the spec's, else `Additive` for an adopted system
    /// (its other schemes may be in use) and `Exclusive` for one the operator made.
    pub fn auth_schemes_policy(&self) -> AuthSchemesPolicy {
        self.spec
            .auth_schemes_policy
            .unwrap_or(if self.spec.system_id.is_some() {
                AuthSchemesPolicy::Additive
            } else {
                AuthSchemesPolicy::Exclusive
            })
    }

    fn settings_differ(&self, desired: &DesiredSystem, observed: &api::System) -> bool {
        observed.name != desired.name
            || observed.domain != self.spec.domain
            || observed.template_base_url != self.spec.template_base_url
    }

    /// The system's name in Versori.
    pub fn versori_name(&self) -> String {
        self.spec.name.clone().unwrap_or_else(|| self.name_any())
    }

    /// The Secrets the System reads.
    fn secret_names(&self) -> Vec<String> {
        self.spec
            .auth_schemes
            .iter()
            .filter_map(scheme_secret_ref)
            .map(|r| r.name.clone())
            .collect()
    }
}

fn has_secret(scheme: &api::AuthSchemeConfig) -> bool {
    scheme.oauth1.is_some()
        || scheme.oauth2.as_ref().is_some_and(|o| {
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
    ]
    .into_iter()
    .flatten()
    {
        simple.validation_messages = None;
    }
    if let Some(o) = scheme.oauth1.as_mut() {
        o.validation_messages = None;
        o.consumer_secret = Default::default();
        o.credential_id = None;
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
        let client_secret = match scheme_secret_ref(scheme) {
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

/// The Secret key a scheme reads its write-only secret from: an oauth2 grant's client secret
/// or an oauth1 consumer secret.
fn scheme_secret_ref(scheme: &AuthScheme) -> Option<&crate::resources::SecretKeyRef> {
    scheme
        .oauth2
        .as_ref()
        .and_then(|o| o.grant.client_secret_ref.as_ref())
        .or_else(|| scheme.oauth1.as_ref().map(|o| &o.consumer_secret_ref))
}

fn oauth1_endpoint(e: &OAuth1Endpoint) -> api::OAuth1Endpoint {
    api::OAuth1Endpoint {
        url: e.url.clone(),
        parameter_transmission: e.parameter_transmission.map(|t| match t {
            ParameterTransmission::AuthorizationHeader => {
                api::ParameterTransmission::AuthorizationHeader
            }
            ParameterTransmission::Form => api::ParameterTransmission::Form,
            ParameterTransmission::Query => api::ParameterTransmission::Query,
        }),
        additional_param_configs: None,
    }
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
        AuthSchemeType::JwtBearer => {
            api::AuthSchemeConfig::memberless(api::AuthSchemeType::JwtBearer)
        }
        AuthSchemeType::Secret => api::AuthSchemeConfig::memberless(api::AuthSchemeType::Secret),
        AuthSchemeType::OAuth1 => {
            let o = scheme.oauth1.as_ref();
            let mut out = api::OAuth1Scheme::new(
                id,
                description,
                o.map(|o| o.consumer_key.clone()).unwrap_or_default(),
                client_secret.unwrap_or_default(),
                match o.map(|o| o.signature_method) {
                    Some(OAuth1SignatureMethod::Sha1) => api::OAuth1SignatureMethod::Sha1,
                    _ => api::OAuth1SignatureMethod::Sha256,
                },
            );
            if let Some(o) = o {
                out.token_auth = o.token_auth;
                out.temp_credential_endpoint =
                    o.temp_credential_endpoint.as_ref().map(oauth1_endpoint);
                out.resource_owner_authorization_endpoint = o
                    .resource_owner_authorization_endpoint
                    .as_ref()
                    .map(oauth1_endpoint);
                out.token_endpoint = o.token_endpoint.as_ref().map(oauth1_endpoint);
            }
            api::AuthSchemeConfig::oauth1(out)
        }
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

/// The System controller: wakes on System changes, on changes to the Secrets they reference
/// (found through an index), and on ProjectSystem changes (a System waiting to be deleted
/// retries when the ProjectSystems using it go).
pub fn controller(
    watches: &Watches,
    ctx: Arc<Context>,
    shutdown: Shutdown,
) -> Result<impl Future<Output = ()> + Send + 'static, Error> {
    let store = watches.systems.store.clone();
    let by_secret = Arc::new(RefIndex::<System>::default());
    let follow = by_secret.follow(System::secret_names);
    let trigger = reconciler::own_changes(watches.systems.subscribe()?.inspect(follow));
    let live = store.clone();
    let deleting = store.clone();
    let users = store.clone();
    let controller = Controller::for_shared_stream(trigger, store)
        .with_config(Config::default().concurrency(ctx.concurrency))
        .watches_shared_stream(watches.secrets.subscribe()?, move |secret| {
            let key = RefIndex::<System>::key(
                &secret.namespace().unwrap_or_default(),
                &secret.name_any(),
            );
            by_secret
                .lookup(&key)
                .into_iter()
                .filter(|s| live.get(s).is_some())
                .collect::<Vec<_>>()
        })
        .watches_shared_stream(watches.project_systems.subscribe()?, move |ps| {
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
        })
        .watches_shared_stream(
            watches.configs.subscribe()?,
            users_of::<System, VersoriConfig>(users.clone()),
        )
        .watches_shared_stream(
            watches.cluster_configs.subscribe()?,
            users_of::<System, ClusterVersoriConfig>(users),
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
        });
    Ok(controller)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(schemes: Vec<(&str, api::AuthSchemeConfig)>) -> DesiredSystem {
        DesiredSystem {
            name: "s".into(),
            scheme_ids: schemes.iter().map(|(id, _)| (*id).to_owned()).collect(),
            schemes: schemes.into_iter().map(|(_, s)| s).collect(),
            secret_hash: "h".into(),
        }
    }

    fn observed(configs: Vec<api::AuthSchemeConfig>) -> api::System {
        api::System {
            id: "01KKBR46SH7JES8AZ14EEAK0CX".into(),
            name: "s".into(),
            domain: "d".into(),
            template_base_url: "https://a.example.com/".into(),
            auth_scheme_configs: configs,
        }
    }

    fn status(ids: &[&str]) -> SystemStatus {
        SystemStatus {
            auth_scheme_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
            secret_hash: Some("h".into()),
            ..SystemStatus::default()
        }
    }

    fn jwt() -> api::AuthSchemeConfig {
        api::AuthSchemeConfig::memberless(api::AuthSchemeType::JwtBearer)
    }

    fn secret() -> api::AuthSchemeConfig {
        api::AuthSchemeConfig::memberless(api::AuthSchemeType::Secret)
    }

    #[test]
    fn memberless_schemes_held_and_recorded_are_up_to_date() {
        let none = api::AuthSchemeConfig::none("n", "");
        let want = desired(vec![
            ("n", none.clone()),
            ("jwt", jwt()),
            ("vault", secret()),
        ]);
        let held = observed(vec![none, jwt(), secret()]);
        let recorded = status(&["n", "jwt", "vault"]);
        assert!(stale_schemes(&want, &held, &recorded).is_empty());
        assert!(extra_schemes(&want, &held, &recorded).is_empty());
    }

    #[test]
    fn a_missing_or_unrecorded_memberless_scheme_is_sent() {
        let want = desired(vec![("jwt", jwt()), ("vault", secret())]);
        // Versori lost the secret scheme: only that one is sent.
        let stale = stale_schemes(&want, &observed(vec![jwt()]), &status(&["jwt", "vault"]));
        assert_eq!(
            stale.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            ["vault"]
        );
        // Held, but status never recorded sending it (adopted, or a crash before the record).
        let stale = stale_schemes(&want, &observed(vec![jwt(), secret()]), &status(&["jwt"]));
        assert_eq!(
            stale.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            ["vault"]
        );
    }

    #[test]
    fn a_memberless_scheme_removed_from_the_spec_is_deleted_by_its_recorded_id() {
        let want = desired(vec![("jwt", jwt())]);
        let held = observed(vec![
            jwt(),
            secret(),
            api::AuthSchemeConfig::none("old", ""),
        ]);
        let extra = extra_schemes(&want, &held, &status(&["jwt", "vault"]));
        assert_eq!(extra, ["old", "vault"]);
    }
}
