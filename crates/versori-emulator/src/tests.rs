//! End-to-end tests of the emulator over real HTTP (reqwest against a server on 127.0.0.1:0).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::connect_info::MockConnectInfo;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::*;

const ORG: &str = "01KKBQZZ0000000000000000RG";
const TOKEN: &str = "test-token";
const PROJECT: &str = "01KKBR46SH7JES8AZ14EEAK0CX";
const PROD: &str = "01KKBR46SH7JES8AZ14EEAK0D0";
const ZERO: &str = "00000000000000000000000000";
const SEED: &str = "
projects:
  - id: 01KKBR46SH7JES8AZ14EEAK0CX
    name: demo
    environments:
      - { id: 01KKBR46SH7JES8AZ14EEAK0D0, name: production }
      - { name: staging }
";

struct Emu {
    base: String,
    client: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

fn config() -> EmulatorConfig {
    EmulatorConfig {
        organisation: ORG.to_owned(),
        token: TOKEN.to_owned(),
        seed: Seed::from_yaml(SEED).unwrap(),
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn start() -> Emu {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, config(), async {
        let _ = stopped.await;
    }));
    Emu {
        base: format!("http://{addr}"),
        client: client(),
        _stop: stop,
    }
}

impl Emu {
    fn url(&self, path: &str) -> String {
        format!("{}/o/{ORG}{path}", self.base)
    }

    async fn raw(&self, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut req = self
            .client
            .request(method, self.url(path))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .header("Accept", "application/json");
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.unwrap()
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let resp = self.raw(method, path, body).await;
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        (status, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }

    async fn hook(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}/_emulator{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn state(&self) -> Value {
        let (status, state) = self.hook(Method::GET, "/state", None).await;
        assert_eq!(status, StatusCode::OK);
        state
    }

    async fn faults(&self, faults: Value) {
        let (status, body) = self.hook(Method::PUT, "/faults", Some(faults)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn system(&self, name: &str, schemes: Value) -> Value {
        let (status, body) = self
            .post(
                "/systems",
                json!({"name": name, "domain": "example.com", "templateBaseUrl": "https://api.example.com", "authSchemeConfigs": schemes}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    async fn link(
        &self,
        system: &str,
        name: &str,
        env: &str,
        dynamic: bool,
    ) -> (StatusCode, Value) {
        self.post(
            &format!("/projects/{PROJECT}/connection-templates"),
            json!({"systemId": system, "name": name, "environmentId": env, "dynamic": dynamic}),
        )
        .await
    }
}

fn api_key(id: &str) -> Value {
    json!({"type": "api-key", "apiKey": {"id": id, "description": "", "name": "X-Api-Key", "in": "header"}})
}

fn basic(id: &str) -> Value {
    json!({"type": "basic-auth", "basicAuth": {"id": id, "description": "basic"}})
}

fn oauth2_code(id: &str) -> Value {
    json!({"type": "oauth2", "oauth2": {
        "id": id, "description": "", "tokenUrl": "https://auth.example.com/token",
        "authorizeUrl": "https://auth.example.com/authorize",
        "scopes": [{"name": "read"}], "defaultScopes": ["read"],
        "grant": {"type": "authorizationCode", "authorizationCode": {"clientId": "cid", "clientSecret": "grant-secret"}}
    }})
}

fn string_credential(value: &str) -> Value {
    json!({
        "id": ZERO,
        "authSchemeConfig": api_key("key"),
        "credential": {"id": ZERO, "organisationId": ORG, "type": "string", "data": {"string": {"value": value}}}
    })
}

fn fields(body: &Value) -> Vec<String> {
    body["fields"]
        .as_array()
        .map(|f| {
            f.iter()
                .map(|e| e["field"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn staging(state: &Value) -> String {
    state["projects"][0]["environments"][1]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn seed_example_loads() {
    let seed = Seed::from_yaml(SEED).unwrap();
    assert_eq!(seed.projects[0].environments.len(), 2);
    assert!(
        Seed::from_yaml("projects: [{name: x, environments: [{name: a, status: bogus}]}]").is_err()
    );
    assert!(Seed::from_yaml("projects: [{id: nope, name: x}]").is_err());
    assert!(Seed::from_yaml("projects: [{name: x, colour: red}]").is_err());
    assert_eq!(Seed::from_yaml("{}").unwrap(), Seed::default());
}

#[tokio::test]
async fn auth_and_organisation() {
    let emu = start().await;
    let url = emu.url(&format!("/projects/{PROJECT}"));
    let resp = emu.client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "unauthorized");
    assert!(body["message"].is_string());

    let resp = emu
        .client
        .get(&url)
        .header("Authorization", "Bearer wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "unauthorized");

    for scheme in ["Bearer", "JWT"] {
        let resp = emu
            .client
            .get(&url)
            .header("Authorization", format!("{scheme} {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{scheme}");
        let project: Value = resp.json().await.unwrap();
        assert_eq!(project["name"], "demo");
        assert_eq!(project["environments"][0]["id"], PROD);
        assert_eq!(project["environments"][1]["name"], "staging");
        assert_eq!(project["environments"][1]["status"], "running");
    }

    let resp = emu
        .client
        .get(format!("{}/o/other-org/projects/{PROJECT}", emu.base))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "not_found");

    let (status, body) = emu
        .get(&format!("/projects/{}", crate::validate::new_ulid()))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, body) = emu.get("/projects/not-a-ulid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(fields(&body), ["project_id"]);
    let (status, body) = emu.get("/nothing-here").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, body) = emu.call(Method::PATCH, "/systems", Some(json!({}))).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["code"], "method_not_allowed");
}

#[tokio::test]
async fn system_validation() {
    let emu = start().await;
    let (status, body) = emu
        .post(
            "/systems",
            json!({
                "name": "",
                "templateBaseUrl": "not a url",
                "authSchemeConfigs": [
                    {"type": "oauth2", "oauth2": {"id": "o", "description": "", "tokenUrl": "nope",
                      "scopes": [], "defaultScopes": [], "grant": {"type": "implicit"}}},
                    {"type": "api-key", "apiKey": {"id": "k", "description": "", "name": "X", "in": "body"}, "basicAuth": {"id": "b"}},
                    {"type": "magic"},
                    {"type": "hmac", "hmac": {"id": "h", "description": "", "name": "Sig", "in": "header",
                      "algorithm": "md5", "digestInputs": ["body", "headers"], "encoding": "hex"}}
                ]
            }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "validation_failed");
    let f = fields(&body);
    for expected in [
        "name",
        "domain",
        "templateBaseUrl",
        "authSchemeConfigs[0].oauth2.tokenUrl",
        "authSchemeConfigs[0].oauth2.grant.type",
        "authSchemeConfigs[1].apiKey.in",
        "authSchemeConfigs[1].basicAuth",
        "authSchemeConfigs[2].type",
        "authSchemeConfigs[3].hmac.algorithm",
        "authSchemeConfigs[3].hmac.digestInputs[1]",
    ] {
        assert!(f.contains(&expected.to_owned()), "{expected} not in {f:?}");
    }

    // What the CLI sends: authSchemeConfigs null, a trailing newline.
    let resp = emu
        .client
        .post(emu.url("/systems"))
        .header("Authorization", format!("JWT {TOKEN}"))
        .header("Content-Type", "application/json")
        .body("{\"name\":\"shopify\",\"domain\":\"shopify.com\",\"templateBaseUrl\":\"https://x.myshopify.com\",\"authSchemeConfigs\":null}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let system: Value = resp.json().await.unwrap();
    assert!(validate::is_ulid(system["id"].as_str().unwrap()));
    assert_eq!(system["authSchemeConfigs"], json!([]));
    let id = system["id"].as_str().unwrap().to_owned();

    let (status, body) = emu
        .post(
            "/systems",
            json!({"name": "x", "domain": "d", "templateBaseUrl": "https://x"}),
        )
        .await;
    assert_eq!(
        (status, fields(&body)),
        (
            StatusCode::BAD_REQUEST,
            vec!["authSchemeConfigs".to_owned()]
        )
    );

    let (status, body) = emu
        .post(
            "/systems",
            json!({"name": "x", "domain": "d", "templateBaseUrl": "https://x",
            "authSchemeConfigs": [api_key("same"), basic("same")]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(fields(&body), ["authSchemeConfigs[1].basicAuth.id"]);

    // Malformed JSON and a missing content type.
    let resp = emu
        .client
        .post(emu.url("/systems"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .header("Content-Type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["code"],
        "validation_failed"
    );
    let resp = emu
        .client
        .post(emu.url("/systems"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Auth scheme upsert: path/body ID must match; 201 with the config.
    let (status, body) = emu
        .put(
            &format!("/systems/{id}/auth-scheme-configs/other"),
            api_key("key"),
        )
        .await;
    assert_eq!(
        (status, fields(&body)),
        (StatusCode::BAD_REQUEST, vec!["apiKey.id".to_owned()])
    );
    let (status, body) = emu
        .put(
            &format!("/systems/{id}/auth-scheme-configs/key"),
            api_key("key"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["apiKey"]["validationMessages"], json!([]));
    let (status, body) = emu
        .put(
            &format!(
                "/systems/{}/auth-scheme-configs/key",
                crate::validate::new_ulid()
            ),
            api_key("key"),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    // Update: 201, partial, auth schemes not through this path.
    let (status, body) = emu
        .put(&format!("/systems/{id}"), json!({"domain": "shopify.dev"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["domain"], "shopify.dev");
    assert_eq!(body["name"], "shopify");
    assert_eq!(body["authSchemeConfigs"][0]["apiKey"]["id"], "key");
    let (status, body) = emu
        .put(&format!("/systems/{id}"), json!({"authSchemeConfigs": []}))
        .await;
    assert_eq!(
        (status, fields(&body)),
        (
            StatusCode::BAD_REQUEST,
            vec!["authSchemeConfigs".to_owned()]
        )
    );

    // Duplicate system names are allowed.
    emu.system("shopify", json!([])).await;
    let (_, list) = emu.get("/systems?search=shopify").await;
    assert_eq!(list["totalCount"], 2);
}

#[tokio::test]
async fn templates_and_refusals() {
    let emu = start().await;
    let staging = staging(&emu.state().await);
    let system = emu
        .system("crm", json!([api_key("key"), basic("basic")]))
        .await;
    let sid = system["id"].as_str().unwrap();

    let (status, t) = emu.link(sid, "crm", PROD, false).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["id"], sid);
    let tid = t["connectionTemplateId"].as_str().unwrap().to_owned();
    assert!(validate::is_ulid(&tid) && tid != sid);
    assert_eq!(t["dynamic"], false);
    assert_eq!(t["templateBaseUrl"], "https://api.example.com");
    assert_eq!(t["authSchemeConfigs"].as_array().unwrap().len(), 1);
    assert_eq!(t["authSchemeConfigs"][0]["apiKey"]["id"], "key");

    let (status, body) = emu.link(sid, "crm", PROD, false).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict"))
    );
    let (status, t2) = emu.link(sid, "crm", &staging, false).await;
    assert_eq!(status, StatusCode::OK);
    let tid2 = t2["connectionTemplateId"].as_str().unwrap().to_owned();

    let unknown = validate::new_ulid();
    let (status, body) = emu.link(sid, "x", &unknown, false).await;
    assert_eq!(
        (status, fields(&body)),
        (StatusCode::BAD_REQUEST, vec!["environmentId".to_owned()])
    );
    let (status, body) = emu.link(&unknown, "x", PROD, false).await;
    assert_eq!(
        (status, fields(&body)),
        (StatusCode::BAD_REQUEST, vec!["systemId".to_owned()])
    );
    let (status, body) = emu.link(ZERO, "x", PROD, false).await;
    assert_eq!(
        (status, fields(&body)),
        (StatusCode::BAD_REQUEST, vec!["systemId".to_owned()])
    );
    let (status, _) = emu
        .post(
            &format!("/projects/{unknown}/connection-templates"),
            json!({"systemId": sid, "name": "x", "environmentId": PROD, "dynamic": false}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // An upsert on the system shows in every template using the config.
    let mut changed = api_key("key");
    changed["apiKey"]["name"] = json!("Authorization");
    let (status, _) = emu
        .put(&format!("/systems/{sid}/auth-scheme-configs/key"), changed)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, list) = emu
        .get(&format!(
            "/projects/{PROJECT}/connection-templates?env_id={PROD}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["totalCount"], 1);
    assert_eq!(
        list["items"][0]["authSchemeConfigs"][0]["apiKey"]["name"],
        "Authorization"
    );

    let tpath = format!("/projects/{PROJECT}/connection-templates/{tid}");
    let (status, body) = emu
        .put(&tpath, json!({"authSchemeConfigIds": ["nope"]}))
        .await;
    assert_eq!(
        (status, fields(&body)),
        (
            StatusCode::BAD_REQUEST,
            vec!["authSchemeConfigIds[0]".to_owned()]
        )
    );
    let (status, body) = emu
        .put(&tpath, json!({"authSchemeConfigIds": ["basic"]}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["authSchemeConfigs"][0]["type"], "basic-auth");
    assert_eq!(body["name"], "crm");
    let (status, body) = emu
        .put(&tpath, json!({"name": "crm2", "dynamic": true}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["name"].as_str(), body["dynamic"].as_bool()),
        (Some("crm2"), Some(true))
    );

    for scheme in ["basic", "key"] {
        let (status, body) = emu
            .delete(&format!("/systems/{sid}/auth-scheme-configs/{scheme}"))
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::CONFLICT, Some("conflict"))
        );
    }
    let (status, body) = emu.delete(&format!("/systems/{sid}")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict"))
    );

    let (status, body) = emu
        .get(&format!("/projects/{PROJECT}/connection-templates"))
        .await;
    assert_eq!(
        (status, fields(&body)),
        (StatusCode::BAD_REQUEST, vec!["env_id".to_owned()])
    );
    let (status, body) = emu
        .get(&format!(
            "/projects/{PROJECT}/connection-templates?env_id={unknown}"
        ))
        .await;
    assert_eq!(
        (status, fields(&body)),
        (StatusCode::BAD_REQUEST, vec!["env_id".to_owned()])
    );

    assert_eq!(emu.delete(&tpath).await.0, StatusCode::NO_CONTENT);
    assert_eq!(
        emu.delete(&format!("/projects/{PROJECT}/connection-templates/{tid2}"))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(emu.delete(&tpath).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        emu.delete(&format!("/systems/{sid}/auth-scheme-configs/basic"))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        emu.delete(&format!("/systems/{sid}")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        emu.get(&format!("/systems/{sid}")).await.0,
        StatusCode::NOT_FOUND
    );

    // A system without auth schemes gives a template without any.
    let bare = emu.system("bare", Value::Null).await;
    let (status, t) = emu
        .link(bare["id"].as_str().unwrap(), "bare", PROD, false)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(t["authSchemeConfigs"], json!([]));
}

#[tokio::test]
async fn connections_and_redaction() {
    let emu = start().await;
    let system = emu.system("crm", json!([api_key("key")])).await;
    let sid = system["id"].as_str().unwrap().to_owned();
    let (_, t) = emu.link(&sid, "crm", PROD, false).await;
    let tid = t["connectionTemplateId"].as_str().unwrap().to_owned();
    let (_, dt) = emu.link(&sid, "crm-dynamic", PROD, true).await;
    let dtid = dt["connectionTemplateId"].as_str().unwrap().to_owned();

    let (status, c) = emu
        .post(
            "/connections",
            json!({"connectionTemplateId": tid, "connection": {"name": "main", "credentials": [string_credential("s3cret")]}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    let cid = c["id"].as_str().unwrap().to_owned();
    assert_eq!(c["systemId"], sid.as_str());
    assert_eq!(c["connectionTemplateId"], tid.as_str());
    assert!(c["createdAt"].is_string() && c["updatedAt"].is_string());
    let cred = &c["credentials"][0];
    assert!(validate::is_ulid(cred["id"].as_str().unwrap()) && cred["id"] != ZERO);
    assert!(cred["credential"]["id"] != ZERO);
    assert_eq!(cred["credential"]["data"]["string"]["value"], store::MASK);

    let (_, got) = emu.get(&format!("/connections/{cid}")).await;
    assert_eq!(
        got["credentials"][0]["credential"]["data"]["string"]["value"],
        store::MASK
    );
    let (_, list) = emu.get(&format!("/connections?system_id={sid}")).await;
    assert_eq!(list["totalCount"], 1);
    assert_eq!(
        list["items"][0]["credentials"][0]["credential"]["data"]["string"]["value"],
        store::MASK
    );
    let state = emu.state().await;
    assert_eq!(
        state["connections"][0]["credentials"][0]["credential"]["data"]["string"]["value"],
        "s3cret"
    );
    assert_eq!(state["connections"][0]["organisationId"], ORG);

    // Names unique within the owning system (across its templates).
    let (status, body) = emu
        .post(
            "/connections",
            json!({"connectionTemplateId": dtid, "externalId": "user-1", "connection": {"name": "main", "credentials": []}}),
        )
        .await;
    assert_eq!(
        (status, fields(&body)),
        (StatusCode::CONFLICT, vec!["connection.name".to_owned()])
    );

    // externalId: required by a dynamic template, refused by a static one.
    let (status, body) = emu
        .post(
            "/connections",
            json!({"connectionTemplateId": dtid, "connection": {"name": "d", "credentials": []}}),
        )
        .await;
    assert_eq!(
        (status, fields(&body)),
        (StatusCode::BAD_REQUEST, vec!["externalId".to_owned()])
    );
    assert!(
        body["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains("dynamic")
    );
    let (status, body) = emu
        .post(
            "/connections",
            json!({"connectionTemplateId": tid, "externalId": "user-1", "connection": {"name": "s", "credentials": []}}),
        )
        .await;
    assert_eq!(
        (status, fields(&body)),
        (StatusCode::BAD_REQUEST, vec!["externalId".to_owned()])
    );
    assert!(
        body["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains("static")
    );
    let (status, dc) = emu
        .post(
            "/connections",
            json!({"connectionTemplateId": dtid, "externalId": "user-1", "connection": {"name": "d", "credentials": [
                {"id": ZERO, "authSchemeConfig": {"type": "none", "none": {"id": "", "description": ""}},
                 "credential": {"id": ZERO, "organisationId": ORG, "type": "none"}}
            ]}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{dc}");

    // Credential validation with field paths.
    let (status, body) = emu
        .post(
            "/connections",
            json!({"connectionTemplateId": tid, "connection": {"name": "bad", "baseUrl": "nope", "credentials": [
                {"credential": {"organisationId": ORG, "type": "string", "data": {"basicAuth": {"username": "u"}}}},
                {"credential": {"type": "bogus"}},
                {"id": "not-a-ulid", "credential": {"organisationId": ORG, "type": "oauth2-client",
                  "data": {"oauth2Client": {"clientId": "c", "tokenUrl": "https://t"}}}},
                {"credential": {"organisationId": ORG, "type": "none", "data": {"string": {"value": "x"}}}}
            ]}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let f = fields(&body);
    for expected in [
        "connection.baseUrl",
        "connection.credentials[0].credential.data.basicAuth",
        "connection.credentials[0].credential.data.string",
        "connection.credentials[1].credential.organisationId",
        "connection.credentials[1].credential.type",
        "connection.credentials[2].id",
        "connection.credentials[2].credential.data.oauth2Client.clientSecret",
        "connection.credentials[3].credential.data.string",
    ] {
        assert!(f.contains(&expected.to_owned()), "{expected} not in {f:?}");
    }
    let (status, body) = emu
        .post("/connections", json!({"connectionTemplateId": validate::new_ulid(), "connection": {"name": "x", "credentials": []}}))
        .await;
    assert_eq!(
        (status, fields(&body)),
        (
            StatusCode::BAD_REQUEST,
            vec!["connectionTemplateId".to_owned()]
        )
    );

    // Update: all three fields, every time.
    let cpath = format!("/connections/{cid}");
    let (status, body) = emu
        .put(
            &cpath,
            json!({"name": "main", "credentials": [string_credential("new")]}),
        )
        .await;
    assert_eq!(
        (status, fields(&body)),
        (StatusCode::BAD_REQUEST, vec!["baseUrl".to_owned()])
    );
    let mut rotated = string_credential("rotated");
    rotated["id"] = cred["id"].clone();
    rotated["credential"]["id"] = cred["credential"]["id"].clone();
    let (status, body) = emu
        .put(
            &cpath,
            json!({"name": "main", "baseUrl": "", "credentials": [rotated]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["credentials"][0]["id"], cred["id"]);
    assert_eq!(
        body["credentials"][0]["credential"]["data"]["string"]["value"],
        store::MASK
    );
    let state = emu.state().await;
    assert_eq!(
        state["connections"][0]["credentials"][0]["credential"]["data"]["string"]["value"],
        "rotated"
    );
    // Another connection's credential ID cannot be taken.
    let (status, body) = emu
        .put(
            &format!("/connections/{}", dc["id"].as_str().unwrap()),
            json!({"name": "d", "baseUrl": "", "credentials": [{"id": cred["id"], "credential": {"organisationId": ORG, "type": "none"}}]}),
        )
        .await;
    assert_eq!(
        (status, fields(&body)),
        (
            StatusCode::BAD_REQUEST,
            vec!["credentials[0].id".to_owned()]
        )
    );

    // Listings.
    let (_, statics) = emu
        .get(&format!("/projects/{PROJECT}/connections?env_id={PROD}"))
        .await;
    assert_eq!(statics["totalCount"], 1);
    assert_eq!(statics["items"][0]["id"], cid.as_str());
    let (_, users) = emu
        .get(&format!("/connections?system_id={sid}&end_user_id=user-1"))
        .await;
    assert_eq!(users["totalCount"], 1);
    assert_eq!(users["items"][0]["id"], dc["id"]);

    // Templates with connections cannot go.
    let tpath = format!("/projects/{PROJECT}/connection-templates/{tid}");
    assert_eq!(emu.delete(&tpath).await.0, StatusCode::CONFLICT);
    assert_eq!(emu.delete(&cpath).await.0, StatusCode::NO_CONTENT);
    assert_eq!(emu.get(&cpath).await.0, StatusCode::NOT_FOUND);
    assert_eq!(emu.delete(&tpath).await.0, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn oauth2_secrets_and_flow() {
    let emu = start().await;
    let system = emu
        .system("oauth", json!([oauth2_code("oauth2-code")]))
        .await;
    let sid = system["id"].as_str().unwrap().to_owned();
    let grant = &system["authSchemeConfigs"][0]["oauth2"]["grant"]["authorizationCode"];
    assert_eq!(grant["clientSecret"], store::MASK);
    assert_eq!(grant["organisationId"], ORG);
    let credential_id = grant["credentialId"].as_str().unwrap().to_owned();
    assert!(validate::is_ulid(&credential_id));
    let state = emu.state().await;
    assert_eq!(
        state["systems"][0]["authSchemeConfigs"][0]["oauth2"]["grant"]["authorizationCode"]["clientSecret"],
        "grant-secret"
    );

    // Merging into the stored credential keeps the secret when none is sent.
    let mut update = oauth2_code("oauth2-code");
    update["oauth2"]["grant"]["authorizationCode"] =
        json!({"clientId": "cid2", "credentialId": credential_id});
    let (status, body) = emu
        .put(
            &format!("/systems/{sid}/auth-scheme-configs/oauth2-code"),
            update.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let state = emu.state().await;
    let stored =
        &state["systems"][0]["authSchemeConfigs"][0]["oauth2"]["grant"]["authorizationCode"];
    assert_eq!(
        (stored["clientId"].as_str(), stored["clientSecret"].as_str()),
        (Some("cid2"), Some("grant-secret"))
    );
    update["oauth2"]["grant"]["authorizationCode"]["credentialId"] = json!(validate::new_ulid());
    let (status, body) = emu
        .put(
            &format!("/systems/{sid}/auth-scheme-configs/oauth2-code"),
            update,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        fields(&body),
        ["oauth2.grant.authorizationCode.credentialId"]
    );

    let path = format!("/systems/{sid}/oauth2/initialise");
    let (status, body) = emu.post(&path, json!({"scopes": ["read"]})).await;
    assert_eq!(
        (status, fields(&body)),
        (StatusCode::BAD_REQUEST, vec!["redirectUrl".to_owned()])
    );
    let (status, body) = emu
        .post(
            &path,
            json!({"redirectUrl": "http://localhost:9999/callback?x=1", "scopes": ["read"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let url = body["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/_emulator/oauth2/authorize?state=", emu.base)),
        "{url}"
    );
    let resp = emu.client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(location.path(), "/callback");
    let pairs: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(pairs["x"], "1");
    assert!(!pairs["code"].is_empty());
    let state = emu.state().await;
    assert_eq!(state["oauth2Flows"][0]["state"], pairs["state"].as_str());
    assert_eq!(state["oauth2Flows"][0]["code"], pairs["code"].as_str());

    let plain = emu.system("plain", json!([api_key("key")])).await;
    let (status, _) = emu
        .post(
            &format!(
                "/systems/{}/oauth2/initialise",
                plain["id"].as_str().unwrap()
            ),
            json!({"redirectUrl": "http://localhost/cb"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

fn oauth2_code_with(grant: Value) -> Value {
    let mut cfg = oauth2_code("oauth2-code");
    cfg["oauth2"]["grant"]["authorizationCode"] = grant;
    cfg
}

fn oauth1(id: &str, consumer_secret: Option<&str>) -> Value {
    let mut cfg = json!({"type": "oauth1", "oauth1": {
        "id": id, "description": "", "consumerKey": "ck", "signatureMethod": "sha256",
        "tokenAuth": true
    }});
    if let Some(secret) = consumer_secret {
        cfg["oauth1"]["consumerSecret"] = json!(secret);
    }
    cfg
}

impl Emu {
    /// The auth scheme configs' credentials in `/_emulator/state`.
    async fn scheme_credentials(&self) -> Vec<Value> {
        self.state().await["credentials"]
            .as_array()
            .unwrap()
            .clone()
    }

    async fn upsert(&self, system: &str, scheme: &str, cfg: Value) -> Value {
        let (status, body) = self
            .put(
                &format!("/systems/{system}/auth-scheme-configs/{scheme}"),
                cfg,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }
}

/// Create a system with an authorizationCode grant: one credential, holding its client ID and secret.
async fn code_system(emu: &Emu) -> (String, String) {
    let system = emu
        .system("oauth", json!([oauth2_code("oauth2-code")]))
        .await;
    let sid = system["id"].as_str().unwrap().to_owned();
    let credential_id =
        system["authSchemeConfigs"][0]["oauth2"]["grant"]["authorizationCode"]["credentialId"]
            .as_str()
            .unwrap()
            .to_owned();
    assert_eq!(
        emu.scheme_credentials().await,
        [json!({
            "id": credential_id, "organisationId": ORG, "systemId": sid,
            "authSchemeConfigId": "oauth2-code", "type": "oauth2-client",
            "data": {"clientId": "cid", "clientSecret": "grant-secret"},
        })]
    );
    (sid, credential_id)
}

fn code_grant(state_or_readback: &Value) -> &Value {
    &state_or_readback["authSchemeConfigs"][0]["oauth2"]["grant"]["authorizationCode"]
}

#[tokio::test]
async fn upserts_without_credential_id_pile_up_credentials() {
    let emu = start().await;
    let (sid, first) = code_system(&emu).await;
    let mut ids = vec![first];
    for i in 0..10 {
        let out = emu
            .upsert(
                &sid,
                "oauth2-code",
                oauth2_code_with(json!({"clientId": "cid", "clientSecret": format!("secret-{i}")})),
            )
            .await;
        let grant = &out["oauth2"]["grant"]["authorizationCode"];
        assert_eq!(grant["clientSecret"], store::MASK);
        assert_eq!(grant["organisationId"], ORG);
        ids.push(grant["credentialId"].as_str().unwrap().to_owned());
    }
    let credentials = emu.scheme_credentials().await;
    assert_eq!(credentials.len(), 11);
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 11);
    for (i, credential) in credentials.iter().enumerate() {
        let secret = match i {
            0 => "grant-secret".to_owned(),
            i => format!("secret-{}", i - 1),
        };
        assert_eq!(
            credential,
            &json!({
                "id": ids[i], "organisationId": ORG, "systemId": sid,
                "authSchemeConfigId": "oauth2-code", "type": "oauth2-client",
                "data": {"clientId": "cid", "clientSecret": secret},
            })
        );
    }
    // The scheme points at the last one.
    let (_, system) = emu.get(&format!("/systems/{sid}")).await;
    assert_eq!(code_grant(&system)["credentialId"], ids[10].as_str());
    assert_eq!(code_grant(&system)["clientSecret"], store::MASK);
    let state = emu.state().await;
    assert_eq!(
        code_grant(&state["systems"][0])["credentialId"],
        ids[10].as_str()
    );
    assert_eq!(code_grant(&state["systems"][0])["clientSecret"], "secret-9");
}

#[tokio::test]
async fn upserts_with_credential_id_merge_into_one_credential() {
    let emu = start().await;
    let (sid, credential_id) = code_system(&emu).await;
    for i in 0..10 {
        let (_, system) = emu.get(&format!("/systems/{sid}")).await;
        let read_back = code_grant(&system)["credentialId"].clone();
        assert_eq!(read_back, credential_id.as_str());
        let out = emu
            .upsert(
                &sid,
                "oauth2-code",
                oauth2_code_with(json!({
                    "clientId": "cid", "clientSecret": format!("secret-{i}"), "credentialId": read_back,
                })),
            )
            .await;
        assert_eq!(
            out["oauth2"]["grant"]["authorizationCode"]["credentialId"],
            credential_id.as_str()
        );
    }
    assert_eq!(
        emu.scheme_credentials().await,
        [json!({
            "id": credential_id, "organisationId": ORG, "systemId": sid,
            "authSchemeConfigId": "oauth2-code", "type": "oauth2-client",
            "data": {"clientId": "cid", "clientSecret": "secret-9"},
        })]
    );
    let state = emu.state().await;
    assert_eq!(code_grant(&state["systems"][0])["clientSecret"], "secret-9");
}

#[tokio::test]
async fn an_upsert_with_credential_id_and_no_secret_keeps_the_secret() {
    let emu = start().await;
    let (sid, credential_id) = code_system(&emu).await;
    let (status, template) = emu.link(&sid, "oauth", PROD, false).await;
    assert_eq!(status, StatusCode::OK, "{template}");
    let out = emu
        .upsert(
            &sid,
            "oauth2-code",
            oauth2_code_with(json!({"clientId": "cid", "credentialId": credential_id})),
        )
        .await;
    assert_eq!(
        out["oauth2"]["grant"]["authorizationCode"]["clientSecret"],
        store::MASK
    );
    let (_, system) = emu.get(&format!("/systems/{sid}")).await;
    assert_eq!(
        code_grant(&system),
        &json!({
            "clientId": "cid", "clientSecret": store::MASK,
            "credentialId": credential_id, "organisationId": ORG,
        })
    );
    let (_, templates) = emu
        .get(&format!(
            "/projects/{PROJECT}/connection-templates?env_id={PROD}"
        ))
        .await;
    assert_eq!(
        code_grant(&templates["items"][0])["clientSecret"],
        store::MASK
    );
    let credentials = emu.scheme_credentials().await;
    assert_eq!(credentials.len(), 1);
    assert_eq!(credentials[0]["id"], credential_id.as_str());
    assert_eq!(
        credentials[0]["data"],
        json!({"clientId": "cid", "clientSecret": "grant-secret"})
    );
}

#[tokio::test]
async fn an_upsert_without_credential_id_or_secret_loses_the_secret() {
    let emu = start().await;
    let (sid, first) = code_system(&emu).await;
    let (status, template) = emu.link(&sid, "oauth", PROD, false).await;
    assert_eq!(status, StatusCode::OK, "{template}");
    let out = emu
        .upsert(
            &sid,
            "oauth2-code",
            oauth2_code_with(json!({"clientId": "cid"})),
        )
        .await;
    let second = out["oauth2"]["grant"]["authorizationCode"]["credentialId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(second, first);
    let (_, system) = emu.get(&format!("/systems/{sid}")).await;
    assert_eq!(
        code_grant(&system),
        &json!({"clientId": "cid", "credentialId": second, "organisationId": ORG})
    );
    let (_, templates) = emu
        .get(&format!(
            "/projects/{PROJECT}/connection-templates?env_id={PROD}"
        ))
        .await;
    assert!(
        code_grant(&templates["items"][0])
            .get("clientSecret")
            .is_none()
    );
    let state = emu.state().await;
    assert!(
        code_grant(&state["systems"][0])
            .get("clientSecret")
            .is_none()
    );
    assert_eq!(
        emu.scheme_credentials().await,
        [
            json!({
                "id": first, "organisationId": ORG, "systemId": sid,
                "authSchemeConfigId": "oauth2-code", "type": "oauth2-client",
                "data": {"clientId": "cid", "clientSecret": "grant-secret"},
            }),
            json!({
                "id": second, "organisationId": ORG, "systemId": sid,
                "authSchemeConfigId": "oauth2-code", "type": "oauth2-client",
                "data": {"clientId": "cid"},
            }),
        ]
    );

    // A grant sent without its member gets a new, empty credential; so does a password grant.
    let mut bare = oauth2_code("oauth2-code");
    bare["oauth2"]["grant"] = json!({"type": "authorizationCode"});
    let out = emu.upsert(&sid, "oauth2-code", bare).await;
    let third = &out["oauth2"]["grant"]["authorizationCode"];
    assert_eq!(
        third.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["credentialId", "organisationId"]
    );
    let mut password = oauth2_code("oauth2-password");
    password["oauth2"]["grant"] =
        json!({"type": "password", "password": {"clientSecret": "pw-secret"}});
    emu.upsert(&sid, "oauth2-password", password).await;
    let credentials = emu.scheme_credentials().await;
    assert_eq!(credentials.len(), 4);
    assert_eq!(credentials[2]["id"], third["credentialId"]);
    assert_eq!(credentials[2]["data"], json!({}));
    assert_eq!(
        (
            &credentials[3]["authSchemeConfigId"],
            &credentials[3]["type"],
            &credentials[3]["data"]
        ),
        (
            &json!("oauth2-password"),
            &json!("oauth2-client"),
            &json!({"clientSecret": "pw-secret"})
        )
    );

    // Deleting the system leaves its credentials behind.
    assert_eq!(
        emu.delete(&format!(
            "/projects/{PROJECT}/connection-templates/{}",
            template["connectionTemplateId"].as_str().unwrap()
        ))
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        emu.delete(&format!("/systems/{sid}")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(emu.scheme_credentials().await.len(), 4);
}

#[tokio::test]
async fn oauth1_consumer_secrets_live_in_credentials() {
    let emu = start().await;
    let system = emu
        .system("oauth1", json!([oauth1("oauth1", Some("cs-0"))]))
        .await;
    let sid = system["id"].as_str().unwrap().to_owned();
    let scheme = &system["authSchemeConfigs"][0]["oauth1"];
    assert_eq!(scheme["consumerSecret"], store::MASK);
    assert_eq!(scheme["consumerKey"], "ck");
    assert!(scheme.get("organisationId").is_none());
    let first = scheme["credentialId"].as_str().unwrap().to_owned();
    let credential = |id: &str, secret: &str| {
        json!({
            "id": id, "organisationId": ORG, "systemId": sid,
            "authSchemeConfigId": "oauth1", "type": "oauth1",
            "data": {"consumerKey": "ck", "consumerSecret": secret},
        })
    };
    assert_eq!(emu.scheme_credentials().await, [credential(&first, "cs-0")]);

    // Without credentialId: a new credential each time, the old ones kept.
    let mut ids = vec![first];
    for i in 1..=10 {
        let out = emu
            .upsert(&sid, "oauth1", oauth1("oauth1", Some(&format!("cs-{i}"))))
            .await;
        assert_eq!(out["oauth1"]["consumerSecret"], store::MASK);
        ids.push(out["oauth1"]["credentialId"].as_str().unwrap().to_owned());
    }
    let expected: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| credential(id, &format!("cs-{i}")))
        .collect();
    assert_eq!(emu.scheme_credentials().await, expected);
    let last = ids[10].clone();

    // With it: merged into the one the scheme points at.
    for i in 11..=20 {
        let mut cfg = oauth1("oauth1", Some(&format!("cs-{i}")));
        cfg["oauth1"]["credentialId"] = json!(last);
        let out = emu.upsert(&sid, "oauth1", cfg).await;
        assert_eq!(out["oauth1"]["credentialId"], last.as_str());
    }
    let credentials = emu.scheme_credentials().await;
    assert_eq!(credentials.len(), 11);
    assert_eq!(credentials[10], credential(&last, "cs-20"));
    let state = emu.state().await;
    let stored = &state["systems"][0]["authSchemeConfigs"][0]["oauth1"];
    assert_eq!(
        (&stored["credentialId"], &stored["consumerSecret"]),
        (&json!(last), &json!("cs-20"))
    );

    // consumerSecret is required (the contract marks it so) with or without credentialId: an
    // upsert without it is refused and changes nothing.
    for credential_id in [None, Some(last.clone())] {
        let mut cfg = oauth1("oauth1", None);
        if let Some(id) = credential_id {
            cfg["oauth1"]["credentialId"] = json!(id);
        }
        let (status, body) = emu
            .put(&format!("/systems/{sid}/auth-scheme-configs/oauth1"), cfg)
            .await;
        assert_eq!(
            (status, fields(&body)),
            (
                StatusCode::BAD_REQUEST,
                vec!["oauth1.consumerSecret".to_owned()]
            )
        );
    }
    let credentials = emu.scheme_credentials().await;
    assert_eq!(credentials.len(), 11);
    assert_eq!(credentials[10], credential(&last, "cs-20"));
    let (_, system) = emu.get(&format!("/systems/{sid}")).await;
    assert_eq!(
        system["authSchemeConfigs"][0]["oauth1"]["credentialId"],
        last.as_str()
    );
    // Another scheme's credential is not this one's.
    let mut cfg = oauth1("oauth1", Some("cs-x"));
    cfg["oauth1"]["credentialId"] = json!(ids[0]);
    let (status, body) = emu
        .put(&format!("/systems/{sid}/auth-scheme-configs/oauth1"), cfg)
        .await;
    assert_eq!(
        (status, fields(&body)),
        (
            StatusCode::BAD_REQUEST,
            vec!["oauth1.credentialId".to_owned()]
        )
    );
    assert_eq!(emu.scheme_credentials().await.len(), 11);
}

#[tokio::test]
async fn pagination() {
    let emu = start().await;
    for i in 0..45 {
        emu.system(&format!("sys-{i}"), json!([])).await;
    }
    let mut seen = Vec::new();
    let mut path = "/systems".to_owned();
    let mut prevs = Vec::new();
    loop {
        let (status, page) = emu.get(&path).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["totalCount"], 45);
        let items = page["items"].as_array().unwrap();
        seen.extend(items.iter().map(|s| s["name"].as_str().unwrap().to_owned()));
        prevs.push(page.get("prev").cloned());
        match page.get("next").and_then(Value::as_str) {
            Some(next) => path = format!("/systems?after={next}"),
            None => break,
        }
    }
    assert_eq!(prevs.len(), 3);
    assert!(prevs[0].is_none() && prevs[1].is_some());
    let expected: Vec<String> = (0..45).map(|i| format!("sys-{i}")).collect();
    assert_eq!(seen, expected);

    let (_, last) = emu.get("/systems?first=40").await;
    let (_, tail) = emu
        .get(&format!(
            "/systems?first=40&after={}",
            last["next"].as_str().unwrap()
        ))
        .await;
    assert_eq!(tail["items"].as_array().unwrap().len(), 5);
    assert!(tail.get("next").is_none());
    let (_, back) = emu
        .get(&format!(
            "/systems?first=2&before={}",
            tail["prev"].as_str().unwrap()
        ))
        .await;
    assert_eq!(back["items"][0]["name"], "sys-38");
    assert_eq!(back["items"][1]["name"], "sys-39");

    let (_, found) = emu.get("/systems?search=SYS-1&first=100").await;
    assert_eq!(found["totalCount"], 11);
    for bad in ["first=0", "first=101", "first=x", "after=zzz", "before=00"] {
        let (status, body) = emu.get(&format!("/systems?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["code"], "validation_failed");
    }
}

#[tokio::test]
async fn faults_and_counters() {
    let emu = start().await;
    let body = json!({"name": "s", "domain": "d", "templateBaseUrl": "https://x", "authSchemeConfigs": []});

    emu.faults(json!({"errorRate": 1.0})).await;
    let (status, err) = emu.post("/systems", body.clone()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(err["code"].is_string() && err["message"].is_string());

    emu.faults(json!({"rateLimitRate": 1.0, "retryAfterSeconds": 3}))
        .await;
    let resp = emu.raw(Method::POST, "/systems", Some(body.clone())).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "3");
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "rate_limited");

    emu.faults(json!({"dropRate": 1.0})).await;
    let err = emu
        .client
        .post(emu.url("/systems"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .json(&body)
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");
    assert!(err.is_request() && err.status().is_none(), "{err:?}");
    assert!(emu.state().await["systems"].as_array().unwrap().is_empty());

    emu.faults(json!({"commitThenDropNext": 1})).await;
    let result = emu
        .client
        .post(emu.url("/systems"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .json(&body)
        .send()
        .await;
    assert!(result.is_err(), "the response must be lost");
    let state = emu.state().await;
    assert_eq!(
        state["systems"].as_array().unwrap().len(),
        1,
        "the write must be applied"
    );
    assert_eq!(state["faults"]["commitThenDropNext"], 0);
    assert_eq!(
        emu.post("/systems", body.clone()).await.0,
        StatusCode::CREATED
    );

    // Faults restricted to one route; the others pass.
    emu.faults(json!({"errorRate": 1.0, "routes": ["POST /o/{org}/systems"]}))
        .await;
    assert_eq!(emu.get("/systems").await.0, StatusCode::OK);
    assert_eq!(
        emu.post("/systems", body.clone()).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (status, current) = emu.hook(Method::GET, "/faults", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(current["errorRate"], 1.0);

    let (status, _) = emu
        .hook(Method::PUT, "/faults", Some(json!({"errorRate": 2})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = emu
        .hook(Method::PUT, "/faults", Some(json!({"eror": 1})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    emu.faults(json!({"latencyMs": 60})).await;
    let started = Instant::now();
    assert_eq!(emu.get("/systems").await.0, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(60));
    assert_eq!(
        emu.hook(Method::DELETE, "/faults", None).await.0,
        StatusCode::NO_CONTENT
    );

    // Counters by route template and method; hooks are not counted.
    assert_eq!(
        emu.hook(Method::POST, "/reset-counters", None).await.0,
        StatusCode::NO_CONTENT
    );
    let id = emu.state().await["systems"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    emu.get(&format!("/systems/{id}")).await;
    emu.get(&format!("/systems/{id}")).await;
    emu.post("/systems", body.clone()).await;
    let state = emu.state().await;
    assert_eq!(state["requests"]["GET /o/{org}/systems/{system_id}"], 2);
    assert_eq!(state["requests"]["POST /o/{org}/systems"], 1);
    assert_eq!(state["requestsByMethod"], json!({"GET": 2, "POST": 1}));
}

#[tokio::test]
async fn hooks_add_projects() {
    let emu = start().await;
    let (status, project) = emu
        .hook(
            Method::POST,
            "/projects",
            Some(json!({"name": "second", "environments": [{"name": "production", "status": "suspended"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = project["id"].as_str().unwrap();
    let (status, got) = emu.get(&format!("/projects/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["environments"][0]["status"], "suspended");
    let (status, _) = emu
        .hook(
            Method::POST,
            "/projects",
            Some(json!({"id": PROJECT, "name": "dup"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

async fn serve_with_peer(peer: Option<SocketAddr>) -> (String, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut app = router(config());
    if let Some(peer) = peer {
        app = app.layer(MockConnectInfo(PeerInfo::new(peer)));
    }
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (format!("http://{addr}"), stop)
}

#[tokio::test]
async fn hooks_answer_loopback_peers_only() {
    let client = client();
    for (peer, expected) in [
        (
            Some("10.1.2.3:4567".parse().unwrap()),
            StatusCode::FORBIDDEN,
        ),
        (None, StatusCode::FORBIDDEN),
        (Some("127.0.0.1:4567".parse().unwrap()), StatusCode::OK),
    ] {
        let (base, _stop) = serve_with_peer(peer).await;
        let resp = client
            .get(format!("{base}/_emulator/state"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), expected, "{peer:?}");
        if expected == StatusCode::FORBIDDEN {
            assert_eq!(resp.json::<Value>().await.unwrap()["code"], "forbidden");
        }
    }
}

#[tokio::test]
async fn the_token_hook_replaces_the_accepted_token() {
    let emu = start().await;
    let (status, _) = emu.get(&format!("/projects/{PROJECT}")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = emu
        .hook(
            Method::PUT,
            "/token",
            Some(json!({ "token": "next-token" })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // The old token is refused from now on ...
    let (status, body) = emu.get(&format!("/projects/{PROJECT}")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // ... and the new one accepted.
    let response = emu
        .client
        .get(emu.url(&format!("/projects/{PROJECT}")))
        .header("Authorization", "Bearer next-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    for bad in [json!({}), json!({ "token": "" }), json!({ "token": "a b" })] {
        let (status, _) = emu.hook(Method::PUT, "/token", Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}
