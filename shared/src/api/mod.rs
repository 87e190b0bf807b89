//! The HTTP adapter shared by the four Lambda functions and `keygate serve`: routing, body and
//! query parsing, and turning every outcome (including every error) into a JSON response.

mod activate;
mod audit;
mod check;
mod consume;
mod deactivate;
mod hooks;
mod idempotency;
mod issue;
mod lease;
mod offline;
mod refusals;
pub(crate) use refusals::store_error;
mod terms;
mod trial;
mod views;

pub use terms::{IssueRequest, LicensePatch};
pub use views::{ClientLicense, TokenClaims};

use crate::auth::AdminTokens;
use crate::config::Config;
use crate::cors::{AllowedOrigins, MAX_AGE_SECONDS};
use crate::error::{ApiError, ErrorCode};
use crate::input::{IdempotencyKey, InvalidValue};
use crate::signing::TokenSigner;
use crate::store::Store;
use crate::time::Timestamp;
use idempotency::{Idempotency, Scoped};
use lambda_http::http::{header, Method, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;

/// Bodies above this are refused with 413 before parsing.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How many times a write is re-decided when a concurrent writer changed the license first.
const MAX_WRITE_ATTEMPTS: u32 = 10;

/// Everything a handler needs, built once per cold start.
pub struct App<S> {
    pub store: S,
    pub signer: Option<TokenSigner>,
    pub admin_tokens: AdminTokens,
    pub issuer: String,
    pub cors: AllowedOrigins,
    /// Where the operations read the time: the system clock, or a test's.
    pub clock: Clock,
    /// Where webhook endpoints may point.
    pub webhooks: crate::webhooks::deliver::Policy,
}

/// The time source of the operations (the system clock in every deployment).
pub type Clock = fn() -> Timestamp;

impl<S: Store> App<S> {
    pub fn new(store: S, config: Config) -> Self {
        let Config { signer, admin_tokens, issuer, cors, webhooks, .. } = config;
        Self { store, signer, admin_tokens, issuer, cors, clock: Timestamp::now, webhooks }
    }

    /// The time now, by the app's clock.
    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }

    fn signer(&self) -> Result<&TokenSigner, ApiError> {
        self.signer.as_ref().ok_or_else(|| ApiError::internal("no signing key configured for a client route"))
    }
}

/// The Lambda function that owns a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Issue,
    Activate,
    Check,
    Deactivate,
}

impl Function {
    pub const ALL: [Function; 4] = [Function::Issue, Function::Activate, Function::Check, Function::Deactivate];
}

/// Who may call a route, declared with it (never inferred from the function that serves it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// The vendor: `Authorization: Bearer <admin token>` required; never answered to browsers.
    Vendor,
    /// The vendor's client software, with a license key: open, and open to allowed browser origins.
    Client,
    /// Anyone (the signing keys).
    Public,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    CreateLicenses,
    ListLicenses,
    ShowLicense,
    UpdateLicense,
    ReleaseDevice,
    LicenseEvents,
    Events,
    CreateWebhook,
    ListWebhooks,
    ShowWebhook,
    UpdateWebhook,
    DeleteWebhook,
    RotateWebhookSecret,
    WebhookDeliveries,
    ReplayWebhook,
    Activate,
    CheckJson,
    CheckQuery,
    Jwks,
    Deactivate,
    Borrow,
    Consume,
    TrialTerms,
    Trial,
    ActivateOffline,
    DeactivateOffline,
}

#[derive(Debug)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub auth: Auth,
    pub function: Function,
    endpoint: Endpoint,
}

const fn route(method: Method, path: &'static str, auth: Auth, function: Function, endpoint: Endpoint) -> Route {
    Route { method, path, auth, function, endpoint }
}

/// Every route of the API; `{name}` segments are path parameters.
pub const ROUTES: &[Route] = &[
    route(Method::POST, "/v1/licenses", Auth::Vendor, Function::Issue, Endpoint::CreateLicenses),
    route(Method::GET, "/v1/licenses", Auth::Vendor, Function::Issue, Endpoint::ListLicenses),
    route(Method::GET, "/v1/licenses/{license_key}", Auth::Vendor, Function::Issue, Endpoint::ShowLicense),
    route(Method::PATCH, "/v1/licenses/{license_key}", Auth::Vendor, Function::Issue, Endpoint::UpdateLicense),
    route(
        Method::DELETE,
        "/v1/licenses/{license_key}/devices/{hardware_id}",
        Auth::Vendor,
        Function::Issue,
        Endpoint::ReleaseDevice,
    ),
    route(Method::GET, "/v1/licenses/{license_key}/events", Auth::Vendor, Function::Issue, Endpoint::LicenseEvents),
    route(Method::GET, "/v1/events", Auth::Vendor, Function::Issue, Endpoint::Events),
    route(Method::POST, "/v1/webhooks", Auth::Vendor, Function::Issue, Endpoint::CreateWebhook),
    route(Method::GET, "/v1/webhooks", Auth::Vendor, Function::Issue, Endpoint::ListWebhooks),
    route(Method::GET, "/v1/webhooks/{webhook_id}", Auth::Vendor, Function::Issue, Endpoint::ShowWebhook),
    route(Method::PATCH, "/v1/webhooks/{webhook_id}", Auth::Vendor, Function::Issue, Endpoint::UpdateWebhook),
    route(Method::DELETE, "/v1/webhooks/{webhook_id}", Auth::Vendor, Function::Issue, Endpoint::DeleteWebhook),
    route(
        Method::POST,
        "/v1/webhooks/{webhook_id}/secret",
        Auth::Vendor,
        Function::Issue,
        Endpoint::RotateWebhookSecret,
    ),
    route(
        Method::GET,
        "/v1/webhooks/{webhook_id}/deliveries",
        Auth::Vendor,
        Function::Issue,
        Endpoint::WebhookDeliveries,
    ),
    route(Method::POST, "/v1/webhooks/{webhook_id}/replay", Auth::Vendor, Function::Issue, Endpoint::ReplayWebhook),
    route(Method::PUT, "/v1/products/{product}/trial", Auth::Vendor, Function::Issue, Endpoint::TrialTerms),
    route(Method::POST, "/v1/activate", Auth::Client, Function::Activate, Endpoint::Activate),
    route(Method::POST, "/v1/trial", Auth::Client, Function::Activate, Endpoint::Trial),
    route(Method::POST, "/v1/activate/offline", Auth::Client, Function::Activate, Endpoint::ActivateOffline),
    route(Method::POST, "/v1/borrow", Auth::Client, Function::Activate, Endpoint::Borrow),
    route(Method::POST, "/v1/consume", Auth::Client, Function::Activate, Endpoint::Consume),
    route(Method::POST, "/v1/check", Auth::Client, Function::Check, Endpoint::CheckJson),
    route(Method::GET, "/v1/check", Auth::Client, Function::Check, Endpoint::CheckQuery),
    route(Method::GET, "/.well-known/jwks.json", Auth::Public, Function::Check, Endpoint::Jwks),
    route(Method::POST, "/v1/deactivate", Auth::Client, Function::Deactivate, Endpoint::Deactivate),
    route(Method::POST, "/v1/deactivate/offline", Auth::Client, Function::Deactivate, Endpoint::DeactivateOffline),
];

/// A successful answer, before it becomes an HTTP response.
pub(crate) struct Reply {
    status: StatusCode,
    body: String,
    headers: Vec<(header::HeaderName, header::HeaderValue)>,
}

impl Reply {
    pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Result<Self, ApiError> {
        let body = serde_json::to_string(value).map_err(ApiError::internal)?;
        Ok(Self { status, body, headers: Vec::new() })
    }
}

/// How long clients and CDNs may keep the signing keys: short, since a new key is announced one
/// release ahead (docs/deploy.md) and must be published before tokens signed with it arrive.
const JWKS_MAX_AGE_SECONDS: u32 = 300;

/// `GET /.well-known/jwks.json`: the keys with `Cache-Control` and an `ETag`, and 304 with no body
/// for a client that already holds them (`If-None-Match`).
fn jwks<S: Store>(app: &App<S>, request: &Request) -> Result<Reply, ApiError> {
    let body = app.signer()?.jwks_json().to_string();
    let etag = format!("\"{}\"", &crate::auth::hash_token(&body)[..32]);
    let held = header_str(request, header::IF_NONE_MATCH).is_some_and(|tags| {
        tags.split(',').map(|tag| tag.trim().trim_start_matches("W/")).any(|tag| tag == "*" || tag == etag)
    });
    let value = |text: &str| header::HeaderValue::from_str(text).map_err(ApiError::internal);
    let headers = vec![
        (header::ETAG, value(&etag)?),
        (header::CACHE_CONTROL, value(&format!("public, max-age={JWKS_MAX_AGE_SECONDS}"))?),
    ];
    let (status, body) = if held { (StatusCode::NOT_MODIFIED, String::new()) } else { (StatusCode::OK, body) };
    Ok(Reply { status, body, headers })
}

fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Body::Text(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

/// The methods the client routes of `functions` serve on `path`; `None` when the path is not one
/// of theirs or is a vendor path (which no browser may call).
fn client_methods(functions: &[Function], path: &str) -> Option<Vec<&'static str>> {
    let (routes, _) = routes_at(path)?;
    let matching: Vec<&Route> = routes.iter().copied().filter(|r| functions.contains(&r.function)).collect();
    let vendor = matching.iter().any(|r| r.auth == Auth::Vendor);
    (!matching.is_empty() && !vendor).then(|| matching.iter().map(|r| r.method.as_str()).collect())
}

/// A browser's preflight of a client route from an allowed origin: 204 with what it may send. Any
/// other OPTIONS is answered like any other method (405 or 404), with no CORS header.
fn preflight<S: Store>(app: &App<S>, functions: &[Function], request: &Request) -> Option<Response<Body>> {
    let origin = header_str(request, header::ORIGIN).filter(|o| app.cors.allows(o))?;
    let methods = client_methods(functions, request.uri().path())?;
    let mut response = Response::new(Body::Empty);
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    let value = |text: &str| header::HeaderValue::from_str(text).ok();
    if let Some(origin) = value(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    if let Some(methods) = value(&methods.join(", ")) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
    }
    // A browser's safe retries need their Idempotency-Key too.
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        header::HeaderValue::from_static("content-type, idempotency-key"),
    );
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, header::HeaderValue::from(MAX_AGE_SECONDS));
    headers.insert(header::VARY, header::HeaderValue::from_static("origin"));
    Some(response)
}

/// Lets a browser at an allowed origin read a client route's answer.
fn allow_origin<S: Store>(app: &App<S>, functions: &[Function], request: &Request, response: &mut Response<Body>) {
    let Some(origin) = header_str(request, header::ORIGIN).filter(|o| app.cors.allows(o)) else { return };
    if client_methods(functions, request.uri().path()).is_none() {
        return;
    }
    if let Ok(origin) = header::HeaderValue::from_str(origin) {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, header::HeaderValue::from_static("retry-after"));
        headers.append(header::VARY, header::HeaderValue::from_static("origin"));
    }
}

/// Handles one request for the routes of `functions`. Never fails: every error is a JSON response.
pub async fn handle<S: Store>(app: &App<S>, functions: &[Function], request: Request) -> Response<Body> {
    if request.method() == Method::OPTIONS {
        if let Some(response) = preflight(app, functions, &request) {
            return response;
        }
    }
    let mut response = answer(app, functions, &request).await;
    allow_origin(app, functions, &request, &mut response);
    response
}

async fn answer<S: Store>(app: &App<S>, functions: &[Function], request: &Request) -> Response<Body> {
    let request_id = request_id(request);
    match dispatch(app, functions, request, &request_id).await {
        Ok(reply) => {
            let mut response = json_response(reply.status, reply.body);
            if reply.status == StatusCode::NOT_MODIFIED {
                // A 304 has no body, so nothing to describe.
                *response.body_mut() = Body::Empty;
                response.headers_mut().remove(header::CONTENT_TYPE);
            }
            response.headers_mut().extend(reply.headers);
            response
        }
        Err(err) => {
            if err.status() >= 500 {
                tracing::error!(%request_id, code = ?err.code, cause = err.cause.as_deref().unwrap_or(""), "request failed");
            }
            let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = json_response(status, err.body(&request_id));
            if let Some(seconds) = err.retry_after {
                response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
            }
            if let Some(allow) = err.allow.as_deref().and_then(|a| header::HeaderValue::from_str(a).ok()) {
                response.headers_mut().insert(header::ALLOW, allow);
            }
            response
        }
    }
}

fn request_id(request: &Request) -> String {
    if let Some(context) = request.lambda_context_ref() {
        return context.request_id.clone();
    }
    if let Some(lambda_http::request::RequestContext::ApiGatewayV2(context)) = request.request_context_ref() {
        if let Some(id) = &context.request_id {
            return id.clone();
        }
    }
    crate::input::random_id("req").unwrap_or_else(|_| "req_unknown".into())
}

async fn dispatch<S: Store>(
    app: &App<S>,
    functions: &[Function],
    request: &Request,
    request_id: &str,
) -> Result<Reply, ApiError> {
    let path = request.uri().path();
    let mut allowed: Vec<&str> = Vec::new();
    let (routes, params) = routes_at(path).unwrap_or_default();
    for route in routes.iter().copied().filter(|r| functions.contains(&r.function)) {
        if route.method != request.method() {
            allowed.push(route.method.as_str());
            continue;
        }
        let mut vendor_token = None;
        if route.auth == Auth::Vendor {
            let Some(token) = app.admin_tokens.identify_header(header_str(request, header::AUTHORIZATION)) else {
                return Err(ApiError::new(
                    ErrorCode::Unauthorized,
                    "a valid `Authorization: Bearer <admin token>` header is required",
                ));
            };
            // Which token asked, by its configured name (never the token, nor a license key); the
            // request id ties it to the answer (an error is logged under the same id).
            if route.method != Method::GET {
                let route = format_args!("{} {}", route.method, route.path);
                tracing::info!(token = %token, %route, %request_id, "vendor call");
            }
            vendor_token = Some(token.to_string());
        }
        // A client write: its body and key, then the operation.
        macro_rules! keyed {
            ($operation:path) => {{
                let (parsed, key) = client_write(request, route)?;
                $operation(app, parsed, key.as_ref()).await
            }};
        }
        // Boxed: the operation of every route is one large future; scoped below, it stays off the stack.
        let operation = Box::pin(async {
            match route.endpoint {
                Endpoint::CreateLicenses => {
                    let (bytes, key) = (body(request)?, idempotency_key(request)?);
                    issue::create(app, parse_json(bytes)?, key, bytes).await
                }
                Endpoint::ListLicenses => issue::list(app, parse_query(request.uri().query())?).await,
                Endpoint::ShowLicense => issue::show(app, &params[0], parse_query(request.uri().query())?).await,
                Endpoint::UpdateLicense => issue::update(app, &params[0], parse_json(body(request)?)?).await,
                Endpoint::ReleaseDevice => issue::release_device(app, &params[0], &params[1]).await,
                Endpoint::LicenseEvents => {
                    audit::license_events(app, &params[0], parse_query(request.uri().query())?).await
                }
                Endpoint::Events => audit::events(app, parse_query(request.uri().query())?).await,
                Endpoint::CreateWebhook => hooks::create(app, parse_json(body(request)?)?).await,
                Endpoint::ListWebhooks => hooks::list(app).await,
                Endpoint::ShowWebhook => hooks::show(app, &params[0]).await,
                Endpoint::UpdateWebhook => hooks::update(app, &params[0], parse_json(body(request)?)?).await,
                Endpoint::DeleteWebhook => hooks::delete(app, &params[0]).await,
                Endpoint::RotateWebhookSecret => hooks::rotate(app, &params[0]).await,
                Endpoint::WebhookDeliveries => {
                    hooks::deliveries(app, &params[0], parse_query(request.uri().query())?).await
                }
                Endpoint::ReplayWebhook => hooks::replay(app, &params[0]).await,
                Endpoint::Activate => keyed!(activate::activate),
                Endpoint::CheckJson => check::check(app, parse_json(body(request)?)?).await,
                Endpoint::CheckQuery => check::check(app, parse_query(request.uri().query())?).await,
                Endpoint::Jwks => jwks(app, request),
                Endpoint::Deactivate => keyed!(deactivate::deactivate),
                Endpoint::Borrow => keyed!(lease::borrow),
                Endpoint::Consume => keyed!(consume::consume),
                Endpoint::TrialTerms => trial::put_terms(app, &params[0], parse_json(body(request)?)?).await,
                Endpoint::Trial => keyed!(trial::start),
                Endpoint::ActivateOffline => {
                    crate::actor::through_license_file(async { keyed!(offline::activate) }).await
                }
                Endpoint::DeactivateOffline => {
                    crate::actor::through_license_file(async { keyed!(offline::deactivate_file) }).await
                }
            }
        });
        // A vendor call's writes name its token (events say which one acted); every write names
        // its request (the events of one request share it).
        let operation = crate::actor::for_request(request_id.to_string(), operation);
        return match vendor_token {
            Some(name) => crate::actor::as_vendor(name, operation).await,
            None => operation.await,
        };
    }
    if !allowed.is_empty() {
        let allow = allowed.join(", ");
        let mut err = ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{} is not allowed on {path}; it allows {allow}", request.method()),
        );
        err.allow = Some(allow);
        Err(err)
    } else {
        Err(ApiError::new(ErrorCode::RouteNotFound, format!("no route {} {path}", request.method())))
    }
}

/// A client write's body, and its `Idempotency-Key` in the body's scope.
fn client_write<T: DeserializeOwned + Scoped>(
    request: &Request,
    route: &Route,
) -> Result<(T, Option<Idempotency>), ApiError> {
    let (bytes, key) = (body(request)?, idempotency_key(request)?);
    let parsed: T = parse_json(bytes)?;
    let idempotency = key.map(|key| Idempotency::new(parsed.scope(), key, route.path, bytes));
    Ok((parsed, idempotency))
}

/// The request's `Idempotency-Key`: a header that is there but not text is refused, never taken
/// for no key at all.
fn idempotency_key(request: &Request) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = request.headers().get_all("idempotency-key").iter();
    let Some(value) = values.next() else { return Ok(None) };
    // Two keys are no key: API Gateway would join them into one (`a,b`), a local server take the first.
    if values.next().is_some() {
        return Err(ApiError::field("Idempotency-Key", "is given more than once"));
    }
    let text = value.to_str().map_err(|_| InvalidValue::Characters("printable ASCII without spaces"));
    text.and_then(IdempotencyKey::parse).map(Some).map_err(|e| ApiError::field("Idempotency-Key", e))
}

fn header_str(request: &Request, name: header::HeaderName) -> Option<&str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The route table as a router (matchit): each path pattern leads to its routes, one per method.
fn router() -> &'static matchit::Router<Vec<&'static Route>> {
    static ROUTER: std::sync::OnceLock<matchit::Router<Vec<&'static Route>>> = std::sync::OnceLock::new();
    ROUTER.get_or_init(|| {
        let mut router = matchit::Router::new();
        let mut patterns: Vec<&str> = ROUTES.iter().map(|r| r.path).collect();
        patterns.dedup();
        for pattern in patterns {
            let routes = ROUTES.iter().filter(|r| r.path == pattern).collect();
            // A bad pattern is a bug in ROUTES, which every routing test would show at once.
            if let Err(err) = router.insert(pattern, routes) {
                tracing::error!(%pattern, error = %err, "route not added");
            }
        }
        router
    })
}

/// The routes on `path` (one per method) and its percent-decoded parameters, in order.
fn routes_at(path: &str) -> Option<(&'static [&'static Route], Vec<String>)> {
    let matched = router().at(path).ok()?;
    // Bytes that are not UTF-8 become U+FFFD, which no parameter accepts: a 400 naming it, not a 404.
    let decode = |raw: &str| percent_encoding::percent_decode_str(raw).decode_utf8_lossy().into_owned();
    let params = matched.params.iter().map(|(_, raw)| decode(raw)).collect();
    Some((matched.value.as_slice(), params))
}

fn body(request: &Request) -> Result<&[u8], ApiError> {
    let bytes: &[u8] = request.body().as_ref();
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is {} bytes; the limit is {MAX_BODY_BYTES}", bytes.len()),
        ));
    }
    Ok(bytes)
}

/// Parses a JSON body into `T`, naming the field at fault when it does not fit.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err(ApiError::new(ErrorCode::MalformedJson, "the body is empty; a JSON object is expected")),
        Some(b'{') => {}
        Some(_) => return Err(ApiError::new(ErrorCode::MalformedJson, "the body must be a JSON object")),
    }
    let bytes = whole_numbers_as_integers(bytes);
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(describe_json_error)?;
    deserializer.end().map_err(|e| {
        ApiError::new(ErrorCode::MalformedJson, format!("the body is not valid JSON: {}", without_position(&e)))
    })?;
    Ok(value)
}

/// Rewrites whole numbers written with a fraction or an exponent (`2.0`, `1e3`) as integers, outside
/// strings: JSON Schema counts them as integers, serde's integer fields would refuse them. Only
/// valid JSON number literals up to 2^53 are touched, so invalid JSON stays invalid.
fn whole_numbers_as_integers(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let mut rewritten: Option<Vec<u8>> = None;
    let (mut at, mut copied, mut in_string, mut escaped) = (0, 0, false, false);
    while at < bytes.len() {
        let byte = bytes[at];
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            at += 1;
            continue;
        }
        if byte != b'-' && !byte.is_ascii_digit() {
            in_string = byte == b'"';
            at += 1;
            continue;
        }
        let start = at;
        while at < bytes.len() && matches!(bytes[at], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
            at += 1;
        }
        let token = std::str::from_utf8(&bytes[start..at]).unwrap_or("");
        let whole = (token.contains(['.', 'e', 'E']) && is_json_number(token))
            .then(|| token.parse::<f64>().ok())
            .flatten()
            .filter(|value| value.fract() == 0.0 && value.abs() <= 9_007_199_254_740_992.0);
        if let Some(value) = whole {
            let out = rewritten.get_or_insert_with(|| Vec::with_capacity(bytes.len()));
            out.extend_from_slice(&bytes[copied..start]);
            out.extend_from_slice((value as i64).to_string().as_bytes());
            copied = at;
        }
    }
    match rewritten {
        None => std::borrow::Cow::Borrowed(bytes),
        Some(mut out) => {
            out.extend_from_slice(&bytes[copied..]);
            std::borrow::Cow::Owned(out)
        }
    }
}

/// Whether `token` is a JSON number literal: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn is_json_number(token: &str) -> bool {
    let digits = |s: &str| s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let rest = token.strip_prefix('-').unwrap_or(token);
    let integer = digits(rest);
    if integer == 0 || (integer > 1 && rest.starts_with('0')) {
        return false;
    }
    let mut rest = &rest[integer..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let n = digits(fraction);
        if n == 0 {
            return false;
        }
        rest = &fraction[n..];
    }
    if let Some(exponent) = rest.strip_prefix(['e', 'E']) {
        let exponent = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
        let n = digits(exponent);
        return n > 0 && n == exponent.len();
    }
    rest.is_empty()
}

/// Query parameters are read as a JSON object of strings and then parsed like a body, so both
/// forms of a request give the same errors.
fn parse_query<T: DeserializeOwned>(query: Option<&str>) -> Result<T, ApiError> {
    let mut object = serde_json::Map::new();
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if object.insert(name.to_string(), serde_json::Value::String(value.into_owned())).is_some() {
            return Err(ApiError::field(name, "is given more than once"));
        }
    }
    serde_path_to_error::deserialize(serde_json::Value::Object(object)).map_err(describe_json_error)
}

fn without_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

fn describe_json_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let message = without_position(err.inner());
    if matches!(
        err.inner().classify(),
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof | serde_json::error::Category::Io
    ) {
        return ApiError::new(ErrorCode::MalformedJson, format!("the body is not valid JSON: {message}"));
    }
    let path = err.path().to_string();
    let path = if path == "." { String::new() } else { path };
    // serde names a missing or unknown field only in its message, not in the path.
    let named = ["missing field `", "unknown field `"].iter().find_map(|prefix| {
        let rest = message.strip_prefix(prefix)?;
        Some(rest[..rest.find('`')?].to_string())
    });
    let field = match named {
        Some(name) if path.is_empty() => name,
        Some(name) if path == name || path.ends_with(&format!(".{name}")) => path,
        Some(name) => format!("{path}.{name}"),
        None if path.is_empty() => {
            return ApiError::new(ErrorCode::MalformedJson, format!("the body must be a JSON object: {message}"));
        }
        None => path,
    };
    let detail = if message.starts_with("missing field") {
        "is required".to_string()
    } else if message.starts_with("unknown field") {
        "is not a known field".to_string()
    } else {
        message
    };
    ApiError::field(field, detail)
}

/// One attempt at a write: `Some` once it committed, `None` when a concurrent writer changed what it
/// read first (read again and re-decide), or a refusal.
pub(crate) type Settled<T> = Result<Option<T>, ApiError>;

/// What a store write came to, as an attempt that answers `value` once committed.
pub(crate) fn committed<T>(result: Result<(), crate::store::WriteError>, value: T) -> Settled<T> {
    match result {
        Ok(()) => Ok(Some(value)),
        Err(crate::store::WriteError::Conflict) => Ok(None),
        Err(crate::store::WriteError::Store(err)) => Err(store_error(err)),
    }
}

/// Runs `attempt` (read, decide, write) until one commits, pausing after each lost race; after
/// [`MAX_WRITE_ATTEMPTS`] lost races it gives up with a 503 to retry.
pub(crate) async fn redecided<T, F: Future<Output = Settled<T>>>(
    mut attempt: impl FnMut() -> F,
) -> Result<T, ApiError> {
    for n in 0..MAX_WRITE_ATTEMPTS {
        if let Some(done) = attempt().await? {
            return Ok(done);
        }
        back_off(n).await;
    }
    Err(refusals::Refusal::ConcurrentUpdate.into())
}

/// A short, growing, jittered pause before re-reading after a lost race.
/// "Full jitter": a random pause up to a ceiling that doubles per attempt (10 ms, 20 ms, … 160 ms),
/// so writers that collided once spread out instead of colliding again in step.
async fn back_off(attempt: u32) {
    let ceiling = 10u64 << attempt.min(4);
    let mut random = [0u8; 2];
    let _ = getrandom::getrandom(&mut random);
    let millis = 1 + u64::from(u16::from_le_bytes(random)) % ceiling;
    tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
}

#[cfg(test)]
mod tests;
