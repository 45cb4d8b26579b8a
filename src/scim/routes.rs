//! The SCIM HTTP surface (RFC 7644 §3): routes, `application/scim+json` bodies, ETags,
//! query parameters. Each handler parses, calls [`ScimService`], and shapes the answer;
//! every failure is a [`ScimError`], rendered as a SCIM error body by `http::error`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRef, FromRequestParts, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::request::Parts;
use serde::Deserialize;
use serde_json::Value;

use super::bulk::BulkRequest;
use super::error::ScimError;
use super::model::{ListQuery, PatchRequest, RequestBody, SearchRequest};
use super::provider::ScimProvider;
use super::service::{Caller, Kind, ScimService, Served, Shape, none_match};
use crate::auth::{AuthError, Authenticator, Permission};

/// The media type of every SCIM body (RFC 7644 §3.1).
pub const SCIM_MEDIA_TYPE: &str = "application/scim+json";

/// A SCIM request body may be larger than an admin API body (a group PATCH with many
/// members), but stays bounded.
pub const SCIM_BODY_LIMIT_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
pub struct ScimState {
    pub provider: Arc<ScimProvider>,
    pub auth: Authenticator,
}

impl ScimState {
    /// The service (built on first use, once the directory's schema is known).
    async fn service(&self) -> Result<Arc<ScimService>, ScimError> {
        self.provider.service().await
    }
}

impl FromRef<ScimState> for Authenticator {
    fn from_ref(state: &ScimState) -> Authenticator {
        state.auth.clone()
    }
}

pub fn routes(state: ScimState) -> Router {
    Router::new()
        .route("/ServiceProviderConfig", get(service_provider_config))
        .route("/ResourceTypes", get(resource_types))
        .route("/ResourceTypes/{name}", get(resource_type))
        .route("/Schemas", get(schemas))
        .route("/Schemas/{urn}", get(schema))
        .route("/Users", get(list::<Users>).post(create::<Users>))
        .route("/Users/.search", post(search::<Users>))
        .route(
            "/Users/{id}",
            get(get_one::<Users>)
                .put(replace::<Users>)
                .patch(patch::<Users>)
                .delete(delete::<Users>),
        )
        .route("/Groups", get(list::<Groups>).post(create::<Groups>))
        .route("/Groups/.search", post(search::<Groups>))
        .route(
            "/Groups/{id}",
            get(get_one::<Groups>)
                .put(replace::<Groups>)
                .patch(patch::<Groups>)
                .delete(delete::<Groups>),
        )
        .route("/Me", axum::routing::any(me))
        .route("/Bulk", post(bulk))
        .route("/.search", post(root_search))
        .fallback(unknown_endpoint)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(SCIM_BODY_LIMIT_BYTES))
        .with_state(state)
}

/// A caller holding a token with the `scim` role; failures are SCIM errors.
pub struct Provisioner(pub Caller);

impl FromRequestParts<ScimState> for Provisioner {
    type Rejection = ScimError;

    async fn from_request_parts(parts: &mut Parts, state: &ScimState) -> Result<Self, ScimError> {
        let principal = crate::auth::Principal::from_request_parts(parts, state)
            .await
            .map_err(auth_error)?;
        if !principal.can(Permission::Provision) {
            return Err(ScimError::Forbidden(format!(
                "a caller with {} may not use the SCIM API (it needs a token of role `scim`: lockbridge token create --role scim)",
                principal.roles_text()
            )));
        }
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Provisioner(Caller {
            name: principal.name,
            request_id,
        }))
    }
}

/// A failed authentication as a SCIM error.
pub fn auth_error(e: AuthError) -> ScimError {
    match e {
        AuthError::MissingToken => ScimError::Unauthorized(
            "no bearer token was sent; use a token of role `scim` (lockbridge token create --role scim)".into(),
        ),
        AuthError::InvalidToken => ScimError::Unauthorized(
            "the bearer token is not valid (unknown, revoked or mistyped)".into(),
        ),
        AuthError::Forbidden { .. } => ScimError::Forbidden(
            "this token may not use the SCIM API (it needs a token of role `scim`: lockbridge token create --role scim)".into(),
        ),
        AuthError::Store(cause) => {
            tracing::error!(cause = %cause, "store unavailable while checking a token");
            ScimError::Unavailable {
                detail: "lockbridge's own database is unavailable".into(),
                retry_after_secs: 5,
            }
        }
    }
}

/// The raw request body; a body over [`SCIM_BODY_LIMIT_BYTES`] or one that cannot be read
/// is a SCIM error, not the framework's plain-text answer. It may hold a password, so
/// its bytes are overwritten when it is dropped (when no other reference shares them).
pub struct ScimBody(pub Bytes);

impl Drop for ScimBody {
    fn drop(&mut self) {
        if let Ok(mut bytes) = std::mem::take(&mut self.0).try_into_mut() {
            zeroize::Zeroize::zeroize(bytes.as_mut());
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for ScimBody {
    type Rejection = ScimError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ScimError> {
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(ScimBody(bytes)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ScimError::PayloadTooLarge)
            }
            Err(e) => Err(ScimError::InvalidSyntax(format!(
                "the request body could not be read ({})",
                e.body_text()
            ))),
        }
    }
}

/// A JSON body as SCIM clients send it: `application/scim+json` or `application/json`
/// (Entra and Okta send either); anything else, or text that is not JSON, is
/// `invalidSyntax`.
fn json_body(headers: &HeaderMap, body: &Bytes) -> Result<RequestBody, ScimError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !(essence == SCIM_MEDIA_TYPE || essence == "application/json" || essence.is_empty()) {
            return Err(ScimError::InvalidSyntax(format!(
                "the body's Content-Type is `{essence}`; send {SCIM_MEDIA_TYPE} (or application/json)"
            )));
        }
    }
    serde_json::from_slice(body).map(RequestBody).map_err(|e| {
        ScimError::InvalidSyntax(format!(
            "the body is not valid JSON ({}, line {} column {}); send a SCIM resource as JSON",
            e.classify_name(),
            e.line(),
            e.column()
        ))
    })
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Eof => "unexpected end",
        }
    }
}

/// A SCIM response: the media type, and Location/ETag when a resource is returned.
fn scim_json(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SCIM_MEDIA_TYPE),
    );
    response
}

fn resource_response(status: StatusCode, served: &Served) -> Response {
    let mut response = scim_json(status, &served.resource);
    if let Some(v) = &served.version
        && let Ok(h) = HeaderValue::from_str(v)
    {
        response.headers_mut().insert(header::ETAG, h);
    }
    if status == StatusCode::CREATED
        && let Ok(h) = HeaderValue::from_str(&served.location)
    {
        response.headers_mut().insert(header::LOCATION, h);
    }
    response
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn shape(raw: Option<&str>) -> Result<Shape, ScimError> {
    let q = ListQuery::parse(raw.unwrap_or(""), u32::MAX)?;
    Ok(Shape {
        attributes: q.attributes,
        excluded: q.excluded_attributes,
    })
}

// ----- discovery (RFC 7644 §4) -----------------------------------------------------------

async fn service_provider_config(
    State(s): State<ScimState>,
    _: Provisioner,
) -> Result<Response, ScimError> {
    Ok(scim_json(
        StatusCode::OK,
        &s.service().await?.discovery().service_provider_config(),
    ))
}

async fn resource_types(State(s): State<ScimState>, _: Provisioner) -> Result<Response, ScimError> {
    Ok(scim_json(
        StatusCode::OK,
        &s.service().await?.discovery().resource_types_list(),
    ))
}

async fn resource_type(
    State(s): State<ScimState>,
    _: Provisioner,
    Path(name): Path<String>,
) -> Result<Response, ScimError> {
    let doc = s
        .service()
        .await?
        .discovery()
        .resource_type(&name)
        .ok_or_else(|| {
            ScimError::NotFound(format!("no resource type \"{name}\"; see /ResourceTypes"))
        })?;
    Ok(scim_json(StatusCode::OK, &doc))
}

async fn schemas(State(s): State<ScimState>, _: Provisioner) -> Result<Response, ScimError> {
    Ok(scim_json(
        StatusCode::OK,
        &s.service().await?.discovery().schemas_list(),
    ))
}

async fn schema(
    State(s): State<ScimState>,
    _: Provisioner,
    Path(urn): Path<String>,
) -> Result<Response, ScimError> {
    let doc = s
        .service()
        .await?
        .discovery()
        .schema(&urn)
        .ok_or_else(|| ScimError::NotFound(format!("no schema \"{urn}\"; see /Schemas")))?;
    Ok(scim_json(StatusCode::OK, &doc))
}

// ----- Users and Groups ---------------------------------------------------------------------

/// The resource type a route serves: the same handlers serve `/Users` and `/Groups`.
trait ResourceRoute {
    const KIND: Kind;
}

struct Users;
struct Groups;

impl ResourceRoute for Users {
    const KIND: Kind = Kind::User;
}

impl ResourceRoute for Groups {
    const KIND: Kind = Kind::Group;
}

/// `GET /Users`, `GET /Groups`.
async fn list<R: ResourceRoute>(
    State(s): State<ScimState>,
    _: Provisioner,
    RawQuery(raw): RawQuery,
) -> Result<Response, ScimError> {
    let query = ListQuery::parse(
        raw.as_deref().unwrap_or(""),
        s.service().await?.settings().max_results,
    )?;
    let body = s.service().await?.list(R::KIND, &query).await?;
    Ok(scim_json(StatusCode::OK, &body))
}

/// `POST /Users/.search`, `POST /Groups/.search`.
async fn search<R: ResourceRoute>(
    State(s): State<ScimState>,
    _: Provisioner,
    headers: HeaderMap,
    body: ScimBody,
) -> Result<Response, ScimError> {
    let value = json_body(&headers, &body.0)?;
    let request = SearchRequest::deserialize(&*value).map_err(|e| {
        ScimError::InvalidSyntax(format!("the search request is not a SearchRequest: {e}"))
    })?;
    let query = request.into_query(s.service().await?.settings().max_results)?;
    let body = s.service().await?.list(R::KIND, &query).await?;
    Ok(scim_json(StatusCode::OK, &body))
}

/// `GET /Users/{id}`, `GET /Groups/{id}`, with `If-None-Match`.
async fn get_one<R: ResourceRoute>(
    State(s): State<ScimState>,
    _: Provisioner,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let served = s
        .service()
        .await?
        .get(R::KIND, &id, &shape(raw.as_deref())?)
        .await?;
    if let Some(tags) = header_str(&headers, header::IF_NONE_MATCH)
        && none_match(served.version.as_deref(), tags)
    {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        if let Some(v) = served
            .version
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            r.headers_mut().insert(header::ETAG, v);
        }
        return Ok(r);
    }
    Ok(resource_response(StatusCode::OK, &served))
}

/// A served User shaped by the request's `attributes` / `excludedAttributes` (Groups are
/// shaped by the service, which then skips resolving members nobody asked for).
fn shaped(service: &ScimService, mut served: Served, shape: &Shape) -> Served {
    if !shape.attributes.is_empty() || !shape.excluded.is_empty() {
        service.project(Kind::User, &mut served.resource, shape);
    }
    served
}

/// `POST /Users`, `POST /Groups`. The answer is the new resource, shaped by `attributes` /
/// `excludedAttributes` (RFC 7644 §3.9).
async fn create<R: ResourceRoute>(
    State(s): State<ScimState>,
    Provisioner(caller): Provisioner,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: ScimBody,
) -> Result<Response, ScimError> {
    let value = json_body(&headers, &body.0)?;
    let shape = shape(raw.as_deref())?;
    let service = s.service().await?;
    let served = match R::KIND {
        Kind::User => {
            let served = service.create_user(&caller, &value).await?;
            shaped(&service, served, &shape)
        }
        Kind::Group => service.create_group(&caller, &value, &shape).await?,
    };
    Ok(resource_response(StatusCode::CREATED, &served))
}

/// `PUT /Users/{id}`, `PUT /Groups/{id}`. The answer is the resource, shaped by
/// `attributes` / `excludedAttributes`.
async fn replace<R: ResourceRoute>(
    State(s): State<ScimState>,
    Provisioner(caller): Provisioner,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: ScimBody,
) -> Result<Response, ScimError> {
    let value = json_body(&headers, &body.0)?;
    let if_match = header_str(&headers, header::IF_MATCH);
    let shape = shape(raw.as_deref())?;
    let service = s.service().await?;
    let served = match R::KIND {
        Kind::User => {
            let served = service.replace_user(&caller, &id, &value, if_match).await?;
            shaped(&service, served, &shape)
        }
        Kind::Group => {
            service
                .replace_group(&caller, &id, &value, if_match, &shape)
                .await?
        }
    };
    Ok(resource_response(StatusCode::OK, &served))
}

/// `PATCH /Users/{id}`, `PATCH /Groups/{id}`. The answer is the resource (200), shaped
/// by `attributes` / `excludedAttributes`, except for a PATCH that asks for nothing back
/// and only sets a User's password or only changes a Group's members: 204, without
/// reading the entry back (RFC 7644 §3.5.2 allows either).
async fn patch<R: ResourceRoute>(
    State(s): State<ScimState>,
    Provisioner(caller): Provisioner,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: ScimBody,
) -> Result<Response, ScimError> {
    let patch = PatchRequest::from_body(&json_body(&headers, &body.0)?)?;
    let if_match = header_str(&headers, header::IF_MATCH);
    let shape = shape(raw.as_deref())?;
    let minimal = shape.attributes.is_empty() && shape.excluded.is_empty();
    let service = s.service().await?;
    let served = match R::KIND {
        Kind::User => service
            .patch_user(&caller, &id, &patch, if_match, minimal)
            .await?
            .map(|served| shaped(&service, served, &shape)),
        Kind::Group => {
            service
                .patch_group(&caller, &id, &patch, if_match, &shape, minimal)
                .await?
        }
    };
    Ok(match served {
        Some(served) => resource_response(StatusCode::OK, &served),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// `DELETE /Users/{id}`, `DELETE /Groups/{id}`.
async fn delete<R: ResourceRoute>(
    State(s): State<ScimState>,
    Provisioner(caller): Provisioner,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ScimError> {
    let if_match = header_str(&headers, header::IF_MATCH);
    match R::KIND {
        Kind::User => {
            s.service()
                .await?
                .delete_user(&caller, &id, if_match)
                .await?
        }
        Kind::Group => {
            s.service()
                .await?
                .delete_group(&caller, &id, if_match)
                .await?
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

// ----- Bulk and unsupported (RFC 7644 §3.7, §3.11) -----------------------------------------

async fn me(_: Provisioner) -> ScimError {
    ScimError::NotImplemented(
        "/Me (a provisioning token does not stand for a user; use /Users/{id})".into(),
    )
}

/// `POST /Bulk` (RFC 7644 §3.7).
async fn bulk(
    State(s): State<ScimState>,
    Provisioner(caller): Provisioner,
    headers: HeaderMap,
    body: ScimBody,
) -> Result<Response, ScimError> {
    let value = json_body(&headers, &body.0)?;
    let request = BulkRequest::from_json(&value)?;
    let service = s.service().await?;
    Ok(scim_json(
        StatusCode::OK,
        &super::bulk::run(&service, &caller, request).await,
    ))
}

/// `POST /.search` (RFC 7644 §3.4.3): Users, then Groups, as one list.
async fn root_search(
    State(s): State<ScimState>,
    _: Provisioner,
    headers: HeaderMap,
    body: ScimBody,
) -> Result<Response, ScimError> {
    let value = json_body(&headers, &body.0)?;
    let request = SearchRequest::deserialize(&*value).map_err(|e| {
        ScimError::InvalidSyntax(format!("the search request is not a SearchRequest: {e}"))
    })?;
    let query = request.into_query(s.service().await?.settings().max_results)?;
    let body = s.service().await?.list_all(&query).await?;
    Ok(scim_json(StatusCode::OK, &body))
}

async fn method_not_allowed() -> ScimError {
    ScimError::MethodNotAllowed(
        "this endpoint does not take this HTTP method; see RFC 7644 section 3.2 for the methods of each endpoint".into(),
    )
}

async fn unknown_endpoint() -> ScimError {
    ScimError::NotFound(
        "no such SCIM endpoint; see /scim/v2/ResourceTypes for the resource endpoints".into(),
    )
}
