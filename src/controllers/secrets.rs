//! Reading credentials from Secrets in the resource's own namespace, and hashing what was sent.
//!
//! Secrets are read one at a time when a reconcile needs them (never cached in a watch: the
//! controllers watch Secrets as metadata only). Values travel as [`SecretValue`], which never
//! prints itself.
//!
//! What may be read is a [`SecretPolicy`]: Secret types that are never credentials are always
//! refused, and with `require_label` only Secrets labelled `versori.com/credential: "true"` are
//! read at all. Credential hashes are HMAC-SHA256 under the operator's own key
//! ([`CredentialHashKey`]), so status reveals nothing checkable.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use sha2::{Digest, Sha256};

use super::conditions::Reason;
use super::error::Error;
use crate::resources::Connection;
use crate::versori::SecretValue;

/// The label a Secret carries to consent to being read, when [`SecretPolicy::require_label`].
pub const CREDENTIAL_LABEL: &str = "versori.com/credential";

/// Secret types that are never credentials for an external system; always refused.
pub const REFUSED_SECRET_TYPES: [&str; 3] = [
    "kubernetes.io/service-account-token",
    "kubernetes.io/dockerconfigjson",
    "kubernetes.io/dockercfg",
];

/// Which Secrets may be read, and where credentials may be sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretPolicy {
    /// Read only Secrets labelled `versori.com/credential: "true"`.
    pub require_label: bool,
    /// Hosts a Connection's `baseUrl` or `tokenUrl` override may name; empty: any host.
    /// An entry `*.example.com` matches every subdomain of example.com.
    pub allowed_override_hosts: Vec<String>,
}

impl SecretPolicy {
    /// Refuses a Connection whose `baseUrl` or `tokenUrl` override names a host outside the
    /// allow-list (nothing is read or sent then).
    pub fn check_overrides(&self, obj: &Connection) -> Result<(), Error> {
        if self.allowed_override_hosts.is_empty() {
            return Ok(());
        }
        let token_url = obj
            .spec
            .credentials
            .as_ref()
            .and_then(|c| c.oauth2_client_credentials.as_ref())
            .and_then(|o| o.token_url.as_deref());
        for (field, value) in [
            ("spec.baseUrl", obj.spec.base_url.as_deref()),
            (
                "spec.credentials.oauth2ClientCredentials.tokenUrl",
                token_url,
            ),
        ] {
            let Some(value) = value.filter(|v| !v.is_empty()) else {
                continue;
            };
            let host = url::Url::parse(value)
                .ok()
                .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
            let allowed = host.as_deref().is_some_and(|h| {
                self.allowed_override_hosts
                    .iter()
                    .any(|a| host_matches(a, h))
            });
            if !allowed {
                return Err(Error::InvalidSecret {
                    reason: Reason::HostNotAllowed,
                    message: format!(
                        "{field} names host {} which is not in the operator's allowed hosts ({}): credentials are sent only there; use an allowed host or ask the operator's admin to add it",
                        host.as_deref().unwrap_or("(none)"),
                        self.allowed_override_hosts.join(", ")
                    ),
                });
            }
        }
        Ok(())
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim().to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
        None => pattern == host,
    }
}

/// The key of the credential hashes. `Debug` never shows it.
#[derive(Clone)]
pub struct CredentialHashKey(Arc<[u8]>);

impl CredentialHashKey {
    /// The shortest key accepted, in bytes.
    pub const MIN_LEN: usize = 32;

    /// A key from its bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(Arc::from(bytes.into()))
    }

    /// A fresh random key of 32 bytes.
    pub fn generate() -> Self {
        Self::new(rand::random::<[u8; 32]>().to_vec())
    }

    /// The raw key, only to store it in its Secret.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for CredentialHashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialHashKey(<redacted>)")
    }
}

/// What the controllers need to read Secrets and hash credentials.
#[derive(Clone, Debug)]
pub struct SecretSettings {
    pub policy: SecretPolicy,
    pub hash_key: CredentialHashKey,
}

impl Default for SecretSettings {
    /// The compatible policy and a random key (for tests and tools; the operator loads its key
    /// from its Secret).
    fn default() -> Self {
        Self {
            policy: SecretPolicy::default(),
            hash_key: CredentialHashKey::generate(),
        }
    }
}

/// Reads keys of Secrets in one namespace, fetching each Secret at most once per reconcile.
pub struct SecretReader {
    api: Api<Secret>,
    policy: SecretPolicy,
    single_line: bool,
    fetched: HashMap<String, Option<Secret>>,
}

impl SecretReader {
    /// A reader for `namespace`: the only namespace it can read. Secret types that are never
    /// credentials are refused; see [`SecretReader::with_policy`] for the rest.
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            policy: SecretPolicy::default(),
            single_line: false,
            fetched: HashMap::new(),
        }
    }

    /// Applies `policy` (the consent label).
    pub fn with_policy(mut self, policy: &SecretPolicy) -> Self {
        self.policy = policy.clone();
        self
    }

    /// Refuses values with a CR or LF: for credentials that travel in a header, query or cookie,
    /// where a trailing newline silently breaks the request (or injects a header).
    pub fn single_line(mut self) -> Self {
        self.single_line = true;
        self
    }

    /// The Secrets read so far, as (name, resourceVersion); a missing one has an empty version.
    pub fn versions(&self) -> Vec<(String, String)> {
        let mut versions: Vec<(String, String)> = self
            .fetched
            .iter()
            .map(|(name, secret)| {
                let version = secret
                    .as_ref()
                    .and_then(|s| s.metadata.resource_version.clone())
                    .unwrap_or_default();
                (name.clone(), version)
            })
            .collect();
        versions.sort();
        versions
    }

    /// The value of `key` in Secret `name`, as UTF-8 text (one line, if so configured).
    pub async fn read(&mut self, name: &str, key: &str) -> Result<SecretValue, Error> {
        let value = self.read_text(name, key).await?;
        if self.single_line {
            check_single_line(&value, name, key)?;
        }
        Ok(value)
    }

    /// The value of `key` in Secret `name` as text of any number of lines: for PEM blocks,
    /// which never travel in a header.
    pub async fn read_multiline(&mut self, name: &str, key: &str) -> Result<SecretValue, Error> {
        self.read_text(name, key).await
    }

    async fn read_text(&mut self, name: &str, key: &str) -> Result<SecretValue, Error> {
        let bytes = self.read_bytes(name, key).await?;
        String::from_utf8(bytes)
            .map(SecretValue::from)
            .map_err(|_| Error::SecretNotText {
                name: name.to_owned(),
                key: key.to_owned(),
            })
    }

    /// The value of `key` in Secret `name` as base64 (standard, padded): for binary values
    /// such as keystores, which need not be text.
    pub async fn read_base64(&mut self, name: &str, key: &str) -> Result<SecretValue, Error> {
        use base64::Engine as _;
        let bytes = self.read_bytes(name, key).await?;
        Ok(SecretValue::from(
            base64::engine::general_purpose::STANDARD.encode(bytes),
        ))
    }

    async fn read_bytes(&mut self, name: &str, key: &str) -> Result<Vec<u8>, Error> {
        if !self.fetched.contains_key(name) {
            let secret = self
                .api
                .get_opt(name)
                .await
                .map_err(Error::kube("reading a Secret"))?;
            self.fetched.insert(name.to_owned(), secret);
        }
        let Some(Some(secret)) = self.fetched.get(name) else {
            return Err(Error::SecretNotFound {
                name: name.to_owned(),
                key: key.to_owned(),
            });
        };
        check_consent(secret, name, &self.policy)?;
        if let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) {
            return Ok(bytes.0.clone());
        }
        // stringData is write-only in the API, but an object built in memory may carry it.
        if let Some(value) = secret.string_data.as_ref().and_then(|d| d.get(key)) {
            return Ok(value.clone().into_bytes());
        }
        Err(Error::SecretKeyNotFound {
            name: name.to_owned(),
            key: key.to_owned(),
        })
    }
}

/// Refuses Secret types that are never credentials, and unlabelled Secrets when the policy
/// requires the label.
fn check_consent(secret: &Secret, name: &str, policy: &SecretPolicy) -> Result<(), Error> {
    if let Some(type_) = secret
        .type_
        .as_deref()
        .filter(|t| REFUSED_SECRET_TYPES.contains(t))
    {
        return Err(Error::InvalidSecret {
            reason: Reason::SecretTypeRefused,
            message: format!(
                "Secret {name:?} is of type {type_}, which is never a credential for an external system, so the operator does not read it: put the credential in a Secret of type Opaque"
            ),
        });
    }
    if policy.require_label {
        let labelled = secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(CREDENTIAL_LABEL))
            .is_some_and(|v| v == "true");
        if !labelled {
            return Err(Error::InvalidSecret {
                reason: Reason::SecretNotLabelled,
                message: format!(
                    "Secret {name:?} is not labelled {CREDENTIAL_LABEL}=\"true\", and this operator reads only Secrets that are: kubectl label secret {name} {CREDENTIAL_LABEL}=true"
                ),
            });
        }
    }
    Ok(())
}

/// Refuses a value holding a CR or LF (the message says where, never what).
fn check_single_line(value: &SecretValue, name: &str, key: &str) -> Result<(), Error> {
    let text = value.expose();
    if !text.contains(['\r', '\n']) {
        return Ok(());
    }
    let trimmed = text.trim_end_matches(['\r', '\n']);
    let message = if !trimmed.contains(['\r', '\n']) {
        format!(
            "key {key:?} of Secret {name:?} ends in a newline, which would break the header, query or cookie it travels in, so nothing was sent: store the value without it (echo -n, or kubectl create secret generic {name} --from-literal={key}=...)"
        )
    } else {
        format!(
            "key {key:?} of Secret {name:?} contains a line break (CR or LF), which would break the header, query or cookie it travels in, so nothing was sent: store the value on one line"
        )
    };
    Err(Error::InvalidSecret {
        reason: Reason::InvalidSecret,
        message,
    })
}

type HmacSha256 = Hmac<Sha256>;

/// A digest over labelled secret values: what status keeps of the credentials last sent, since
/// Versori never returns them. With a key (the operator's [`CredentialHashKey`]) it is an
/// HMAC-SHA256, `hmac-sha256:<hex>`, which nobody without the key can check a guess against;
/// `salt` (the object's UID) makes the same secret hash differently on every object. Without a
/// key it is a plain SHA-256, `sha256:<hex>`, for values that are random anyway (OAuth 2.0
/// states). A changed key changes every hash, so each credential is sent once more.
pub fn hash_secrets<'a>(
    key: Option<&CredentialHashKey>,
    salt: &str,
    parts: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut input = Vec::new();
    input.extend_from_slice(&(salt.len() as u64).to_be_bytes());
    input.extend_from_slice(salt.as_bytes());
    for (label, value) in parts {
        for field in [label, value] {
            input.extend_from_slice(&(field.len() as u64).to_be_bytes());
            input.extend_from_slice(field.as_bytes());
        }
    }
    match key {
        Some(key) => {
            // HMAC takes keys of any length, so this never fails.
            let digest = match HmacSha256::new_from_slice(key.expose()) {
                Ok(mut mac) => {
                    mac.update(&input);
                    mac.finalize().into_bytes()
                }
                Err(_) => Sha256::digest(&input),
            };
            format!("hmac-sha256:{}", hex::encode(digest))
        }
        None => format!("sha256:{}", hex::encode(Sha256::digest(&input))),
    }
}

/// The key in the hash-key Secret that holds the key.
pub const HASH_KEY_SECRET_KEY: &str = "key";

/// Why the credential hash key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum HashKeyError {
    #[error(
        "cannot read or create the credential hash key Secret {namespace}/{name}: {message} (grant the operator get and create on that Secret, or create it: kubectl create secret generic {name} -n {namespace} --from-literal={HASH_KEY_SECRET_KEY}=$(openssl rand -hex 32))"
    )]
    Kube {
        namespace: String,
        name: String,
        message: String,
    },
    #[error(
        "the credential hash key Secret {namespace}/{name} has no key {HASH_KEY_SECRET_KEY:?} of at least 32 bytes: set one (kubectl create secret generic {name} -n {namespace} --from-literal={HASH_KEY_SECRET_KEY}=$(openssl rand -hex 32) --dry-run=client -o yaml | kubectl apply -f -)"
    )]
    Invalid { namespace: String, name: String },
}

/// The operator's credential hash key from Secret `namespace/name`, created with a random key
/// when absent (another replica creating it at the same time wins, and its key is read back).
pub async fn load_or_create_hash_key(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> Result<CredentialHashKey, HashKeyError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let kube_error = |e: kube::Error| HashKeyError::Kube {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        message: crate::util::kube_error_message(&e),
    };
    for _ in 0..2 {
        if let Some(secret) = api.get_opt(name).await.map_err(kube_error)? {
            return key_of(&secret).ok_or_else(|| HashKeyError::Invalid {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            });
        }
        // What the Secret holds is the key, as every later start reads it back.
        let key = CredentialHashKey::new(
            hex::encode(CredentialHashKey::generate().expose()).into_bytes(),
        );
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_owned(),
                        "versori-operator".to_owned(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            type_: Some("Opaque".to_owned()),
            data: Some(
                [(
                    HASH_KEY_SECRET_KEY.to_owned(),
                    k8s_openapi::ByteString(key.expose().to_vec()),
                )]
                .into(),
            ),
            ..Default::default()
        };
        match api.create(&kube::api::PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(
                    namespace,
                    name,
                    "created the credential hash key Secret (changing it resends every credential once)"
                );
                return Ok(key);
            }
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(other) => return Err(kube_error(other)),
        }
    }
    Err(HashKeyError::Invalid {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

fn key_of(secret: &Secret) -> Option<CredentialHashKey> {
    let bytes = secret.data.as_ref()?.get(HASH_KEY_SECRET_KEY)?;
    let trimmed = bytes.0.trim_ascii();
    (trimmed.len() >= CredentialHashKey::MIN_LEN).then(|| CredentialHashKey::new(trimmed.to_vec()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    fn key(byte: u8) -> CredentialHashKey {
        CredentialHashKey::new(vec![byte; 32])
    }

    #[test]
    fn hash_depends_on_key_labels_values_and_boundaries() {
        let k = key(1);
        let a = hash_secrets(Some(&k), "uid", [("k", "ab"), ("l", "c")]);
        assert_eq!(a, hash_secrets(Some(&k), "uid", [("k", "ab"), ("l", "c")]));
        assert_ne!(a, hash_secrets(Some(&k), "uid", [("k", "a"), ("l", "bc")]));
        assert_ne!(a, hash_secrets(Some(&k), "uid", [("x", "ab"), ("l", "c")]));
        assert_ne!(
            a,
            hash_secrets(Some(&k), "other", [("k", "ab"), ("l", "c")])
        );
        // A new key is a rotation: every hash changes.
        assert_ne!(
            a,
            hash_secrets(Some(&key(2)), "uid", [("k", "ab"), ("l", "c")])
        );
        // Without the key, the unkeyed digest of the same input does not match.
        let unkeyed = hash_secrets(None, "uid", [("k", "ab"), ("l", "c")]);
        assert!(unkeyed.starts_with("sha256:"));
        assert!(a.starts_with("hmac-sha256:"));
        assert_ne!(a.trim_start_matches("hmac-"), unkeyed);
        assert!(!a.contains("ab"));
        assert!(!format!("{k:?}").contains("01"), "{k:?}");
    }

    fn secret(type_: Option<&str>, labels: &[(&str, &str)], data: &[(&str, &str)]) -> Secret {
        Secret {
            type_: type_.map(str::to_owned),
            metadata: kube::api::ObjectMeta {
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect::<BTreeMap<_, _>>(),
                ),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn refused_types_and_the_consent_label() {
        let open = SecretPolicy::default();
        let strict = SecretPolicy {
            require_label: true,
            ..Default::default()
        };
        for type_ in REFUSED_SECRET_TYPES {
            let error = check_consent(&secret(Some(type_), &[], &[]), "s", &open)
                .expect_err("refused type");
            assert_eq!(error.reason().as_str(), "SecretTypeRefused");
            assert!(error.to_string().contains(type_), "{error}");
        }
        assert!(check_consent(&secret(Some("Opaque"), &[], &[]), "s", &open).is_ok());
        assert!(check_consent(&secret(None, &[], &[]), "s", &open).is_ok());
        let error = check_consent(&secret(None, &[], &[]), "s", &strict).expect_err("unlabelled");
        assert_eq!(error.reason().as_str(), "SecretNotLabelled");
        assert!(error.to_string().contains(CREDENTIAL_LABEL), "{error}");
        assert!(
            check_consent(
                &secret(None, &[(CREDENTIAL_LABEL, "false")], &[]),
                "s",
                &strict
            )
            .is_err()
        );
        assert!(
            check_consent(
                &secret(None, &[(CREDENTIAL_LABEL, "true")], &[]),
                "s",
                &strict
            )
            .is_ok()
        );
    }

    #[test]
    fn line_breaks_are_refused_without_showing_the_value() {
        const CANARY: &str = "canary-9f3e1c";
        for value in [format!("{CANARY}\n"), format!("{CANARY}\r\n")] {
            let error = check_single_line(&SecretValue::from(value), "creds", "apiKey")
                .expect_err("newline");
            let message = error.to_string();
            assert!(message.contains("ends in a newline"), "{message}");
            assert!(message.contains("\"creds\"") && message.contains("\"apiKey\""));
            assert!(!message.contains(CANARY), "{message}");
            assert_eq!(error.reason().as_str(), "InvalidSecret");
            assert!(error.awaits_change());
        }
        let error = check_single_line(&SecretValue::from(format!("a\nb{CANARY}")), "c", "k")
            .expect_err("inner newline");
        assert!(error.to_string().contains("line break"), "{error}");
        assert!(check_single_line(&SecretValue::from("fine value"), "c", "k").is_ok());
    }

    #[test]
    fn override_hosts() {
        assert!(host_matches("api.example.com", "api.example.com"));
        assert!(!host_matches("api.example.com", "evil.example.com"));
        assert!(host_matches("*.example.com", "a.b.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "badexample.com"));
    }

    fn connection(base_url: Option<&str>, token_url: Option<&str>) -> Connection {
        let mut credentials = serde_json::json!({
            "oauth2ClientCredentials": {
                "clientId": "c",
                "clientSecretSecretKeyRef": { "name": "s", "key": "k" }
            }
        });
        if let Some(url) = token_url {
            credentials["oauth2ClientCredentials"]["tokenUrl"] = url.into();
        }
        let mut spec = serde_json::json!({
            "projectSystemRef": { "name": "t" },
            "credentials": credentials,
        });
        if let Some(url) = base_url {
            spec["baseUrl"] = url.into();
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "versori.com/v1alpha1",
            "kind": "Connection",
            "metadata": { "name": "c", "namespace": "n" },
            "spec": spec,
        }))
        .expect("a Connection")
    }

    #[test]
    fn overrides_must_name_an_allowed_host() {
        let any = SecretPolicy::default();
        let strict = SecretPolicy {
            allowed_override_hosts: vec!["api.example.com".into(), "*.auth.example.com".into()],
            ..Default::default()
        };
        let evil = connection(None, Some("https://attacker.example/token"));
        assert!(
            any.check_overrides(&evil).is_ok(),
            "no allow-list: any host"
        );
        let error = strict.check_overrides(&evil).expect_err("refused");
        assert_eq!(error.reason().as_str(), "HostNotAllowed");
        let message = error.to_string();
        assert!(
            message.contains("tokenUrl") && message.contains("attacker.example"),
            "{message}"
        );
        assert!(error.awaits_change());
        let error = strict
            .check_overrides(&connection(Some("https://other.example.com/"), None))
            .expect_err("refused");
        assert!(error.to_string().contains("spec.baseUrl"), "{error}");
        assert!(
            strict
                .check_overrides(&connection(
                    Some("https://API.example.com/v1"),
                    Some("https://login.auth.example.com/token")
                ))
                .is_ok()
        );
        assert!(strict.check_overrides(&connection(None, None)).is_ok());
    }

    #[test]
    fn hash_key_needs_32_bytes() {
        assert!(key_of(&secret(None, &[], &[("key", "short")])).is_none());
        assert!(key_of(&secret(None, &[], &[("other", &"x".repeat(64))])).is_none());
        let found = key_of(&secret(
            None,
            &[],
            &[("key", &format!("{}\n", "x".repeat(64)))],
        ))
        .expect("a key");
        assert_eq!(found.expose().len(), 64);
    }
}
