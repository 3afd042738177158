//! Bad manifests are refused by the real kube-apiserver with a message that says what to fix, and
//! every example is accepted. Runs against the control plane from `tests/cluster`.

mod common;

use std::path::Path;

const PROJECT: &str = "01KKBR46SH7JES8AZ14EEAK0CX";

fn system(spec: &str) -> String {
    format!(
        "apiVersion: versori.com/v1alpha1\nkind: System\nmetadata: {{ name: bad }}\nspec:\n{spec}"
    )
}

fn project_system(spec: &str) -> String {
    format!(
        "apiVersion: versori.com/v1alpha1\nkind: ProjectSystem\nmetadata: {{ name: bad }}\nspec:\n{spec}"
    )
}

fn connection(spec: &str) -> String {
    format!(
        "apiVersion: versori.com/v1alpha1\nkind: Connection\nmetadata: {{ name: bad }}\nspec:\n{spec}"
    )
}

const SYSTEM_BASE: &str = "  domain: example.com\n  templateBaseUrl: https://api.example.com/\n";

fn system_with_scheme(scheme: &str) -> String {
    system(&format!("{SYSTEM_BASE}  authSchemes:\n{scheme}"))
}

fn oauth2_scheme(grant: &str, extra: &str) -> String {
    system_with_scheme(&format!(
        "    - id: o\n      type: oauth2\n      oauth2:\n        tokenUrl: https://auth.example.com/token\n        scopes: [{{ name: read }}]\n        defaultScopes: [read]\n{extra}        grant: {grant}\n"
    ))
}

/// Manifests refused at creation, each with (a part of) the message the apiserver must give.
fn create_cases() -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "system without domain",
            system("  templateBaseUrl: https://api.example.com/\n"),
            "spec.domain: Required value",
        ),
        (
            "system base URL not a URL",
            system("  domain: d\n  templateBaseUrl: not a url\n"),
            "must be an absolute http or https URL",
        ),
        (
            "system base URL not http",
            system("  domain: d\n  templateBaseUrl: ftp://files.example.com/\n"),
            "must be an absolute http or https URL",
        ),
        (
            "system base URL with userinfo",
            system("  domain: d\n  templateBaseUrl: https://user:pass@api.example.com/\n"),
            "must not contain a user name or password",
        ),
        (
            "system base URL with a user name only",
            system("  domain: d\n  templateBaseUrl: https://user@api.example.com/\n"),
            "must not contain a user name or password",
        ),
        (
            "auth scheme of an unknown type",
            system_with_scheme("    - { id: s, type: saml }\n"),
            "Unsupported value: \"saml\"",
        ),
        (
            "api-key scheme without apiKey",
            system_with_scheme("    - { id: k, type: api-key }\n"),
            "apiKey must be set when type is api-key, and only then",
        ),
        (
            "none scheme with apiKey",
            system_with_scheme("    - { id: k, type: none, apiKey: { name: X, in: header } }\n"),
            "apiKey must be set when type is api-key, and only then",
        ),
        (
            "oauth2 scheme without oauth2",
            system_with_scheme("    - { id: o, type: oauth2 }\n"),
            "oauth2 must be set when type is oauth2, and only then",
        ),
        (
            "hmac scheme without hmac",
            system_with_scheme("    - { id: h, type: hmac }\n"),
            "hmac must be set when type is hmac, and only then",
        ),
        (
            "api key in the body",
            system_with_scheme("    - { id: k, type: api-key, apiKey: { name: X, in: body } }\n"),
            "Unsupported value: \"body\"",
        ),
        (
            "hmac with md5",
            system_with_scheme(
                "    - { id: h, type: hmac, hmac: { name: X, in: header, algorithm: md5, digestInputs: [body], encoding: hex } }\n",
            ),
            "Unsupported value: \"md5\"",
        ),
        (
            "hmac with no digest input",
            system_with_scheme(
                "    - { id: h, type: hmac, hmac: { name: X, in: header, algorithm: sha256, digestInputs: [], encoding: hex } }\n",
            ),
            "should have at least 1 items",
        ),
        (
            "hmac with an unknown encoding",
            system_with_scheme(
                "    - { id: h, type: hmac, hmac: { name: X, in: header, algorithm: sha256, digestInputs: [url], encoding: base32 } }\n",
            ),
            "Unsupported value: \"base32\"",
        ),
        (
            "oauth2 implicit grant",
            oauth2_scheme("{ type: implicit }", ""),
            "Unsupported value: \"implicit\"",
        ),
        (
            "authorization code without authorizeUrl",
            oauth2_scheme("{ type: authorizationCode, clientId: c }", ""),
            "authorizeUrl is required for the authorizationCode grant",
        ),
        (
            "client credentials grant with a client ID",
            oauth2_scheme("{ type: clientCredentials, clientId: c }", ""),
            "clientId and clientSecretRef are for the authorizationCode and password grants",
        ),
        (
            "oauth2 token URL not a URL",
            system_with_scheme(
                "    - id: o\n      type: oauth2\n      oauth2: { tokenUrl: token, scopes: [], defaultScopes: [], grant: { type: password } }\n",
            ),
            "must be an absolute http or https URL",
        ),
        (
            "default scope not offered",
            system_with_scheme(
                "    - id: o\n      type: oauth2\n      oauth2: { tokenUrl: https://a.example.com/t, scopes: [{ name: read }], defaultScopes: [write], grant: { type: password } }\n",
            ),
            "every entry of defaultScopes must be the name of one of scopes",
        ),
        (
            "oauth2 without a grant",
            system_with_scheme(
                "    - id: o\n      type: oauth2\n      oauth2: { tokenUrl: https://a.example.com/t, scopes: [], defaultScopes: [] }\n",
            ),
            "spec.authSchemes[0].oauth2.grant: Required value",
        ),
        (
            "two auth schemes with one ID",
            system_with_scheme("    - { id: k, type: none }\n    - { id: k, type: basic-auth }\n"),
            "Duplicate value",
        ),
        (
            "auth scheme ID with a space",
            system_with_scheme("    - { id: \"api key\", type: none }\n"),
            "spec.authSchemes[0].id in body should match",
        ),
        (
            "system ID not a ULID",
            system(&format!("{SYSTEM_BASE}  systemId: \"12345\"\n")),
            "must be a Versori ID",
        ),
        (
            "unknown deletion policy",
            system(&format!("{SYSTEM_BASE}  deletionPolicy: Keep\n")),
            "Unsupported value: \"Keep\"",
        ),
        (
            "project ID not a ULID",
            project_system(
                "  projectId: my-project\n  environment: production\n  systemRef: { name: s }\n",
            ),
            "must be a Versori ID",
        ),
        (
            "project system with no system",
            project_system(&format!(
                "  projectId: {PROJECT}\n  environment: production\n"
            )),
            "set exactly one of systemRef",
        ),
        (
            "project system with two systems",
            project_system(&format!(
                "  projectId: {PROJECT}\n  environment: production\n  systemRef: {{ name: s }}\n  systemId: 01KKBR46SH7JES8AZ14EEAK0CX\n"
            )),
            "set exactly one of systemRef",
        ),
        (
            "project system without environment",
            project_system(&format!(
                "  projectId: {PROJECT}\n  systemRef: {{ name: s }}\n"
            )),
            "spec.environment: Required value",
        ),
        (
            "connection template ID not a ULID",
            project_system(&format!(
                "  projectId: {PROJECT}\n  environment: production\n  systemRef: {{ name: s }}\n  connectionTemplateId: abc\n"
            )),
            "must be a Versori ID",
        ),
        (
            "connection without template",
            connection("  credentials: { bypass: true }\n"),
            "spec.projectSystemRef: Required value",
        ),
        (
            "two credentials",
            connection(
                "  projectSystemRef: { name: t }\n  credentials:\n    bypass: true\n    apiKey: { secretKeyRef: { name: s, key: k } }\n",
            ),
            "credentials must set exactly one of apiKey, basicAuth, oauth2ClientCredentials, oauth2Password, oauth2Token, certificate, hmac, oauth1Token, binary and bypass",
        ),
        (
            "no credential member",
            connection("  projectSystemRef: { name: t }\n  credentials: {}\n"),
            "credentials must set exactly one of",
        ),
        (
            "bypass false",
            connection("  projectSystemRef: { name: t }\n  credentials: { bypass: false }\n"),
            "bypass must be true when set",
        ),
        (
            "secret reference without key",
            connection(
                "  projectSystemRef: { name: t }\n  credentials: { apiKey: { secretKeyRef: { name: s } } }\n",
            ),
            "spec.credentials.apiKey.secretKeyRef.key: Required value",
        ),
        (
            "secret in another namespace",
            connection(
                "  projectSystemRef: { name: t }\n  credentials: { apiKey: { secretKeyRef: { name: s, key: k, namespace: kube-system } } }\n",
            ),
            "unknown field \"spec.credentials.apiKey.secretKeyRef.namespace\"",
        ),
        (
            "client ID twice",
            connection(
                "  projectSystemRef: { name: t }\n  credentials:\n    oauth2ClientCredentials:\n      clientId: c\n      clientIdSecretKeyRef: { name: s, key: id }\n      clientSecretSecretKeyRef: { name: s, key: secret }\n",
            ),
            "set exactly one of clientId and clientIdSecretKeyRef",
        ),
        (
            "client credentials without secret",
            connection(
                "  projectSystemRef: { name: t }\n  credentials: { oauth2ClientCredentials: { clientId: c } }\n",
            ),
            "clientSecretSecretKeyRef: Required value",
        ),
        (
            "connection base URL not a URL",
            connection(
                "  projectSystemRef: { name: t }\n  baseUrl: example.com/api\n  credentials: { bypass: true }\n",
            ),
            "must be an absolute http or https URL",
        ),
        (
            "connection token URL with userinfo",
            connection(
                "  projectSystemRef: { name: t }\n  credentials:\n    oauth2ClientCredentials:\n      clientId: c\n      clientSecretSecretKeyRef: { name: s, key: secret }\n      tokenUrl: https://u:p@auth.example.com/token\n",
            ),
            "must not contain a user name or password",
        ),
        (
            "unknown credential kind",
            connection("  projectSystemRef: { name: t }\n  credentials: { jwt: { token: x } }\n"),
            "unknown field \"spec.credentials.jwt\"",
        ),
        // URLs need a host.
        (
            "system base URL without a host",
            system("  domain: d\n  templateBaseUrl: \"https://\"\n"),
            "must be an absolute http or https URL with a host",
        ),
        (
            "connection base URL without a host",
            connection(
                "  projectSystemRef: { name: t }\n  baseUrl: \"http://\"\n  credentials: { bypass: true }\n",
            ),
            "must be an absolute http or https URL with a host, such as https://api.example.com/, or empty",
        ),
        (
            "oauth2 token URL without a host",
            system_with_scheme(
                "    - id: o\n      type: oauth2\n      oauth2: { tokenUrl: \"https://\", grant: { type: password } }\n",
            ),
            "must be an absolute http or https URL with a host",
        ),
        // Versori IDs: a ULID whatever the length, the first character 0-7.
        (
            "system ID that is a UUID",
            system(&format!(
                "{SYSTEM_BASE}  systemId: 3f2b1c9e-8d7a-4e6f-9b0c-1a2b3c4d5e6f\n"
            )),
            "must be a Versori ID, which is a ULID",
        ),
        (
            "project ID far too long",
            project_system(&format!(
                "  projectId: \"{}\"\n  environment: production\n  systemRef: {{ name: s }}\n",
                "01KKBR46SH7JES8AZ14EEAK0CX".repeat(5)
            )),
            "must be a Versori ID, which is a ULID",
        ),
        (
            "connection ID starting with 8",
            connection(
                "  projectSystemRef: { name: t }\n  connectionId: 81KKBR46SH7JES8AZ14EEAK0CX\n  credentials: { bypass: true }\n",
            ),
            "the first one 0-7",
        ),
        // Names that cannot exist in Kubernetes, or in HTTP.
        (
            "api key header name with a space",
            system_with_scheme(
                "    - { id: k, type: api-key, apiKey: { name: X API Key, in: header } }\n",
            ),
            "must be a header, query parameter or cookie name",
        ),
        (
            "hmac cookie name with a space",
            system_with_scheme(
                "    - { id: h, type: hmac, hmac: { name: \"my sig\", in: cookie, algorithm: sha256, digestInputs: [body], encoding: hex } }\n",
            ),
            "must be a header, query parameter or cookie name",
        ),
        (
            "secret name with an underscore",
            connection(
                "  projectSystemRef: { name: t }\n  credentials: { apiKey: { secretKeyRef: { name: Demo_Key, key: apiKey } } }\n",
            ),
            "must be the name of a Secret",
        ),
        (
            "secret key with a space",
            connection(
                "  projectSystemRef: { name: t }\n  credentials: { apiKey: { secretKeyRef: { name: demo, key: api key } } }\n",
            ),
            "must be a key of a Secret",
        ),
        (
            "whole-secret name with spaces",
            connection(
                "  projectSystemRef: { name: t }\n  credentials: { basicAuth: { secretRef: { name: Everything Inc. } } }\n",
            ),
            "must be the name of a Secret",
        ),
        (
            "username key with a slash",
            connection(
                "  projectSystemRef: { name: t }\n  credentials: { basicAuth: { secretRef: { name: demo }, usernameKey: a/b } }\n",
            ),
            "must be a key of a Secret",
        ),
        (
            "template reference that cannot be a name",
            connection(
                "  projectSystemRef: { name: Everything Inc. }\n  credentials: { bypass: true }\n",
            ),
            "must be the name of a resource",
        ),
        (
            "system reference that cannot be a name",
            project_system(&format!(
                "  projectId: {PROJECT}\n  environment: production\n  systemRef: {{ name: Demo_System }}\n"
            )),
            "must be the name of a resource",
        ),
        (
            "client secret in a Secret that cannot exist",
            oauth2_scheme(
                "{ type: password, clientId: c, clientSecretRef: { name: Demo_Key, key: k } }",
                "",
            ),
            "must be the name of a Secret",
        ),
        // Scopes are non-empty scope tokens.
        (
            "empty default scope",
            system_with_scheme(
                "    - id: o\n      type: oauth2\n      oauth2: { tokenUrl: https://a.example.com/t, scopes: [{ name: read }], defaultScopes: [\"\"], grant: { type: password } }\n",
            ),
            "must be an OAuth scope",
        ),
        (
            "empty offered scope",
            system_with_scheme(
                "    - id: o\n      type: oauth2\n      oauth2: { tokenUrl: https://a.example.com/t, scopes: [{ name: \"\" }], grant: { type: password } }\n",
            ),
            "must be an OAuth scope",
        ),
        (
            "connection scope with a space",
            connection(
                "  projectSystemRef: { name: t }\n  credentials:\n    oauth2ClientCredentials:\n      clientId: c\n      clientSecretSecretKeyRef: { name: s, key: secret }\n      scopes: [\"read write\"]\n",
            ),
            "must be an OAuth scope",
        ),
        (
            "token scope empty",
            connection(
                "  projectSystemRef: { name: t }\n  credentials: { oauth2Token: { secretRef: { name: s }, scopes: [\"\"] } }\n",
            ),
            "must be an OAuth scope",
        ),
        // The new scheme types: member matches type.
        (
            "oauth1 scheme without oauth1",
            system_with_scheme("    - { id: o, type: oauth1 }\n"),
            "oauth1 must be set when type is oauth1, and only then",
        ),
        (
            "secret scheme with an oauth1 member",
            system_with_scheme(&format!(
                "    - {{ id: s, type: secret, oauth1: {OAUTH1_TOKEN_AUTH} }}\n"
            )),
            "oauth1 must be set when type is oauth1, and only then",
        ),
        (
            "jwt-bearer scheme with an apiKey member",
            system_with_scheme(
                "    - { id: j, type: jwt-bearer, apiKey: { name: X, in: header } }\n",
            ),
            "apiKey must be set when type is api-key, and only then",
        ),
        (
            "oauth1 browser flow without endpoints",
            system_with_scheme(
                "    - id: o\n      type: oauth1\n      oauth1: { consumerKey: k, consumerSecretRef: { name: s, key: k }, signatureMethod: sha1 }\n",
            ),
            "without tokenAuth: true the browser flow needs tempCredentialEndpoint, resourceOwnerAuthorizationEndpoint and tokenEndpoint",
        ),
        (
            "oauth1 with md5",
            system_with_scheme(
                "    - id: o\n      type: oauth1\n      oauth1: { consumerKey: k, consumerSecretRef: { name: s, key: k }, signatureMethod: md5, tokenAuth: true }\n",
            ),
            "Unsupported value: \"md5\"",
        ),
        (
            "oauth1 without its consumer secret",
            system_with_scheme(
                "    - id: o\n      type: oauth1\n      oauth1: { consumerKey: k, signatureMethod: sha256, tokenAuth: true }\n",
            ),
            "spec.authSchemes[0].oauth1.consumerSecretRef: Required value",
        ),
        (
            "oauth1 endpoint without a host",
            system_with_scheme(
                "    - id: o\n      type: oauth1\n      oauth1: { consumerKey: k, consumerSecretRef: { name: s, key: k }, signatureMethod: sha256, tokenAuth: true, tokenEndpoint: { url: \"https://\" } }\n",
            ),
            "must be an absolute http or https URL with a host",
        ),
        (
            "oauth1 endpoint parameters in a cookie",
            system_with_scheme(
                "    - id: o\n      type: oauth1\n      oauth1: { consumerKey: k, consumerSecretRef: { name: s, key: k }, signatureMethod: sha256, tokenAuth: true, tokenEndpoint: { url: \"https://p.example.com/t\", parameterTransmission: Cookie } }\n",
            ),
            "Unsupported value: \"Cookie\"",
        ),
        // The new credential kinds.
        (
            "certificate and hmac together",
            connection(
                "  projectSystemRef: { name: t }\n  credentials:\n    certificate: { secretRef: { name: tls } }\n    hmac: { secretKeyRef: { name: s, key: k } }\n",
            ),
            "credentials must set exactly one of",
        ),
        (
            "certificate without its Secret",
            connection(
                "  projectSystemRef: { name: t }\n  credentials: { certificate: { caKey: ca.crt } }\n",
            ),
            "spec.credentials.certificate.secretRef: Required value",
        ),
        (
            "certificate key override with a space",
            connection(
                "  projectSystemRef: { name: t }\n  credentials: { certificate: { secretRef: { name: tls }, privateKeyKey: \"tls key\" } }\n",
            ),
            "must be a key of a Secret",
        ),
        (
            "binary without a key",
            connection(
                "  projectSystemRef: { name: t }\n  credentials: { binary: { secretKeyRef: { name: keystore } } }\n",
            ),
            "spec.credentials.binary.secretKeyRef.key: Required value",
        ),
        (
            "oauth1 token in a Secret that cannot exist",
            connection(
                "  projectSystemRef: { name: t }\n  credentials: { oauth1Token: { secretRef: { name: ERP Tokens } } }\n",
            ),
            "must be the name of a Secret",
        ),
        (
            "config without an organisation",
            versori_config("  tokenSecretRef: { name: t, key: token }\n"),
            "spec.organisationId: Required value",
        ),
        (
            "config organisation with a slash",
            versori_config("  organisationId: a/b\n  tokenSecretRef: { name: t, key: token }\n"),
            "must be a Versori organisation ID",
        ),
        (
            "config API URL not a URL",
            versori_config(
                "  apiUrl: platform.versori.com\n  organisationId: o\n  tokenSecretRef: { name: t, key: token }\n",
            ),
            "must be an absolute http or https URL",
        ),
        (
            "config token in a Secret that cannot exist",
            versori_config("  organisationId: o\n  tokenSecretRef: { name: Token, key: token }\n"),
            "must be the name of a Secret",
        ),
        (
            "cluster config token without its namespace",
            cluster_versori_config(
                "  organisationId: o\n  tokenSecretRef: { name: t, key: token }\n",
            ),
            "spec.tokenSecretRef.namespace: Required value",
        ),
        (
            "cluster config token in a namespace that cannot exist",
            cluster_versori_config(
                "  organisationId: o\n  tokenSecretRef: { namespace: Versori_System, name: t, key: token }\n",
            ),
            "must be a namespace name",
        ),
        (
            "configRef of another kind",
            system(&format!(
                "{SYSTEM_BASE}  configRef: {{ kind: SecretStore, name: default }}\n"
            )),
            "spec.configRef.kind: Unsupported value",
        ),
        (
            "managementPolicy not Manage or Observe",
            system(&format!("{SYSTEM_BASE}  managementPolicy: ReadOnly\n")),
            "spec.managementPolicy: Unsupported value",
        ),
        (
            "authSchemesPolicy not Exclusive or Additive",
            system(&format!("{SYSTEM_BASE}  authSchemesPolicy: Merge\n")),
            "spec.authSchemesPolicy: Unsupported value",
        ),
    ]
}

fn versori_config(spec: &str) -> String {
    format!(
        "apiVersion: versori.com/v1alpha1\nkind: VersoriConfig\nmetadata: {{ name: bad }}\nspec:\n{spec}"
    )
}

fn cluster_versori_config(spec: &str) -> String {
    format!(
        "apiVersion: versori.com/v1alpha1\nkind: ClusterVersoriConfig\nmetadata: {{ name: bad-{:x} }}\nspec:\n{spec}",
        rand::random::<u32>()
    )
}

const OAUTH1_TOKEN_AUTH: &str = "{ consumerKey: k, consumerSecretRef: { name: s, key: k }, signatureMethod: sha256, tokenAuth: true }";

/// Manifests users write that must be accepted: (what, manifest).
fn accepted_cases() -> Vec<(&'static str, String)> {
    vec![
        (
            "a namespace's default config",
            versori_config(
                "  apiUrl: https://platform-staging.versori.com/api/v2\n  organisationId: 01HQORG0000000000000000000\n  tokenSecretRef: { name: versori-token, key: token }\n",
            ),
        ),
        (
            "a cluster config with its token in another namespace",
            cluster_versori_config(
                "  organisationId: prod-org\n  tokenSecretRef: { namespace: versori-system, name: versori-token, key: token }\n",
            ),
        ),
        (
            "an observed, adopted system in a cluster config's organisation",
            system(&format!(
                "{SYSTEM_BASE}  configRef: {{ kind: ClusterVersoriConfig, name: production }}\n  managementPolicy: Observe\n  authSchemesPolicy: Additive\n  systemId: 01KKBR46SH7JES8AZ14EEAK0CX\n"
            )),
        ),
        (
            "oauth2 without scopes or defaultScopes",
            system_with_scheme(
                "    - id: o\n      type: oauth2\n      oauth2: { tokenUrl: https://a.example.com/t, grant: { type: password } }\n",
            ),
        ),
        (
            "oauth2 with scopes but no defaultScopes",
            system_with_scheme(
                "    - id: o\n      type: oauth2\n      oauth2: { tokenUrl: https://a.example.com/t, scopes: [{ name: read }], grant: { type: clientCredentials } }\n",
            ),
        ),
        (
            "connection with an empty base URL (the template's)",
            connection(
                "  projectSystemRef: { name: t }\n  baseUrl: \"\"\n  credentials: { bypass: true }\n",
            ),
        ),
        (
            "all nine scheme types",
            system_with_scheme(&format!(
                "    - {{ id: anonymous, type: none }}\n    - {{ id: k, type: api-key, apiKey: {{ name: X-API-Key, in: header }} }}\n    - {{ id: b, type: basic-auth }}\n    - id: o2\n      type: oauth2\n      oauth2: {{ tokenUrl: https://a.example.com/t, grant: {{ type: password }} }}\n    - {{ id: h, type: hmac, hmac: {{ name: X-Signature, in: header, algorithm: sha256, digestInputs: [body, url], encoding: base64url }} }}\n    - {{ id: c, type: certificate }}\n    - {{ id: o1, type: oauth1, oauth1: {OAUTH1_TOKEN_AUTH} }}\n    - id: o1-flow\n      type: oauth1\n      oauth1:\n        consumerKey: ck\n        consumerSecretRef: {{ name: erp.consumer, key: consumer.secret }}\n        signatureMethod: sha1\n        tempCredentialEndpoint: {{ url: https://erp.example.com/oauth/request_token, parameterTransmission: AuthorizationHeader }}\n        resourceOwnerAuthorizationEndpoint: {{ url: https://erp.example.com/oauth/authorize }}\n        tokenEndpoint: {{ url: https://erp.example.com/oauth/access_token, parameterTransmission: Form }}\n    - {{ id: j, type: jwt-bearer }}\n    - {{ id: s, type: secret }}\n"
            )),
        ),
        (
            "certificate from a kubernetes.io/tls Secret",
            connection(
                "  projectSystemRef: { name: t }\n  credentials: { certificate: { secretRef: { name: client-tls } } }\n",
            ),
        ),
        (
            "certificate with every key overridden",
            connection(
                "  projectSystemRef: { name: t }\n  credentials: { certificate: { secretRef: { name: client-tls }, certificateKey: cert.pem, privateKeyKey: key.pem, caKey: ca_bundle.pem } }\n",
            ),
        ),
        (
            "hmac secret",
            connection(
                "  projectSystemRef: { name: t }\n  credentials: { hmac: { secretKeyRef: { name: webhook, key: signing-secret } } }\n",
            ),
        ),
        (
            "oauth1 token",
            connection(
                "  projectSystemRef: { name: t }\n  credentials: { oauth1Token: { secretRef: { name: erp-token }, tokenKey: t, tokenSecretKey: ts } }\n",
            ),
        ),
        (
            "binary value",
            connection(
                "  projectSystemRef: { name: t }\n  credentials: { binary: { secretKeyRef: { name: keystore, key: keystore.p12 } } }\n",
            ),
        ),
        (
            "cookie and query names with punctuation",
            system_with_scheme(
                "    - { id: q, type: api-key, apiKey: { name: api_key, in: query } }\n    - { id: c, type: api-key, apiKey: { name: \"__Host-session.id\", in: cookie } }\n",
            ),
        ),
        (
            "scopes with colons and slashes",
            system_with_scheme(
                "    - id: o\n      type: oauth2\n      oauth2: { tokenUrl: https://a.example.com/t, scopes: [{ name: \"https://graph.example.com/.default\" }, { name: \"read:products\" }], defaultScopes: [\"read:products\"], grant: { type: password } }\n",
            ),
        ),
    ]
}

/// Changes refused on update: (what, valid original, changed manifest, message).
fn update_cases() -> Vec<(&'static str, String, String, &'static str)> {
    let ps = |extra: &str, env: &str, project: &str, system: &str| {
        project_system(&format!(
            "  projectId: {project}\n  environment: {env}\n  systemRef: {{ name: {system} }}\n{extra}"
        ))
    };
    vec![
        (
            "environment changed",
            ps("", "production", PROJECT, "s"),
            ps("", "staging", PROJECT, "s"),
            "environment cannot be changed",
        ),
        (
            "project changed",
            ps("", "production", PROJECT, "s"),
            ps("", "production", "01KKBR46SH7JES8AZ14EEAK0CY", "s"),
            "projectId cannot be changed",
        ),
        (
            "system changed",
            ps("", "production", PROJECT, "s"),
            ps("", "production", PROJECT, "other"),
            "the linked system cannot be changed",
        ),
        (
            "template ID changed",
            ps(
                "  connectionTemplateId: 01KKBR46SH7JES8AZ14EEAK0CX\n",
                "production",
                PROJECT,
                "s",
            ),
            ps(
                "  connectionTemplateId: 01KKBR46SH7JES8AZ14EEAK0CY\n",
                "production",
                PROJECT,
                "s",
            ),
            "connectionTemplateId cannot be changed",
        ),
        (
            "system ID changed",
            system(&format!(
                "{SYSTEM_BASE}  systemId: 01KKBR46SH7JES8AZ14EEAK0CX\n"
            )),
            system(&format!(
                "{SYSTEM_BASE}  systemId: 01KKBR46SH7JES8AZ14EEAK0CY\n"
            )),
            "systemId cannot be changed or removed once set",
        ),
        (
            "connection moved",
            connection("  projectSystemRef: { name: a }\n  credentials: { bypass: true }\n"),
            connection("  projectSystemRef: { name: b }\n  credentials: { bypass: true }\n"),
            "projectSystemRef cannot be changed",
        ),
        (
            "external ID added",
            connection("  projectSystemRef: { name: a }\n  credentials: { bypass: true }\n"),
            connection(
                "  projectSystemRef: { name: a }\n  externalId: user-1\n  credentials: { bypass: true }\n",
            ),
            "externalId cannot be added, changed or removed",
        ),
        (
            "labels changed",
            system(&format!("{SYSTEM_BASE}  labels: {{ team: sales }}\n")),
            system(&format!("{SYSTEM_BASE}  labels: {{ team: support }}\n")),
            "labels cannot be changed after creation: Versori takes a system's labels only when it is created",
        ),
        (
            "labels added",
            system(SYSTEM_BASE),
            system(&format!("{SYSTEM_BASE}  labels: {{ team: sales }}\n")),
            "labels cannot be changed after creation",
        ),
        (
            "labels removed",
            system(&format!("{SYSTEM_BASE}  labels: {{ team: sales }}\n")),
            system(SYSTEM_BASE),
            "labels cannot be changed after creation",
        ),
    ]
}

fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn invalid_manifests_are_refused_with_a_message_that_says_what_to_fix() {
    let cluster = common::cluster().await;
    let mut failures = Vec::new();
    let mut checked = 0;
    for (what, manifest, expected) in create_cases() {
        let namespace = cluster.namespace("invalid").await;
        let output =
            cluster.kubectl_apply_stdin(&manifest, &["-n", &namespace, "--dry-run=server"]);
        let text = output_text(&output);
        checked += 1;
        if output.status.success() || !text.contains(expected) {
            failures.push(format!(
                "{what}: expected a refusal containing {expected:?}, got ({}):\n{text}",
                output.status
            ));
        }
        // An ID of the wrong length is told what an ID is, not only that it is too long.
        if text.contains("Too long") {
            failures.push(format!(
                "{what}: the refusal says only that it is too long:\n{text}"
            ));
        }
    }
    for (what, manifest) in accepted_cases() {
        let namespace = cluster.namespace("valid").await;
        let output =
            cluster.kubectl_apply_stdin(&manifest, &["-n", &namespace, "--dry-run=server"]);
        checked += 1;
        if !output.status.success() {
            failures.push(format!(
                "{what}: expected it to be accepted, got:\n{}",
                output_text(&output)
            ));
        }
    }
    for (what, original, changed, expected) in update_cases() {
        let namespace = cluster.namespace("immutable").await;
        let created = cluster.kubectl_apply_stdin(&original, &["-n", &namespace]);
        if !created.status.success() {
            failures.push(format!(
                "{what}: the valid original was refused:\n{}",
                output_text(&created)
            ));
            continue;
        }
        let output = cluster.kubectl_apply_stdin(&changed, &["-n", &namespace]);
        let text = output_text(&output);
        checked += 1;
        if output.status.success() || !text.contains(expected) {
            failures.push(format!(
                "{what}: expected a refusal containing {expected:?}, got ({}):\n{text}",
                output.status
            ));
        }
    }
    assert!(checked >= 90, "only {checked} cases ran");
    assert!(
        failures.is_empty(),
        "{} of {checked} cases failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[tokio::test]
async fn every_example_is_accepted() {
    let cluster = common::cluster().await;
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    // The top level (what `make demo` applies) and each flow's folder; emulator/ holds the
    // emulator's seed, not manifests.
    let mut folders = vec![examples.clone()];
    for entry in std::fs::read_dir(&examples)
        .expect("read examples/")
        .filter_map(Result::ok)
    {
        if entry.path().is_dir() && entry.file_name() != "emulator" {
            folders.push(entry.path());
        }
    }
    let mut checked = 0;
    for folder in folders {
        let namespace = cluster.namespace("examples").await;
        let mut files: Vec<_> = std::fs::read_dir(&folder)
            .expect("read an examples folder")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        for file in files {
            let file = file.to_string_lossy().into_owned();
            let output =
                cluster.kubectl(&["apply", "--dry-run=server", "-n", &namespace, "-f", &file]);
            assert!(
                output.status.success(),
                "{file} was refused:\n{}",
                output_text(&output)
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} example files");
}
