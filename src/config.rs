//! The `run` subcommand's flags (each also read from an environment variable) and their
//! validation into an [`OperatorConfig`].

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ArgAction;
use clap::builder::BoolishValueParser;
use url::Url;

use crate::controllers::secrets::SecretPolicy;
use crate::leader::LeaseSettings;
use crate::telemetry::LogFormat;
use crate::versori::SecretValue;
use crate::versori::client::DEFAULT_BASE_URL;

/// Where a pod finds its own namespace.
pub const SERVICE_ACCOUNT_NAMESPACE_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
/// The default Lease name.
pub const DEFAULT_LEASE_NAME: &str = "versori-operator";
/// The default `--metrics-addr`.
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:8080";
/// The default `--resync-interval`.
pub const DEFAULT_RESYNC_INTERVAL: &str = "5m";

fn secret_value(value: &str) -> Result<SecretValue, std::convert::Infallible> {
    Ok(SecretValue::new(value))
}

/// Flags of `versori-operator run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Base URL of the Versori Platform API.
    #[arg(long, env = "VERSORI_API_URL", value_name = "URL", default_value = DEFAULT_BASE_URL)]
    pub api_url: String,

    /// The Versori organisation ID (required).
    #[arg(long, env = "VERSORI_ORGANISATION_ID", value_name = "ID")]
    pub organisation: Option<String>,

    /// The Versori API token (prefer --token-file or a Secret-backed environment variable).
    #[arg(long, env = "VERSORI_API_TOKEN", value_name = "TOKEN", hide_env_values = true, value_parser = secret_value)]
    pub token: Option<SecretValue>,

    /// A file holding the Versori API token (surrounding whitespace is ignored).
    #[arg(long, env = "VERSORI_API_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// Comma-separated namespaces to watch [default: all namespaces].
    #[arg(
        long,
        env = "WATCH_NAMESPACES",
        value_name = "NS[,NS...]",
        value_delimiter = ','
    )]
    pub watch_namespaces: Vec<String>,

    /// Only System, ProjectSystem and Connection resources matching this label selector are
    /// watched, so that several operators can split one cluster's resources (shards)
    /// [default: all].
    #[arg(long, env = "WATCH_LABEL_SELECTOR", value_name = "SELECTOR")]
    pub watch_label_selector: Option<String>,

    /// Reconciles running at once, per kind.
    #[arg(
        long,
        env = "VERSORI_OPERATOR_CONCURRENCY",
        value_name = "N",
        default_value_t = 32
    )]
    pub concurrency: u16,

    /// The most Versori API requests in flight at once, across all controllers.
    #[arg(
        long,
        env = "VERSORI_MAX_IN_FLIGHT",
        value_name = "N",
        default_value_t = 16
    )]
    pub versori_max_in_flight: usize,

    /// How often a ready object is compared with Versori: seconds (300) or 30s, 5m, 1h, 1h30m.
    #[arg(long, env = "VERSORI_RESYNC_INTERVAL", value_name = "DURATION", default_value = DEFAULT_RESYNC_INTERVAL)]
    pub resync_interval: String,

    /// Address of the /metrics, /healthz and /readyz endpoint (host:port or :port).
    #[arg(long, env = "METRICS_ADDR", value_name = "ADDR", default_value = DEFAULT_METRICS_ADDR)]
    pub metrics_addr: String,

    /// Run only while holding the leader Lease (for several replicas).
    #[arg(
        long,
        env = "LEADER_ELECTION",
        value_name = "BOOL",
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value_t = false,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    pub leader_election: bool,

    /// Name of the leader Lease.
    #[arg(long, env = "LEASE_NAME", value_name = "NAME", default_value = DEFAULT_LEASE_NAME)]
    pub lease_name: String,

    /// Namespace of the leader Lease [default: the pod's namespace, else `default`].
    #[arg(long, env = "POD_NAMESPACE", value_name = "NS")]
    pub lease_namespace: Option<String>,

    /// This replica's identity in the Lease [default: hostname and process ID].
    #[arg(long, env = "POD_NAME", value_name = "ID")]
    pub identity: Option<String>,

    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Public base URL of the OAuth 2.0 callback (what a browser reaches, e.g.
    /// https://versori-operator.example.com). Unset: authorization code connections cannot be
    /// authorized in the cluster.
    #[arg(long, env = "OAUTH2_CALLBACK_URL", value_name = "URL")]
    pub oauth2_callback_url: Option<String>,

    /// Address the OAuth 2.0 callback listens on (it serves only /oauth2/callback).
    #[arg(
        long,
        env = "OAUTH2_CALLBACK_ADDR",
        value_name = "ADDR",
        default_value = "0.0.0.0:8081"
    )]
    pub oauth2_callback_addr: String,

    /// How long an authorization URL stays valid before a new one is started.
    #[arg(
        long,
        env = "OAUTH2_AUTHORIZATION_TTL",
        value_name = "DURATION",
        default_value = "10m"
    )]
    pub oauth2_authorization_ttl: String,

    /// Read only Secrets labelled versori.com/credential: "true" (Secrets by consent).
    #[arg(
        long,
        env = "REQUIRE_CREDENTIAL_LABEL",
        value_name = "BOOL",
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value_t = false,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    pub require_credential_label: bool,

    /// Comma-separated hosts a Connection's baseUrl or tokenUrl override may name (`*.example.com`
    /// for subdomains) [default: any host].
    #[arg(
        long,
        env = "ALLOWED_OVERRIDE_HOSTS",
        value_name = "HOST[,HOST...]",
        value_delimiter = ','
    )]
    pub allowed_override_hosts: Vec<String>,

    /// The Secret (in the operator's namespace, POD_NAMESPACE) holding the key of the credential
    /// hashes in status; created with a random key when absent.
    #[arg(
        long,
        env = "CREDENTIAL_HASH_KEY_SECRET",
        value_name = "NAME",
        default_value = DEFAULT_HASH_KEY_SECRET
    )]
    pub credential_hash_key_secret: String,
}

/// The default `--credential-hash-key-secret`.
pub const DEFAULT_HASH_KEY_SECRET: &str = "versori-operator-credential-hash-key";

/// A configuration problem; each message is one line naming the variable to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "VERSORI_ORGANISATION_ID is not set: set it (or --organisation) to your Versori organisation ID"
    )]
    MissingOrganisation,
    #[error("VERSORI_ORGANISATION_ID `{0}` is not valid: it must not contain whitespace or `/`")]
    InvalidOrganisation(String),
    #[error(
        "no Versori API token: set VERSORI_API_TOKEN (or --token), or VERSORI_API_TOKEN_FILE (or --token-file) to a file holding it"
    )]
    MissingToken,
    #[error(
        "both VERSORI_API_TOKEN and VERSORI_API_TOKEN_FILE are set (or --token and --token-file): set only one"
    )]
    TokenAndTokenFile,
    #[error("VERSORI_API_TOKEN is empty: set it to your Versori API token")]
    EmptyToken,
    #[error(
        "VERSORI_API_TOKEN contains whitespace or control characters: set it to the token alone"
    )]
    MalformedToken,
    #[error("cannot read VERSORI_API_TOKEN_FILE `{path}`: {reason}")]
    UnreadableTokenFile { path: String, reason: String },
    #[error("VERSORI_API_TOKEN_FILE `{path}` is empty: put your Versori API token in it")]
    EmptyTokenFile { path: String },
    #[error(
        "VERSORI_API_TOKEN_FILE `{path}` contains whitespace or control characters inside the token: put the token alone in it"
    )]
    MalformedTokenFile { path: String },
    #[error("VERSORI_API_URL `{value}` is not a valid URL: {reason}")]
    InvalidApiUrl { value: String, reason: String },
    #[error(
        "WATCH_NAMESPACES entry `{0}` is not a valid namespace name (lowercase letters, digits and `-`, at most 63)"
    )]
    InvalidNamespace(String),
    #[error("VERSORI_OPERATOR_CONCURRENCY must be at least 1")]
    ZeroConcurrency,
    #[error("VERSORI_MAX_IN_FLIGHT must be at least 1")]
    ZeroMaxInFlight,
    #[error(
        "VERSORI_RESYNC_INTERVAL `{0}` is not valid: use seconds (300) or a duration such as 30s, 5m, 1h30m"
    )]
    InvalidResyncInterval(String),
    #[error("METRICS_ADDR `{0}` is not valid: use host:port such as 0.0.0.0:8080, or :8080")]
    InvalidMetricsAddr(String),
    #[error(
        "--lease-name `{0}` is not a valid Lease name (lowercase letters, digits, `-` and `.`, at most 253)"
    )]
    InvalidLeaseName(String),
    #[error("POD_NAMESPACE (--lease-namespace) `{0}` is not a valid namespace name")]
    InvalidLeaseNamespace(String),
    #[error("POD_NAME (--identity) must be 1 to 100 characters without whitespace")]
    InvalidIdentity,
    #[error(
        "OAUTH2_CALLBACK_URL `{0}` is not valid: use the public http(s) base URL browsers reach, such as https://versori-operator.example.com, or the full callback URL https://versori-operator.example.com/oauth2/callback, without user name, password, query or fragment"
    )]
    InvalidCallbackUrl(String),
    #[error(
        "OAUTH2_CALLBACK_ADDR `{0}` is not valid: use host:port such as 0.0.0.0:8081, or :8081"
    )]
    InvalidCallbackAddr(String),
    #[error("OAUTH2_AUTHORIZATION_TTL `{0}` is not valid: use a duration such as 10m")]
    InvalidAuthorizationTtl(String),
    #[error(
        "ALLOWED_OVERRIDE_HOSTS entry `{0}` is not a host name: use names such as api.example.com or *.example.com"
    )]
    InvalidOverrideHost(String),
    #[error("CREDENTIAL_HASH_KEY_SECRET `{0}` is not a valid Secret name")]
    InvalidHashKeySecret(String),
}

/// Where the OAuth 2.0 authorization code callback is served and reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuth2CallbackConfig {
    /// The redirect URL given to Versori: `{public base}/oauth2/callback`.
    pub redirect_url: Url,
    /// The listen address.
    pub addr: SocketAddr,
    /// How long an authorization stays valid.
    pub ttl: Duration,
}

/// The validated configuration of `versori-operator run`.
#[derive(Clone)]
pub struct OperatorConfig {
    pub api_url: Url,
    pub organisation: String,
    /// Redacted in `Debug`.
    pub token: SecretValue,
    /// Empty: all namespaces.
    pub watch_namespaces: Vec<String>,
    pub watch_label_selector: Option<String>,
    pub concurrency: u16,
    pub versori_max_in_flight: usize,
    pub resync_interval: Duration,
    pub metrics_addr: SocketAddr,
    /// `Some` when leader election is on.
    pub leader_election: Option<LeaseSettings>,
    pub log_format: LogFormat,
    pub oauth2_callback: Option<OAuth2CallbackConfig>,
    /// The file the token was read from (re-read when it changes).
    pub token_file: Option<PathBuf>,
    /// Which Secrets may be read, and where credentials may go.
    pub secret_policy: SecretPolicy,
    /// The operator's own namespace (its Lease and hash key Secret live there).
    pub namespace: String,
    /// The name of the credential hash key Secret in `namespace`.
    pub hash_key_secret: String,
}

impl fmt::Debug for OperatorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperatorConfig")
            .field("api_url", &self.api_url.as_str())
            .field("organisation", &self.organisation)
            .field("token", &SecretValue::REDACTED)
            .field("watch_namespaces", &self.watch_namespaces)
            .field("watch_label_selector", &self.watch_label_selector)
            .field("concurrency", &self.concurrency)
            .field("versori_max_in_flight", &self.versori_max_in_flight)
            .field("resync_interval", &self.resync_interval)
            .field("metrics_addr", &self.metrics_addr)
            .field("leader_election", &self.leader_election)
            .field("log_format", &self.log_format)
            .field("oauth2_callback", &self.oauth2_callback)
            .field("token_file", &self.token_file)
            .field("secret_policy", &self.secret_policy)
            .field("namespace", &self.namespace)
            .field("hash_key_secret", &self.hash_key_secret)
            .finish()
    }
}

impl RunArgs {
    /// Validates every flag; reads the token file and, with leader election, the pod's namespace
    /// file.
    pub fn into_config(self) -> Result<OperatorConfig, ConfigError> {
        self.into_config_with(Path::new(SERVICE_ACCOUNT_NAMESPACE_FILE))
    }

    fn into_config_with(self, namespace_file: &Path) -> Result<OperatorConfig, ConfigError> {
        let organisation = match self.organisation.as_deref().map(str::trim) {
            None | Some("") => return Err(ConfigError::MissingOrganisation),
            Some(org)
                if org.contains(|c: char| c.is_whitespace() || c.is_control() || c == '/') =>
            {
                return Err(ConfigError::InvalidOrganisation(org.to_owned()));
            }
            Some(org) => org.to_owned(),
        };

        let token_file = self
            .token_file
            .clone()
            .filter(|p| !p.as_os_str().is_empty());
        let token = read_token(self.token, self.token_file.as_deref())?;
        let api_url = parse_api_url(&self.api_url)?;

        let mut watch_namespaces: Vec<String> = Vec::new();
        for namespace in self
            .watch_namespaces
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
        {
            if !is_dns_label(namespace) {
                return Err(ConfigError::InvalidNamespace(namespace.to_owned()));
            }
            if !watch_namespaces.iter().any(|n| n == namespace) {
                watch_namespaces.push(namespace.to_owned());
            }
        }

        if self.concurrency == 0 {
            return Err(ConfigError::ZeroConcurrency);
        }
        if self.versori_max_in_flight == 0 {
            return Err(ConfigError::ZeroMaxInFlight);
        }
        let resync_interval = parse_duration(&self.resync_interval)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| ConfigError::InvalidResyncInterval(self.resync_interval.clone()))?;
        let metrics_addr = parse_listen_addr(&self.metrics_addr)
            .ok_or_else(|| ConfigError::InvalidMetricsAddr(self.metrics_addr.clone()))?;

        let namespace = match self.lease_namespace.as_deref().map(str::trim) {
            Some(ns) if !ns.is_empty() => ns.to_owned(),
            _ => pod_namespace(namespace_file).unwrap_or_else(|| "default".to_owned()),
        };
        let mut allowed_override_hosts = Vec::new();
        for host in self
            .allowed_override_hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
        {
            let bare = host.strip_prefix("*.").unwrap_or(&host);
            if !is_dns_subdomain(bare) {
                return Err(ConfigError::InvalidOverrideHost(host));
            }
            allowed_override_hosts.push(host);
        }
        let hash_key_secret = self.credential_hash_key_secret.trim().to_owned();
        if !is_dns_subdomain(&hash_key_secret) {
            return Err(ConfigError::InvalidHashKeySecret(hash_key_secret));
        }

        let leader_election = if self.leader_election {
            let name = self.lease_name.trim();
            if !is_dns_subdomain(name) {
                return Err(ConfigError::InvalidLeaseName(name.to_owned()));
            }
            let namespace = match self.lease_namespace.as_deref().map(str::trim) {
                Some(ns) if !ns.is_empty() => ns.to_owned(),
                _ => pod_namespace(namespace_file).unwrap_or_else(|| "default".to_owned()),
            };
            if !is_dns_label(&namespace) {
                return Err(ConfigError::InvalidLeaseNamespace(namespace));
            }
            let identity = match self.identity.as_deref().map(str::trim) {
                Some(id) if !id.is_empty() => id.to_owned(),
                _ => default_identity(),
            };
            if identity.chars().count() > 100
                || identity.contains(|c: char| c.is_whitespace() || c.is_control())
            {
                return Err(ConfigError::InvalidIdentity);
            }
            Some(LeaseSettings::new(name, namespace, identity))
        } else {
            None
        };

        let oauth2_callback = match self.oauth2_callback_url.as_deref().map(str::trim) {
            Some(public) if !public.is_empty() => {
                let redirect_url = parse_callback_url(public)?;
                let addr = parse_listen_addr(&self.oauth2_callback_addr).ok_or_else(|| {
                    ConfigError::InvalidCallbackAddr(self.oauth2_callback_addr.clone())
                })?;
                let ttl = parse_duration(&self.oauth2_authorization_ttl)
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        ConfigError::InvalidAuthorizationTtl(self.oauth2_authorization_ttl.clone())
                    })?;
                Some(OAuth2CallbackConfig {
                    redirect_url,
                    addr,
                    ttl,
                })
            }
            _ => None,
        };

        Ok(OperatorConfig {
            api_url,
            organisation,
            token,
            watch_namespaces,
            watch_label_selector: self
                .watch_label_selector
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            concurrency: self.concurrency,
            versori_max_in_flight: self.versori_max_in_flight,
            resync_interval,
            metrics_addr,
            leader_election,
            log_format: self.log_format,
            oauth2_callback,
            token_file,
            secret_policy: SecretPolicy {
                require_label: self.require_credential_label,
                allowed_override_hosts,
            },
            namespace,
            hash_key_secret,
        })
    }
}

fn is_token_text(token: &str) -> bool {
    !token.contains(|c: char| c.is_whitespace() || c.is_control())
}

fn read_token(
    token: Option<SecretValue>,
    token_file: Option<&Path>,
) -> Result<SecretValue, ConfigError> {
    // An empty variable counts as unset when the other source is given (charts often set both).
    let token = token.filter(|t| !(t.expose().trim().is_empty() && token_file.is_some()));
    let token_file = token_file.filter(|p| !(p.as_os_str().is_empty() && token.is_some()));
    match (token, token_file) {
        (Some(_), Some(_)) => Err(ConfigError::TokenAndTokenFile),
        (None, None) => Err(ConfigError::MissingToken),
        (Some(token), None) => {
            let trimmed = token.expose().trim();
            if trimmed.is_empty() {
                Err(ConfigError::EmptyToken)
            } else if !is_token_text(trimmed) {
                Err(ConfigError::MalformedToken)
            } else {
                Ok(SecretValue::new(trimmed))
            }
        }
        (None, Some(path)) => {
            let shown = path.display().to_string();
            let content =
                std::fs::read_to_string(path).map_err(|e| ConfigError::UnreadableTokenFile {
                    path: shown.clone(),
                    reason: io_reason(&e),
                })?;
            let trimmed = content.trim();
            if trimmed.is_empty() {
                Err(ConfigError::EmptyTokenFile { path: shown })
            } else if !is_token_text(trimmed) {
                Err(ConfigError::MalformedTokenFile { path: shown })
            } else {
                Ok(SecretValue::new(trimmed))
            }
        }
    }
}

/// An I/O error as a short lowercase reason (never the file's content).
fn io_reason(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        std::io::ErrorKind::InvalidData => "it is not UTF-8 text".to_owned(),
        std::io::ErrorKind::IsADirectory => "it is a directory".to_owned(),
        _ => error.to_string(),
    }
}

/// `value` with any userinfo (`user:pass@`) of a URL replaced by `***@`, for messages: a URL's
/// credentials are never printed. Works on text that does not parse as a URL too.
pub fn redact_userinfo(value: &str) -> String {
    let Some(scheme_end) = value.find("://") else {
        return value.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &value[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_len].rfind('@') {
        Some(at) => format!(
            "{}***{}",
            &value[..authority_start],
            &value[authority_start + at..]
        ),
        None => value.to_owned(),
    }
}

/// The redirect URL from `OAUTH2_CALLBACK_URL`: either the public base URL (the callback path is
/// appended) or the full callback URL ending in `/oauth2/callback`.
fn parse_callback_url(public: &str) -> Result<Url, ConfigError> {
    let invalid = || ConfigError::InvalidCallbackUrl(redact_userinfo(public));
    let mut base = Url::parse(public).map_err(|_| invalid())?;
    if !matches!(base.scheme(), "http" | "https")
        || base.host().is_none()
        || !base.username().is_empty()
        || base.password().is_some()
        || base.query().is_some()
        || base.fragment().is_some()
    {
        return Err(invalid());
    }
    let path = base.path().trim_end_matches('/');
    if path.ends_with("/oauth2/callback") {
        let path = path.to_owned();
        base.set_path(&path);
        return Ok(base);
    }
    let path = format!("{path}/");
    base.set_path(&path);
    base.join("oauth2/callback").map_err(|_| invalid())
}

fn parse_api_url(value: &str) -> Result<Url, ConfigError> {
    let invalid = |reason: &str| ConfigError::InvalidApiUrl {
        value: redact_userinfo(value),
        reason: reason.to_owned(),
    };
    let url = Url::parse(value.trim()).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("it must not contain credentials"));
    }
    Ok(url)
}

/// `300` (bare seconds), or a duration in jiff's friendly format (`500ms`, `30s`, `5m`, `1h30m`,
/// `1d`, `2 hours`) or ISO 8601 (`PT5M`); a day counts 24 hours. `None` when malformed, negative
/// or overflowing.
pub fn parse_duration(value: &str) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let span: jiff::Span = value.parse().ok()?;
    let signed = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .ok()?;
    Duration::try_from(signed).ok()
}

/// `host:port`, `[v6]:port`, or `:port` (all interfaces).
fn parse_listen_addr(value: &str) -> Option<SocketAddr> {
    let value = value.trim();
    match value.strip_prefix(':') {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .map(|p| SocketAddr::from(([0, 0, 0, 0], p))),
        None => value.parse().ok(),
    }
}

/// RFC 1123 label: what a namespace name must be.
fn is_dns_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

/// RFC 1123 subdomain: what most object names (a Lease's included) must be.
fn is_dns_subdomain(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn pod_namespace(file: &Path) -> Option<String> {
    let namespace = std::fs::read_to_string(file).ok()?;
    let namespace = namespace.trim();
    (!namespace.is_empty()).then(|| namespace.to_owned())
}

/// `<hostname>-<pid>`; the hostname comes from `HOSTNAME` or the kernel.
fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && is_token_text(h))
        .unwrap_or_else(|| "versori-operator".to_owned());
    let host: String = host.chars().take(80).collect();
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use clap::Parser;

    use super::*;

    const CANARY: &str = "tok-canary-5d1f0b7e";

    fn args() -> RunArgs {
        RunArgs {
            api_url: DEFAULT_BASE_URL.to_owned(),
            organisation: Some("01HQORG0000000000000000000".to_owned()),
            token: Some(SecretValue::new(CANARY)),
            token_file: None,
            watch_namespaces: Vec::new(),
            watch_label_selector: None,
            concurrency: 32,
            versori_max_in_flight: 16,
            resync_interval: DEFAULT_RESYNC_INTERVAL.to_owned(),
            metrics_addr: DEFAULT_METRICS_ADDR.to_owned(),
            leader_election: false,
            lease_name: DEFAULT_LEASE_NAME.to_owned(),
            lease_namespace: None,
            identity: None,
            log_format: LogFormat::Json,
            oauth2_callback_url: None,
            oauth2_callback_addr: "0.0.0.0:8081".to_owned(),
            oauth2_authorization_ttl: "10m".to_owned(),
            require_credential_label: false,
            allowed_override_hosts: Vec::new(),
            credential_hash_key_secret: DEFAULT_HASH_KEY_SECRET.to_owned(),
        }
    }

    #[test]
    fn secret_policy_settings() {
        let config = args()
            .into_config_with(Path::new("/nonexistent"))
            .expect("valid");
        assert_eq!(config.secret_policy, SecretPolicy::default());
        assert_eq!(config.namespace, "default");
        assert_eq!(config.hash_key_secret, DEFAULT_HASH_KEY_SECRET);
        let config = RunArgs {
            require_credential_label: true,
            allowed_override_hosts: vec![" API.example.com ".into(), "*.auth.example.com".into()],
            lease_namespace: Some("ops".into()),
            ..args()
        }
        .into_config_with(Path::new("/nonexistent"))
        .expect("valid");
        assert!(config.secret_policy.require_label);
        assert_eq!(
            config.secret_policy.allowed_override_hosts,
            vec![
                "api.example.com".to_owned(),
                "*.auth.example.com".to_owned()
            ]
        );
        assert_eq!(config.namespace, "ops");
        assert!(matches!(
            error_of(RunArgs {
                allowed_override_hosts: vec!["https://x.example.com/".into()],
                ..args()
            }),
            ConfigError::InvalidOverrideHost(_)
        ));
    }

    #[test]
    fn the_oauth2_callback_is_off_by_default_and_validated() {
        let config = |args: RunArgs| args.into_config_with(Path::new("/nonexistent"));
        assert!(config(args()).is_ok_and(|c| c.oauth2_callback.is_none()));
        let mut with = args();
        with.oauth2_callback_url = Some("https://operator.example.com/base".into());
        let callback = config(with)
            .ok()
            .and_then(|c| c.oauth2_callback)
            .expect("a callback");
        assert_eq!(
            callback.redirect_url.as_str(),
            "https://operator.example.com/base/oauth2/callback"
        );
        assert_eq!(callback.ttl, Duration::from_secs(600));
        for (given, redirect) in [
            (
                "https://operator.example.com",
                "https://operator.example.com/oauth2/callback",
            ),
            (
                "https://operator.example.com/",
                "https://operator.example.com/oauth2/callback",
            ),
            (
                "https://operator.example.com/oauth2/callback",
                "https://operator.example.com/oauth2/callback",
            ),
            (
                "https://operator.example.com/oauth2/callback/",
                "https://operator.example.com/oauth2/callback",
            ),
            (
                "https://operator.example.com/base/oauth2/callback",
                "https://operator.example.com/base/oauth2/callback",
            ),
        ] {
            let mut with = args();
            with.oauth2_callback_url = Some(given.into());
            let callback = config(with)
                .ok()
                .and_then(|c| c.oauth2_callback)
                .expect("a callback");
            assert_eq!(callback.redirect_url.as_str(), redirect, "{given}");
        }
        for bad_url in [
            "not a url",
            "ftp://operator.example.com/",
            "https://user:pass@operator.example.com/",
            "https://user@operator.example.com/",
            "https://operator.example.com/?a=b",
            "https://operator.example.com/#x",
        ] {
            let mut bad = args();
            bad.oauth2_callback_url = Some(bad_url.into());
            let error = error_of(bad);
            assert!(
                matches!(error, ConfigError::InvalidCallbackUrl(_)),
                "{bad_url}"
            );
            assert!(!error.to_string().contains("pass@"), "{error}");
        }
        let mut bad = args();
        bad.oauth2_callback_url = Some("https://operator.example.com".into());
        bad.oauth2_authorization_ttl = "0s".into();
        assert!(matches!(
            error_of(bad),
            ConfigError::InvalidAuthorizationTtl(_)
        ));
    }

    fn error_of(args: RunArgs) -> ConfigError {
        let error = args
            .into_config_with(Path::new("/nonexistent/namespace"))
            .expect_err("must be refused");
        let message = error.to_string();
        assert!(!message.contains('\n'), "one line: {message}");
        assert!(!message.contains(CANARY), "token leaked: {message}");
        error
    }

    #[test]
    fn defaults_are_valid() {
        let config = args()
            .into_config_with(Path::new("/nonexistent"))
            .expect("valid");
        assert_eq!(config.api_url.as_str(), DEFAULT_BASE_URL);
        assert_eq!(config.token.expose(), CANARY);
        assert_eq!(config.resync_interval, Duration::from_secs(300));
        assert_eq!(config.metrics_addr, "0.0.0.0:8080".parse().expect("addr"));
        assert_eq!(config.concurrency, 32);
        assert_eq!(config.versori_max_in_flight, 16);
        assert!(config.watch_namespaces.is_empty());
        assert!(config.leader_election.is_none());
        let debug = format!("{config:?}");
        assert!(!debug.contains(CANARY), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn missing_or_blank_organisation() {
        for organisation in [None, Some(String::new()), Some("   ".to_owned())] {
            let error = error_of(RunArgs {
                organisation,
                ..args()
            });
            assert_eq!(error, ConfigError::MissingOrganisation);
            assert_eq!(
                error.to_string(),
                "VERSORI_ORGANISATION_ID is not set: set it (or --organisation) to your Versori organisation ID"
            );
        }
        let error = error_of(RunArgs {
            organisation: Some("a/b".to_owned()),
            ..args()
        });
        assert!(matches!(error, ConfigError::InvalidOrganisation(_)));
    }

    #[test]
    fn token_sources() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(file, "  {CANARY}  ").expect("write");
        let path = file.path().to_path_buf();

        // Both.
        let error = error_of(RunArgs {
            token_file: Some(path.clone()),
            ..args()
        });
        assert_eq!(error, ConfigError::TokenAndTokenFile);

        // Neither.
        let error = error_of(RunArgs {
            token: None,
            ..args()
        });
        assert_eq!(error, ConfigError::MissingToken);

        // Empty or malformed variable.
        let error = error_of(RunArgs {
            token: Some(SecretValue::new(" ")),
            ..args()
        });
        assert_eq!(error, ConfigError::EmptyToken);
        let error = error_of(RunArgs {
            token: Some(SecretValue::new(format!("{CANARY} {CANARY}"))),
            ..args()
        });
        assert_eq!(error, ConfigError::MalformedToken);

        // The file, trimmed; an empty variable next to it counts as unset.
        for token in [None, Some(SecretValue::new(""))] {
            let config = RunArgs {
                token,
                token_file: Some(path.clone()),
                ..args()
            }
            .into_config_with(Path::new("/nonexistent"))
            .expect("valid");
            assert_eq!(config.token.expose(), CANARY);
        }

        // Unreadable and empty files.
        let error = error_of(RunArgs {
            token: None,
            token_file: Some(PathBuf::from("/nonexistent/token")),
            ..args()
        });
        assert_eq!(
            error.to_string(),
            "cannot read VERSORI_API_TOKEN_FILE `/nonexistent/token`: no such file"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let error = error_of(RunArgs {
            token: None,
            token_file: Some(dir.path().to_path_buf()),
            ..args()
        });
        assert!(
            matches!(error, ConfigError::UnreadableTokenFile { .. }),
            "{error}"
        );
        let empty = tempfile::NamedTempFile::new().expect("temp file");
        let error = error_of(RunArgs {
            token: None,
            token_file: Some(empty.path().to_path_buf()),
            ..args()
        });
        assert!(
            matches!(error, ConfigError::EmptyTokenFile { .. }),
            "{error}"
        );
    }

    #[test]
    fn bad_urls() {
        for url in [
            "not a url",
            "ftp://example.com/api",
            "http://",
            "https://u:p@example.com/",
            "https://x/?a=b",
        ] {
            let error = error_of(RunArgs {
                api_url: url.to_owned(),
                ..args()
            });
            assert!(
                matches!(error, ConfigError::InvalidApiUrl { .. }),
                "{url}: {error}"
            );
            assert!(
                error.to_string().starts_with("VERSORI_API_URL `"),
                "{error}"
            );
            assert!(
                !error.to_string().contains("u:p"),
                "userinfo printed: {error}"
            );
        }
        let config = RunArgs {
            api_url: "http://127.0.0.1:9999".to_owned(),
            ..args()
        }
        .into_config_with(Path::new("/nonexistent"))
        .expect("valid");
        assert_eq!(config.api_url.as_str(), "http://127.0.0.1:9999/");
    }

    #[test]
    fn userinfo_is_never_printed() {
        assert_eq!(
            redact_userinfo("https://user:pass@host.example/p@th?q=a@b"),
            "https://***@host.example/p@th?q=a@b"
        );
        assert_eq!(redact_userinfo("https://u@h/"), "https://***@h/");
        assert_eq!(redact_userinfo("https://h/x@y"), "https://h/x@y");
        assert_eq!(redact_userinfo("not a url"), "not a url");
        assert_eq!(redact_userinfo("x://a:b@c"), "x://***@c");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("300"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration(" 1h30m "), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("5 m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5m"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2 hours"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("PT5M"), Some(Duration::from_secs(300)));
        for bad in ["", "5x", "m", "-5s", "s5", "99999999999999999999s"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        let error = error_of(RunArgs {
            resync_interval: "0s".to_owned(),
            ..args()
        });
        assert!(matches!(error, ConfigError::InvalidResyncInterval(_)));
        let config = RunArgs {
            resync_interval: "30s".to_owned(),
            ..args()
        }
        .into_config_with(Path::new("/nonexistent"))
        .expect("valid");
        assert_eq!(config.resync_interval, Duration::from_secs(30));
    }

    #[test]
    fn numbers_namespaces_and_addresses() {
        assert_eq!(
            error_of(RunArgs {
                concurrency: 0,
                ..args()
            }),
            ConfigError::ZeroConcurrency
        );
        assert_eq!(
            error_of(RunArgs {
                versori_max_in_flight: 0,
                ..args()
            }),
            ConfigError::ZeroMaxInFlight
        );
        assert!(matches!(
            error_of(RunArgs {
                watch_namespaces: vec!["Bad_NS".to_owned()],
                ..args()
            }),
            ConfigError::InvalidNamespace(_)
        ));
        let config = RunArgs {
            watch_namespaces: vec!["a".into(), " b ".into(), "".into(), "a".into()],
            metrics_addr: ":9090".to_owned(),
            ..args()
        }
        .into_config_with(Path::new("/nonexistent"))
        .expect("valid");
        assert_eq!(
            config.watch_namespaces,
            vec!["a".to_owned(), "b".to_owned()]
        );
        assert_eq!(config.metrics_addr, "0.0.0.0:9090".parse().expect("addr"));
        assert!(matches!(
            error_of(RunArgs {
                metrics_addr: "localhost".to_owned(),
                ..args()
            }),
            ConfigError::InvalidMetricsAddr(_)
        ));
    }

    #[test]
    fn leader_election_settings() {
        let mut ns_file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(ns_file, "operators").expect("write");
        let config = RunArgs {
            leader_election: true,
            identity: Some("pod-a".to_owned()),
            ..args()
        }
        .into_config_with(ns_file.path())
        .expect("valid");
        let lease = config.leader_election.expect("leader election on");
        assert_eq!(lease.name, DEFAULT_LEASE_NAME);
        assert_eq!(lease.namespace, "operators");
        assert_eq!(lease.identity, "pod-a");
        assert!(lease.validate().is_ok());

        let config = RunArgs {
            leader_election: true,
            lease_namespace: Some("explicit".to_owned()),
            ..args()
        }
        .into_config_with(ns_file.path())
        .expect("valid");
        let lease = config.leader_election.expect("leader election on");
        assert_eq!(lease.namespace, "explicit");
        assert!(
            lease
                .identity
                .ends_with(&format!("-{}", std::process::id())),
            "{}",
            lease.identity
        );

        let config = RunArgs {
            leader_election: true,
            ..args()
        }
        .into_config_with(Path::new("/nonexistent"))
        .expect("valid");
        assert_eq!(config.leader_election.expect("on").namespace, "default");

        assert!(matches!(
            error_of(RunArgs {
                leader_election: true,
                lease_name: "Bad Name".to_owned(),
                ..args()
            }),
            ConfigError::InvalidLeaseName(_)
        ));
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn flags_parse_and_help_hides_the_token() {
        let cli = Cli::try_parse_from([
            "versori-operator",
            "--organisation",
            "org",
            "--token",
            CANARY,
            "--watch-namespaces",
            "a,b",
            "--concurrency",
            "3",
            "--resync-interval",
            "30s",
            "--leader-election",
            "--lease-namespace",
            "ops",
            "--identity",
            "me",
            "--log-format",
            "text",
            "--metrics-addr",
            "127.0.0.1:0",
            "--api-url",
            "http://127.0.0.1:1",
            "--versori-max-in-flight",
            "4",
            "--lease-name",
            "lease",
        ])
        .expect("parses");
        let run = cli.run;
        assert!(run.leader_election);
        assert_eq!(run.watch_namespaces, vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(run.log_format, LogFormat::Text);
        assert!(!format!("{run:?}").contains(CANARY));
        let config = run.into_config().expect("valid");
        assert_eq!(config.concurrency, 3);
        assert_eq!(config.resync_interval, Duration::from_secs(30));
        assert_eq!(config.leader_election.expect("on").namespace, "ops");

        let cli =
            Cli::try_parse_from(["versori-operator", "--leader-election=false"]).expect("parses");
        assert!(!cli.run.leader_election);

        let help = <Cli as clap::CommandFactory>::command()
            .render_long_help()
            .to_string();
        assert!(help.contains("VERSORI_API_TOKEN"), "{help}");
        assert!(!help.contains(CANARY));
    }
}
