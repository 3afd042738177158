//! Validation of raw JSON bodies, reporting every fault with its field path
//! (`authSchemeConfigs[0].oauth2.tokenUrl`, `connection.credentials[0].credential.type`, ...).
//!
//! A `null` value counts as absent everywhere, except that a required field
//! that is `null` is reported as missing.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::error::{ApiError, FieldError};

/// The zero ULID: in a body it means "unset, assign one".
pub const ZERO_ULID: &str = "00000000000000000000000000";
const CROCKFORD: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// 26 Crockford base32 characters (either case), the first one at most `7`.
pub fn is_ulid(s: &str) -> bool {
    s.len() == 26
        && s.bytes().enumerate().all(|(i, b)| {
            let upper = b.to_ascii_uppercase();
            CROCKFORD.contains(&upper) && (i != 0 || upper <= b'7')
        })
}

pub fn new_ulid() -> String {
    ulid::Ulid::new().to_string()
}

/// An absolute `http`/`https` URL with a host.
pub fn is_url(s: &str) -> bool {
    url::Url::parse(s)
        .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .unwrap_or(false)
}

pub fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

pub fn index(prefix: &str, i: usize) -> String {
    format!("{prefix}[{i}]")
}

/// `(type, member)` pairs of `AuthSchemeConfig`. `jwt-bearer` and `secret` are types with no
/// member of their own: the type is sent alone.
pub const SCHEME_TYPES: [(&str, Option<&str>); 9] = [
    ("none", Some("none")),
    ("api-key", Some("apiKey")),
    ("basic-auth", Some("basicAuth")),
    ("oauth2", Some("oauth2")),
    ("hmac", Some("hmac")),
    ("jwt-bearer", None),
    ("certificate", Some("certificate")),
    ("oauth1", Some("oauth1")),
    ("secret", None),
];

/// Where the emulator keeps the ID of a config whose type has no member (`jwt-bearer`,
/// `secret`): the ID of the path it was PUT at. Never rendered; the API shows the type alone.
pub const MEMBERLESS_ID: &str = "$id";

/// `(type, data member)` pairs of `Credential`.
pub const CREDENTIAL_TYPES: [(&str, &str); 11] = [
    ("none", "none"),
    ("string", "string"),
    ("binary", "binary"),
    ("basic-auth", "basicAuth"),
    ("oauth2-client", "oauth2Client"),
    ("oauth1", "oauth1"),
    ("oauth1-token", "oauth1Token"),
    ("oauth2-code", "oauth2Code"),
    ("oauth2-password", "oauth2Password"),
    ("oauth2-token", "oauth2Token"),
    ("certificate", "certificate"),
];

pub const GRANT_TYPES: [&str; 3] = ["authorizationCode", "clientCredentials", "password"];
const LOCATIONS: [&str; 3] = ["query", "header", "cookie"];
const HMAC_ALGORITHMS: [&str; 3] = ["sha1", "sha256", "sha512"];
const HMAC_DIGEST_INPUTS: [&str; 2] = ["body", "url"];
const HMAC_ENCODINGS: [&str; 3] = ["hex", "base64", "base64url"];
const OAUTH1_SIGNATURE_METHODS: [&str; 2] = ["sha256", "sha1"];
/// The three endpoints of an oauth1 scheme, all required unless `tokenAuth` is true.
pub const OAUTH1_ENDPOINTS: [&str; 3] = [
    "tempCredentialEndpoint",
    "resourceOwnerAuthorizationEndpoint",
    "tokenEndpoint",
];
const PARAMETER_TRANSMISSIONS: [&str; 3] = [
    "AUTH_STYLE_AUTHORIZATION_HEADER",
    "AUTH_STYLE_FORM",
    "AUTH_STYLE_QUERY",
];
pub const ENVIRONMENT_STATUSES: [&str; 4] = ["running", "suspended", "error", "draft"];

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Collects field errors.
#[derive(Debug, Default)]
pub struct V {
    pub errors: Vec<FieldError>,
}

impl V {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.errors))
        }
    }

    /// The value at `key`, `null` counting as absent.
    pub fn get<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
        m.get(key).filter(|v| !v.is_null())
    }

    fn missing(&mut self, path: String) {
        self.err(path, "is required");
    }

    pub fn object<'a>(&mut self, v: &'a Value, path: &str) -> Option<&'a Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            other => {
                self.err(path, format!("must be an object, not {}", kind(other)));
                None
            }
        }
    }

    pub fn req_object<'a>(
        &mut self,
        m: &'a Map<String, Value>,
        key: &str,
        prefix: &str,
    ) -> Option<&'a Map<String, Value>> {
        let path = join(prefix, key);
        match Self::get(m, key) {
            None => {
                self.missing(path);
                None
            }
            Some(v) => self.object(v, &path),
        }
    }

    pub fn opt_object<'a>(
        &mut self,
        m: &'a Map<String, Value>,
        key: &str,
        prefix: &str,
    ) -> Option<&'a Map<String, Value>> {
        let v = Self::get(m, key)?;
        self.object(v, &join(prefix, key))
    }

    fn string<'a>(&mut self, v: &'a Value, path: String, non_empty: bool) -> Option<&'a str> {
        match v {
            Value::String(s) if non_empty && s.is_empty() => {
                self.err(path, "must not be empty");
                None
            }
            Value::String(s) => Some(s),
            other => {
                self.err(path, format!("must be a string, not {}", kind(other)));
                None
            }
        }
    }

    pub fn req_str<'a>(
        &mut self,
        m: &'a Map<String, Value>,
        key: &str,
        prefix: &str,
        non_empty: bool,
    ) -> Option<&'a str> {
        let path = join(prefix, key);
        match Self::get(m, key) {
            None => {
                self.missing(path);
                None
            }
            Some(v) => self.string(v, path, non_empty),
        }
    }

    pub fn opt_str<'a>(
        &mut self,
        m: &'a Map<String, Value>,
        key: &str,
        prefix: &str,
    ) -> Option<&'a str> {
        let v = Self::get(m, key)?;
        self.string(v, join(prefix, key), false)
    }

    fn check_enum<'a>(&mut self, s: &'a str, path: String, allowed: &[&str]) -> Option<&'a str> {
        if allowed.contains(&s) {
            Some(s)
        } else {
            self.err(
                path,
                format!("must be one of {}, not {s:?}", allowed.join(", ")),
            );
            None
        }
    }

    pub fn req_enum<'a>(
        &mut self,
        m: &'a Map<String, Value>,
        key: &str,
        prefix: &str,
        allowed: &[&str],
    ) -> Option<&'a str> {
        let s = self.req_str(m, key, prefix, true)?;
        self.check_enum(s, join(prefix, key), allowed)
    }

    pub fn opt_bool(&mut self, m: &Map<String, Value>, key: &str, prefix: &str) -> Option<bool> {
        match Self::get(m, key)? {
            Value::Bool(b) => Some(*b),
            other => {
                self.err(
                    join(prefix, key),
                    format!("must be a boolean, not {}", kind(other)),
                );
                None
            }
        }
    }

    fn url<'a>(&mut self, s: &'a str, path: String) -> Option<&'a str> {
        if is_url(s) {
            Some(s)
        } else {
            self.err(path, "must be an absolute http or https URL");
            None
        }
    }

    pub fn req_url<'a>(
        &mut self,
        m: &'a Map<String, Value>,
        key: &str,
        prefix: &str,
    ) -> Option<&'a str> {
        let s = self.req_str(m, key, prefix, true)?;
        self.url(s, join(prefix, key))
    }

    pub fn opt_url<'a>(
        &mut self,
        m: &'a Map<String, Value>,
        key: &str,
        prefix: &str,
    ) -> Option<&'a str> {
        let s = self.opt_str(m, key, prefix)?;
        self.url(s, join(prefix, key))
    }

    fn array<'a>(&mut self, v: &'a Value, path: String) -> Option<&'a Vec<Value>> {
        match v {
            Value::Array(a) => Some(a),
            other => {
                self.err(path, format!("must be an array, not {}", kind(other)));
                None
            }
        }
    }

    pub fn req_array<'a>(
        &mut self,
        m: &'a Map<String, Value>,
        key: &str,
        prefix: &str,
    ) -> Option<&'a Vec<Value>> {
        let path = join(prefix, key);
        match Self::get(m, key) {
            None => {
                self.missing(path);
                None
            }
            Some(v) => self.array(v, path),
        }
    }

    pub fn opt_array<'a>(
        &mut self,
        m: &'a Map<String, Value>,
        key: &str,
        prefix: &str,
    ) -> Option<&'a Vec<Value>> {
        let v = Self::get(m, key)?;
        self.array(v, join(prefix, key))
    }

    /// Every element a string (non-empty when asked), and one of `allowed` when given.
    pub fn strings(
        &mut self,
        items: &[Value],
        path: &str,
        non_empty: bool,
        allowed: Option<&[&str]>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = index(path, i);
            if let Some(s) = self.string(item, p.clone(), non_empty) {
                match allowed {
                    Some(allowed) => {
                        if self.check_enum(s, p, allowed).is_some() {
                            out.push(s.to_owned());
                        }
                    }
                    None => out.push(s.to_owned()),
                }
            }
        }
        out
    }

    /// A ULID, canonical upper case. Absent, `""` and the zero ULID read as unset
    /// (`Some(None)`); a malformed value is reported and yields `None`.
    pub fn id_or_unset(
        &mut self,
        m: &Map<String, Value>,
        key: &str,
        prefix: &str,
    ) -> Option<Option<String>> {
        let Some(v) = Self::get(m, key) else {
            return Some(None);
        };
        let s = self.string(v, join(prefix, key), false)?;
        if s.is_empty() || s == ZERO_ULID {
            Some(None)
        } else if is_ulid(s) {
            Some(Some(s.to_ascii_uppercase()))
        } else {
            self.err(
                join(prefix, key),
                "must be a ULID (26 Crockford base32 characters)",
            );
            None
        }
    }

    /// A required ULID that refers to an existing object (the zero ULID is "unset", so missing).
    pub fn req_ulid(&mut self, m: &Map<String, Value>, key: &str, prefix: &str) -> Option<String> {
        match self.id_or_unset(m, key, prefix)? {
            Some(id) => Some(id),
            None => {
                self.missing(join(prefix, key));
                None
            }
        }
    }
}

/// The member of an `AuthSchemeConfig` named by its type (`None` for an unknown type and for
/// the types without a member).
pub fn scheme_member(scheme_type: &str) -> Option<&'static str> {
    SCHEME_TYPES
        .iter()
        .find(|(t, _)| *t == scheme_type)
        .and_then(|(_, m)| *m)
}

/// Every member name of `AuthSchemeConfig`.
fn scheme_members() -> impl Iterator<Item = &'static str> {
    SCHEME_TYPES.iter().filter_map(|(_, m)| *m)
}

/// The ID of a (validated, stored) auth scheme config: its member's `id`, or for a type
/// without a member the ID it was stored under.
pub fn scheme_id(cfg: &Value) -> &str {
    let member = cfg
        .get("type")
        .and_then(Value::as_str)
        .and_then(scheme_member);
    match member {
        Some(m) => cfg.get(m).and_then(|m| m.get("id")),
        None => cfg.get(MEMBERLESS_ID),
    }
    .and_then(Value::as_str)
    .unwrap_or("")
}

/// Validates an `AuthSchemeConfig` and returns it normalised: `{type, <member>}`,
/// the member without `validationMessages` (server-generated, ignored on input).
/// `allow_empty_id` is for the copy a connection credential carries (a bypass
/// sends `{type: none, none: {id: "", description: ""}}`).
pub fn auth_scheme_config(
    v: &mut V,
    value: &Value,
    path: &str,
    allow_empty_id: bool,
) -> Option<Value> {
    let m = v.object(value, path)?;
    let types: Vec<&str> = SCHEME_TYPES.iter().map(|(t, _)| *t).collect();
    let before = v.errors.len();
    let scheme_type = v.req_enum(m, "type", path, &types);
    let member = scheme_type.and_then(scheme_member);
    for other in scheme_members() {
        if Some(other) != member && V::get(m, other).is_some() {
            let message = match scheme_type {
                Some(t) => format!("must not be set when type is {t}"),
                None => "must not be set unless type names it".to_owned(),
            };
            v.err(join(path, other), message);
        }
    }
    let scheme_type = scheme_type?;
    let Some(member) = member else {
        // jwt-bearer, secret: the type alone. Anything else is a member the API does not have.
        for key in m.keys().filter(|k| *k != "type" && V::get(m, k).is_some()) {
            v.err(
                join(path, key),
                format!("must not be set: type {scheme_type} has no member; send the type alone"),
            );
        }
        if v.errors.len() != before {
            return None;
        }
        return Some(json!({ "type": scheme_type }));
    };
    let mp = join(path, member);
    let Some(member_value) = V::get(m, member) else {
        v.err(mp, format!("is required when type is {scheme_type}"));
        return None;
    };
    let mm = v.object(member_value, &mp)?;
    v.req_str(mm, "id", &mp, !allow_empty_id);
    v.req_str(mm, "description", &mp, false);
    match scheme_type {
        "api-key" => {
            v.req_str(mm, "name", &mp, true);
            v.req_enum(mm, "in", &mp, &LOCATIONS);
        }
        "hmac" => {
            v.req_str(mm, "name", &mp, true);
            v.req_enum(mm, "in", &mp, &LOCATIONS);
            v.req_enum(mm, "algorithm", &mp, &HMAC_ALGORITHMS);
            v.req_enum(mm, "encoding", &mp, &HMAC_ENCODINGS);
            if let Some(inputs) = v.req_array(mm, "digestInputs", &mp) {
                v.strings(
                    inputs,
                    &join(&mp, "digestInputs"),
                    true,
                    Some(&HMAC_DIGEST_INPUTS),
                );
            }
        }
        "oauth2" => oauth2_scheme(v, mm, &mp),
        "oauth1" => oauth1_scheme(v, mm, &mp),
        _ => {}
    }
    if v.errors.len() != before {
        return None;
    }
    let mut normalised = mm.clone();
    normalised.remove("validationMessages");
    normalised.retain(|_, value| !value.is_null());
    Some(json!({ "type": scheme_type, member: Value::Object(normalised) }))
}

fn oauth1_scheme(v: &mut V, mm: &Map<String, Value>, mp: &str) {
    v.req_str(mm, "consumerKey", mp, true);
    // Write-only: redacted on every read, so sent on every write.
    v.req_str(mm, "consumerSecret", mp, true);
    v.req_enum(mm, "signatureMethod", mp, &OAUTH1_SIGNATURE_METHODS);
    let token_auth = v.opt_bool(mm, "tokenAuth", mp).unwrap_or(false);
    for endpoint in OAUTH1_ENDPOINTS {
        let ep = join(mp, endpoint);
        match V::get(mm, endpoint) {
            None if !token_auth => v.err(
                ep,
                "is required unless tokenAuth is true (the browser flow needs all three endpoints)",
            ),
            None => {}
            Some(e) => {
                if let Some(e) = v.object(e, &ep) {
                    v.req_url(e, "url", &ep);
                    if let Some(t) = v.opt_str(e, "parameterTransmission", &ep) {
                        v.check_enum(
                            t,
                            join(&ep, "parameterTransmission"),
                            &PARAMETER_TRANSMISSIONS,
                        );
                    }
                    // `additionalParamConfigs`: the contract gives no shape; taken as it comes.
                }
            }
        }
    }
    v.id_or_unset(mm, "credentialId", mp);
}

fn oauth2_scheme(v: &mut V, mm: &Map<String, Value>, mp: &str) {
    v.req_url(mm, "tokenUrl", mp);
    v.opt_url(mm, "authorizeUrl", mp);
    if let Some(scopes) = v.req_array(mm, "scopes", mp) {
        let sp = join(mp, "scopes");
        for (i, scope) in scopes.iter().enumerate() {
            let p = index(&sp, i);
            if let Some(s) = v.object(scope, &p) {
                v.req_str(s, "name", &p, true);
                v.opt_str(s, "description", &p);
            }
        }
    }
    if let Some(defaults) = v.req_array(mm, "defaultScopes", mp) {
        v.strings(defaults, &join(mp, "defaultScopes"), true, None);
    }
    v.opt_bool(mm, "mtlsEnabled", mp);
    v.opt_bool(mm, "pkce", mp);
    v.id_or_unset(mm, "mtlsCredentialId", mp);
    let Some(grant) = v.req_object(mm, "grant", mp) else {
        return;
    };
    let gp = join(mp, "grant");
    let grant_type = v.req_enum(grant, "type", &gp, &GRANT_TYPES);
    for other in GRANT_TYPES {
        if Some(other) != grant_type && V::get(grant, other).is_some() {
            let message = match grant_type {
                Some(t) => format!("must not be set when type is {t}"),
                None => "must not be set unless type names it".to_owned(),
            };
            v.err(join(&gp, other), message);
        }
    }
    if let Some(grant_type) = grant_type
        && let Some(g) = v.opt_object(grant, grant_type, &gp)
    {
        let p = join(&gp, grant_type);
        v.opt_str(g, "clientId", &p);
        v.opt_str(g, "clientSecret", &p);
        v.id_or_unset(g, "credentialId", &p);
        v.opt_str(g, "organisationId", &p);
    }
}

/// The data member of a credential type.
pub fn credential_member(credential_type: &str) -> Option<&'static str> {
    CREDENTIAL_TYPES
        .iter()
        .find(|(t, _)| *t == credential_type)
        .map(|(_, m)| *m)
}

/// Validates a `ConnectionCredential` and returns it normalised with IDs
/// assigned where unset (absent, `""` or the zero ULID). `organisationId` of
/// its credential is required and must be the emulator's organisation.
pub fn connection_credential(
    v: &mut V,
    value: &Value,
    path: &str,
    organisation: &str,
) -> Option<Value> {
    let m = v.object(value, path)?;
    let before = v.errors.len();
    let id = v.id_or_unset(m, "id", path);
    let scheme = V::get(m, "authSchemeConfig")
        .and_then(|s| auth_scheme_config(v, s, &join(path, "authSchemeConfig"), true));
    let credential = match V::get(m, "credential") {
        None => None,
        Some(c) => credential(v, c, &join(path, "credential"), organisation),
    };
    if v.errors.len() != before {
        return None;
    }
    let mut out = Map::new();
    out.insert(
        "id".to_owned(),
        Value::String(id.flatten().unwrap_or_else(new_ulid)),
    );
    if let Some(scheme) = scheme {
        out.insert("authSchemeConfig".to_owned(), scheme);
    }
    if let Some(credential) = credential {
        out.insert("credential".to_owned(), credential);
    }
    Some(Value::Object(out))
}

fn credential(v: &mut V, value: &Value, path: &str, organisation: &str) -> Option<Value> {
    let m = v.object(value, path)?;
    let before = v.errors.len();
    let id = v.id_or_unset(m, "id", path);
    if let Some(org) = v.req_str(m, "organisationId", path, true)
        && org != organisation
    {
        v.err(
            join(path, "organisationId"),
            format!("must be this organisation ({organisation})"),
        );
    }
    v.opt_str(m, "name", path);
    v.opt_str(m, "expiresAt", path);
    let types: Vec<&str> = CREDENTIAL_TYPES.iter().map(|(t, _)| *t).collect();
    let credential_type = v.req_enum(m, "type", path, &types);
    if let Some(credential_type) = credential_type {
        credential_data(v, m, credential_type, path);
    }
    if v.errors.len() != before {
        return None;
    }
    let mut out = m.clone();
    out.retain(|_, value| !value.is_null());
    out.insert(
        "id".to_owned(),
        Value::String(id.flatten().unwrap_or_else(new_ulid)),
    );
    Some(Value::Object(out))
}

fn credential_data(v: &mut V, m: &Map<String, Value>, credential_type: &str, path: &str) {
    let dp = join(path, "data");
    let Some(member) = credential_member(credential_type) else {
        return;
    };
    let data = match V::get(m, "data") {
        None if credential_type == "none" => return,
        None => {
            v.err(dp, format!("is required when type is {credential_type}"));
            return;
        }
        Some(d) => match v.object(d, &dp) {
            Some(d) => d,
            None => return,
        },
    };
    for (_, other) in CREDENTIAL_TYPES {
        if other != member && V::get(data, other).is_some() {
            v.err(
                join(&dp, other),
                format!("must not be set when type is {credential_type}"),
            );
        }
    }
    if credential_type == "none" {
        if let Some(none) = V::get(data, "none") {
            v.object(none, &join(&dp, "none"));
        }
        return;
    }
    let mp = join(&dp, member);
    let Some(mm) = V::get(data, member) else {
        v.err(mp, format!("is required when type is {credential_type}"));
        return;
    };
    let Some(mm) = v.object(mm, &mp) else {
        return;
    };
    match credential_type {
        "string" => {
            v.req_str(mm, "value", &mp, true);
        }
        "binary" => {
            if let Some(b) = v.req_str(mm, "valueBase64", &mp, true)
                && base64::engine::general_purpose::STANDARD.decode(b).is_err()
            {
                v.err(
                    join(&mp, "valueBase64"),
                    "must be standard base64 (RFC 4648, padded)",
                );
            }
        }
        "basic-auth" | "oauth2-password" => {
            v.req_str(mm, "username", &mp, true);
            v.req_str(mm, "password", &mp, true);
        }
        "oauth2-client" => {
            v.req_str(mm, "clientId", &mp, true);
            v.req_str(mm, "clientSecret", &mp, true);
            v.req_url(mm, "tokenUrl", &mp);
            if let Some(scopes) = v.opt_array(mm, "scopes", &mp) {
                v.strings(scopes, &join(&mp, "scopes"), true, None);
            }
            // A URL-encoded query string (e.g. `audience=x&resource=y`), as in the real API.
            v.opt_str(mm, "additionalParams", &mp);
        }
        "oauth2-code" => {
            v.req_str(mm, "code", &mp, true);
            v.req_str(mm, "state", &mp, true);
            v.opt_url(mm, "redirectUrl", &mp);
            // A URL-encoded query string (e.g. `audience=x&resource=y`), as in the real API.
            v.opt_str(mm, "additionalParams", &mp);
        }
        "oauth2-token" => {
            if let Some(scopes) = v.req_array(mm, "scopes", &mp) {
                v.strings(scopes, &join(&mp, "scopes"), true, None);
            }
            v.req_str(mm, "refreshToken", &mp, true);
            v.opt_str(mm, "accessToken", &mp);
            v.opt_str(mm, "tokenType", &mp);
            v.opt_str(mm, "expiresAt", &mp);
        }
        "certificate" => {
            for (key, non_empty) in [("certificate", true), ("key", true), ("ca", false)] {
                if let Some(pem) = v.req_str(mm, key, &mp, non_empty)
                    && !pem.is_empty()
                    && !pem.contains("-----BEGIN ")
                {
                    v.err(join(&mp, key), "must be PEM text (-----BEGIN ...)");
                }
            }
        }
        "oauth1" => {
            v.req_str(mm, "state", &mp, true);
            v.req_str(mm, "oauthToken", &mp, true);
            v.req_str(mm, "oauthVerifier", &mp, true);
        }
        "oauth1-token" => {
            v.req_str(mm, "token", &mp, true);
            v.req_str(mm, "tokenSecret", &mp, true);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulids() {
        assert!(is_ulid("01KKBR46SH7JES8AZ14EEAK0CX"));
        assert!(is_ulid("01kkbr46sh7jes8az14eeak0cx"));
        assert!(is_ulid(ZERO_ULID));
        assert!(!is_ulid("81KKBR46SH7JES8AZ14EEAK0CX"), "overflow");
        assert!(!is_ulid("01KKBR46SH7JES8AZ14EEAK0CI"), "I is not Crockford");
        assert!(!is_ulid("01KKBR46SH7JES8AZ14EEAK0C"), "25 chars");
        assert!(!is_ulid(&new_ulid()[1..]));
        assert!(is_ulid(&new_ulid()));
    }

    #[test]
    fn urls() {
        assert!(is_url("https://example.com"));
        assert!(is_url("http://127.0.0.1:8080/x?y=1"));
        assert!(!is_url("example.com"));
        assert!(!is_url("ftp://example.com"));
        assert!(!is_url(""));
    }

    #[test]
    fn scheme_member_rules() {
        let mut v = V::new();
        let cfg = json!({"type": "api-key", "apiKey": {"id": "k", "description": "", "name": "X-Key", "in": "header"}, "none": {}});
        assert!(auth_scheme_config(&mut v, &cfg, "authSchemeConfigs[0]", false).is_none());
        assert_eq!(v.errors[0].field, "authSchemeConfigs[0].none");

        let mut v = V::new();
        let cfg = json!({"type": "oauth2", "oauth2": {"id": "o", "description": "", "tokenUrl": "nope", "scopes": [], "defaultScopes": [], "grant": {"type": "password", "authorizationCode": {}}}});
        assert!(auth_scheme_config(&mut v, &cfg, "", false).is_none());
        let fields: Vec<_> = v.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["oauth2.tokenUrl", "oauth2.grant.authorizationCode"]
        );
    }
}
