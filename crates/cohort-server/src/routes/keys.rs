//! Admin keys: `POST /api/v1/admin-keys`.

use super::{blocking, json_body};
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/admin-keys", post(create_admin_key))
}

#[derive(Deserialize)]
struct NewAdminKey {
    name: String,
    #[serde(default = "default_role")]
    role: String,
}

fn default_role() -> String {
    "admin".into()
}

async fn create_admin_key(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let NewAdminKey { name, role } = json_body(&body)?;
    if role != "admin" {
        return Err(ApiError::bad_request(
            "invalid_role",
            format!("unknown role {role:?}; roles: admin"),
        ));
    }
    let store = state.store().clone();
    let (record, key) =
        blocking(move || Ok(store.catalog().create_admin_key(&name, &role)?)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"admin_key": record, "key": key})),
    )
        .into_response())
}
