//! The OAuth 2.0 (and OAuth 1.0) callback: where a person's browser lands after authorizing a
//! Connection at the provider. It serves only `/oauth2/callback`, matches the `state` (OAuth
//! 1.0: the `oauth_token`) to the one pending Connection (by the hash in its status: single
//! use, with an expiry), and creates the Versori connection with the `code` (OAuth 1.0: the
//! `oauth_verifier`). Every replica serves it; the Connection's status is the only
//! shared state, so it does not matter which replica the browser reaches.
//!
//! The callback is public, so it costs the apiserver nothing per request: pending Connections
//! are found in a reflector cache of its own (the controllers' caches run only on the leader,
//! the callback on every replica), and only a state that matches costs one GET of that one
//! Connection. Requests are checked for shape before any lookup, served with the limits of
//! [`crate::server::serve_hardened`], and pages carry a strict Content-Security-Policy.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use sha2::{Digest, Sha256};
use tokio_util::task::AbortOnDropHandle;
use tower_http::set_header::SetResponseHeaderLayer;

use super::connection::{complete_authorization, complete_oauth1_authorization, state_hash};
use super::context::Context;
use super::reconciler::Reconciling;
use crate::resources::Connection;
use crate::server::{Limits, serve_hardened};
use crate::versori::SecretValue;

/// The path the callback serves.
pub const CALLBACK_PATH: &str = "/oauth2/callback";
/// The longest `state` looked up; longer ones are refused before any lookup.
const MAX_STATE_LEN: usize = 512;
/// The longest `code` accepted.
const MAX_CODE_LEN: usize = 4096;
/// How long a request waits for the cache's first listing (just after start).
const CACHE_WAIT: Duration = Duration::from_secs(5);

/// The pages' only style; the CSP allows exactly this by its hash.
const STYLE: &str = "body{font-family:system-ui,-apple-system,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#1f2328;line-height:1.5}h1{font-size:1.5rem}code{background:#f0f2f4;padding:.1rem .3rem;border-radius:4px}.ok h1{color:#1a7f37}.bad h1{color:#cf222e}";

/// `Content-Security-Policy` of every page: nothing but the inline style above.
pub static CONTENT_SECURITY_POLICY: LazyLock<String> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
});

#[derive(Clone)]
struct Callback {
    ctx: Arc<Context>,
    stores: Arc<Vec<Store<Connection>>>,
}

/// The callback's router (pages with the protective headers), looking Connections up in
/// `stores`.
pub fn router(ctx: Arc<Context>, stores: Vec<Store<Connection>>) -> Router {
    let headers: [(HeaderName, HeaderValue); 5] = [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_str(&CONTENT_SECURITY_POLICY)
                .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'")),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ];
    let mut router = Router::new()
        .route(CALLBACK_PATH, get(callback))
        .fallback(not_found)
        .with_state(Callback {
            ctx,
            stores: Arc::new(stores),
        });
    for (name, value) in headers {
        router = router.layer(SetResponseHeaderLayer::overriding(name, value));
    }
    router
}

/// Caches of the Connections in `namespaces` (all when empty), managed fields dropped, kept
/// current by watches that run until the returned handles are dropped.
pub fn connection_caches(
    client: &kube::Client,
    namespaces: &[String],
) -> (Vec<Store<Connection>>, Vec<AbortOnDropHandle<()>>) {
    let apis: Vec<Api<Connection>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|n| Api::namespaced(client.clone(), n))
            .collect()
    };
    let mut stores = Vec::new();
    let mut tasks = Vec::new();
    for api in apis {
        let (reader, writer) = reflector::store();
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(|c: &mut Connection| {
                c.managed_fields_mut().clear();
                c.annotations_mut()
                    .remove("kubectl.kubernetes.io/last-applied-configuration");
            })
            .reflect(writer)
            .applied_objects();
        tasks.push(AbortOnDropHandle::new(tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                if let Err(error) = event {
                    tracing::debug!(%error, "the OAuth 2.0 callback's Connection watch failed; retrying");
                }
            }
        })));
        stores.push(reader);
    }
    (stores, tasks)
}

/// Serves the callback on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ctx: Arc<Context>,
    namespaces: Vec<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stores, _watches) = connection_caches(&ctx.client, &namespaces);
    serve_hardened(listener, router(ctx, stores), Limits::default(), shutdown).await
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let class = if status.is_success() { "ok" } else { "bad" };
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{t} · versori-operator</title><style>{STYLE}</style></head><body class=\"{class}\"><h1>{t}</h1><p>{p}</p></body></html>",
        t = escape(title),
        p = escape(text)
    );
    (status, Html(body)).into_response()
}

async fn not_found() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Not found",
        "The operator serves only the OAuth 2.0 callback here.",
    )
}

/// Whether `state` could be a state Versori issued: bounded, URL-safe characters only.
fn plausible_state(state: &str) -> bool {
    !state.is_empty()
        && state.len() <= MAX_STATE_LEN
        && state
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b))
}

async fn callback(
    State(cb): State<Callback>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if query.contains_key("error") {
        // The provider's error text is not shown: this page is public, and it is theirs.
        return page(
            StatusCode::BAD_REQUEST,
            "Authorization refused",
            "The provider did not authorize the connection. Nothing was changed; open the Connection's authorization URL again to retry.",
        );
    }
    // OAuth 2.0 returns code and state; OAuth 1.0 the temporary token and the verifier (the
    // token is what the pending Connection is matched by).
    let returned = match (
        query.get("code"),
        query.get("state"),
        query.get("oauth_token"),
        query.get("oauth_verifier"),
    ) {
        (Some(code), Some(state), _, _) => Returned::OAuth2 { code, state },
        (None, _, Some(token), Some(verifier)) => Returned::OAuth1 { token, verifier },
        _ => {
            return page(
                StatusCode::BAD_REQUEST,
                "Incomplete authorization",
                "This page expects the code and state (OAuth 2.0), or the oauth_token and oauth_verifier (OAuth 1.0), the provider sends back. Nothing was changed.",
            );
        }
    };
    let unknown = || {
        page(
            StatusCode::BAD_REQUEST,
            "Unknown or used authorization",
            "This authorization is not pending for any Connection: it was already used, replaced by a newer one, or never issued. Nothing was changed. Find the current link with: kubectl get connections -o wide",
        )
    };
    // Shapes first: nothing that cannot be a state (or an OAuth 1.0 token) is looked up.
    let (matched_by, secret) = match &returned {
        Returned::OAuth2 { state, code } => (state, code),
        Returned::OAuth1 { token, verifier } => (token, verifier),
    };
    if !plausible_state(matched_by) || secret.is_empty() || secret.len() > MAX_CODE_LEN {
        return unknown();
    }
    let hash = state_hash(matched_by);
    let connection = match find_pending(&cb, &hash).await {
        Ok(Some(connection)) => connection,
        Ok(None) => {
            tracing::debug!("OAuth 2.0 callback with an unknown or spent state");
            return unknown();
        }
        Err(error) => {
            tracing::warn!(error = %crate::util::kube_error_message(&error), "OAuth 2.0 callback could not read the Connection");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                "The operator could not read the Connections just now. Nothing was changed; reload this page to retry.",
            );
        }
    };
    let namespace = connection.namespace().unwrap_or_default();
    let name = connection.name_any();
    let expired = connection
        .status
        .as_ref()
        .and_then(|s| s.authorization_expires_at.as_deref())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .is_none_or(|expires| expires <= jiff::Timestamp::now());
    if expired {
        return page(
            StatusCode::BAD_REQUEST,
            "Authorization expired",
            &format!(
                "The authorization of Connection {namespace}/{name} expired. Nothing was changed; the operator starts a new one: find its link with kubectl get connection {name} -n {namespace} -o wide"
            ),
        );
    }
    let Some(redirect_url) = cb.ctx.oauth2.as_ref().map(|o| o.redirect_url.clone()) else {
        return not_found().await;
    };
    let rc = match Reconciling::connect(&cb.ctx, &connection, &namespace).await {
        Ok(rc) => rc,
        Err(error) => {
            tracing::warn!(namespace, name, %error, "the Connection's Versori config cannot be used");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                "The operator cannot reach this Connection's Versori organisation just now. Nothing was changed; reload this page to retry.",
            );
        }
    };
    let completed = match returned {
        Returned::OAuth2 { code, state } => {
            complete_authorization(
                &connection,
                &rc,
                SecretValue::from(code.clone()),
                state,
                &redirect_url,
            )
            .await
        }
        Returned::OAuth1 { token, verifier } => {
            complete_oauth1_authorization(
                &connection,
                &rc,
                SecretValue::from(token.clone()),
                SecretValue::from(verifier.clone()),
            )
            .await
        }
    };
    match completed {
        Ok(id) => {
            tracing::info!(namespace, name, id, "connection authorized");
            page(
                StatusCode::OK,
                "Connection authorized",
                &format!(
                    "Connection {namespace}/{name} is authorized and connected in Versori (ID {id}). You can close this window."
                ),
            )
        }
        Err(error) => {
            // The reason goes to the log and the Connection's status, not to a public page.
            tracing::warn!(namespace, name, %error, "completing an authorization failed");
            page(
                StatusCode::BAD_GATEWAY,
                "Authorization not completed",
                &format!(
                    "Connection {namespace}/{name} could not be created in Versori. The operator starts a new authorization; find its link and the reason with kubectl get connection {name} -n {namespace} -o wide"
                ),
            )
        }
    }
}

fn pending_hash(c: &Connection) -> Option<&str> {
    c.status
        .as_ref()
        .and_then(|s| s.authorization_state_hash.as_deref())
}

/// What the provider sent the browser back with.
enum Returned<'q> {
    OAuth2 {
        code: &'q String,
        state: &'q String,
    },
    OAuth1 {
        token: &'q String,
        verifier: &'q String,
    },
}

/// The Connection whose pending authorization has this state hash: found in the cache, then
/// read fresh (one GET) to be sure it is still pending.
async fn find_pending(cb: &Callback, hash: &str) -> Result<Option<Connection>, kube::Error> {
    for store in cb.stores.iter() {
        // Just after start the cache may not have listed yet.
        let _ = tokio::time::timeout(CACHE_WAIT, store.wait_until_ready()).await;
        let Some(cached) = store.find(|c| pending_hash(c) == Some(hash)) else {
            continue;
        };
        let Some(namespace) = cached.namespace() else {
            continue;
        };
        let api: Api<Connection> = Api::namespaced(cb.ctx.client.clone(), &namespace);
        let fresh = api.get_opt(&cached.name_any()).await?;
        return Ok(fresh.filter(|c| pending_hash(c) == Some(hash)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_checked_for_shape_before_any_lookup() {
        assert!(plausible_state("01KKBR46SH7JES8AZ14EEAK0CX"));
        assert!(plausible_state("a-b_c.d~e+f/g="));
        assert!(!plausible_state(""));
        assert!(!plausible_state("a b"));
        assert!(!plausible_state("<script>"));
        assert!(!plausible_state(&"a".repeat(MAX_STATE_LEN + 1)));
    }

    #[test]
    fn the_csp_allows_exactly_the_inline_style() {
        let csp = CONTENT_SECURITY_POLICY.as_str();
        assert!(
            csp.starts_with("default-src 'none'; style-src 'sha256-"),
            "{csp}"
        );
        let expected =
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
        assert!(csp.contains(&expected));
        assert!(!csp.contains("unsafe"));
    }

    #[test]
    fn pages_have_a_title_a_style_and_escape_text() {
        let response = page(
            StatusCode::BAD_REQUEST,
            "T<itle>",
            "a \"quoted\" <b>text</b>",
        );
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
}
