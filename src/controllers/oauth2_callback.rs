//! The OAuth 2.0 (and OAuth 1.0) callback: where a person's browser lands after authorizing a
//! Connection at the provider. It serves only `/oauth2/callback`, matches the `state` (OAuth
//! 1.0: the `oauth_token`) to the one pending Connection (by the hash in its status: single
//! use, with an expiry), and creates the Versori connection with the `code` (OAuth 1.0: the
//! `oauth_verifier`). Every replica serves it; the Connection's status is the only
//! shared state, so it does not matter which replica the browser reaches.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::connection::{complete_authorization, complete_oauth1_authorization, state_hash};
use super::context::Context;
use super::reconciler::Reconciling;
use crate::resources::Connection;
use crate::versori::SecretValue;

/// The path the callback serves.
pub const CALLBACK_PATH: &str = "/oauth2/callback";

#[derive(Clone)]
struct Callback {
    ctx: Arc<Context>,
    namespaces: Vec<String>,
}

/// The callback's router.
pub fn router(ctx: Arc<Context>, namespaces: Vec<String>) -> Router {
    Router::new()
        .route(CALLBACK_PATH, get(callback))
        .with_state(Callback { ctx, namespaces })
}

/// Serves the callback on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ctx: Arc<Context>,
    namespaces: Vec<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(ctx, namespaces))
        .with_graceful_shutdown(shutdown)
        .await
}

fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head><body><h1>{t}</h1><p>{p}</p></body></html>",
        t = escape(title),
        p = escape(text)
    );
    (
        status,
        [
            ("cache-control", "no-store"),
            ("referrer-policy", "no-referrer"),
        ],
        Html(body),
    )
        .into_response()
}

async fn callback(
    State(cb): State<Callback>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(error) = query.get("error") {
        return page(
            StatusCode::BAD_REQUEST,
            "Authorization refused",
            &format!(
                "The provider did not authorize the connection ({error}). Nothing was changed; open the Connection's authorization URL again to retry."
            ),
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
    let hash = state_hash(match &returned {
        Returned::OAuth2 { state, .. } => state,
        Returned::OAuth1 { token, .. } => token,
    });
    let connection = match find_pending(&cb, &hash).await {
        Ok(Some(connection)) => connection,
        Ok(None) => {
            tracing::info!("OAuth 2.0 callback with an unknown or spent state");
            return page(
                StatusCode::BAD_REQUEST,
                "Unknown or used authorization",
                "This authorization is not pending for any Connection: it was already used, replaced by a newer one, or never issued. Nothing was changed. Find the current link with: kubectl get connections -o wide",
            );
        }
        Err(error) => {
            tracing::warn!(%error, "OAuth 2.0 callback could not list Connections");
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
        return page(
            StatusCode::NOT_FOUND,
            "Not found",
            "The OAuth 2.0 callback is not configured.",
        );
    };
    let rc = Reconciling::new(&cb.ctx, &connection, &namespace);
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
            tracing::warn!(namespace, name, %error, "completing an authorization failed");
            page(
                StatusCode::BAD_GATEWAY,
                "Authorization not completed",
                &format!(
                    "Connection {namespace}/{name} could not be created in Versori: {error}. The operator starts a new authorization; find its link with kubectl get connection {name} -n {namespace} -o wide"
                ),
            )
        }
    }
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

/// The Connection whose pending authorization has this state hash.
async fn find_pending(cb: &Callback, hash: &str) -> Result<Option<Connection>, kube::Error> {
    let apis: Vec<Api<Connection>> = if cb.namespaces.is_empty() {
        vec![Api::all(cb.ctx.client.clone())]
    } else {
        cb.namespaces
            .iter()
            .map(|n| Api::namespaced(cb.ctx.client.clone(), n))
            .collect()
    };
    for api in apis {
        let list = api.list(&ListParams::default()).await?;
        if let Some(found) = list.items.into_iter().find(|c| {
            c.status
                .as_ref()
                .and_then(|s| s.authorization_state_hash.as_deref())
                == Some(hash)
        }) {
            return Ok(Some(found));
        }
    }
    Ok(None)
}
