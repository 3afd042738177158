//! Contract tests: the Versori API client (`versori_operator::versori`) driven against the
//! in-process emulator (the `versori_emulator` crate) through every operation of
//! `/work/shared/versori-api.md` and every error case.
//!
//! Each test starts its own emulator on `127.0.0.1:0` (seeded with project `demo`,
//! environments `production` and `staging`) and stops it at the end. `reqwest` is used
//! directly only for the `/_emulator/*` hooks and for the few requests the typed client
//! cannot make by construction (documented where they occur).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use url::Url;

use versori_emulator::{EmulatorConfig, Seed, SeedEnvironment, SeedProject, serve};
use versori_operator::versori::models::{
    ApiKeyLocation, AuthSchemeConfig, AuthSchemeType, ConnectionCreate, ConnectionCredential,
    ConnectionTemplate, ConnectionUpdate, Credential, CredentialData, CredentialRef,
    CredentialType, DigestInput, EnvSystemConnectionCreate, EnvironmentStatus, ErrorBody,
    GrantType, HmacAlgorithm, HmacEncoding, HmacScheme, InitialiseOAuth1ConnectionRequest,
    InitialiseOAuth2ConnectionRequest, LinkSystem, OAuth1Endpoint, OAuth1Scheme,
    OAuth1SignatureMethod, OAuth2ClientGrant, OAuth2CodeCredential, OAuth2Grant, OAuth2Scheme,
    OAuth2Scope, ParameterTransmission, System, SystemCreate, UpdateConnectionTemplate,
    UpdateSystem, ZERO_ULID,
};
use versori_operator::versori::{
    ApiError, AuthHeaderScheme, CallRecord, ClientConfig, SecretValue, VersoriClient,
};

const ORG: &str = "01KKBQZZ0000000000000000RG";
const TOKEN: &str = "contract-test-token-5d1e";
const PROJECT: &str = "01KKBR46SH7JES8AZ14EEAK0CX";
const PROD: &str = "01KKBR46SH7JES8AZ14EEAK0D0";
/// A well-formed ULID that names nothing in the emulator.
const UNKNOWN: &str = "01KKBR46SH7JES8AZ14EEAK0ZZ";
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// One in-process emulator, plus a plain HTTP client for its hooks and a log of every call
/// the clients built by [`Emu::client`] made.
struct Emu {
    addr: SocketAddr,
    http: reqwest::Client,
    calls: Arc<Mutex<Vec<CallRecord>>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Emu {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let config = EmulatorConfig {
            organisation: ORG.to_owned(),
            token: TOKEN.to_owned(),
            seed: Seed {
                projects: vec![SeedProject {
                    id: Some(PROJECT.to_owned()),
                    name: "demo".to_owned(),
                    environments: vec![
                        SeedEnvironment {
                            id: Some(PROD.to_owned()),
                            name: "production".to_owned(),
                            status: None,
                        },
                        SeedEnvironment {
                            id: None,
                            name: "staging".to_owned(),
                            status: Some("suspended".to_owned()),
                        },
                    ],
                }],
            },
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, config, async {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()
            .expect("hook client");
        Self {
            addr,
            http,
            calls: Arc::default(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Fires the shutdown signal and waits for the server to finish.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("emulator task");
        let result = tokio::time::timeout(STOP_TIMEOUT, task)
            .await
            .expect("the emulator did not stop in time")
            .expect("the emulator task panicked");
        result.expect("the emulator failed");
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn config_for(&self, base: &str) -> ClientConfig {
        let calls = Arc::clone(&self.calls);
        ClientConfig::new(Url::parse(base).expect("base URL"), ORG, TOKEN.into()).with_observer(
            Arc::new(move |r: &CallRecord| calls.lock().expect("calls").push(*r)),
        )
    }

    fn client(&self) -> VersoriClient {
        self.client_with(|_| {})
    }

    fn client_with(&self, edit: impl FnOnce(&mut ClientConfig)) -> VersoriClient {
        let mut config = self.config_for(&self.base());
        config.timeout = Duration::from_secs(5);
        edit(&mut config);
        VersoriClient::new(config).expect("client")
    }

    /// The HTTP status of the last call a client of this emulator made.
    fn last_status(&self) -> Option<u16> {
        self.calls
            .lock()
            .expect("calls")
            .last()
            .expect("a call")
            .status
    }

    fn last_call(&self) -> CallRecord {
        *self.calls.lock().expect("calls").last().expect("a call")
    }

    fn hook(&self, path: &str) -> String {
        format!("{}/_emulator/{path}", self.base())
    }

    async fn state(&self) -> Value {
        let response = self
            .http
            .get(self.hook("state"))
            .send()
            .await
            .expect("state");
        assert_eq!(response.status(), 200);
        response.json().await.expect("state JSON")
    }

    async fn set_faults(&self, faults: Value) {
        let response = self
            .http
            .put(self.hook("faults"))
            .json(&faults)
            .send()
            .await
            .expect("faults");
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
    }

    async fn clear_faults(&self) {
        let response = self
            .http
            .delete(self.hook("faults"))
            .send()
            .await
            .expect("faults");
        assert_eq!(response.status(), 204);
    }

    async fn reset_counters(&self) {
        let response = self
            .http
            .post(self.hook("reset-counters"))
            .send()
            .await
            .expect("reset");
        assert_eq!(response.status(), 204);
    }

    /// A raw API request (token set), for what the typed client cannot send by construction.
    async fn raw(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}/o/{ORG}{path}", self.base()))
            .bearer_auth(TOKEN)
            .header("Accept", "application/json");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("raw request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("raw body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("raw JSON")
        };
        (status, value)
    }

    async fn staging_id(&self) -> String {
        let project = self.client().get_project(PROJECT).await.expect("project");
        project
            .environment_by_name("staging")
            .expect("staging")
            .id
            .clone()
    }
}

impl Drop for Emu {
    fn drop(&mut self) {
        // A failed test still stops its emulator.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Asserts an `ApiError::Api` with this status and code, carrying a server message that
/// neither `Display` nor `Debug` shows. Returns the field paths.
#[track_caller]
fn api_err(err: &ApiError, status: u16, code: &str) -> Vec<String> {
    let ApiError::Api {
        status: got_status,
        code: got_code,
        message,
        fields,
        ..
    } = err
    else {
        panic!("expected ApiError::Api {status} {code}, got {err:?}");
    };
    assert_eq!(*got_status, status, "{err:?}");
    assert_eq!(got_code, code, "{err:?}");
    assert_eq!(err.status(), Some(status));
    assert_eq!(err.code(), Some(code));
    assert!(!message.is_empty(), "the error has no message: {err:?}");
    assert_eq!(err.server_message(), Some(message.as_str()));
    let shown = err.to_string();
    let debug = format!("{err:?} {err:#?}");
    assert!(
        !shown.contains(message.as_str()),
        "Display leaks the server message: {shown}"
    );
    assert!(
        !debug.contains(message.as_str()),
        "Debug leaks the server message: {debug}"
    );
    for field in fields {
        if !field.message.is_empty() {
            assert!(!shown.contains(&format!("{} {}", field.field, field.message)));
        }
    }
    assert!(shown.contains(&status.to_string()), "{shown}");
    assert!(shown.contains(&format!("{code:?}")), "{shown}");
    fields.iter().map(|f| f.field.clone()).collect()
}

/// Asserts a 400 `validation_failed` naming `field` (shown in `Display`).
#[track_caller]
fn field_err(err: &ApiError, field: &str) {
    let fields = api_err(err, 400, "validation_failed");
    assert!(
        fields.iter().any(|f| f == field),
        "expected field {field:?} in {fields:?}"
    );
    assert!(err.to_string().contains(field), "{err}");
    assert!(!err.is_retryable());
}

fn is_ulid(s: &str) -> bool {
    // 26 Crockford base32 characters, the first 0-7 (128 bits), not the zero ULID.
    const CROCKFORD: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    s.len() == 26
        && s != ZERO_ULID
        && s.chars().all(|c| CROCKFORD.contains(c))
        && s.starts_with(|c: char| ('0'..='7').contains(&c))
}

/// The element of a JSON array whose `key` equals `value`.
#[track_caller]
fn find<'a>(items: &'a Value, key: &str, value: &str) -> &'a Value {
    items
        .as_array()
        .expect("array")
        .iter()
        .find(|i| i[key] == value)
        .unwrap_or_else(|| panic!("no element with {key} = {value} in {items}"))
}

fn system_body(name: &str, configs: Vec<AuthSchemeConfig>) -> SystemCreate {
    SystemCreate {
        name: name.to_owned(),
        domain: format!("{name}.example.com"),
        template_base_url: format!("https://api.{name}.example.com/v1"),
        auth_scheme_configs: configs,
        labels: None,
    }
}

fn api_key_scheme() -> AuthSchemeConfig {
    AuthSchemeConfig::api_key("api-key", "", "X-API-Key", ApiKeyLocation::Header)
}

fn oauth2_code_scheme(secret: &str) -> AuthSchemeConfig {
    let mut scheme = OAuth2Scheme::new(
        "oauth2-code",
        "authorization code flow",
        "https://auth.example.com/token",
        OAuth2Grant::authorization_code(OAuth2ClientGrant {
            client_id: Some("client-abc".to_owned()),
            client_secret: Some(SecretValue::new(secret)),
            ..Default::default()
        }),
    );
    scheme.authorize_url = Some("https://auth.example.com/authorize".to_owned());
    scheme.scopes = vec![
        OAuth2Scope {
            name: "read".to_owned(),
            description: Some("Read".to_owned()),
        },
        OAuth2Scope {
            name: "write".to_owned(),
            description: None,
        },
    ];
    scheme.default_scopes = vec!["read".to_owned()];
    scheme.pkce = Some(true);
    AuthSchemeConfig::oauth2(scheme)
}

fn oauth2_client_credentials_scheme() -> AuthSchemeConfig {
    AuthSchemeConfig::oauth2(OAuth2Scheme::new(
        "oauth2-cc",
        "",
        "https://idp.example.com/oauth/token",
        OAuth2Grant::client_credentials(),
    ))
}

/// An oauth1 scheme: with `token_auth`, connections carry an oauth1-token and the endpoints are
/// left out; without, the browser flow and all three endpoints.
fn oauth1_scheme(id: &str, consumer_secret: &str, token_auth: bool) -> AuthSchemeConfig {
    let mut scheme = OAuth1Scheme::new(
        id,
        "OAuth 1.0",
        "consumer-key-1",
        SecretValue::new(consumer_secret),
        OAuth1SignatureMethod::Sha256,
    );
    scheme.token_auth = Some(token_auth);
    if !token_auth {
        scheme.temp_credential_endpoint = Some(OAuth1Endpoint {
            parameter_transmission: Some(ParameterTransmission::AuthorizationHeader),
            ..OAuth1Endpoint::new("https://erp.example.com/oauth/request_token")
        });
        scheme.resource_owner_authorization_endpoint = Some(OAuth1Endpoint::new(
            "https://erp.example.com/oauth/authorize",
        ));
        scheme.token_endpoint = Some(OAuth1Endpoint {
            parameter_transmission: Some(ParameterTransmission::Form),
            ..OAuth1Endpoint::new("https://erp.example.com/oauth/access_token")
        });
    }
    AuthSchemeConfig::oauth1(scheme)
}

fn hmac_scheme() -> AuthSchemeConfig {
    AuthSchemeConfig::hmac(HmacScheme {
        id: "webhook-sig".to_owned(),
        description: "signature".to_owned(),
        validation_messages: None,
        name: "X-Signature".to_owned(),
        in_: ApiKeyLocation::Header,
        algorithm: HmacAlgorithm::Sha256,
        digest_inputs: vec![DigestInput::Body, DigestInput::Url],
        encoding: HmacEncoding::Base64url,
    })
}

/// A config without its server-generated `validationMessages` (ignored on input), so that
/// what was sent compares equal to what is read back.
fn norm(cfg: &AuthSchemeConfig) -> AuthSchemeConfig {
    let mut cfg = cfg.clone();
    if let Some(m) = cfg.oauth1.as_mut() {
        m.validation_messages = None;
    }
    for member in [
        cfg.none.as_mut(),
        cfg.basic_auth.as_mut(),
        cfg.certificate.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        member.validation_messages = None;
    }
    if let Some(m) = cfg.api_key.as_mut() {
        m.validation_messages = None;
    }
    if let Some(m) = cfg.hmac.as_mut() {
        m.validation_messages = None;
    }
    if let Some(m) = cfg.oauth2.as_mut() {
        m.validation_messages = None;
    }
    cfg
}

fn norm_all(cfgs: &[AuthSchemeConfig]) -> Vec<AuthSchemeConfig> {
    cfgs.iter().map(norm).collect()
}

fn link(system_id: &str, name: &str, env: &str, dynamic: bool) -> LinkSystem {
    LinkSystem {
        system_id: system_id.to_owned(),
        name: name.to_owned(),
        environment_id: env.to_owned(),
        dynamic,
    }
}

/// A connection body as the CLI builds it: one credential from the template's first auth
/// scheme, zero-ULID IDs.
fn connection_body(
    template: &ConnectionTemplate,
    name: &str,
    credential: Credential,
    external_id: Option<&str>,
) -> EnvSystemConnectionCreate {
    EnvSystemConnectionCreate {
        connection_template_id: template.connection_template_id.clone(),
        connection: ConnectionCreate {
            name: name.to_owned(),
            credentials: vec![ConnectionCredential::new(
                template.auth_scheme_configs[0].clone(),
                credential,
            )],
            base_url: None,
        },
        external_id: external_id.map(str::to_owned),
    }
}

/// `Debug` (plain and pretty) and the re-serialised JSON of a response hold no canary.
#[track_caller]
fn no_canary<T: std::fmt::Debug + serde::Serialize>(what: &str, value: &T, canaries: &[&str]) {
    let debug = format!("{value:?} {value:#?}");
    let json = serde_json::to_string(value).expect("serialise");
    for canary in canaries {
        assert!(!debug.contains(canary), "{what}: Debug leaks a secret");
        assert!(!json.contains(canary), "{what}: the API returned a secret");
    }
}

// ---------------------------------------------------------------------------------------------
// Projects, authentication, base URL
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn project_auth_and_base_url() {
    let emu = Emu::start().await;
    let client = emu.client();

    let project = client.get_project(PROJECT).await.expect("project");
    assert_eq!(emu.last_status(), Some(200));
    assert_eq!(project.id, PROJECT);
    assert_eq!(project.name, "demo");
    let names: Vec<&str> = project
        .environments
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(names, ["production", "staging"]);
    let production = project.environment_by_name("production").expect("prod");
    assert_eq!(production.id, PROD);
    assert_eq!(production.status, EnvironmentStatus::Running);
    let staging = project.environment_by_name("staging").expect("staging");
    assert!(is_ulid(&staging.id), "{}", staging.id);
    assert_eq!(staging.status, EnvironmentStatus::Suspended);
    assert_eq!(emu.last_call().route, "/o/{org}/projects/{project_id}");

    // Unknown project: 404, typed.
    let err = client.get_project(UNKNOWN).await.expect_err("unknown");
    api_err(&err, 404, "not_found");
    assert!(err.is_not_found());
    assert!(!err.is_retryable());
    // Malformed project ID: 400 naming the path parameter.
    let err = client.get_project("not-a-ulid").await.expect_err("bad id");
    field_err(&err, "project_id");

    // Wrong token with Bearer: 401.
    let wrong = emu.client_with(|c| c.token = SecretValue::new("wrong-token"));
    let err = wrong.get_project(PROJECT).await.expect_err("401");
    api_err(&err, 401, "unauthorized");
    assert!(err.is_unauthorized());
    assert!(!err.is_retryable());
    assert!(!format!("{err} {err:?}").contains("wrong-token"));
    // Wrong token with JWT: 401 too.
    let wrong_jwt = emu.client_with(|c| {
        c.token = SecretValue::new("wrong-token");
        c.auth_scheme = AuthHeaderScheme::Jwt;
    });
    api_err(
        &wrong_jwt.get_project(PROJECT).await.expect_err("401"),
        401,
        "unauthorized",
    );
    // The right token with `Authorization: JWT` (as the CLI sends it).
    let jwt = emu.client_with(|c| c.auth_scheme = AuthHeaderScheme::Jwt);
    assert_eq!(jwt.get_project(PROJECT).await.expect("jwt"), project);
    // No token at all (raw: the typed client refuses an empty token).
    let response = emu
        .http
        .get(format!("{}/o/{ORG}/projects/{PROJECT}", emu.base()))
        .send()
        .await
        .expect("raw");
    assert_eq!(response.status(), 401);
    let body: ErrorBody = response.json().await.expect("error body");
    assert_eq!(body.code, "unauthorized");
    assert!(!body.message.is_empty());

    // Another organisation: 404.
    let other_org = emu.client_with(|c| c.organisation = "01KKBQZZ0000000000000000XX".into());
    api_err(
        &other_org.get_project(PROJECT).await.expect_err("org"),
        404,
        "not_found",
    );

    // Base URL handling: a trailing slash changes nothing, and a path prefix is kept (the
    // emulator serves at the root, so `/api/v2/o/...` reaches no route: 404 with no route
    // matched, and the emulator counted it as such).
    let slash = VersoriClient::new(emu.config_for(&format!("{}/", emu.base()))).expect("client");
    assert_eq!(slash.get_project(PROJECT).await.expect("slash"), project);
    emu.reset_counters().await;
    let prefixed =
        VersoriClient::new(emu.config_for(&format!("{}/api/v2", emu.base()))).expect("client");
    let err = prefixed
        .get_project(PROJECT)
        .await
        .expect_err("prefix kept");
    api_err(&err, 404, "not_found");
    let state = emu.state().await;
    assert_eq!(
        state["requests"]["GET (no matching route)"], 1,
        "{}",
        state["requests"]
    );
    assert_eq!(state["requestsTotal"], 1);

    drop((client, wrong, wrong_jwt, jwt, other_org, slash, prefixed));
    emu.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Systems
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn systems_create_get_update_delete_with_every_scheme_type() {
    const SECRET: &str = "canary-system-secret-81f2";
    let emu = Emu::start().await;
    let client = emu.client();

    let mut body = system_body(
        "crm",
        vec![
            api_key_scheme(),
            oauth2_code_scheme(SECRET),
            hmac_scheme(),
            AuthSchemeConfig::basic_auth("basic", ""),
            AuthSchemeConfig::none("anonymous", "no auth"),
            AuthSchemeConfig::certificate("mtls", "client certificate"),
        ],
    );
    body.labels = Some([("team".to_owned(), "sales".to_owned())].into());
    let created = client.create_system(&body).await.expect("create");
    assert_eq!(emu.last_status(), Some(201));
    assert!(is_ulid(&created.id), "{}", created.id);
    assert_eq!(created.name, "crm");
    assert_eq!(created.domain, "crm.example.com");
    assert_eq!(created.template_base_url, "https://api.crm.example.com/v1");
    let types: Vec<AuthSchemeType> = created
        .auth_scheme_configs
        .iter()
        .map(|c| c.type_)
        .collect();
    assert_eq!(
        types,
        [
            AuthSchemeType::ApiKey,
            AuthSchemeType::OAuth2,
            AuthSchemeType::Hmac,
            AuthSchemeType::BasicAuth,
            AuthSchemeType::None,
            AuthSchemeType::Certificate
        ]
    );
    let ids: Vec<&str> = created
        .auth_scheme_configs
        .iter()
        .map(|c| c.id().expect("id"))
        .collect();
    assert_eq!(
        ids,
        [
            "api-key",
            "oauth2-code",
            "webhook-sig",
            "basic",
            "anonymous",
            "mtls"
        ]
    );
    for cfg in &created.auth_scheme_configs {
        assert!(cfg.is_consistent(), "{cfg:?}");
        assert!(cfg.validation_messages().is_empty());
    }
    assert_eq!(norm(&created.auth_scheme_configs[0]), api_key_scheme());
    assert_eq!(norm(&created.auth_scheme_configs[2]), hmac_scheme());
    assert_eq!(
        created
            .auth_scheme_config("anonymous")
            .and_then(|c| c.description()),
        Some("no auth")
    );
    // The oauth2 grant: server-assigned credentialId and organisationId, secret redacted.
    let oauth2 = created.auth_scheme_configs[1]
        .oauth2
        .as_ref()
        .expect("oauth2");
    assert_eq!(oauth2.grant.type_, GrantType::AuthorizationCode);
    assert_eq!(oauth2.token_url, "https://auth.example.com/token");
    assert_eq!(oauth2.default_scopes, ["read"]);
    assert_eq!(oauth2.scopes.len(), 2);
    assert_eq!(oauth2.pkce, Some(true));
    let grant = oauth2.grant.authorization_code.as_ref().expect("grant");
    assert_eq!(grant.client_id.as_deref(), Some("client-abc"));
    assert!(
        grant.credential_id.as_deref().is_some_and(is_ulid),
        "{grant:?}"
    );
    assert_eq!(grant.organisation_id.as_deref(), Some(ORG));
    let read_secret = grant.client_secret.as_ref().map(SecretValue::expose);
    assert_ne!(read_secret, Some(SECRET), "client secret not redacted");
    no_canary("create_system", &created, &[SECRET]);

    // get: the same as the create answer.
    let got = client.get_system(&created.id).await.expect("get");
    assert_eq!(emu.last_status(), Some(200));
    assert_eq!(got, created);

    // State: labels and the clear client secret are stored.
    let state = emu.state().await;
    let stored = find(&state["systems"], "id", &created.id);
    assert_eq!(stored["labels"], json!({"team": "sales"}));
    assert_eq!(
        stored["authSchemeConfigs"][1]["oauth2"]["grant"]["authorizationCode"]["clientSecret"],
        SECRET
    );

    // update: 201, only the given fields change; auth schemes untouched.
    let updated = client
        .update_system(
            &created.id,
            &UpdateSystem {
                name: Some("crm-renamed".to_owned()),
                template_base_url: Some("https://eu.crm.example.com/v2".to_owned()),
                ..Default::default()
            },
        )
        .await
        .expect("update");
    assert_eq!(emu.last_status(), Some(201));
    assert_eq!(updated.id, created.id);
    assert_eq!(updated.name, "crm-renamed");
    assert_eq!(updated.domain, "crm.example.com");
    assert_eq!(updated.template_base_url, "https://eu.crm.example.com/v2");
    assert_eq!(updated.auth_scheme_configs, created.auth_scheme_configs);
    assert_eq!(client.get_system(&created.id).await.expect("get"), updated);
    // An empty update is a no-op.
    let same = client
        .update_system(&created.id, &UpdateSystem::default())
        .await
        .expect("empty update");
    assert_eq!(same, updated);

    // A system with no auth schemes.
    let bare = client
        .create_system(&system_body("bare", Vec::new()))
        .await
        .expect("bare");
    assert!(bare.auth_scheme_configs.is_empty());

    // delete: 204, then 404 everywhere.
    client.delete_system(&created.id).await.expect("delete");
    assert_eq!(emu.last_status(), Some(204));
    api_err(
        &client.get_system(&created.id).await.expect_err("gone"),
        404,
        "not_found",
    );
    api_err(
        &client.delete_system(&created.id).await.expect_err("gone"),
        404,
        "not_found",
    );
    api_err(
        &client
            .update_system(&created.id, &UpdateSystem::default())
            .await
            .expect_err("gone"),
        404,
        "not_found",
    );
    let state = emu.state().await;
    let left: Vec<&str> = state["systems"]
        .as_array()
        .expect("systems")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert_eq!(left, ["bare"]);

    drop(client);
    emu.stop().await;
}

#[tokio::test]
async fn systems_list_search_and_pagination() {
    const COUNT: usize = 105; // more than one page of the client's page size (100)
    let emu = Emu::start().await;
    let client = emu.client();
    let mut ids = Vec::new();
    for i in 0..COUNT {
        let name = if i % 10 == 0 {
            format!("Billing-{i:03}")
        } else {
            format!("sys-{i:03}")
        };
        ids.push(
            client
                .create_system(&system_body(&name, vec![]))
                .await
                .expect("create")
                .id,
        );
    }

    // Everything, following `next` (two pages of 100): in creation order.
    emu.reset_counters().await;
    emu.calls.lock().expect("calls").clear();
    let all = client.list_systems(None).await.expect("list");
    let got: Vec<&str> = all.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(got, ids);
    let state = emu.state().await;
    assert_eq!(
        state["requests"]["GET /o/{org}/systems"], 2,
        "{}",
        state["requests"]
    );
    let calls = emu.calls.lock().expect("calls").clone();
    assert_eq!(calls.len(), 2);
    assert!(
        calls
            .iter()
            .all(|c| c.operation == "list_systems" && c.status == Some(200))
    );

    // Search is a case-insensitive substring of the name.
    let billing = client.list_systems(Some("billing")).await.expect("search");
    let names: Vec<&str> = billing.iter().map(|s| s.name.as_str()).collect();
    let expected: Vec<String> = (0..COUNT)
        .step_by(10)
        .map(|i| format!("Billing-{i:03}"))
        .collect();
    assert_eq!(names, expected);
    assert!(
        client
            .list_systems(Some("no-such"))
            .await
            .expect("none")
            .is_empty()
    );

    // One page at a time.
    let page1 = client
        .list_systems_page(Some(5), None, None)
        .await
        .expect("page 1");
    assert_eq!(page1.total_count, COUNT as i64);
    assert_eq!(page1.items.len(), 5);
    assert!(page1.prev.is_none());
    let next = page1.next_cursor().expect("next").to_owned();
    let page2 = client
        .list_systems_page(Some(5), Some(&next), None)
        .await
        .expect("page 2");
    let page_ids: Vec<&str> = page1
        .items
        .iter()
        .chain(&page2.items)
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(page_ids, ids[..10]);
    assert!(page2.prev.is_some());
    assert!(page2.next_cursor().is_some_and(|c| c != next));
    // Default page size is 20; a search narrows totalCount.
    let default = client
        .list_systems_page(None, None, None)
        .await
        .expect("default");
    assert_eq!(default.items.len(), 20);
    let searched = client
        .list_systems_page(Some(3), None, Some("BILLING"))
        .await
        .expect("searched");
    assert_eq!(searched.total_count, 11);
    assert_eq!(searched.items.len(), 3);
    assert!(searched.next_cursor().is_some());
    // The last page has no `next`.
    let last = client
        .list_systems_page(Some(100), Some(&page2.next.clone().expect("next")), None)
        .await
        .expect("last");
    assert_eq!(last.items.len(), 95);
    assert!(last.next_cursor().is_none());
    // Bad paging arguments: 400 naming the query parameter.
    field_err(
        &client
            .list_systems_page(Some(0), None, None)
            .await
            .expect_err("first=0"),
        "first",
    );
    field_err(
        &client
            .list_systems_page(Some(101), None, None)
            .await
            .expect_err("first=101"),
        "first",
    );
    field_err(
        &client
            .list_systems_page(Some(5), Some("garbage"), None)
            .await
            .expect_err("cursor"),
        "after",
    );

    drop(client);
    emu.stop().await;
}

#[tokio::test]
async fn system_validation_errors_name_their_fields() {
    let emu = Emu::start().await;
    let client = emu.client();

    let mut no_token_url = oauth2_client_credentials_scheme();
    no_token_url.oauth2.as_mut().expect("oauth2").token_url = String::new();
    let body = SystemCreate {
        name: String::new(),
        domain: "d.example.com".to_owned(),
        template_base_url: "not a url".to_owned(),
        auth_scheme_configs: vec![
            no_token_url,
            AuthSchemeConfig::api_key("key", "", "", ApiKeyLocation::Query),
            AuthSchemeConfig::basic_auth("dup", ""),
            AuthSchemeConfig::none("dup", ""),
        ],
        labels: None,
    };
    let err = client.create_system(&body).await.expect_err("invalid");
    let fields = api_err(&err, 400, "validation_failed");
    for field in [
        "name",
        "templateBaseUrl",
        "authSchemeConfigs[0].oauth2.tokenUrl",
        "authSchemeConfigs[1].apiKey.name",
    ] {
        assert!(
            fields.iter().any(|f| f == field),
            "{field} not in {fields:?}"
        );
    }
    assert!(
        err.to_string()
            .contains("authSchemeConfigs[0].oauth2.tokenUrl")
    );
    // Nothing was written.
    assert_eq!(emu.state().await["systems"], json!([]));

    // Duplicate auth scheme IDs within one system.
    let err = client
        .create_system(&system_body(
            "dups",
            vec![
                AuthSchemeConfig::basic_auth("dup", ""),
                AuthSchemeConfig::none("dup", ""),
            ],
        ))
        .await
        .expect_err("dup ids");
    field_err(&err, "authSchemeConfigs[1].none.id");

    // A member that does not match the type (the typed client can build it).
    let mut mismatched = api_key_scheme();
    mismatched.basic_auth = Some(Default::default());
    let err = client
        .create_system(&system_body("mixed", vec![mismatched]))
        .await
        .expect_err("two members");
    field_err(&err, "authSchemeConfigs[0].basicAuth");

    // tokenUrl missing altogether: the typed client always sends it, so raw JSON. The
    // answer still decodes into the client's error body.
    let (status, error) = emu
        .raw(
            reqwest::Method::POST,
            "/systems",
            Some(json!({
                "name": "n", "domain": "d", "templateBaseUrl": "https://x.example.com",
                "authSchemeConfigs": [{"type": "oauth2", "oauth2": {
                    "id": "o", "description": "", "scopes": [], "defaultScopes": [],
                    "grant": {"type": "clientCredentials", "clientCredentials": {}}}}]
            })),
        )
        .await;
    assert_eq!(status, 400);
    let error: ErrorBody = serde_json::from_value(error).expect("ErrorBody");
    assert_eq!(error.code, "validation_failed");
    let fields = error.fields.expect("fields");
    assert_eq!(fields[0].field, "authSchemeConfigs[0].oauth2.tokenUrl");
    assert_eq!(fields[0].message, "is required");
    // The CLI's `authSchemeConfigs: null` is accepted as empty.
    let (status, created) = emu
        .raw(
            reqwest::Method::POST,
            "/systems",
            Some(
                json!({"name": "cli", "domain": "d", "templateBaseUrl": "https://x.example.com",
                "authSchemeConfigs": null}),
            ),
        )
        .await;
    assert_eq!(status, 201);
    let created: System = serde_json::from_value(created).expect("System");
    assert!(created.auth_scheme_configs.is_empty());

    // Update validation.
    let err = client
        .update_system(
            &created.id,
            &UpdateSystem {
                name: Some(String::new()),
                template_base_url: Some("ftp://x".to_owned()),
                ..Default::default()
            },
        )
        .await
        .expect_err("bad update");
    let mut fields = api_err(&err, 400, "validation_failed");
    fields.sort();
    assert_eq!(fields, ["name", "templateBaseUrl"]);
    field_err(
        &client
            .get_system("lowercase-not-ulid")
            .await
            .expect_err("bad"),
        "system_id",
    );

    drop(client);
    emu.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Auth schemes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn auth_schemes_upsert_delete_and_template_view() {
    let emu = Emu::start().await;
    let client = emu.client();
    let system = client
        .create_system(&system_body(
            "crm",
            vec![api_key_scheme(), AuthSchemeConfig::basic_auth("basic", "")],
        ))
        .await
        .expect("system");
    let template = client
        .link_system(PROJECT, &link(&system.id, "crm", PROD, false))
        .await
        .expect("link");
    assert_eq!(norm_all(&template.auth_scheme_configs), [api_key_scheme()]);

    // Upsert a new scheme: 201, appended.
    let upserted = client
        .upsert_auth_scheme(&system.id, &oauth2_client_credentials_scheme())
        .await
        .expect("upsert new");
    assert_eq!(emu.last_status(), Some(201));
    assert_eq!(emu.last_call().operation, "upsert_auth_scheme");
    assert_eq!(norm(&upserted), oauth2_client_credentials_scheme());
    let got = client.get_system(&system.id).await.expect("get");
    let ids: Vec<&str> = got
        .auth_scheme_configs
        .iter()
        .map(|c| c.id().expect("id"))
        .collect();
    assert_eq!(ids, ["api-key", "basic", "oauth2-cc"]);

    // Upsert a changed scheme: replaced in place, visible on the system and on the template.
    let changed =
        AuthSchemeConfig::api_key("api-key", "now in the query", "key", ApiKeyLocation::Query);
    assert_eq!(
        norm(
            &client
                .upsert_auth_scheme(&system.id, &changed)
                .await
                .expect("upsert")
        ),
        changed
    );
    let got = client.get_system(&system.id).await.expect("get");
    assert_eq!(norm(&got.auth_scheme_configs[0]), changed);
    assert_eq!(got.auth_scheme_configs.len(), 3);
    let templates = client
        .list_connection_templates(PROJECT, PROD)
        .await
        .expect("templates");
    assert_eq!(templates.len(), 1);
    assert_eq!(
        norm_all(&templates[0].auth_scheme_configs),
        std::slice::from_ref(&changed)
    );
    // Changing the type under the same ID is an upsert as well.
    let retyped = AuthSchemeConfig::certificate("basic", "");
    client
        .upsert_auth_scheme(&system.id, &retyped)
        .await
        .expect("retype");
    assert_eq!(
        norm(
            &client
                .get_system(&system.id)
                .await
                .expect("get")
                .auth_scheme_configs[1]
        ),
        retyped
    );

    // Delete refused while a template uses the scheme (409), and nothing changes.
    let err = client
        .delete_auth_scheme(&system.id, "api-key")
        .await
        .expect_err("in use");
    api_err(&err, 409, "conflict");
    assert!(err.is_conflict());
    assert_eq!(
        client
            .get_system(&system.id)
            .await
            .expect("get")
            .auth_scheme_configs
            .len(),
        3
    );

    // Point the template at another scheme, then the delete succeeds.
    client
        .update_connection_template(
            PROJECT,
            &template.connection_template_id,
            &UpdateConnectionTemplate {
                auth_scheme_config_ids: Some(vec!["oauth2-cc".to_owned()]),
                ..Default::default()
            },
        )
        .await
        .expect("switch scheme");
    client
        .delete_auth_scheme(&system.id, "api-key")
        .await
        .expect("delete");
    assert_eq!(emu.last_status(), Some(204));
    let got = client.get_system(&system.id).await.expect("get");
    assert!(got.auth_scheme_config("api-key").is_none());
    assert_eq!(got.auth_scheme_configs.len(), 2);
    // Deleting it again, or on an unknown system: 404.
    api_err(
        &client
            .delete_auth_scheme(&system.id, "api-key")
            .await
            .expect_err("gone"),
        404,
        "not_found",
    );
    api_err(
        &client
            .delete_auth_scheme(UNKNOWN, "basic")
            .await
            .expect_err("no system"),
        404,
        "not_found",
    );
    api_err(
        &client
            .upsert_auth_scheme(UNKNOWN, &api_key_scheme())
            .await
            .expect_err("no system"),
        404,
        "not_found",
    );
    // An invalid scheme names the member's field (no `authSchemeConfigs[i]` prefix here).
    let mut bad = hmac_scheme();
    bad.hmac.as_mut().expect("hmac").name = String::new();
    field_err(
        &client
            .upsert_auth_scheme(&system.id, &bad)
            .await
            .expect_err("bad"),
        "hmac.name",
    );

    drop(client);
    emu.stop().await;
}

#[tokio::test]
async fn auth_scheme_oauth2_credential_merge_and_path_body_mismatch() {
    const SECRET: &str = "canary-first-secret-0c4e";
    let emu = Emu::start().await;
    let client = emu.client();
    let system = client
        .create_system(&system_body("idp", vec![oauth2_code_scheme(SECRET)]))
        .await
        .expect("system");
    let credential_id = system.auth_scheme_configs[0]
        .oauth2
        .as_ref()
        .and_then(|o| o.grant.authorization_code.as_ref())
        .and_then(|g| g.credential_id.clone())
        .expect("credentialId");

    // Upsert with the stored credentialId and no clientSecret: merged, the secret is kept.
    let mut update = oauth2_code_scheme(SECRET);
    {
        let grant = update
            .oauth2
            .as_mut()
            .and_then(|o| o.grant.authorization_code.as_mut())
            .expect("grant");
        grant.client_secret = None;
        grant.client_id = Some("client-new".to_owned());
        grant.credential_id = Some(credential_id.clone());
    }
    let merged = client
        .upsert_auth_scheme(&system.id, &update)
        .await
        .expect("merge");
    let grant = merged
        .oauth2
        .as_ref()
        .and_then(|o| o.grant.authorization_code.as_ref())
        .expect("grant");
    assert_eq!(grant.credential_id.as_deref(), Some(credential_id.as_str()));
    assert_eq!(grant.client_id.as_deref(), Some("client-new"));
    no_canary("upsert_auth_scheme", &merged, &[SECRET]);
    let state = emu.state().await;
    let stored =
        &state["systems"][0]["authSchemeConfigs"][0]["oauth2"]["grant"]["authorizationCode"];
    assert_eq!(stored["clientSecret"], SECRET);
    assert_eq!(stored["clientId"], "client-new");
    assert_eq!(stored["credentialId"], credential_id.as_str());

    // A credentialId the scheme does not hold is refused.
    let mut foreign = update.clone();
    foreign
        .oauth2
        .as_mut()
        .and_then(|o| o.grant.authorization_code.as_mut())
        .expect("grant")
        .credential_id = Some(UNKNOWN.to_owned());
    field_err(
        &client
            .upsert_auth_scheme(&system.id, &foreign)
            .await
            .expect_err("foreign"),
        "oauth2.grant.authorizationCode.credentialId",
    );

    // Path ID != body ID cannot be sent through the typed client: `upsert_auth_scheme` takes
    // the path ID from the config itself. So raw JSON shows the API refuses it.
    let (status, error) = emu
        .raw(
            reqwest::Method::PUT,
            &format!("/systems/{}/auth-scheme-configs/in-path", system.id),
            Some(json!({"type": "basic-auth", "basicAuth": {"id": "in-body", "description": ""}})),
        )
        .await;
    assert_eq!(status, 400, "{error}");
    let error: ErrorBody = serde_json::from_value(error).expect("ErrorBody");
    assert_eq!(error.code, "validation_failed");
    assert_eq!(error.fields.expect("fields")[0].field, "basicAuth.id");
    // ...and nothing was stored under either ID.
    let got = client.get_system(&system.id).await.expect("get");
    assert_eq!(got.auth_scheme_configs.len(), 1);
    // The typed client refuses locally a config it cannot take an ID from.
    let mut no_member = AuthSchemeConfig::basic_auth("x", "");
    no_member.basic_auth = None;
    assert!(matches!(
        client.upsert_auth_scheme(&system.id, &no_member).await,
        Err(ApiError::InvalidConfig(_))
    ));

    drop(client);
    emu.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn secrets_are_redacted_on_every_read() {
    const SCHEME_SECRET: &str = "canary-scheme-secret-2b9a";
    const API_KEY: &str = "canary-api-key-77d0";
    const PASSWORD: &str = "canary-password-e31c";
    const CLIENT_SECRET: &str = "canary-client-secret-9a6f";
    const ROTATED: &str = "canary-rotated-key-4410";
    let all = [SCHEME_SECRET, API_KEY, PASSWORD, CLIENT_SECRET, ROTATED];
    let emu = Emu::start().await;
    let client = emu.client();

    let crm = client
        .create_system(&system_body(
            "crm",
            vec![api_key_scheme(), oauth2_code_scheme(SCHEME_SECRET)],
        ))
        .await
        .expect("crm");
    no_canary("create_system", &crm, &all);
    let erp = client
        .create_system(&system_body(
            "erp",
            vec![AuthSchemeConfig::basic_auth("basic", "")],
        ))
        .await
        .expect("erp");
    let idp = client
        .create_system(&system_body(
            "idp",
            vec![oauth2_client_credentials_scheme()],
        ))
        .await
        .expect("idp");
    let crm_t = client
        .link_system(PROJECT, &link(&crm.id, "crm", PROD, false))
        .await
        .expect("link crm");
    let erp_t = client
        .link_system(PROJECT, &link(&erp.id, "erp", PROD, false))
        .await
        .expect("link erp");
    let idp_t = client
        .link_system(PROJECT, &link(&idp.id, "idp", PROD, false))
        .await
        .expect("link idp");

    // The request bodies carry the secrets on the wire, but never in Debug.
    let bodies = [
        connection_body(
            &crm_t,
            "crm-conn",
            Credential::api_key(ORG, API_KEY.into()),
            None,
        ),
        connection_body(
            &erp_t,
            "erp-conn",
            Credential::basic_auth(ORG, "erp-user", PASSWORD.into()),
            None,
        ),
        connection_body(
            &idp_t,
            "idp-conn",
            Credential::oauth2_client(
                ORG,
                "idp-client",
                CLIENT_SECRET.into(),
                "https://idp.example.com/oauth/token",
            ),
            None,
        ),
    ];
    let mut created = Vec::new();
    for body in &bodies {
        let debug = format!("{body:?} {body:#?}");
        assert!(
            all.iter().all(|c| !debug.contains(c)),
            "request Debug leaks"
        );
        assert!(
            all.iter()
                .any(|c| serde_json::to_string(body).expect("ser").contains(c))
        );
        let connection = client.create_connection(body).await.expect("create");
        no_canary("create_connection", &connection, &all);
        created.push(connection);
    }

    // The client models read a redacted value.
    let read = client.get_connection(&created[0].id).await.expect("get");
    let value = read.credentials[0]
        .credential
        .as_ref()
        .and_then(|c| c.data.as_ref())
        .and_then(|d| d.string.as_ref())
        .map(|s| s.value.expose().to_owned())
        .expect("string value");
    assert_ne!(value, API_KEY);
    assert!(!value.is_empty());
    let password = client
        .get_connection(&created[1].id)
        .await
        .expect("get")
        .credentials[0]
        .credential
        .as_ref()
        .and_then(|c| c.data.as_ref())
        .and_then(|d| d.basic_auth.as_ref())
        .map(|b| (b.username.clone(), b.password.expose().to_owned()))
        .expect("basic");
    assert_eq!(password.0, "erp-user", "the username is not a secret");
    assert_ne!(password.1, PASSWORD);
    let oauth2 = client
        .get_connection(&created[2].id)
        .await
        .expect("get")
        .credentials[0]
        .credential
        .as_ref()
        .and_then(|c| c.data.as_ref())
        .and_then(|d| d.oauth2_client.clone())
        .expect("oauth2Client");
    assert_eq!(oauth2.client_id, "idp-client");
    assert_ne!(oauth2.client_secret.expose(), CLIENT_SECRET);

    // Rotate one, then read everything through every read operation.
    let rotated = client
        .update_connection(
            &created[0].id,
            &ConnectionUpdate {
                name: "crm-conn".to_owned(),
                credentials: vec![ConnectionCredential::new(
                    crm_t.auth_scheme_configs[0].clone(),
                    Credential::api_key(ORG, ROTATED.into()),
                )],
                base_url: String::new(),
            },
        )
        .await
        .expect("rotate");
    no_canary("update_connection", &rotated, &all);
    no_canary(
        "get_project",
        &client.get_project(PROJECT).await.expect("p"),
        &all,
    );
    no_canary(
        "get_system",
        &client.get_system(&crm.id).await.expect("s"),
        &all,
    );
    no_canary(
        "list_systems",
        &client.list_systems(None).await.expect("l"),
        &all,
    );
    no_canary(
        "list_systems_page",
        &client
            .list_systems_page(Some(1), None, None)
            .await
            .expect("l"),
        &all,
    );
    no_canary(
        "list_connection_templates",
        &client
            .list_connection_templates(PROJECT, PROD)
            .await
            .expect("t"),
        &all,
    );
    for c in &created {
        no_canary(
            "get_connection",
            &client.get_connection(&c.id).await.expect("c"),
            &all,
        );
    }
    no_canary(
        "list_connections",
        &client.list_connections(None, None).await.expect("c"),
        &all,
    );
    no_canary(
        "list_project_connections",
        &client
            .list_project_connections(PROJECT, PROD)
            .await
            .expect("c"),
        &all,
    );
    no_canary(
        "upsert_auth_scheme",
        &client
            .upsert_auth_scheme(&crm.id, &oauth2_code_scheme(SCHEME_SECRET))
            .await
            .expect("u"),
        &all,
    );
    // Raw answers (including fields the client ignores) hold no secret either.
    for path in [
        format!("/systems/{}", crm.id),
        "/systems".to_owned(),
        format!("/connections/{}", created[0].id),
        format!("/connections/{}", created[1].id),
        format!("/connections/{}", created[2].id),
        "/connections".to_owned(),
        format!("/projects/{PROJECT}/connections?env_id={PROD}"),
        format!("/projects/{PROJECT}/connection-templates?env_id={PROD}"),
    ] {
        let (status, body) = emu.raw(reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 200, "{path}");
        let text = body.to_string();
        assert!(
            all.iter().all(|c| !text.contains(c)),
            "{path} leaks a secret"
        );
    }

    // The emulator's state holds the clear values, the rotated one in place of the old.
    let state = emu.state().await;
    let cred =
        |id: &str| find(&state["connections"], "id", id)["credentials"][0]["credential"].clone();
    assert_eq!(cred(&created[0].id)["data"]["string"]["value"], ROTATED);
    assert_eq!(
        cred(&created[1].id)["data"]["basicAuth"]["password"],
        PASSWORD
    );
    assert_eq!(
        cred(&created[2].id)["data"]["oauth2Client"]["clientSecret"],
        CLIENT_SECRET
    );
    assert_eq!(
        find(&state["systems"], "id", &crm.id)["authSchemeConfigs"][1]["oauth2"]["grant"]["authorizationCode"]
            ["clientSecret"],
        SCHEME_SECRET
    );
    assert!(
        !state.to_string().contains(API_KEY),
        "the old key is gone after rotation"
    );

    drop(client);
    emu.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Connection templates
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn connection_templates_link_list_update_delete() {
    let emu = Emu::start().await;
    let client = emu.client();
    let staging = emu.staging_id().await;
    let crm = client
        .create_system(&system_body(
            "crm",
            vec![api_key_scheme(), AuthSchemeConfig::basic_auth("basic", "")],
        ))
        .await
        .expect("crm");
    let erp = client
        .create_system(&system_body("erp", vec![]))
        .await
        .expect("erp");

    // Link: 200, the template carries the system's ID as `id` and its first scheme.
    let prod_t = client
        .link_system(PROJECT, &link(&crm.id, "crm", PROD, false))
        .await
        .expect("link");
    assert_eq!(emu.last_status(), Some(200));
    assert_eq!(prod_t.id, crm.id);
    assert_eq!(prod_t.system_id(), crm.id);
    assert!(is_ulid(&prod_t.connection_template_id));
    assert_ne!(prod_t.connection_template_id, crm.id);
    assert_eq!(prod_t.name, "crm");
    assert_eq!(prod_t.domain, "crm.example.com");
    assert_eq!(prod_t.template_base_url, crm.template_base_url);
    assert!(!prod_t.dynamic);
    assert_eq!(norm_all(&prod_t.auth_scheme_configs), [api_key_scheme()]);
    // The same name in another environment is fine; a system without schemes links too.
    let staging_t = client
        .link_system(PROJECT, &link(&crm.id, "crm", &staging, true))
        .await
        .expect("link staging");
    assert!(staging_t.dynamic);
    let erp_t = client
        .link_system(PROJECT, &link(&erp.id, "erp", PROD, false))
        .await
        .expect("link erp");
    assert!(erp_t.auth_scheme_configs.is_empty());
    // State records project, environment and system.
    let state = emu.state().await;
    let stored = find(
        &state["connectionTemplates"],
        "id",
        &prod_t.connection_template_id,
    );
    assert_eq!(stored["environmentId"], PROD);
    assert_eq!(stored["systemId"], crm.id.as_str());
    assert_eq!(stored["projectId"], PROJECT);
    assert_eq!(stored["authSchemeConfigIds"], json!(["api-key"]));
    assert_eq!(
        find(
            &state["connectionTemplates"],
            "id",
            &staging_t.connection_template_id
        )["environmentId"],
        staging.as_str()
    );

    // Refusals.
    let err = client
        .link_system(PROJECT, &link(&erp.id, "crm", PROD, false))
        .await
        .expect_err("duplicate name");
    assert_eq!(api_err(&err, 409, "conflict"), ["name"]);
    field_err(
        &client
            .link_system(PROJECT, &link(&crm.id, "other", UNKNOWN, false))
            .await
            .expect_err("env"),
        "environmentId",
    );
    field_err(
        &client
            .link_system(PROJECT, &link(UNKNOWN, "other", PROD, false))
            .await
            .expect_err("system"),
        "systemId",
    );
    api_err(
        &client
            .link_system(UNKNOWN, &link(&crm.id, "other", PROD, false))
            .await
            .expect_err("project"),
        404,
        "not_found",
    );
    // An environment of the project given as a ULID that belongs nowhere, and a missing one.
    field_err(
        &client
            .link_system(PROJECT, &link(&crm.id, "other", "", false))
            .await
            .expect_err("no env"),
        "environmentId",
    );
    assert_eq!(
        emu.state().await["connectionTemplates"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );

    // List by environment.
    let prod_list = client
        .list_connection_templates(PROJECT, PROD)
        .await
        .expect("prod");
    let names: Vec<&str> = prod_list.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["crm", "erp"]);
    assert_eq!(prod_list[0], prod_t);
    let staging_list = client
        .list_connection_templates(PROJECT, &staging)
        .await
        .expect("staging");
    assert_eq!(staging_list, std::slice::from_ref(&staging_t));
    field_err(
        &client
            .list_connection_templates(PROJECT, UNKNOWN)
            .await
            .expect_err("env"),
        "env_id",
    );
    api_err(
        &client
            .list_connection_templates(UNKNOWN, PROD)
            .await
            .expect_err("project"),
        404,
        "not_found",
    );

    // Update name, dynamic and schemes: 200 with the new view.
    let updated = client
        .update_connection_template(
            PROJECT,
            &prod_t.connection_template_id,
            &UpdateConnectionTemplate {
                name: Some("crm-main".to_owned()),
                dynamic: Some(true),
                auth_scheme_config_ids: Some(vec!["basic".to_owned(), "api-key".to_owned()]),
            },
        )
        .await
        .expect("update");
    assert_eq!(emu.last_status(), Some(200));
    assert_eq!(
        updated.connection_template_id,
        prod_t.connection_template_id
    );
    assert_eq!(updated.name, "crm-main");
    assert!(updated.dynamic);
    assert_eq!(
        norm_all(&updated.auth_scheme_configs),
        [AuthSchemeConfig::basic_auth("basic", ""), api_key_scheme()]
    );
    // Only the given fields change.
    let renamed = client
        .update_connection_template(
            PROJECT,
            &prod_t.connection_template_id,
            &UpdateConnectionTemplate {
                dynamic: Some(false),
                ..Default::default()
            },
        )
        .await
        .expect("partial");
    assert_eq!(renamed.name, "crm-main");
    assert!(!renamed.dynamic);
    assert_eq!(renamed.auth_scheme_configs.len(), 2);
    assert_eq!(
        client
            .list_connection_templates(PROJECT, PROD)
            .await
            .expect("list")[0],
        renamed
    );
    // Unique names per environment; unknown schemes; unknown template.
    let err = client
        .update_connection_template(
            PROJECT,
            &erp_t.connection_template_id,
            &UpdateConnectionTemplate {
                name: Some("crm-main".to_owned()),
                ..Default::default()
            },
        )
        .await
        .expect_err("taken");
    assert_eq!(api_err(&err, 409, "conflict"), ["name"]);
    field_err(
        &client
            .update_connection_template(
                PROJECT,
                &prod_t.connection_template_id,
                &UpdateConnectionTemplate {
                    auth_scheme_config_ids: Some(vec!["nope".to_owned()]),
                    ..Default::default()
                },
            )
            .await
            .expect_err("unknown scheme"),
        "authSchemeConfigIds[0]",
    );
    api_err(
        &client
            .update_connection_template(PROJECT, UNKNOWN, &UpdateConnectionTemplate::default())
            .await
            .expect_err("unknown template"),
        404,
        "not_found",
    );

    // A system in use by templates cannot be deleted.
    let err = client.delete_system(&crm.id).await.expect_err("in use");
    api_err(&err, 409, "conflict");
    // Delete the templates: 204; then 404.
    for t in [&prod_t, &staging_t] {
        client
            .delete_connection_template(PROJECT, &t.connection_template_id)
            .await
            .expect("delete");
        assert_eq!(emu.last_status(), Some(204));
    }
    api_err(
        &client
            .delete_connection_template(PROJECT, &prod_t.connection_template_id)
            .await
            .expect_err("gone"),
        404,
        "not_found",
    );
    client.delete_system(&crm.id).await.expect("now deletable");
    let left = client
        .list_connection_templates(PROJECT, PROD)
        .await
        .expect("list");
    assert_eq!(left, [erp_t]);

    drop(client);
    emu.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn connections_create_list_get_update_delete() {
    const KEY: &str = "canary-key-a1";
    const ROTATED: &str = "canary-key-a2";
    let emu = Emu::start().await;
    let client = emu.client();
    let staging = emu.staging_id().await;
    let crm = client
        .create_system(&system_body("crm", vec![api_key_scheme()]))
        .await
        .expect("crm");
    let erp = client
        .create_system(&system_body(
            "erp",
            vec![AuthSchemeConfig::basic_auth("basic", "")],
        ))
        .await
        .expect("erp");
    let idp = client
        .create_system(&system_body(
            "idp",
            vec![oauth2_client_credentials_scheme()],
        ))
        .await
        .expect("idp");
    let crm_t = client
        .link_system(PROJECT, &link(&crm.id, "crm", PROD, false))
        .await
        .expect("crm t");
    let crm_staging_t = client
        .link_system(PROJECT, &link(&crm.id, "crm", &staging, false))
        .await
        .expect("crm staging t");
    let erp_t = client
        .link_system(PROJECT, &link(&erp.id, "erp", PROD, false))
        .await
        .expect("erp t");
    let idp_t = client
        .link_system(PROJECT, &link(&idp.id, "idp", PROD, false))
        .await
        .expect("idp t");

    // api-key, as the CLI sends it: zero-ULID IDs, type `string`, the template's scheme.
    let body = connection_body(
        &crm_t,
        "crm-prod",
        Credential::api_key(ORG, KEY.into()),
        None,
    );
    let wire = serde_json::to_value(&body).expect("ser");
    assert_eq!(wire["connection"]["credentials"][0]["id"], ZERO_ULID);
    assert_eq!(
        wire["connection"]["credentials"][0]["credential"]["id"],
        ZERO_ULID
    );
    assert_eq!(
        wire["connection"]["credentials"][0]["credential"]["type"],
        "string"
    );
    let api_key = client.create_connection(&body).await.expect("api-key");
    assert_eq!(emu.last_status(), Some(201));
    assert!(is_ulid(&api_key.id));
    assert_eq!(api_key.name, "crm-prod");
    assert_eq!(api_key.system_id.as_deref(), Some(crm.id.as_str()));
    assert_eq!(
        api_key.connection_template_id.as_deref(),
        Some(crm_t.connection_template_id.as_str())
    );
    assert!(
        api_key.created_at.parse::<jiff::Timestamp>().is_ok(),
        "{}",
        api_key.created_at
    );
    assert!(api_key.updated_at.parse::<jiff::Timestamp>().is_ok());
    assert_eq!(api_key.credentials.len(), 1);
    let cc = &api_key.credentials[0];
    assert!(is_ulid(&cc.id), "server-assigned credential ID: {}", cc.id);
    assert_eq!(
        cc.auth_scheme_config.as_ref().map(norm),
        Some(api_key_scheme())
    );
    let credential = cc.credential.as_ref().expect("credential");
    assert!(is_ulid(&credential.id));
    assert_ne!(credential.id, cc.id);
    assert_eq!(credential.organisation_id, ORG);
    assert_eq!(credential.type_, CredentialType::String);

    // Bypass: type none, no data, `{type: none, none: {id: "", description: ""}}`.
    let bypass_body = EnvSystemConnectionCreate {
        connection_template_id: crm_t.connection_template_id.clone(),
        connection: ConnectionCreate {
            name: "crm-bypass".to_owned(),
            credentials: vec![ConnectionCredential::bypass(ORG)],
            base_url: Some("https://sandbox.crm.example.com".to_owned()),
        },
        external_id: None,
    };
    let bypass = client
        .create_connection(&bypass_body)
        .await
        .expect("bypass");
    let cc = &bypass.credentials[0];
    assert_eq!(
        cc.auth_scheme_config.as_ref().map(norm),
        Some(AuthSchemeConfig::bypass())
    );
    let credential = cc.credential.as_ref().expect("credential");
    assert_eq!(credential.type_, CredentialType::None);
    assert!(credential.data.is_none());
    assert_eq!(
        bypass.base_url.as_deref(),
        Some("https://sandbox.crm.example.com")
    );

    // basic-auth and oauth2-client (tokenUrl from the scheme).
    let basic = client
        .create_connection(&connection_body(
            &erp_t,
            "erp-prod",
            Credential::basic_auth(ORG, "svc", "canary-pw".into()),
            None,
        ))
        .await
        .expect("basic");
    let credential = basic.credentials[0]
        .credential
        .as_ref()
        .expect("credential");
    assert_eq!(credential.type_, CredentialType::BasicAuth);
    assert_eq!(
        credential
            .data
            .as_ref()
            .and_then(|d| d.basic_auth.as_ref())
            .map(|b| b.username.as_str()),
        Some("svc")
    );
    let token_url = idp_t.auth_scheme_configs[0]
        .oauth2
        .as_ref()
        .expect("oauth2")
        .token_url
        .clone();
    let mut oauth2_credential =
        Credential::oauth2_client(ORG, "idp-client", "canary-cs".into(), token_url.clone());
    // The API reads `additionalParams` as a URL-encoded query string.
    if let Some(data) = oauth2_credential
        .data
        .as_mut()
        .and_then(|d| d.oauth2_client.as_mut())
    {
        data.scopes = Some(vec!["read".to_owned()]);
        data.additional_params = Some("audience=api&resource=x".to_owned());
    }
    let oauth2 = client
        .create_connection(&connection_body(
            &idp_t,
            "idp-prod",
            oauth2_credential,
            None,
        ))
        .await
        .expect("oauth2-client");
    let data = oauth2.credentials[0]
        .credential
        .as_ref()
        .and_then(|c| c.data.as_ref())
        .and_then(|d| d.oauth2_client.as_ref())
        .expect("oauth2Client");
    assert_eq!(
        oauth2.credentials[0].credential.as_ref().map(|c| c.type_),
        Some(CredentialType::OAuth2Client)
    );
    assert_eq!(data.client_id, "idp-client");
    assert_eq!(data.token_url, token_url);
    assert_eq!(data.scopes.as_deref(), Some(&["read".to_owned()][..]));
    assert_eq!(
        data.additional_params.as_deref(),
        Some("audience=api&resource=x")
    );
    // A connection on the staging template of the same system.
    let staged = client
        .create_connection(&connection_body(
            &crm_staging_t,
            "crm-staging",
            Credential::api_key(ORG, "canary-staging".into()),
            None,
        ))
        .await
        .expect("staging");

    // Names are unique within the owning system (across its templates), not globally.
    let err = client
        .create_connection(&connection_body(
            &crm_staging_t,
            "crm-prod",
            Credential::api_key(ORG, "x".into()),
            None,
        ))
        .await
        .expect_err("duplicate");
    assert_eq!(api_err(&err, 409, "conflict"), ["connection.name"]);
    assert!(err.is_conflict());
    let other_system = client
        .create_connection(&connection_body(
            &erp_t,
            "crm-prod",
            Credential::basic_auth(ORG, "u", "p".into()),
            None,
        ))
        .await
        .expect("same name, other system");

    // Malformed connections name their fields.
    field_err(
        &client
            .create_connection(&connection_body(
                &crm_t,
                "x1",
                Credential::api_key(ORG, "".into()),
                None,
            ))
            .await
            .expect_err("empty key"),
        "connection.credentials[0].credential.data.string.value",
    );
    field_err(
        &client
            .create_connection(&connection_body(
                &crm_t,
                "x2",
                Credential::api_key("01KKBQZZ0000000000000000XX", "k".into()),
                None,
            ))
            .await
            .expect_err("org"),
        "connection.credentials[0].credential.organisationId",
    );
    let mut unknown_template =
        connection_body(&crm_t, "x3", Credential::api_key(ORG, "k".into()), None);
    unknown_template.connection_template_id = UNKNOWN.to_owned();
    field_err(
        &client
            .create_connection(&unknown_template)
            .await
            .expect_err("template"),
        "connectionTemplateId",
    );
    let mut mismatched = Credential::new(
        ORG,
        CredentialType::BasicAuth,
        Some(CredentialData::default()),
    );
    mismatched.data.as_mut().expect("data").string = Some(Default::default());
    field_err(
        &client
            .create_connection(&connection_body(&crm_t, "x4", mismatched, None))
            .await
            .expect_err("data member"),
        "connection.credentials[0].credential.data.string",
    );
    let mut bad_base = connection_body(&crm_t, "x5", Credential::api_key(ORG, "k".into()), None);
    bad_base.connection.base_url = Some("not a url".to_owned());
    field_err(
        &client
            .create_connection(&bad_base)
            .await
            .expect_err("base url"),
        "connection.baseUrl",
    );

    // Lists.
    let by_system = client
        .list_connections(Some(&crm.id), None)
        .await
        .expect("by system");
    let names: Vec<&str> = by_system.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["crm-prod", "crm-bypass", "crm-staging"]);
    let everything = client.list_connections(None, None).await.expect("all");
    assert_eq!(everything.len(), 6);
    assert!(
        client
            .list_connections(None, Some("nobody"))
            .await
            .expect("user")
            .is_empty()
    );
    let prod: Vec<String> = client
        .list_project_connections(PROJECT, PROD)
        .await
        .expect("prod")
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(
        prod,
        ["crm-prod", "crm-bypass", "erp-prod", "idp-prod", "crm-prod"]
    );
    let staging_list = client
        .list_project_connections(PROJECT, &staging)
        .await
        .expect("staging");
    assert_eq!(staging_list, std::slice::from_ref(&staged));
    field_err(
        &client
            .list_connections(Some("not-a-ulid"), None)
            .await
            .expect_err("bad"),
        "system_id",
    );
    field_err(
        &client
            .list_project_connections(PROJECT, UNKNOWN)
            .await
            .expect_err("env"),
        "env_id",
    );

    // Get.
    let got = client.get_connection(&api_key.id).await.expect("get");
    assert_eq!(got, api_key);
    api_err(
        &client.get_connection(UNKNOWN).await.expect_err("404"),
        404,
        "not_found",
    );

    // Update (rotate): 200, IDs kept when sent, the new clear value in state.
    let rotate = ConnectionUpdate {
        name: "crm-prod".to_owned(),
        credentials: vec![ConnectionCredential {
            id: got.credentials[0].id.clone(),
            auth_scheme_config: got.credentials[0].auth_scheme_config.clone(),
            credential: Some(Credential {
                id: got.credentials[0]
                    .credential
                    .as_ref()
                    .expect("c")
                    .id
                    .clone(),
                ..Credential::api_key(ORG, ROTATED.into())
            }),
        }],
        base_url: "https://eu.crm.example.com".to_owned(),
    };
    let rotated = client
        .update_connection(&api_key.id, &rotate)
        .await
        .expect("rotate");
    assert_eq!(emu.last_status(), Some(200));
    assert_eq!(rotated.id, api_key.id);
    assert_eq!(rotated.credentials[0].id, api_key.credentials[0].id);
    assert_eq!(
        rotated.credentials[0].credential.as_ref().map(|c| &c.id),
        api_key.credentials[0].credential.as_ref().map(|c| &c.id)
    );
    assert_eq!(
        rotated.base_url.as_deref(),
        Some("https://eu.crm.example.com")
    );
    assert_eq!(rotated.created_at, api_key.created_at);
    assert!(rotated.updated_at >= api_key.updated_at);
    let state = emu.state().await;
    let stored = find(&state["connections"], "id", &api_key.id);
    assert_eq!(
        stored["credentials"][0]["credential"]["data"]["string"]["value"],
        ROTATED
    );
    assert_eq!(stored["baseUrl"], "https://eu.crm.example.com");
    assert!(!state.to_string().contains(KEY), "old key replaced");
    // Update refusals: a name taken on the system, a credential ID of another connection,
    // an unknown connection.
    let taken = ConnectionUpdate {
        name: "crm-bypass".to_owned(),
        ..rotate.clone()
    };
    assert_eq!(
        api_err(
            &client
                .update_connection(&api_key.id, &taken)
                .await
                .expect_err("taken"),
            409,
            "conflict"
        ),
        ["name"]
    );
    field_err(
        &client
            .update_connection(&bypass.id, &rotate)
            .await
            .expect_err("stolen id"),
        "credentials[0].id",
    );
    api_err(
        &client
            .update_connection(UNKNOWN, &rotate)
            .await
            .expect_err("404"),
        404,
        "not_found",
    );

    // Delete: the template is refused while it has connections.
    let err = client
        .delete_connection_template(PROJECT, &crm_t.connection_template_id)
        .await
        .expect_err("has connections");
    api_err(&err, 409, "conflict");
    for c in [&api_key, &bypass] {
        client.delete_connection(&c.id).await.expect("delete");
        assert_eq!(emu.last_status(), Some(204));
    }
    api_err(
        &client
            .delete_connection(&api_key.id)
            .await
            .expect_err("gone"),
        404,
        "not_found",
    );
    api_err(
        &client.get_connection(&bypass.id).await.expect_err("gone"),
        404,
        "not_found",
    );
    client
        .delete_connection_template(PROJECT, &crm_t.connection_template_id)
        .await
        .expect("template now deletable");
    let left: Vec<String> = client
        .list_connections(None, None)
        .await
        .expect("left")
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(left, [basic.id, oauth2.id, staged.id, other_system.id]);

    drop(client);
    emu.stop().await;
}

#[tokio::test]
async fn dynamic_templates_need_an_external_id_and_static_ones_refuse_it() {
    let emu = Emu::start().await;
    let client = emu.client();
    let system = client
        .create_system(&system_body("shop", vec![api_key_scheme()]))
        .await
        .expect("system");
    let dynamic = client
        .link_system(PROJECT, &link(&system.id, "shop", PROD, true))
        .await
        .expect("dynamic");
    let other = client
        .create_system(&system_body("mail", vec![api_key_scheme()]))
        .await
        .expect("system");
    let fixed = client
        .link_system(PROJECT, &link(&other.id, "mail", PROD, false))
        .await
        .expect("static");

    let key = || Credential::api_key(ORG, "k".into());
    field_err(
        &client
            .create_connection(&connection_body(&dynamic, "u1", key(), None))
            .await
            .expect_err("dynamic without externalId"),
        "externalId",
    );
    field_err(
        &client
            .create_connection(&connection_body(&fixed, "s1", key(), Some("user-1")))
            .await
            .expect_err("static with externalId"),
        "externalId",
    );
    let user1 = client
        .create_connection(&connection_body(
            &dynamic,
            "user-1-shop",
            key(),
            Some("user-1"),
        ))
        .await
        .expect("dynamic");
    let user2 = client
        .create_connection(&connection_body(
            &dynamic,
            "user-2-shop",
            key(),
            Some("user-2"),
        ))
        .await
        .expect("dynamic");
    let shared = client
        .create_connection(&connection_body(&fixed, "mail", key(), None))
        .await
        .expect("static");
    assert_eq!(
        emu.state().await["connections"][0]["externalId"],
        "user-1",
        "the external ID is stored"
    );

    let of_user1 = client
        .list_connections(None, Some("user-1"))
        .await
        .expect("user-1");
    assert_eq!(of_user1, std::slice::from_ref(&user1));
    let of_shop = client
        .list_connections(Some(&system.id), None)
        .await
        .expect("shop");
    assert_eq!(of_shop, [user1.clone(), user2.clone()]);
    let both = client
        .list_connections(Some(&system.id), Some("user-2"))
        .await
        .expect("both filters");
    assert_eq!(both, [user2]);
    assert!(
        client
            .list_connections(Some(&other.id), Some("user-1"))
            .await
            .expect("none")
            .is_empty()
    );
    // The project environment lists only static connections.
    assert_eq!(
        client
            .list_project_connections(PROJECT, PROD)
            .await
            .expect("static"),
        [shared]
    );

    drop(client);
    emu.stop().await;
}

// ---------------------------------------------------------------------------------------------
// OAuth 2.0 authorization-code flow
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn initialise_oauth2_returns_an_authorize_url() {
    let emu = Emu::start().await;
    let client = emu.client();
    let system = client
        .create_system(&system_body(
            "idp",
            vec![oauth2_code_scheme("canary-oauth")],
        ))
        .await
        .expect("system");
    let template = client
        .link_system(PROJECT, &link(&system.id, "idp", PROD, false))
        .await
        .expect("link");
    let redirect = "https://app.example.com/oauth/callback";
    let answer = client
        .initialise_oauth2(
            &system.id,
            &InitialiseOAuth2ConnectionRequest {
                redirect_url: redirect.to_owned(),
                connection_template_id: Some(template.connection_template_id.clone()),
                scopes: Some(vec!["read".to_owned()]),
            },
        )
        .await
        .expect("initialise");
    assert_eq!(emu.last_status(), Some(200));
    let url = Url::parse(&answer.url).expect("a URL");
    assert!(matches!(url.scheme(), "http" | "https"));
    let query: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    let state_param = query.get("state").expect("state").clone();
    assert!(!state_param.is_empty());
    assert_eq!(
        query.get("redirect_uri").map(String::as_str),
        Some(redirect)
    );
    let state = emu.state().await;
    let flow = find(&state["oauth2Flows"], "state", &state_param);
    assert_eq!(flow["systemId"], system.id.as_str());
    assert_eq!(
        flow["connectionTemplateId"],
        template.connection_template_id.as_str()
    );
    assert_eq!(flow["scopes"], json!(["read"]));

    // The authorize page sends the browser back with a code and the state.
    let response = emu.http.get(url.as_str()).send().await.expect("authorize");
    assert_eq!(response.status(), 302);
    let location = Url::parse(response.headers()["location"].to_str().expect("location"))
        .expect("location URL");
    assert!(location.as_str().starts_with(redirect));
    let back: std::collections::HashMap<String, String> =
        location.query_pairs().into_owned().collect();
    assert_eq!(back.get("state"), Some(&state_param));
    let code = back.get("code").expect("code").clone();

    // An oauth2-code connection carries the code (write-only).
    let credential = Credential::new(
        ORG,
        CredentialType::OAuth2Code,
        Some(CredentialData {
            oauth2_code: Some(OAuth2CodeCredential {
                code: code.as_str().into(),
                state: state_param.clone(),
                redirect_url: Some(redirect.to_owned()),
                additional_params: Some("prompt=consent".to_owned()),
            }),
            ..Default::default()
        }),
    );
    let connection = client
        .create_connection(&connection_body(&template, "idp-user", credential, None))
        .await
        .expect("oauth2-code connection");
    no_canary("oauth2-code connection", &connection, &[code.as_str()]);

    // Refusals: a system without a code-flow scheme, an unknown system, a bad redirect URL.
    let plain = client
        .create_system(&system_body("plain", vec![api_key_scheme()]))
        .await
        .expect("plain");
    let request = InitialiseOAuth2ConnectionRequest {
        redirect_url: redirect.to_owned(),
        ..Default::default()
    };
    api_err(
        &client
            .initialise_oauth2(&plain.id, &request)
            .await
            .expect_err("no flow"),
        400,
        "validation_failed",
    );
    api_err(
        &client
            .initialise_oauth2(UNKNOWN, &request)
            .await
            .expect_err("404"),
        404,
        "not_found",
    );
    field_err(
        &client
            .initialise_oauth2(
                &system.id,
                &InitialiseOAuth2ConnectionRequest {
                    redirect_url: "nope".to_owned(),
                    ..Default::default()
                },
            )
            .await
            .expect_err("redirect"),
        "redirectUrl",
    );

    drop(client);
    emu.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn faults_unavailable_and_rate_limited_are_retryable_and_write_nothing() {
    let emu = Emu::start().await;
    let client = emu.client();

    emu.set_faults(json!({"errorRate": 1.0})).await;
    let err = client
        .create_system(&system_body("crm", vec![]))
        .await
        .expect_err("503");
    api_err(&err, 503, "unavailable");
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), None);
    api_err(
        &client.get_project(PROJECT).await.expect_err("503"),
        503,
        "unavailable",
    );

    emu.set_faults(json!({"rateLimitRate": 1.0, "retryAfterSeconds": 7}))
        .await;
    let err = client.list_systems(None).await.expect_err("429");
    api_err(&err, 429, "rate_limited");
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    let err = client
        .create_connection(&EnvSystemConnectionCreate::default())
        .await
        .expect_err("429 before validation");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    // Faults come before authentication.
    let wrong = emu.client_with(|c| c.token = SecretValue::new("wrong"));
    assert_eq!(
        wrong.get_project(PROJECT).await.expect_err("429").status(),
        Some(429)
    );

    // Faults limited to one route leave the others alone.
    emu.set_faults(json!({"errorRate": 1.0, "routes": ["POST /o/{org}/systems"]}))
        .await;
    assert!(client.get_project(PROJECT).await.is_ok());
    api_err(
        &client
            .create_system(&system_body("crm", vec![]))
            .await
            .expect_err("503"),
        503,
        "unavailable",
    );

    emu.clear_faults().await;
    let state = emu.state().await;
    assert_eq!(state["systems"], json!([]), "no fault wrote anything");
    assert_eq!(state["requests"]["POST /o/{org}/systems"], 2);
    assert_eq!(state["requests"]["POST /o/{org}/connections"], 1);
    client
        .create_system(&system_body("crm", vec![]))
        .await
        .expect("after clearing");

    drop((client, wrong));
    emu.stop().await;
}

#[tokio::test]
async fn faults_dropped_connection_is_a_retryable_transport_error() {
    let emu = Emu::start().await;
    let client = emu.client();
    emu.calls.lock().expect("calls").clear();

    emu.set_faults(json!({"dropRate": 1.0, "routes": ["POST /o/{org}/systems"]}))
        .await;
    let err = client
        .create_system(&system_body("crm", vec![]))
        .await
        .expect_err("dropped");
    assert!(matches!(err, ApiError::Transport(_)), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(err.status(), None);
    assert_eq!(err.code(), None);
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(TOKEN));
    assert!(!shown.contains("127.0.0.1"), "the URL is stripped: {shown}");
    assert_eq!(emu.last_call().status, None, "no answer arrived");
    assert_eq!(emu.last_call().operation, "create_system");

    // Also for reads.
    emu.set_faults(json!({"dropRate": 1.0})).await;
    assert!(matches!(
        client.get_project(PROJECT).await,
        Err(ApiError::Transport(_))
    ));

    emu.clear_faults().await;
    let state = emu.state().await;
    assert_eq!(state["systems"], json!([]), "nothing was written");
    assert_eq!(
        state["requests"]["POST /o/{org}/systems"], 1,
        "no hidden retry"
    );
    // The client recovers on a fresh connection.
    assert_eq!(
        client.get_project(PROJECT).await.expect("after").id,
        PROJECT
    );

    drop(client);
    emu.stop().await;
}

#[tokio::test]
async fn faults_commit_then_drop_applies_the_write() {
    let emu = Emu::start().await;
    let client = emu.client();
    let system = client
        .create_system(&system_body("crm", vec![api_key_scheme()]))
        .await
        .expect("system");
    let template = client
        .link_system(PROJECT, &link(&system.id, "crm", PROD, false))
        .await
        .expect("link");

    // The next write is applied, then its connection reset.
    emu.set_faults(json!({"commitThenDropNext": 1})).await;
    // Reads are not affected by commitThenDropNext.
    assert!(client.get_system(&system.id).await.is_ok());
    let body = connection_body(
        &template,
        "crm-prod",
        Credential::api_key(ORG, "canary-ctd".into()),
        None,
    );
    let err = client.create_connection(&body).await.expect_err("dropped");
    assert!(matches!(err, ApiError::Transport(_)), "{err:?}");
    assert!(err.is_retryable());
    // ...but the connection exists, so a blind retry collides with it.
    let state = emu.state().await;
    let stored = find(&state["connections"], "name", "crm-prod");
    assert_eq!(
        stored["credentials"][0]["credential"]["data"]["string"]["value"],
        "canary-ctd"
    );
    assert_eq!(state["faults"]["commitThenDropNext"], 0, "spent");
    let err = client
        .create_connection(&body)
        .await
        .expect_err("retry collides");
    api_err(&err, 409, "conflict");
    let listed = client
        .list_connections(Some(&system.id), None)
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "crm-prod");

    // Same for a delete: applied, then dropped; a retry gets 404.
    emu.set_faults(json!({"commitThenDropRate": 1.0, "routes": ["DELETE /o/{org}/connections/{connection_id}"]}))
        .await;
    let err = client
        .delete_connection(&listed[0].id)
        .await
        .expect_err("dropped");
    assert!(matches!(err, ApiError::Transport(_)));
    emu.clear_faults().await;
    api_err(
        &client
            .delete_connection(&listed[0].id)
            .await
            .expect_err("already gone"),
        404,
        "not_found",
    );
    assert_eq!(emu.state().await["connections"], json!([]));

    drop(client);
    emu.stop().await;
}

#[tokio::test]
async fn faults_latency_is_measurable() {
    const LATENCY: Duration = Duration::from_millis(250);
    let emu = Emu::start().await;
    let client = emu.client();
    emu.set_faults(json!({
        "latencyMs": LATENCY.as_millis() as u64,
        "routes": ["GET /o/{org}/projects/{project_id}"]
    }))
    .await;
    let started = Instant::now();
    let project = client.get_project(PROJECT).await.expect("slow but fine");
    let elapsed = started.elapsed();
    assert_eq!(project.id, PROJECT);
    assert!(elapsed >= LATENCY, "{elapsed:?}");
    let call = emu.last_call();
    assert_eq!(call.operation, "get_project");
    assert_eq!(call.status, Some(200));
    assert!(call.elapsed >= LATENCY, "observer saw {:?}", call.elapsed);

    // A client timeout shorter than the latency: `Timeout`, retryable, no status.
    let impatient = emu.client_with(|c| c.timeout = Duration::from_millis(50));
    let err = impatient.get_project(PROJECT).await.expect_err("timeout");
    assert!(matches!(err, ApiError::Timeout), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(emu.last_call().status, None);

    drop((client, impatient));
    emu.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The schemes and credentials the CLI stops short of
// ---------------------------------------------------------------------------------------------

/// Every credential kind of the contract's second table, sent in its shape and stored exactly.
const PEM_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----\n";
const PEM_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n";

#[tokio::test]
async fn oauth1_jwt_bearer_and_secret_schemes_in_the_contract_shape() {
    const CONSUMER_SECRET: &str = "canary-consumer-secret-6b21";
    let emu = Emu::start().await;
    let client = emu.client();
    let erp = client
        .create_system(&system_body(
            "erp",
            vec![
                oauth1_scheme("oauth1-flow", CONSUMER_SECRET, false),
                oauth1_scheme("oauth1-token", CONSUMER_SECRET, true),
            ],
        ))
        .await
        .expect("create with oauth1 schemes");
    no_canary("create_system", &erp, &[CONSUMER_SECRET]);
    for cfg in &erp.auth_scheme_configs {
        assert!(cfg.is_consistent(), "{cfg:?}");
        let o = cfg.oauth1.as_ref().expect("oauth1");
        assert!(
            o.credential_id.as_deref().is_some_and(is_ulid),
            "server-assigned credentialId: {o:?}"
        );
        assert_eq!(o.consumer_secret.expose(), "******", "six asterisks");
        assert_eq!(o.consumer_key, "consumer-key-1");
    }
    let flow = erp.auth_scheme_configs[0].oauth1.as_ref().expect("oauth1");
    assert_eq!(
        flow.token_endpoint.as_ref().map(|e| e.url.as_str()),
        Some("https://erp.example.com/oauth/access_token")
    );
    assert_eq!(
        flow.temp_credential_endpoint
            .as_ref()
            .and_then(|e| e.parameter_transmission),
        Some(ParameterTransmission::AuthorizationHeader)
    );
    // The types without a member: PUT at their ID, read back as the type alone.
    for (id, type_) in [
        ("jwt", AuthSchemeType::JwtBearer),
        ("signing", AuthSchemeType::Secret),
    ] {
        let answer = client
            .upsert_auth_scheme_at(&erp.id, id, &AuthSchemeConfig::memberless(type_))
            .await
            .expect("upsert a memberless scheme");
        assert_eq!(emu.last_status(), Some(201));
        assert_eq!(answer.type_, type_);
        assert_eq!(answer.id(), None);
    }
    let (_, raw) = emu
        .raw(reqwest::Method::GET, &format!("/systems/{}", erp.id), None)
        .await;
    let configs = raw["authSchemeConfigs"].as_array().expect("configs");
    assert_eq!(configs.len(), 4);
    assert_eq!(configs[2], json!({"type": "jwt-bearer"}));
    assert_eq!(configs[3], json!({"type": "secret"}));
    assert_eq!(configs[0]["oauth1"]["consumerSecret"], "******");
    assert!(!raw.to_string().contains(CONSUMER_SECRET));
    let state = emu.state().await;
    assert_eq!(
        find(&state["systems"], "id", &erp.id)["authSchemeConfigs"][0]["oauth1"]["consumerSecret"],
        CONSUMER_SECRET
    );

    // A template can use a memberless config by the ID it was PUT at; while it does, the config
    // cannot be deleted; the unused one can.
    let template = client
        .link_system(PROJECT, &link(&erp.id, "erp", PROD, false))
        .await
        .expect("link");
    let template = client
        .update_connection_template(
            PROJECT,
            &template.connection_template_id,
            &UpdateConnectionTemplate {
                auth_scheme_config_ids: Some(vec!["jwt".to_owned()]),
                ..Default::default()
            },
        )
        .await
        .expect("use jwt");
    assert_eq!(
        template.auth_scheme_configs,
        [AuthSchemeConfig::memberless(AuthSchemeType::JwtBearer)]
    );
    api_err(
        &client
            .delete_auth_scheme(&erp.id, "jwt")
            .await
            .expect_err("in use"),
        409,
        "conflict",
    );
    client
        .delete_auth_scheme(&erp.id, "signing")
        .await
        .expect("delete the unused secret scheme");
    assert_eq!(emu.last_status(), Some(204));

    // Re-upserting the oauth1 scheme with its credentialId keeps it; a foreign one is refused.
    let mut again = oauth1_scheme("oauth1-flow", CONSUMER_SECRET, false);
    if let Some(o) = again.oauth1.as_mut() {
        o.credential_id = flow.credential_id.clone();
    }
    let kept = client
        .upsert_auth_scheme(&erp.id, &again)
        .await
        .expect("upsert with its credentialId");
    assert_eq!(
        kept.oauth1.and_then(|o| o.credential_id),
        flow.credential_id
    );
    if let Some(o) = again.oauth1.as_mut() {
        o.credential_id = Some(UNKNOWN.to_owned());
    }
    field_err(
        &client
            .upsert_auth_scheme(&erp.id, &again)
            .await
            .expect_err("foreign credentialId"),
        "oauth1.credentialId",
    );

    // Refusals, raw (the typed client cannot build most of them).
    let put_path = format!("/systems/{}/auth-scheme-configs/bad", erp.id);
    let base = json!({"id": "bad", "description": "", "consumerKey": "k",
        "consumerSecret": "s", "signatureMethod": "sha256"});
    let cases = [
        (
            json!({"type": "oauth1", "oauth1": base}),
            "oauth1.tempCredentialEndpoint",
        ),
        (
            json!({"type": "oauth1", "oauth1": {"id": "bad", "description": "", "consumerKey": "k",
                "consumerSecret": "s", "signatureMethod": "md5", "tokenAuth": true}}),
            "oauth1.signatureMethod",
        ),
        (
            json!({"type": "oauth1", "oauth1": {"id": "bad", "description": "", "consumerKey": "k",
                "signatureMethod": "sha1", "tokenAuth": true}}),
            "oauth1.consumerSecret",
        ),
        (
            json!({"type": "oauth1", "oauth1": {"id": "bad", "description": "", "consumerKey": "k",
                "consumerSecret": "s", "signatureMethod": "sha1", "tokenAuth": true,
                "tokenEndpoint": {"url": "https://p/t", "parameterTransmission": "AUTH_STYLE_BODY"}}}),
            "oauth1.tokenEndpoint.parameterTransmission",
        ),
        (
            json!({"type": "jwt-bearer", "jwtBearer": {"id": "bad"}}),
            "jwtBearer",
        ),
        (json!({"type": "secret", "secret": {"id": "bad"}}), "secret"),
        (json!({"type": "secret", "oauth1": base}), "oauth1"),
    ];
    for (body, field) in cases {
        let (status, answer) = emu
            .raw(reqwest::Method::PUT, &put_path, Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body}: {answer}");
        let fields: Vec<&str> = answer["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .filter_map(|f| f["field"].as_str())
            .collect();
        assert!(fields.contains(&field), "{body}: {fields:?}");
    }

    drop(client);
    emu.stop().await;
}

#[tokio::test]
async fn connections_carry_every_credential_kind_in_the_contract_shape() {
    const KEY: &str = "canary-private-key-0a1b";
    const HMAC: &str = "canary-hmac-secret-33c2";
    const SECRET: &str = "canary-secret-value-8d4e";
    const JWT: &str = "canary-jwt-key-5f60";
    const TOKEN: &str = "canary-oauth1-token-71a9";
    const TOKEN_SECRET: &str = "canary-oauth1-token-secret-2e8b";
    const BINARY: &str = "Y2FuYXJ5LWJpbmFyeS05OWYx"; // base64 of canary-binary-99f1
    let all = [KEY, HMAC, SECRET, JWT, TOKEN, TOKEN_SECRET, BINARY];
    let emu = Emu::start().await;
    let client = emu.client();
    let pem_key = format!("-----BEGIN PRIVATE KEY-----\n{KEY}\n-----END PRIVATE KEY-----\n");

    let mut made = Vec::new();
    let kinds: Vec<(&str, AuthSchemeConfig, Credential)> = vec![
        (
            "mtls",
            AuthSchemeConfig::certificate("mtls", "client certificate"),
            Credential::certificate(ORG, PEM_CERT, pem_key.as_str().into(), PEM_CA),
        ),
        (
            "webhooks",
            hmac_scheme(),
            Credential::string(ORG, HMAC.into()),
        ),
        (
            "vault",
            AuthSchemeConfig::memberless(AuthSchemeType::Secret),
            Credential::string(ORG, SECRET.into()),
        ),
        (
            "jwt",
            AuthSchemeConfig::memberless(AuthSchemeType::JwtBearer),
            Credential::string(ORG, JWT.into()),
        ),
        (
            "erp",
            oauth1_scheme("oauth1", "consumer-secret", true),
            Credential::oauth1_token(ORG, TOKEN.into(), TOKEN_SECRET.into()),
        ),
        (
            "keystore",
            AuthSchemeConfig::certificate("keystore", "a PKCS#12 keystore"),
            Credential::binary(ORG, BINARY.into()),
        ),
    ];
    for (name, scheme, credential) in kinds {
        // Memberless schemes have no ID in a create body: PUT them at one.
        let memberless = scheme.id().is_none();
        let system = client
            .create_system(&system_body(
                name,
                if memberless {
                    vec![]
                } else {
                    vec![scheme.clone()]
                },
            ))
            .await
            .expect("system");
        if memberless {
            client
                .upsert_auth_scheme_at(&system.id, name, &scheme)
                .await
                .expect("memberless scheme");
        }
        let mut template = client
            .link_system(PROJECT, &link(&system.id, name, PROD, false))
            .await
            .expect("link");
        if memberless {
            template = client
                .update_connection_template(
                    PROJECT,
                    &template.connection_template_id,
                    &UpdateConnectionTemplate {
                        auth_scheme_config_ids: Some(vec![name.to_owned()]),
                        ..Default::default()
                    },
                )
                .await
                .expect("use it");
        }
        assert_eq!(template.auth_scheme_configs[0].type_, scheme.type_);
        let body = connection_body(&template, &format!("{name}-conn"), credential, None);
        let connection = client.create_connection(&body).await.expect(name);
        assert_eq!(emu.last_status(), Some(201));
        no_canary(name, &connection, &all);
        made.push((name, connection.id));
    }

    // Versori holds exactly those values, in the contract's shapes.
    let state = emu.state().await;
    let data = |name: &str| {
        let id = &made.iter().find(|(n, _)| *n == name).expect("made").1;
        let cred = &find(&state["connections"], "id", id)["credentials"][0]["credential"];
        (cred["type"].clone(), cred["data"].clone())
    };
    assert_eq!(
        data("mtls"),
        (
            json!("certificate"),
            json!({"certificate": {"certificate": PEM_CERT, "key": pem_key, "ca": PEM_CA}})
        )
    );
    assert_eq!(
        data("webhooks"),
        (json!("string"), json!({"string": {"value": HMAC}}))
    );
    assert_eq!(
        data("vault"),
        (json!("string"), json!({"string": {"value": SECRET}}))
    );
    assert_eq!(
        data("jwt"),
        (json!("string"), json!({"string": {"value": JWT}}))
    );
    assert_eq!(
        data("erp"),
        (
            json!("oauth1-token"),
            json!({"oauth1Token": {"token": TOKEN, "tokenSecret": TOKEN_SECRET}})
        )
    );
    assert_eq!(
        data("keystore"),
        (json!("binary"), json!({"binary": {"valueBase64": BINARY}}))
    );

    // Every read redacts them as six asterisks; the certificate and CA are not secret.
    let (status, listed) = emu
        .raw(
            reqwest::Method::GET,
            &format!("/projects/{PROJECT}/connections?env_id={PROD}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let text = listed.to_string();
    for canary in all {
        assert!(!text.contains(canary), "a listing leaks a secret");
    }
    for (name, id) in &made {
        let (_, read) = emu
            .raw(reqwest::Method::GET, &format!("/connections/{id}"), None)
            .await;
        let data = &read["credentials"][0]["credential"]["data"];
        let masked: Vec<&Value> = match *name {
            "mtls" => vec![&data["certificate"]["key"]],
            "webhooks" | "vault" | "jwt" => vec![&data["string"]["value"]],
            "erp" => vec![
                &data["oauth1Token"]["token"],
                &data["oauth1Token"]["tokenSecret"],
            ],
            _ => vec![&data["binary"]["valueBase64"]],
        };
        for value in masked {
            assert_eq!(value, "******", "{name}: {data}");
        }
        if *name == "mtls" {
            assert_eq!(data["certificate"]["certificate"], PEM_CERT);
            assert_eq!(data["certificate"]["ca"], PEM_CA);
        }
    }

    // Refusals name their fields.
    let keystore = made.last().expect("keystore").1.clone();
    let refused = [
        (
            json!({"type": "binary", "organisationId": ORG, "data": {"binary": {"valueBase64": "not base64!"}}}),
            "credentials[0].credential.data.binary.valueBase64",
        ),
        (
            json!({"type": "certificate", "organisationId": ORG, "data": {"certificate": {"certificate": "plain text", "key": pem_key, "ca": ""}}}),
            "credentials[0].credential.data.certificate.certificate",
        ),
        (
            json!({"type": "oauth1-token", "organisationId": ORG, "data": {"oauth1Token": {"token": "t"}}}),
            "credentials[0].credential.data.oauth1Token.tokenSecret",
        ),
        (
            json!({"type": "oauth1", "organisationId": ORG, "data": {"oauth1": {"state": "s", "oauthToken": "t"}}}),
            "credentials[0].credential.data.oauth1.oauthVerifier",
        ),
    ];
    for (credential, field) in refused {
        let (status, answer) = emu
            .raw(
                reqwest::Method::PUT,
                &format!("/connections/{keystore}"),
                Some(json!({"name": "keystore-conn", "baseUrl": "", "credentials": [{"credential": credential}]})),
            )
            .await;
        assert_eq!(status, 400, "{answer}");
        let fields: Vec<&str> = answer["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .filter_map(|f| f["field"].as_str())
            .collect();
        assert!(fields.contains(&field), "{fields:?}");
    }

    drop(client);
    emu.stop().await;
}

#[tokio::test]
async fn oauth1_browser_flow_through_the_authorize_page() {
    let emu = Emu::start().await;
    let client = emu.client();
    let erp = client
        .create_system(&system_body(
            "erp",
            vec![
                oauth1_scheme("oauth1-flow", "consumer-secret", false),
                oauth1_scheme("oauth1-token", "consumer-secret", true),
            ],
        ))
        .await
        .expect("system");
    let credential_of = |i: usize| {
        erp.auth_scheme_configs[i]
            .oauth1
            .as_ref()
            .and_then(|o| o.credential_id.clone())
            .expect("credentialId")
    };
    let template = client
        .link_system(PROJECT, &link(&erp.id, "erp", PROD, false))
        .await
        .expect("link");
    let redirect = "https://operator.example.com/oauth2/callback";
    let request = |credential_id: String| InitialiseOAuth1ConnectionRequest {
        credential: CredentialRef {
            id: credential_id,
            organisation_id: ORG.to_owned(),
        },
        redirect_url: redirect.to_owned(),
    };
    let answer = client
        .initialise_oauth1(&erp.id, &request(credential_of(0)))
        .await
        .expect("initialise");
    assert_eq!(emu.last_status(), Some(200));
    let url = Url::parse(&answer.url).expect("a URL");
    let query: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    let state_param = query.get("state").expect("state").clone();
    let token = query.get("oauth_token").expect("oauth_token").clone();

    // The provider's page sends the browser back with the token and a verifier.
    let response = emu.http.get(url.as_str()).send().await.expect("authorize");
    assert_eq!(response.status(), 302);
    let location = Url::parse(response.headers()["location"].to_str().expect("location"))
        .expect("location URL");
    assert!(location.as_str().starts_with(redirect));
    let back: std::collections::HashMap<String, String> =
        location.query_pairs().into_owned().collect();
    assert_eq!(back.get("oauth_token"), Some(&token));
    let verifier = back.get("oauth_verifier").expect("oauth_verifier").clone();

    // A wrong verifier is refused; the right one makes the connection, once.
    let body = |verifier: &str| {
        connection_body(
            &template,
            "erp-user",
            Credential::oauth1(ORG, &state_param, token.as_str().into(), verifier.into()),
            None,
        )
    };
    field_err(
        &client
            .create_connection(&body("forged"))
            .await
            .expect_err("wrong verifier"),
        "connection.credentials[0].credential.data.oauth1.oauthVerifier",
    );
    let connection = client
        .create_connection(&body(&verifier))
        .await
        .expect("oauth1 connection");
    no_canary("oauth1 connection", &connection, &[verifier.as_str()]);
    let state = emu.state().await;
    let stored = &find(&state["connections"], "id", &connection.id)["credentials"][0]["credential"];
    assert_eq!(stored["type"], "oauth1");
    assert_eq!(
        stored["data"]["oauth1"],
        json!({"state": state_param, "oauthToken": token, "oauthVerifier": verifier})
    );
    assert_eq!(state["oauth1Flows"], json!([]), "the flow is spent");
    let mut replay = body(&verifier);
    replay.connection.name = "erp-replay".to_owned();
    field_err(
        &client
            .create_connection(&replay)
            .await
            .expect_err("replayed verifier"),
        "connection.credentials[0].credential.data.oauth1.oauthVerifier",
    );

    // Refusals: a tokenAuth scheme has no browser flow; an unknown credential; no redirect.
    field_err(
        &client
            .initialise_oauth1(&erp.id, &request(credential_of(1)))
            .await
            .expect_err("tokenAuth"),
        "credential.id",
    );
    field_err(
        &client
            .initialise_oauth1(&erp.id, &request(UNKNOWN.to_owned()))
            .await
            .expect_err("unknown credential"),
        "credential.id",
    );
    api_err(
        &client
            .initialise_oauth1(UNKNOWN, &request(credential_of(0)))
            .await
            .expect_err("unknown system"),
        404,
        "not_found",
    );
    let (status, answer) = emu
        .raw(
            reqwest::Method::POST,
            &format!("/systems/{}/oauth1/initialise", erp.id),
            Some(json!({"credential": {"id": credential_of(0), "organisationId": ORG}})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(answer["fields"][0]["field"], "redirectUrl");
    let unknown = emu
        .http
        .get(emu.hook("oauth1/authorize?oauth_token=never-issued"))
        .send()
        .await
        .expect("authorize");
    assert_eq!(unknown.status(), 400);

    drop(client);
    emu.stop().await;
}

#[tokio::test]
async fn unpaged_listings_answer_a_hundred_templates_in_one_page() {
    let emu = Emu::start().await;
    let client = emu.client();
    let system = client
        .create_system(&system_body("bulk", vec![api_key_scheme()]))
        .await
        .expect("system");
    let mut templates = Vec::new();
    for i in 0..100 {
        templates.push(
            client
                .link_system(PROJECT, &link(&system.id, &format!("t{i:03}"), PROD, false))
                .await
                .expect("link"),
        );
    }
    for template in templates.iter().take(30) {
        client
            .create_connection(&EnvSystemConnectionCreate {
                connection_template_id: template.connection_template_id.clone(),
                connection: ConnectionCreate {
                    name: format!("c-{}", template.name),
                    credentials: vec![ConnectionCredential::bypass(ORG)],
                    base_url: None,
                },
                external_id: None,
            })
            .await
            .expect("connection");
    }

    // One answer, every item, no cursor: what the CLI reads.
    let (status, page) = emu
        .raw(
            reqwest::Method::GET,
            &format!("/projects/{PROJECT}/connection-templates?env_id={PROD}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["totalCount"], 100);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(100));
    assert!(page.get("next").is_none() && page.get("prev").is_none());
    assert_eq!(page["items"][99]["name"], "t099");
    let (_, connections) = emu
        .raw(
            reqwest::Method::GET,
            &format!("/projects/{PROJECT}/connections?env_id={PROD}"),
            None,
        )
        .await;
    assert_eq!(connections["totalCount"], 30);
    assert_eq!(connections["items"].as_array().map(Vec::len), Some(30));
    assert!(connections.get("next").is_none());

    // The client reads each with one call.
    let before = emu.calls.lock().expect("calls").len();
    let listed = client
        .list_connection_templates(PROJECT, PROD)
        .await
        .expect("templates");
    assert_eq!(listed.len(), 100);
    assert_eq!(listed[42].name, "t042");
    let listed = client
        .list_project_connections(PROJECT, PROD)
        .await
        .expect("connections");
    assert_eq!(listed.len(), 30);
    assert_eq!(emu.calls.lock().expect("calls").len() - before, 2);

    // Paging parameters are refused where the API takes none; the paged lists still page.
    for query in ["first=10", "after=abc", "before=abc"] {
        for list in ["connection-templates", "connections"] {
            let (status, answer) = emu
                .raw(
                    reqwest::Method::GET,
                    &format!("/projects/{PROJECT}/{list}?env_id={PROD}&{query}"),
                    None,
                )
                .await;
            assert_eq!(status, 400, "{list}?{query}: {answer}");
            let param = query.split('=').next().unwrap_or_default();
            assert_eq!(answer["fields"][0]["field"], param);
        }
    }
    let (_, paged) = emu.raw(reqwest::Method::GET, "/connections", None).await;
    assert_eq!(paged["totalCount"], 30);
    assert_eq!(paged["items"].as_array().map(Vec::len), Some(20));
    assert!(paged["next"].is_string());
    assert_eq!(
        client
            .list_connections(None, None)
            .await
            .expect("follows next")
            .len(),
        30
    );

    drop(client);
    emu.stop().await;
}
