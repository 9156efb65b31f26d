//! Segments and tags over HTTP: `/api/v1/segments…`, `/api/v1/tags…`, `/api/v1/segment-changes`
//! and a profile's segments and tags. Saving, filling, previewing and exporting are the
//! engine's; this module parses and renders.

use super::{blocking, json_body};
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cohort_lake::LakeError;
use cohort_segment::{COMPUTED_KEYS, moves_with_time};
use cohort_store::{NewSegment, SegmentDef, SegmentKind};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/segments", get(list_segments).post(create_segment))
        .route("/segments/preview", post(preview))
        .route(
            "/segments/{name}",
            get(get_segment).put(update_segment).delete(delete_segment),
        )
        .route("/segments/{name}/members", get(members))
        .route("/segments/{name}/export", get(export))
        .route("/segments/{name}/changes", get(segment_changes))
        .route("/segment-changes", get(all_changes))
        .route("/tags", get(list_tags))
        .route("/tags/{name}/customers", get(members))
        .route("/profiles/{kind}/{value}/segments", get(profile_segments))
        .route("/profiles/{kind}/{value}/tags", get(profile_tags))
}

#[derive(Serialize)]
struct SegmentView {
    #[serde(flatten)]
    def: SegmentDef,
    member_count: i64,
    /// Re-evaluated periodically because membership moves with time.
    refreshed_with_time: bool,
    /// `active`, or `failed` while quarantined (the reason is in `failure`).
    status: &'static str,
}

fn view(def: SegmentDef, member_count: i64) -> SegmentView {
    let refreshed_with_time = moves_with_time(&def.condition);
    let status = if def.failure.is_some() {
        "failed"
    } else {
        "active"
    };
    SegmentView {
        def,
        member_count,
        refreshed_with_time,
        status,
    }
}

async fn list_of(state: &AppState, kind: SegmentKind) -> Result<Json<Value>, ApiError> {
    let store = state.store().clone();
    let list = blocking(move || Ok(store.segments().list(Some(kind))?)).await?;
    let items: Vec<SegmentView> = list.into_iter().map(|(d, n)| view(d, n)).collect();
    let key = if kind == SegmentKind::Tag {
        "tags"
    } else {
        "segments"
    };
    Ok(Json(json!({ key: items })))
}

async fn list_segments(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    list_of(&state, SegmentKind::Segment).await
}

async fn list_tags(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    list_of(&state, SegmentKind::Tag).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    name: String,
    #[serde(default)]
    description: String,
    condition: Value,
    #[serde(default = "default_kind")]
    kind: SegmentKind,
}

fn default_kind() -> SegmentKind {
    SegmentKind::Segment
}

async fn create_segment(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: CreateRequest = json_body(&body)?;
    let new = NewSegment {
        name: request.name,
        kind: request.kind,
        description: request.description,
        condition: state.engine.parse_condition(request.condition)?,
    };
    let (def, diff) = state.engine.create_segment(new).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"segment": view(def, diff.members as i64), "evaluation": diff})),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateRequest {
    description: Option<String>,
    condition: Option<Value>,
}

async fn update_segment(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: UpdateRequest = json_body(&body)?;
    let condition = request
        .condition
        .map(|c| state.engine.parse_condition(c))
        .transpose()?;
    let (def, diff) = state
        .engine
        .update_segment(name, request.description, condition)
        .await?;
    Ok(Json(
        json!({"segment": view(def, diff.members as i64), "evaluation": diff}),
    ))
}

async fn delete_segment(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let store = state.store().clone();
    blocking(move || Ok(store.segments().delete(&name)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_segment(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = state.store().clone();
    let (def, count) = blocking(move || {
        let def = store.segments().get(&name)?;
        let count = store.segments().member_count(def.id)?;
        Ok((def, count))
    })
    .await?;
    Ok(Json(json!({"segment": view(def, count)})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewRequest {
    condition: Value,
    #[serde(default = "default_sample")]
    sample: usize,
}

fn default_sample() -> usize {
    10
}

async fn preview(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: PreviewRequest = json_body(&body)?;
    let condition = state.engine.parse_condition(request.condition)?;
    let members = state.engine.preview_segment(&condition).await?;
    let mut sample: Vec<i64> = members.iter().copied().collect();
    sample.sort_unstable();
    sample.truncate(request.sample.min(1000));
    Ok(Json(json!({
        "count": members.len(),
        "sample_customer_ids": sample,
        "refreshed_with_time": moves_with_time(&condition),
        "computed_keys": COMPUTED_KEYS,
    })))
}

#[derive(Deserialize)]
struct PageQuery {
    after: Option<i64>,
    limit: Option<usize>,
}

async fn members(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = page.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 10000",
        ));
    }
    let after = page.after.unwrap_or(0);
    let store = state.store().clone();
    let (def, rows, total) = blocking(move || {
        let def = store.segments().get(&name)?;
        let rows = store.segments().members(def.id, after, limit)?;
        let total = store.segments().member_count(def.id)?;
        Ok((def, rows, total))
    })
    .await?;
    let next_after = (rows.len() == limit)
        .then(|| rows.last().map(|m| m.customer_id))
        .flatten();
    Ok(Json(json!({
        "segment": def.name,
        "kind": def.kind,
        "total": total,
        "members": rows,
        "next_after": next_after,
    })))
}

#[derive(Deserialize)]
struct ExportQuery {
    format: Option<String>,
}

async fn export(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let format = q.format.unwrap_or_else(|| "csv".into());
    if format != "csv" && format != "parquet" {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("format must be csv or parquet, not {format:?}"),
        ));
    }
    let (def, result) = state.engine.export_segment(name).await?;
    let render =
        |e: LakeError| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string());
    let file_name = sanitize_file_name(&def.name);
    if format == "csv" {
        let body = result.to_csv().map_err(render)?;
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{file_name}.csv\""),
                ),
            ],
            body,
        )
            .into_response());
    }
    let bytes = blocking(move || {
        let io = |e: std::io::Error| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        };
        let dir = tempfile::tempdir().map_err(io)?;
        let path = dir.path().join("export.parquet");
        result.to_parquet(&path).map_err(render)?;
        std::fs::read(&path).map_err(io)
    })
    .await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/vnd.apache.parquet".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}.parquet\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

fn sanitize_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[derive(Deserialize)]
struct ChangesQuery {
    after: Option<i64>,
    limit: Option<usize>,
}

async fn changes(
    state: &AppState,
    segment: Option<String>,
    q: ChangesQuery,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let after = q.after.unwrap_or(0);
    let store = state.store().clone();
    let rows = blocking(move || {
        let id = match segment {
            Some(name) => Some(store.segments().get(&name)?.id),
            None => None,
        };
        Ok(store.segments().changes(after, id, None, limit)?)
    })
    .await?;
    let next_after = rows.last().map(|c| c.id).unwrap_or(after);
    Ok(Json(json!({"changes": rows, "next_after": next_after})))
}

async fn segment_changes(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ChangesQuery>,
) -> Result<Json<Value>, ApiError> {
    changes(&state, Some(name), q).await
}

async fn all_changes(
    State(state): State<AppState>,
    Query(q): Query<ChangesQuery>,
) -> Result<Json<Value>, ApiError> {
    changes(&state, None, q).await
}

async fn customer_memberships(
    state: &AppState,
    kind: String,
    value: String,
    want: SegmentKind,
) -> Result<Json<Value>, ApiError> {
    let store = state.store().clone();
    let found = blocking(move || {
        let Some(customer) = store.profiles().find_customer(&kind, &value)? else {
            return Ok(None);
        };
        let current = store.segments().of_customer(customer)?;
        let history = store.segments().changes(0, None, Some(customer), 10_000)?;
        Ok(Some((customer, current, history)))
    })
    .await?;
    let Some((customer, current, history)) = found else {
        return Err(ApiError::not_found("no customer has that identifier"));
    };
    let current: Vec<Value> = current
        .into_iter()
        .filter(|(_, k, _)| *k == want)
        .map(|(name, _, entered_at)| json!({"name": name, "entered_at": entered_at}))
        .collect();
    let history: Vec<_> = history.into_iter().filter(|c| c.kind == want).collect();
    let key = if want == SegmentKind::Tag {
        "tags"
    } else {
        "segments"
    };
    Ok(Json(json!({
        "customer_id": customer.to_string(),
        key: current,
        "history": history,
    })))
}

async fn profile_segments(
    State(state): State<AppState>,
    Path((kind, value)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    customer_memberships(&state, kind, value, SegmentKind::Segment).await
}

async fn profile_tags(
    State(state): State<AppState>,
    Path((kind, value)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    customer_memberships(&state, kind, value, SegmentKind::Tag).await
}
