//! An async client for the part of the Versori Platform API the operator uses.
//!
//! Every path is `/o/{org}/...` appended to the configured base URL, keeping the base URL's
//! own path prefix (e.g. `/api/v2`). Path segments are percent-encoded. Each call emits one
//! `tracing::debug!` (operation, method, route template, status, elapsed ms; never bodies)
//! and reports a [`CallRecord`] to the optional observer.

use backon::{BackoffBuilder, ExponentialBuilder};
use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use super::auth::{Auth, BreakerObserver};
use super::error::ApiError;
use super::models::{
    AuthSchemeConfig, Connection, ConnectionTemplate, ConnectionUpdate, EnvSystemConnectionCreate,
    ErrorBody, InitialiseOAuth1ConnectionRequest, InitialiseOAuth1ConnectionResponse,
    InitialiseOAuth2ConnectionRequest, InitialiseOAuth2ConnectionResponse, LinkSystem, Page,
    Project, System, SystemCreate, SystemPage, UpdateConnectionTemplate, UpdateSystem,
};
use super::secret::SecretValue;

/// The production API.
pub const DEFAULT_BASE_URL: &str = "https://platform.versori.com/api/v2";
/// Default whole-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound of the connect timeout (it is never longer than the request timeout).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Page size used when a method collects every page of a list.
pub const LIST_PAGE_SIZE: u32 = 100;
/// The longest `Retry-After` honoured; longer values are cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Safety stop for following `next` cursors.
const MAX_PAGES: usize = 10_000;
/// How much of a non-JSON error body is kept as the server message.
const MAX_FALLBACK_MESSAGE_BYTES: usize = 512;

/// How the token is presented in the `Authorization` header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum AuthHeaderScheme {
    /// `Authorization: Bearer <token>` (API keys of external consumers).
    #[default]
    Bearer,
    /// `Authorization: JWT <token>` (what the official CLI sends).
    Jwt,
}

impl AuthHeaderScheme {
    /// The header prefix: `Bearer` or `JWT`.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Bearer => "Bearer",
            Self::Jwt => "JWT",
        }
    }
}

/// What the observer learns about each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallRecord {
    /// The client method, e.g. `create_system` (one record per page for list methods).
    pub operation: &'static str,
    /// `GET`, `POST`, `PUT` or `DELETE`.
    pub method: &'static str,
    /// The route template, e.g. `/o/{org}/systems/{system_id}`.
    pub route: &'static str,
    /// The HTTP status, or `None` when no answer arrived (transport error, timeout).
    pub status: Option<u16>,
    /// Time from sending the request to having read the whole answer (or failing).
    pub elapsed: Duration,
}

/// A callback told about every request (e.g. to count calls in metrics).
pub type CallObserver = Arc<dyn Fn(&CallRecord) + Send + Sync>;

/// Settings of a [`VersoriClient`].
#[derive(Clone)]
pub struct ClientConfig {
    /// E.g. `https://platform.versori.com/api/v2` or `http://127.0.0.1:PORT`; paths are
    /// appended to it, keeping its path prefix.
    pub base_url: Url,
    /// The organisation ID (`/o/{org}`).
    pub organisation: String,
    /// The API key or JWT.
    pub token: SecretValue,
    pub auth_scheme: AuthHeaderScheme,
    /// Whole-request timeout.
    pub timeout: Duration,
    pub user_agent: String,
    /// Called after every request.
    pub observer: Option<CallObserver>,
    /// How many times a read (GET) that failed in passing is retried (default 0).
    pub read_retries: usize,
    /// The most requests in flight at once from this client and its clones (`None`: no cap).
    /// Callers beyond it wait for a slot, so a burst of reconciles cannot flood Versori.
    pub max_in_flight: Option<usize>,
    /// The file `token` was read from: re-read when it changes (see [`super::auth`]).
    pub token_file: Option<PathBuf>,
    /// Told when the 401 breaker opens and closes.
    pub breaker_observer: Option<BreakerObserver>,
}

impl ClientConfig {
    /// A configuration with the default scheme (Bearer), timeout, user agent and no observer.
    pub fn new(base_url: Url, organisation: impl Into<String>, token: SecretValue) -> Self {
        Self {
            base_url,
            organisation: organisation.into(),
            token,
            auth_scheme: AuthHeaderScheme::default(),
            timeout: DEFAULT_TIMEOUT,
            user_agent: default_user_agent(),
            observer: None,
            max_in_flight: None,
            read_retries: 0,
            token_file: None,
            breaker_observer: None,
        }
    }

    /// Re-reads the token from `path` when the file changes (`token` is its content now).
    pub fn with_token_file(mut self, path: PathBuf) -> Self {
        self.token_file = Some(path);
        self
    }

    /// Sets the breaker observer.
    pub fn with_breaker_observer(mut self, observer: BreakerObserver) -> Self {
        self.breaker_observer = Some(observer);
        self
    }

    /// Retries reads that failed in passing up to `retries` times.
    pub fn with_read_retries(mut self, retries: usize) -> Self {
        self.read_retries = retries;
        self
    }

    /// Caps the requests in flight at once.
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = Some(max.max(1));
        self
    }

    /// Sets the observer.
    pub fn with_observer(mut self, observer: CallObserver) -> Self {
        self.observer = Some(observer);
        self
    }
}

/// `versori-operator/<version>`.
pub fn default_user_agent() -> String {
    concat!(env!("CARGO_PKG_NAME"), "/", env!("CARGO_PKG_VERSION")).to_owned()
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url.as_str())
            .field("organisation", &self.organisation)
            .field("token", &self.token)
            .field("auth_scheme", &self.auth_scheme)
            .field("timeout", &self.timeout)
            .field("user_agent", &self.user_agent)
            .field("observer", &self.observer.as_ref().map(|_| "<fn>"))
            .field("max_in_flight", &self.max_in_flight)
            .field("read_retries", &self.read_retries)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    Post,
    Put,
    Delete,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
        }
    }

    fn method(self) -> reqwest::Method {
        match self {
            Self::Get => reqwest::Method::GET,
            Self::Post => reqwest::Method::POST,
            Self::Put => reqwest::Method::PUT,
            Self::Delete => reqwest::Method::DELETE,
        }
    }
}

/// One operation of the contract's table.
#[derive(Debug, Clone, Copy)]
struct Op {
    name: &'static str,
    verb: Verb,
    route: &'static str,
}

const fn op(name: &'static str, verb: Verb, route: &'static str) -> Op {
    Op { name, verb, route }
}

const GET_PROJECT: Op = op("get_project", Verb::Get, "/o/{org}/projects/{project_id}");
const CREATE_SYSTEM: Op = op("create_system", Verb::Post, "/o/{org}/systems");
const LIST_SYSTEMS: Op = op("list_systems", Verb::Get, "/o/{org}/systems");
const GET_SYSTEM: Op = op("get_system", Verb::Get, "/o/{org}/systems/{system_id}");
const UPDATE_SYSTEM: Op = op("update_system", Verb::Put, "/o/{org}/systems/{system_id}");
const DELETE_SYSTEM: Op = op(
    "delete_system",
    Verb::Delete,
    "/o/{org}/systems/{system_id}",
);
const UPSERT_AUTH_SCHEME: Op = op(
    "upsert_auth_scheme",
    Verb::Put,
    "/o/{org}/systems/{system_id}/auth-scheme-configs/{auth_scheme_config_id}",
);
const DELETE_AUTH_SCHEME: Op = op(
    "delete_auth_scheme",
    Verb::Delete,
    "/o/{org}/systems/{system_id}/auth-scheme-configs/{auth_scheme_config_id}",
);
const LINK_SYSTEM: Op = op(
    "link_system",
    Verb::Post,
    "/o/{org}/projects/{project_id}/connection-templates",
);
const LIST_CONNECTION_TEMPLATES: Op = op(
    "list_connection_templates",
    Verb::Get,
    "/o/{org}/projects/{project_id}/connection-templates",
);
const UPDATE_CONNECTION_TEMPLATE: Op = op(
    "update_connection_template",
    Verb::Put,
    "/o/{org}/projects/{project_id}/connection-templates/{template_id}",
);
const DELETE_CONNECTION_TEMPLATE: Op = op(
    "delete_connection_template",
    Verb::Delete,
    "/o/{org}/projects/{project_id}/connection-templates/{template_id}",
);
const CREATE_CONNECTION: Op = op("create_connection", Verb::Post, "/o/{org}/connections");
const LIST_CONNECTIONS: Op = op("list_connections", Verb::Get, "/o/{org}/connections");
const LIST_PROJECT_CONNECTIONS: Op = op(
    "list_project_connections",
    Verb::Get,
    "/o/{org}/projects/{project_id}/connections",
);
const GET_CONNECTION: Op = op(
    "get_connection",
    Verb::Get,
    "/o/{org}/connections/{connection_id}",
);
const UPDATE_CONNECTION: Op = op(
    "update_connection",
    Verb::Put,
    "/o/{org}/connections/{connection_id}",
);
const DELETE_CONNECTION: Op = op(
    "delete_connection",
    Verb::Delete,
    "/o/{org}/connections/{connection_id}",
);
const INITIALISE_OAUTH2: Op = op(
    "initialise_oauth2",
    Verb::Post,
    "/o/{org}/systems/{system_id}/oauth2/initialise",
);
const INITIALISE_OAUTH1: Op = op(
    "initialise_oauth1",
    Verb::Post,
    "/o/{org}/systems/{system_id}/oauth1/initialise",
);

struct Inner {
    base_url: Url,
    organisation: String,
    observer: Option<CallObserver>,
    limit: Option<tokio::sync::Semaphore>,
    read_retries: usize,
    auth: Auth,
    /// What [`VersoriClient::sibling`] copies.
    auth_scheme: AuthHeaderScheme,
    timeout: Duration,
    user_agent: String,
    max_in_flight: Option<usize>,
}

/// A client of the Versori Platform API. Cheap to clone (shares its connection pool).
#[derive(Clone)]
pub struct VersoriClient {
    http: reqwest::Client,
    inner: Arc<Inner>,
}

impl fmt::Debug for VersoriClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VersoriClient")
            .field("base_url", &self.inner.base_url.as_str())
            .field("organisation", &self.inner.organisation)
            .finish_non_exhaustive()
    }
}

/// A 2xx answer.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl VersoriClient {
    /// Builds a client. Fails with [`ApiError::InvalidConfig`] when the base URL is not an
    /// absolute http(s) URL, the organisation or token is empty, the token cannot go in a
    /// header, or the timeout is zero.
    pub fn new(config: ClientConfig) -> Result<Self, ApiError> {
        let ClientConfig {
            mut base_url,
            organisation,
            token,
            auth_scheme,
            timeout,
            user_agent,
            observer,
            max_in_flight,
            read_retries,
            token_file,
            breaker_observer,
        } = config;

        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(ApiError::InvalidConfig(format!(
                "base URL scheme must be http or https, not {:?}",
                base_url.scheme()
            )));
        }
        if base_url.cannot_be_a_base() || base_url.host().is_none() {
            return Err(ApiError::InvalidConfig(
                "base URL must be an absolute URL with a host".to_owned(),
            ));
        }
        base_url.set_query(None);
        base_url.set_fragment(None);
        check_segment("organisation", &organisation)?;
        if token.is_empty() {
            return Err(ApiError::InvalidConfig("the API token is empty".to_owned()));
        }
        if timeout.is_zero() {
            return Err(ApiError::InvalidConfig(
                "the request timeout must be positive".to_owned(),
            ));
        }

        let auth = Auth::new(auth_scheme, &token, token_file, breaker_observer)?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));

        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(user_agent.clone())
            .timeout(timeout)
            .connect_timeout(timeout.min(DEFAULT_CONNECT_TIMEOUT))
            // Never carry the token anywhere the configuration did not name.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                ApiError::InvalidConfig(format!(
                    "could not build the HTTP client: {}",
                    e.without_url()
                ))
            })?;

        Ok(Self {
            http,
            inner: Arc::new(Inner {
                base_url,
                organisation,
                observer,
                limit: max_in_flight.map(|n| tokio::sync::Semaphore::new(n.max(1))),
                read_retries,
                auth,
                auth_scheme,
                timeout,
                user_agent,
                max_in_flight,
            }),
        })
    }

    /// A client of another organisation (or URL, or token) with this one's settings and
    /// observer, but its own connection pool, cap on requests in flight and 401 breaker: one
    /// organisation refusing its token or failing does not slow the others.
    pub fn sibling(
        &self,
        base_url: Url,
        organisation: &str,
        token: SecretValue,
    ) -> Result<Self, ApiError> {
        let inner = &self.inner;
        let mut config = ClientConfig::new(base_url, organisation, token);
        config.auth_scheme = inner.auth_scheme;
        config.timeout = inner.timeout;
        config.user_agent = inner.user_agent.clone();
        config.observer = inner.observer.clone();
        config.max_in_flight = inner.max_in_flight;
        config.read_retries = inner.read_retries;
        Self::new(config)
    }

    /// The base URL calls go to.
    pub fn base_url(&self) -> &Url {
        &self.inner.base_url
    }

    /// The cheapest authenticated call: one system of the organisation. Succeeds when the
    /// organisation exists and takes the token.
    pub async fn check_access(&self) -> Result<(), ApiError> {
        self.list_systems_page(Some(1), None, None)
            .await
            .map(|_| ())
    }

    /// The organisation this client acts in.
    pub fn organisation(&self) -> &str {
        &self.inner.organisation
    }

    /// Whether Versori refuses the API token right now (the 401 breaker is open).
    pub fn token_refused(&self) -> bool {
        self.inner.auth.token_refused()
    }

    // -----------------------------------------------------------------------------------------
    // Projects
    // -----------------------------------------------------------------------------------------

    /// `GET /o/{org}/projects/{project_id}`.
    pub async fn get_project(&self, project_id: &str) -> Result<Project, ApiError> {
        check_segment("project ID", project_id)?;
        self.call_json(GET_PROJECT, &["projects", project_id], &[], None::<&()>)
            .await
    }

    // -----------------------------------------------------------------------------------------
    // Systems
    // -----------------------------------------------------------------------------------------

    /// `POST /o/{org}/systems` (201).
    pub async fn create_system(&self, body: &SystemCreate) -> Result<System, ApiError> {
        self.call_json(CREATE_SYSTEM, &["systems"], &[], Some(body))
            .await
    }

    /// Every system (following `next`), optionally filtered by `search`.
    pub async fn list_systems(&self, search: Option<&str>) -> Result<Vec<System>, ApiError> {
        let filters = optional_pairs(&[("search", search)]);
        self.fetch_all(LIST_SYSTEMS, &["systems"], &filters).await
    }

    /// One page of `GET /o/{org}/systems?first&after&search`.
    pub async fn list_systems_page(
        &self,
        first: Option<u32>,
        after: Option<&str>,
        search: Option<&str>,
    ) -> Result<SystemPage, ApiError> {
        let filters = optional_pairs(&[("search", search)]);
        self.fetch_page(LIST_SYSTEMS, &["systems"], &filters, first, after)
            .await
    }

    /// `GET /o/{org}/systems/{system_id}`.
    pub async fn get_system(&self, system_id: &str) -> Result<System, ApiError> {
        check_segment("system ID", system_id)?;
        self.call_json(GET_SYSTEM, &["systems", system_id], &[], None::<&()>)
            .await
    }

    /// `PUT /o/{org}/systems/{system_id}` (201).
    pub async fn update_system(
        &self,
        system_id: &str,
        body: &UpdateSystem,
    ) -> Result<System, ApiError> {
        check_segment("system ID", system_id)?;
        self.call_json(UPDATE_SYSTEM, &["systems", system_id], &[], Some(body))
            .await
    }

    /// `DELETE /o/{org}/systems/{system_id}` (204).
    pub async fn delete_system(&self, system_id: &str) -> Result<(), ApiError> {
        check_segment("system ID", system_id)?;
        self.call_empty(DELETE_SYSTEM, &["systems", system_id], None::<&()>)
            .await
    }

    /// `PUT /o/{org}/systems/{system_id}/auth-scheme-configs/{id}` (201), the ID taken
    /// from the config's member (it must be set and non-empty).
    pub async fn upsert_auth_scheme(
        &self,
        system_id: &str,
        config: &AuthSchemeConfig,
    ) -> Result<AuthSchemeConfig, ApiError> {
        check_segment("system ID", system_id)?;
        let config_id = config.id().ok_or_else(|| {
            ApiError::InvalidConfig(format!(
                "the auth scheme config of type {} has no {:?} member to take its ID from",
                config.type_,
                config.type_.as_str()
            ))
        })?;
        self.upsert_auth_scheme_at(system_id, config_id, config)
            .await
    }

    /// `PUT .../auth-scheme-configs/{config_id}` with the ID given: for the types without a
    /// member (`jwt-bearer`, `secret`), whose body carries no ID, the path is what names them.
    pub async fn upsert_auth_scheme_at(
        &self,
        system_id: &str,
        config_id: &str,
        config: &AuthSchemeConfig,
    ) -> Result<AuthSchemeConfig, ApiError> {
        check_segment("system ID", system_id)?;
        check_segment("auth scheme config ID", config_id)?;
        self.call_json(
            UPSERT_AUTH_SCHEME,
            &["systems", system_id, "auth-scheme-configs", config_id],
            &[],
            Some(config),
        )
        .await
    }

    /// `DELETE /o/{org}/systems/{system_id}/auth-scheme-configs/{config_id}` (204).
    pub async fn delete_auth_scheme(
        &self,
        system_id: &str,
        config_id: &str,
    ) -> Result<(), ApiError> {
        check_segment("system ID", system_id)?;
        check_segment("auth scheme config ID", config_id)?;
        self.call_empty(
            DELETE_AUTH_SCHEME,
            &["systems", system_id, "auth-scheme-configs", config_id],
            None::<&()>,
        )
        .await
    }

    /// `POST /o/{org}/systems/{system_id}/oauth2/initialise`.
    pub async fn initialise_oauth2(
        &self,
        system_id: &str,
        request: &InitialiseOAuth2ConnectionRequest,
    ) -> Result<InitialiseOAuth2ConnectionResponse, ApiError> {
        check_segment("system ID", system_id)?;
        self.call_json(
            INITIALISE_OAUTH2,
            &["systems", system_id, "oauth2", "initialise"],
            &[],
            Some(request),
        )
        .await
    }

    /// `POST /o/{org}/systems/{system_id}/oauth1/initialise`.
    pub async fn initialise_oauth1(
        &self,
        system_id: &str,
        request: &InitialiseOAuth1ConnectionRequest,
    ) -> Result<InitialiseOAuth1ConnectionResponse, ApiError> {
        check_segment("system ID", system_id)?;
        self.call_json(
            INITIALISE_OAUTH1,
            &["systems", system_id, "oauth1", "initialise"],
            &[],
            Some(request),
        )
        .await
    }

    // -----------------------------------------------------------------------------------------
    // Connection templates
    // -----------------------------------------------------------------------------------------

    /// `POST /o/{org}/projects/{project_id}/connection-templates` (200).
    pub async fn link_system(
        &self,
        project_id: &str,
        body: &LinkSystem,
    ) -> Result<ConnectionTemplate, ApiError> {
        check_segment("project ID", project_id)?;
        self.call_json(
            LINK_SYSTEM,
            &["projects", project_id, "connection-templates"],
            &[],
            Some(body),
        )
        .await
    }

    /// Every connection template of a project environment: one answer, no paging parameters
    /// (the API takes none here and answers everything in one page).
    pub async fn list_connection_templates(
        &self,
        project_id: &str,
        env_id: &str,
    ) -> Result<Vec<ConnectionTemplate>, ApiError> {
        check_segment("project ID", project_id)?;
        self.fetch_whole(
            LIST_CONNECTION_TEMPLATES,
            &["projects", project_id, "connection-templates"],
            &[("env_id", env_id)],
        )
        .await
    }

    /// `PUT /o/{org}/projects/{project_id}/connection-templates/{template_id}` (200).
    pub async fn update_connection_template(
        &self,
        project_id: &str,
        template_id: &str,
        body: &UpdateConnectionTemplate,
    ) -> Result<ConnectionTemplate, ApiError> {
        check_segment("project ID", project_id)?;
        check_segment("connection template ID", template_id)?;
        self.call_json(
            UPDATE_CONNECTION_TEMPLATE,
            &["projects", project_id, "connection-templates", template_id],
            &[],
            Some(body),
        )
        .await
    }

    /// `DELETE /o/{org}/projects/{project_id}/connection-templates/{template_id}` (204).
    pub async fn delete_connection_template(
        &self,
        project_id: &str,
        template_id: &str,
    ) -> Result<(), ApiError> {
        check_segment("project ID", project_id)?;
        check_segment("connection template ID", template_id)?;
        self.call_empty(
            DELETE_CONNECTION_TEMPLATE,
            &["projects", project_id, "connection-templates", template_id],
            None::<&()>,
        )
        .await
    }

    // -----------------------------------------------------------------------------------------
    // Connections
    // -----------------------------------------------------------------------------------------

    /// `POST /o/{org}/connections` (201).
    pub async fn create_connection(
        &self,
        body: &EnvSystemConnectionCreate,
    ) -> Result<Connection, ApiError> {
        self.call_json(CREATE_CONNECTION, &["connections"], &[], Some(body))
            .await
    }

    /// Every connection (following `next`), optionally filtered by system and end user.
    pub async fn list_connections(
        &self,
        system_id: Option<&str>,
        end_user_id: Option<&str>,
    ) -> Result<Vec<Connection>, ApiError> {
        let filters = optional_pairs(&[("system_id", system_id), ("end_user_id", end_user_id)]);
        self.fetch_all(LIST_CONNECTIONS, &["connections"], &filters)
            .await
    }

    /// Every static connection of a project environment: one answer, no paging parameters
    /// (the API takes none here and answers everything in one page).
    pub async fn list_project_connections(
        &self,
        project_id: &str,
        env_id: &str,
    ) -> Result<Vec<Connection>, ApiError> {
        check_segment("project ID", project_id)?;
        self.fetch_whole(
            LIST_PROJECT_CONNECTIONS,
            &["projects", project_id, "connections"],
            &[("env_id", env_id)],
        )
        .await
    }

    /// `GET /o/{org}/connections/{connection_id}`.
    pub async fn get_connection(&self, connection_id: &str) -> Result<Connection, ApiError> {
        check_segment("connection ID", connection_id)?;
        self.call_json(
            GET_CONNECTION,
            &["connections", connection_id],
            &[],
            None::<&()>,
        )
        .await
    }

    /// `PUT /o/{org}/connections/{connection_id}` (200).
    pub async fn update_connection(
        &self,
        connection_id: &str,
        body: &ConnectionUpdate,
    ) -> Result<Connection, ApiError> {
        check_segment("connection ID", connection_id)?;
        self.call_json(
            UPDATE_CONNECTION,
            &["connections", connection_id],
            &[],
            Some(body),
        )
        .await
    }

    /// `DELETE /o/{org}/connections/{connection_id}` (204).
    pub async fn delete_connection(&self, connection_id: &str) -> Result<(), ApiError> {
        check_segment("connection ID", connection_id)?;
        self.call_empty(
            DELETE_CONNECTION,
            &["connections", connection_id],
            None::<&()>,
        )
        .await
    }

    // -----------------------------------------------------------------------------------------
    // Plumbing
    // -----------------------------------------------------------------------------------------

    /// `{base}/o/{org}/{segments...}?{query}`, each segment percent-encoded.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<Url, ApiError> {
        build_url(
            &self.inner.base_url,
            &self.inner.organisation,
            segments,
            query,
        )
    }

    async fn fetch_page<T: DeserializeOwned>(
        &self,
        op: Op,
        segments: &[&str],
        filters: &[(&str, &str)],
        first: Option<u32>,
        after: Option<&str>,
    ) -> Result<Page<T>, ApiError> {
        let first = first.map(|n| n.to_string());
        let mut query: Vec<(&str, &str)> = filters.to_vec();
        if let Some(first) = first.as_deref() {
            query.push(("first", first));
        }
        if let Some(after) = after {
            query.push(("after", after));
        }
        self.call_json(op, segments, &query, None::<&()>).await
    }

    /// A list call that takes no paging parameters: its one answer holds every item. A `next`
    /// in it would mean items this client cannot ask for, so it is an error, not a silent cut.
    async fn fetch_whole<T: DeserializeOwned>(
        &self,
        op: Op,
        segments: &[&str],
        filters: &[(&str, &str)],
    ) -> Result<Vec<T>, ApiError> {
        let page: Page<T> = self.fetch_page(op, segments, filters, None, None).await?;
        if page.next_cursor().is_some() {
            return Err(ApiError::Decode {
                operation: op.name,
                status: 200,
                reason: "the API paged a list that takes no paging parameters".to_owned(),
            });
        }
        Ok(page.items)
    }

    async fn fetch_all<T: DeserializeOwned>(
        &self,
        op: Op,
        segments: &[&str],
        filters: &[(&str, &str)],
    ) -> Result<Vec<T>, ApiError> {
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        let mut seen = HashSet::new();
        for _ in 0..MAX_PAGES {
            let page: Page<T> = self
                .fetch_page(
                    op,
                    segments,
                    filters,
                    Some(LIST_PAGE_SIZE),
                    after.as_deref(),
                )
                .await?;
            let next = page.next_cursor().map(str::to_owned);
            items.extend(page.items);
            match next {
                None => return Ok(items),
                Some(cursor) => {
                    if !seen.insert(cursor.clone()) {
                        return Err(ApiError::Decode {
                            operation: op.name,
                            status: 200,
                            reason: "the API returned a pagination cursor it had returned before"
                                .to_owned(),
                        });
                    }
                    after = Some(cursor);
                }
            }
        }
        Err(ApiError::Decode {
            operation: op.name,
            status: 200,
            reason: format!("more than {MAX_PAGES} pages"),
        })
    }

    async fn call_json<B, T>(
        &self,
        op: Op,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&B>,
    ) -> Result<T, ApiError>
    where
        B: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        let answer = self.execute(op, segments, query, body).await?;
        decode(op, answer.status, &answer.body)
    }

    async fn call_empty<B>(
        &self,
        op: Op,
        segments: &[&str],
        body: Option<&B>,
    ) -> Result<(), ApiError>
    where
        B: Serialize + ?Sized,
    {
        self.execute(op, segments, &[], body).await.map(|_| ())
    }

    /// Sends a request, retrying a read (GET) that failed in passing (5xx, 429, timeout,
    /// transport) up to `read_retries` times after a short jittered backoff, or after
    /// `Retry-After` when that is at most two seconds. Writes are never retried here: a write
    /// whose answer was lost may have been committed, and only the caller can check.
    async fn execute<B>(
        &self,
        op: Op,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&B>,
    ) -> Result<Answer, ApiError>
    where
        B: Serialize + ?Sized,
    {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(1))
            .with_max_times(self.inner.read_retries)
            .with_jitter()
            .build();
        loop {
            match self.execute_once(op, segments, query, body).await {
                Err(error) if op.verb == Verb::Get && error.is_retryable() => {
                    let Some(delay) = delays.next() else {
                        return Err(error);
                    };
                    let delay = error
                        .retry_after()
                        .filter(|r| *r <= Duration::from_secs(2))
                        .unwrap_or(delay);
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// Sends one request and reads the whole answer; non-2xx answers become `ApiError::Api`.
    async fn execute_once<B>(
        &self,
        op: Op,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&B>,
    ) -> Result<Answer, ApiError>
    where
        B: Serialize + ?Sized,
    {
        let url = self.url(segments, query)?;
        let mut request = self.http.request(op.verb.method(), url);
        if let Some(body) = body {
            let bytes = serde_json::to_vec(body).map_err(|e| ApiError::Encode {
                operation: op.name,
                reason: e.to_string(),
            })?;
            request = request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(bytes);
        }

        // Held until the whole answer is read; the semaphore is never closed.
        let _slot = match &self.inner.limit {
            Some(limit) => limit.acquire().await.ok(),
            None => None,
        };
        // After the slot: a call queued behind others sees a breaker they opened.
        let admitted = self.inner.auth.admit()?;
        request = request.header(AUTHORIZATION, admitted.header);
        let started = Instant::now();
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                self.inner.auth.record(None, admitted.probe);
                self.record(op, None, started.elapsed());
                return Err(err.into());
            }
        };
        let status = response.status().as_u16();
        self.inner.auth.record(Some(status), admitted.probe);
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await;
        self.record(op, Some(status), started.elapsed());
        let body: Vec<u8> = body?.into();

        if (200..300).contains(&status) {
            Ok(Answer { status, body })
        } else {
            Err(api_error(status, retry_after.as_deref(), &body))
        }
    }

    fn record(&self, op: Op, status: Option<u16>, elapsed: Duration) {
        let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        tracing::debug!(
            operation = op.name,
            method = op.verb.as_str(),
            route = op.route,
            status,
            elapsed_ms,
            "Versori API call"
        );
        if let Some(observer) = &self.inner.observer {
            observer(&CallRecord {
                operation: op.name,
                method: op.verb.as_str(),
                route: op.route,
                status,
                elapsed,
            });
        }
    }
}

/// Rejects IDs that would not make exactly one path segment.
fn check_segment(what: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value == "." || value == ".." {
        Err(ApiError::InvalidConfig(format!(
            "the {what} must not be empty, \".\" or \"..\""
        )))
    } else {
        Ok(())
    }
}

/// The `(name, value)` pairs whose value is set.
fn optional_pairs<'a>(pairs: &[(&'a str, Option<&'a str>)]) -> Vec<(&'a str, &'a str)> {
    pairs
        .iter()
        .filter_map(|(name, value)| value.map(|v| (*name, v)))
        .collect()
}

fn build_url(
    base: &Url,
    organisation: &str,
    segments: &[&str],
    query: &[(&str, &str)],
) -> Result<Url, ApiError> {
    let mut url = base.clone();
    {
        let mut path = url
            .path_segments_mut()
            .map_err(|()| ApiError::InvalidConfig("the base URL cannot take a path".to_owned()))?;
        path.pop_if_empty()
            .push("o")
            .push(organisation)
            .extend(segments);
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url)
}

/// Parses `Retry-After` given in seconds; capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// The error for a non-2xx answer. A body that is not an `Error` object still gives an
/// `Api` error (empty code, message = the start of the body).
fn api_error(status: u16, retry_after: Option<&str>, body: &[u8]) -> ApiError {
    let retry_after = if status == 429 || status == 503 {
        retry_after.and_then(parse_retry_after)
    } else {
        None
    };
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(error) => ApiError::Api {
            status,
            code: error.code,
            message: error.message,
            fields: error.fields.unwrap_or_default(),
            retry_after,
        },
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let mut end = text.len().min(MAX_FALLBACK_MESSAGE_BYTES);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            ApiError::Api {
                status,
                code: String::new(),
                message: text[..end].trim().to_owned(),
                fields: Vec::new(),
                retry_after,
            }
        }
    }
}

/// Decodes a 2xx body. The error keeps only the kind and position of the problem (never a
/// fragment of the body); the full decoder message goes to the debug log.
fn decode<T: DeserializeOwned>(op: Op, status: u16, body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|err| {
        tracing::debug!(operation = op.name, status, error = %err, "could not decode Versori API answer");
        let kind = match err.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "JSON of an unexpected shape",
            serde_json::error::Category::Eof => "empty or truncated body",
        };
        ApiError::Decode {
            operation: op.name,
            status,
            reason: format!("{kind} at line {} column {}", err.line(), err.column()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versori::models::{
        ApiKeyLocation, ConnectionCreate, ConnectionCredential, Credential, FieldError,
    };
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const TOKEN: &str = "tok-canary-91ab";

    fn config(base: &str) -> ClientConfig {
        ClientConfig::new(
            Url::parse(base).expect("url"),
            "org-1",
            SecretValue::from(TOKEN),
        )
    }

    #[test]
    fn url_keeps_the_base_path_prefix() {
        for base in [
            "https://platform.versori.com/api/v2",
            "https://platform.versori.com/api/v2/",
        ] {
            let url = build_url(
                &Url::parse(base).expect("url"),
                "org-1",
                &["systems", "01HZ"],
                &[],
            )
            .expect("build");
            assert_eq!(
                url.as_str(),
                "https://platform.versori.com/api/v2/o/org-1/systems/01HZ"
            );
        }
        let url = build_url(
            &Url::parse("http://127.0.0.1:8080").expect("url"),
            "org",
            &["connections"],
            &[("system_id", "s 1"), ("first", "100"), ("after", "a&b=c")],
        )
        .expect("build");
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8080/o/org/connections?system_id=s+1&first=100&after=a%26b%3Dc"
        );
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        let url = build_url(
            &Url::parse("https://h/api/v2").expect("url"),
            "my org",
            &["systems", "a/b?c#d", "auth-scheme-configs", "50%"],
            &[],
        )
        .expect("build");
        assert_eq!(
            url.path(),
            "/api/v2/o/my%20org/systems/a%2Fb%3Fc%23d/auth-scheme-configs/50%25"
        );
        assert_eq!(url.query(), None);
        assert!(check_segment("x", "").is_err());
        assert!(check_segment("x", "..").is_err());
        assert!(check_segment("x", "ok").is_ok());
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("99999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn error_bodies_become_api_errors() {
        let body = br#"{"code":"conflict","message":"secret-ish server text","fields":[{"field":"name","message":"taken"}]}"#;
        let err = api_error(409, Some("5"), body);
        assert!(err.is_conflict());
        assert_eq!(err.retry_after(), None, "Retry-After only read on 429/503");
        assert_eq!(
            err.fields()[0],
            FieldError {
                field: "name".into(),
                message: "taken".into()
            }
        );
        assert_eq!(
            err.to_string(),
            r#"Versori API returned 409 (code "conflict") for fields [name]"#
        );
        assert!(!err.to_string().contains("secret-ish"));
        assert_eq!(err.server_message(), Some("secret-ish server text"));

        let err = api_error(
            429,
            Some("12"),
            br#"{"code":"rate_limited","message":"slow down"}"#,
        );
        assert_eq!(err.retry_after(), Some(Duration::from_secs(12)));
        assert!(err.is_retryable());

        let err = api_error(502, None, b"<html>Bad gateway</html>");
        assert_eq!(err.to_string(), "Versori API returned 502");
        assert_eq!(err.server_message(), Some("<html>Bad gateway</html>"));
        let long = "é".repeat(600);
        let err = api_error(500, None, long.as_bytes());
        assert!(
            err.server_message()
                .is_some_and(|m| m.len() <= MAX_FALLBACK_MESSAGE_BYTES)
        );
    }

    #[test]
    fn config_and_client_debug_hide_the_token() {
        let cfg = config("https://platform.versori.com/api/v2")
            .with_observer(Arc::new(|_: &CallRecord| {}));
        let debug = format!("{cfg:?}");
        assert!(!debug.contains(TOKEN), "{debug}");
        assert!(debug.contains("<redacted>"));
        let client = VersoriClient::new(cfg).expect("client");
        assert!(!format!("{client:?}").contains(TOKEN));
    }

    #[test]
    fn invalid_configs_are_refused() {
        let mut cfg = config("https://platform.versori.com/api/v2");
        cfg.organisation = String::new();
        assert!(matches!(
            VersoriClient::new(cfg),
            Err(ApiError::InvalidConfig(_))
        ));
        let mut cfg = config("https://platform.versori.com/api/v2");
        cfg.token = SecretValue::from("bad\ntoken");
        let err = VersoriClient::new(cfg).expect_err("bad token");
        assert!(!err.to_string().contains("bad\ntoken"));
        assert!(VersoriClient::new(config("ftp://x/api")).is_err());
        assert!(VersoriClient::new(config("mailto:a@b")).is_err());
        let mut cfg = config("http://127.0.0.1:1");
        cfg.timeout = Duration::ZERO;
        assert!(VersoriClient::new(cfg).is_err());
    }

    #[test]
    fn decode_errors_do_not_quote_the_body() {
        let err = decode::<Project>(GET_PROJECT, 200, br#"{"id": "p", "name": 5}"#)
            .expect_err("bad shape");
        assert!(matches!(err, ApiError::Decode { status: 200, .. }));
        assert!(err.to_string().contains("get_project"));
        assert!(decode::<Project>(GET_PROJECT, 200, b"").is_err());
    }

    // A tiny HTTP/1.1 server: answers each accepted connection with the next canned answer
    // and records the raw requests.
    struct Canned {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    }

    fn canned(status: u16, body: impl Into<String>) -> Canned {
        Canned {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    async fn serve(answers: Vec<Canned>) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handle = tokio::spawn(async move {
            let mut requests = Vec::new();
            for answer in answers {
                let (mut socket, _) = listener.accept().await.expect("accept");
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let n = socket.read(&mut chunk).await.expect("read");
                    assert!(n > 0, "client closed early");
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break pos + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().expect("length"))
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    let n = socket.read(&mut chunk).await.expect("read body");
                    assert!(n > 0);
                    buf.extend_from_slice(&chunk[..n]);
                }
                requests.push(String::from_utf8_lossy(&buf).into_owned());
                let mut response = format!(
                    "HTTP/1.1 {} X\r\nconnection: close\r\ncontent-length: {}\r\n",
                    answer.status,
                    answer.body.len()
                );
                if !answer.body.is_empty() {
                    response.push_str("content-type: application/json\r\n");
                }
                for (name, value) in &answer.headers {
                    response.push_str(&format!("{name}: {value}\r\n"));
                }
                response.push_str("\r\n");
                response.push_str(&answer.body);
                socket.write_all(response.as_bytes()).await.expect("write");
                socket.shutdown().await.ok();
            }
            requests
        });
        (format!("http://{addr}/api/v2"), handle)
    }

    fn recorder() -> (CallObserver, Arc<Mutex<Vec<CallRecord>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&calls);
        let observer: CallObserver = Arc::new(move |record: &CallRecord| {
            sink.lock().expect("lock").push(*record);
        });
        (observer, calls)
    }

    #[tokio::test]
    async fn sends_auth_accept_and_encoded_path() {
        let (base, server) = serve(vec![canned(
            200,
            r#"{"id":"p/1","name":"proj","environments":[{"id":"e1","name":"production","status":"running"}],"extra":1}"#,
        )])
        .await;
        let (observer, calls) = recorder();
        let client = VersoriClient::new(config(&base).with_observer(observer)).expect("client");
        let project = client.get_project("p/1").await.expect("project");
        assert_eq!(project.environments[0].name, "production");
        let requests = server.await.expect("server");
        let request = &requests[0];
        assert!(
            request.starts_with("GET /api/v2/o/org-1/projects/p%2F1 HTTP/1.1\r\n"),
            "{request}"
        );
        let lower = request.to_lowercase();
        assert!(lower.contains(&format!("authorization: bearer {TOKEN}")));
        assert!(lower.contains("accept: application/json"));
        let calls = calls.lock().expect("lock").clone();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].operation, "get_project");
        assert_eq!(calls[0].method, "GET");
        assert_eq!(calls[0].route, "/o/{org}/projects/{project_id}");
        assert_eq!(calls[0].status, Some(200));
    }

    #[tokio::test]
    async fn jwt_scheme_and_json_body() {
        let (base, server) = serve(vec![canned(
            201,
            r#"{"id":"c1","name":"n","credentials":null,"createdAt":"t","updatedAt":"t"}"#,
        )])
        .await;
        let mut cfg = config(&base);
        cfg.auth_scheme = AuthHeaderScheme::Jwt;
        let client = VersoriClient::new(cfg).expect("client");
        let body = EnvSystemConnectionCreate {
            connection_template_id: "tpl".into(),
            connection: ConnectionCreate {
                name: "n".into(),
                credentials: vec![ConnectionCredential::new(
                    AuthSchemeConfig::api_key("api-key", "", "X-Key", ApiKeyLocation::Header),
                    Credential::api_key("org-1", SecretValue::from("wire-secret")),
                )],
                base_url: None,
            },
            external_id: None,
        };
        let created = client.create_connection(&body).await.expect("create");
        assert_eq!(created.id, "c1");
        let requests = server.await.expect("server");
        let request = &requests[0];
        assert!(request.starts_with("POST /api/v2/o/org-1/connections HTTP/1.1\r\n"));
        let lower = request.to_lowercase();
        assert!(lower.contains(&format!("authorization: jwt {TOKEN}")));
        assert!(lower.contains("content-type: application/json"));
        let sent = &request[request.find("\r\n\r\n").expect("body") + 4..];
        let sent: serde_json::Value = serde_json::from_str(sent).expect("json body");
        assert_eq!(sent, serde_json::to_value(&body).expect("ser"));
        assert!(sent.to_string().contains("wire-secret"));
    }

    #[tokio::test]
    async fn list_follows_next() {
        let (base, server) = serve(vec![
            canned(
                200,
                r#"{"totalCount":3,"next":"c2","items":[{"id":"s1","name":"a","domain":"d","templateBaseUrl":"u","authSchemeConfigs":[]},{"id":"s2","name":"b","domain":"d","templateBaseUrl":"u","authSchemeConfigs":[]}]}"#,
            ),
            canned(
                200,
                r#"{"totalCount":3,"prev":"c1","items":[{"id":"s3","name":"c","domain":"d","templateBaseUrl":"u","authSchemeConfigs":null}]}"#,
            ),
        ])
        .await;
        let (observer, calls) = recorder();
        let client = VersoriClient::new(config(&base).with_observer(observer)).expect("client");
        let systems = client.list_systems(Some("crm x")).await.expect("list");
        let ids: Vec<&str> = systems.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["s1", "s2", "s3"]);
        let requests = server.await.expect("server");
        assert!(
            requests[0].starts_with("GET /api/v2/o/org-1/systems?search=crm+x&first=100 HTTP/1.1"),
            "{}",
            requests[0]
        );
        assert!(
            requests[1].starts_with(
                "GET /api/v2/o/org-1/systems?search=crm+x&first=100&after=c2 HTTP/1.1"
            ),
            "{}",
            requests[1]
        );
        assert_eq!(calls.lock().expect("lock").len(), 2);
    }

    #[tokio::test]
    async fn an_unpaged_list_that_pages_is_an_error_not_a_silent_cut() {
        let (base, server) = serve(vec![canned(
            200,
            r#"{"totalCount":2,"next":"c2","items":[]}"#,
        )])
        .await;
        let client = VersoriClient::new(config(&base)).expect("client");
        let err = client
            .list_connection_templates("p1", "e1")
            .await
            .expect_err("a next on an unpaged list");
        assert!(
            matches!(&err, ApiError::Decode { status: 200, .. }),
            "{err:?}"
        );
        let requests = server.await.expect("server");
        assert_eq!(requests.len(), 1, "{requests:?}");
    }

    #[tokio::test]
    async fn list_templates_and_connections_use_contract_query_names() {
        let empty = r#"{"totalCount":0,"items":[]}"#;
        let (base, server) = serve(vec![
            canned(200, empty),
            canned(200, empty),
            canned(200, empty),
        ])
        .await;
        let client = VersoriClient::new(config(&base)).expect("client");
        assert!(
            client
                .list_connection_templates("p1", "e1")
                .await
                .expect("t")
                .is_empty()
        );
        assert!(
            client
                .list_connections(Some("s1"), Some("u1"))
                .await
                .expect("c")
                .is_empty()
        );
        assert!(
            client
                .list_project_connections("p1", "e1")
                .await
                .expect("pc")
                .is_empty()
        );
        let requests = server.await.expect("server");
        assert!(
            requests[0]
                .starts_with("GET /api/v2/o/org-1/projects/p1/connection-templates?env_id=e1 ")
        );
        assert!(
            requests[1].starts_with(
                "GET /api/v2/o/org-1/connections?system_id=s1&end_user_id=u1&first=100 "
            )
        );
        assert!(requests[2].starts_with("GET /api/v2/o/org-1/projects/p1/connections?env_id=e1 "));
    }

    #[tokio::test]
    async fn repeated_cursor_stops() {
        let page = r#"{"totalCount":9,"next":"same","items":[]}"#;
        let (base, _server) = serve(vec![canned(200, page), canned(200, page)]).await;
        let client = VersoriClient::new(config(&base)).expect("client");
        let err = client.list_connections(None, None).await.expect_err("loop");
        assert!(matches!(err, ApiError::Decode { .. }));
    }

    #[tokio::test]
    async fn rate_limit_and_errors_and_deletes() {
        let mut limited = canned(429, r#"{"code":"rate_limited","message":"too many"}"#);
        limited.headers.push(("retry-after", "3".to_owned()));
        let (base, server) = serve(vec![
            limited,
            canned(502, "upstream broke"),
            canned(204, ""),
            canned(
                201,
                r#"{"type":"basic-auth","basicAuth":{"id":"basic","description":"","validationMessages":["x"]}}"#,
            ),
        ])
        .await;
        let (observer, calls) = recorder();
        let client = VersoriClient::new(config(&base).with_observer(observer)).expect("client");

        let err = client.get_system("s1").await.expect_err("429");
        assert_eq!(err.status(), Some(429));
        assert_eq!(err.code(), Some("rate_limited"));
        assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
        assert!(err.is_retryable());
        assert!(!err.to_string().contains("too many"));

        let err = client
            .update_system("s1", &UpdateSystem::default())
            .await
            .expect_err("502");
        assert_eq!(err.to_string(), "Versori API returned 502");
        assert_eq!(err.server_message(), Some("upstream broke"));

        client
            .delete_auth_scheme("s1", "api key")
            .await
            .expect("delete");
        let upserted = client
            .upsert_auth_scheme("s1", &AuthSchemeConfig::basic_auth("basic", ""))
            .await
            .expect("upsert");
        assert_eq!(upserted.validation_messages(), ["x"]);

        let requests = server.await.expect("server");
        assert!(requests[0].starts_with("GET /api/v2/o/org-1/systems/s1 "));
        assert!(requests[1].starts_with("PUT /api/v2/o/org-1/systems/s1 "));
        assert!(requests[1].ends_with("\r\n\r\n{}"));
        assert!(
            requests[2]
                .starts_with("DELETE /api/v2/o/org-1/systems/s1/auth-scheme-configs/api%20key ")
        );
        assert!(
            requests[3].starts_with("PUT /api/v2/o/org-1/systems/s1/auth-scheme-configs/basic ")
        );
        let statuses: Vec<Option<u16>> = calls
            .lock()
            .expect("lock")
            .iter()
            .map(|c| c.status)
            .collect();
        assert_eq!(statuses, [Some(429), Some(502), Some(204), Some(201)]);
    }

    #[tokio::test]
    async fn upsert_without_member_is_refused_locally() {
        let client = VersoriClient::new(config("http://127.0.0.1:9/api/v2")).expect("client");
        let mut cfg = AuthSchemeConfig::basic_auth("basic", "");
        cfg.basic_auth = None;
        let err = client
            .upsert_auth_scheme("s1", &cfg)
            .await
            .expect_err("no id");
        assert!(matches!(err, ApiError::InvalidConfig(_)));
        let err = client.delete_system("").await.expect_err("empty id");
        assert!(matches!(err, ApiError::InvalidConfig(_)));
    }

    #[tokio::test]
    async fn transport_errors_are_retryable_and_safe() {
        // Bind then drop a listener to find a port nobody listens on.
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            listener.local_addr().expect("addr").port()
        };
        let (observer, calls) = recorder();
        let client = VersoriClient::new(
            config(&format!("http://127.0.0.1:{port}/api/v2")).with_observer(observer),
        )
        .expect("client");
        let err = client.get_connection("c1").await.expect_err("refused");
        assert!(err.is_retryable(), "{err:?}");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(TOKEN));
        assert!(
            !shown.contains("127.0.0.1"),
            "URL must be stripped: {shown}"
        );
        let calls = calls.lock().expect("lock").clone();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].status, None);
        assert_eq!(calls[0].operation, "get_connection");
    }
}
