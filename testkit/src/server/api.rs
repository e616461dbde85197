//! The Connect-JSON control plane.

use super::*;

// ---------------------------------------------------------------------------------------------
// Connect-JSON control plane
// ---------------------------------------------------------------------------------------------

pub(crate) const METHODS: [&str; 5] = [
    "ExchangeToken",
    "RevokeToken",
    "ListTokens",
    "CreateToken",
    "ListWorkspaces",
];

pub(crate) struct ApiError {
    pub(crate) http: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(http: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            http,
            code,
            message: message.into(),
        }
    }
    pub(crate) fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            UNAUTHENTICATED_MESSAGE,
        )
    }
    pub(crate) fn permission_denied(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_denied", m)
    }
    pub(crate) fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", m)
    }
    pub(crate) fn invalid_argument(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", m)
    }
}

pub(crate) fn connect_error(http: StatusCode, code: &str, message: &str) -> Response {
    (
        http,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"code": code, "message": message}).to_string(),
    )
        .into_response()
}

pub(crate) struct CallMeta {
    pub(crate) request_id: Option<String>,
    pub(crate) client: Option<String>,
}

pub(crate) async fn api_handler(
    State(shared): State<Arc<Shared>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let header_str = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut seen = ApiCallSeen {
        method: method.clone(),
        auth_scheme: AuthScheme::None,
        token_id: None,
        status: 200,
        code: None,
        faulted: false,
        request_id: header_str("x-request-id"),
        client: header_str("x-githosted-client"),
        content_type: header_str("content-type"),
        elapsed: Duration::ZERO,
    };
    let (scheme, raw) = credentials(&headers);
    seen.auth_scheme = scheme;

    let fault = shared.lock().take_fault(&method);
    match fault {
        Some(FaultKind::Delay(d)) => tokio::time::sleep(d).await,
        Some(FaultKind::Status {
            http,
            code,
            retry_after,
        }) => {
            let status = StatusCode::from_u16(http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = connect_error(status, &code, "injected fault");
            if let Some(secs) = retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            seen.status = status.as_u16();
            seen.code = Some(code);
            seen.faulted = true;
            seen.elapsed = started.elapsed();
            shared.lock().api_calls.push(seen);
            return resp;
        }
        Some(FaultKind::RawBody { http, body }) => {
            let status = StatusCode::from_u16(http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            seen.status = status.as_u16();
            seen.faulted = true;
            seen.elapsed = started.elapsed();
            shared.lock().api_calls.push(seen);
            return (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        }
        Some(FaultKind::HugeBody { bytes }) => {
            seen.faulted = true;
            seen.elapsed = started.elapsed();
            shared.lock().api_calls.push(seen);
            const CHUNK: u64 = 64 * 1024;
            let chunks = bytes.div_ceil(CHUNK);
            let stream = futures_util::stream::iter((0..chunks).map(|_| {
                Ok::<_, std::convert::Infallible>(Bytes::from(vec![b' '; CHUNK as usize]))
            }));
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                axum::body::Body::from_stream(stream),
            )
                .into_response();
        }
        None => {}
    }

    let meta = CallMeta {
        request_id: seen.request_id.clone(),
        client: seen.client.clone(),
    };
    let mut st = shared.lock();
    let result = (|| {
        if !METHODS.contains(&method.as_str()) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unimplemented",
                format!("githosted.v1.ApiService/{method} is not implemented"),
            ));
        }
        let json_body = seen
            .content_type
            .as_deref()
            .is_some_and(|ct| ct.split(';').next().unwrap_or("").trim() == "application/json");
        if !json_body {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_argument",
                "Content-Type must be application/json",
            ));
        }
        let caller = match (scheme, raw.as_deref()) {
            (AuthScheme::Bearer, Some(raw)) => st.authenticate(raw),
            _ => None,
        }
        .ok_or_else(ApiError::unauthenticated)?;
        seen.token_id = Some(st.tokens[caller].id.clone());
        let parsed: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid_argument(format!("request is not JSON: {e}")))?;
        let Value::Object(fields) = parsed else {
            return Err(ApiError::invalid_argument("request must be a JSON object"));
        };
        let req = Req(&fields);
        match method.as_str() {
            "ExchangeToken" => st.exchange_token(caller, &req, &meta),
            "RevokeToken" => st.revoke_token(caller, &req),
            "ListTokens" => st.list_tokens(caller, &req),
            "ListWorkspaces" => st.list_workspaces(caller),
            _ => st.create_token(caller, &req),
        }
    })();
    let resp = match result {
        Ok(value) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            value.to_string(),
        )
            .into_response(),
        Err(e) => {
            seen.status = e.http.as_u16();
            seen.code = Some(e.code.to_string());
            connect_error(e.http, e.code, &e.message)
        }
    };
    seen.elapsed = started.elapsed();
    st.api_calls.push(seen);
    resp
}

/// Field access for a proto3 JSON request: accepts the lowerCamelCase name and the proto
/// field name, treats `null` and missing as the default value, ignores unknown fields.
pub(crate) struct Req<'a>(&'a Map<String, Value>);

impl Req<'_> {
    pub(crate) fn field(&self, camel: &str, snake: &str) -> Option<&Value> {
        self.0
            .get(camel)
            .or_else(|| self.0.get(snake))
            .filter(|v| !v.is_null())
    }

    pub(crate) fn string(&self, camel: &str, snake: &str) -> Result<String, ApiError> {
        match self.field(camel, snake) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(ApiError::invalid_argument(format!(
                "{camel}: want a string"
            ))),
        }
    }

    pub(crate) fn strings(&self, camel: &str, snake: &str) -> Result<Vec<String>, ApiError> {
        let bad = || ApiError::invalid_argument(format!("{camel}: want a list of strings"));
        match self.field(camel, snake) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(bad))
                .collect(),
            Some(_) => Err(bad()),
        }
    }

    /// An integer as a JSON number or (proto3 int64 style) a decimal string.
    pub(crate) fn int(&self, camel: &str, snake: &str) -> Result<i64, ApiError> {
        let bad = || ApiError::invalid_argument(format!("{camel}: want an integer"));
        match self.field(camel, snake) {
            None => Ok(0),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                        .map(|f| f as i64)
                })
                .ok_or_else(bad),
            Some(Value::String(s)) => s.parse().map_err(|_| bad()),
            Some(_) => Err(bad()),
        }
    }

    pub(crate) fn enum_name(&self, camel: &str) -> Result<Option<String>, ApiError> {
        match self.field(camel, camel) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::invalid_argument(format!(
                "{camel}: want an enum name"
            ))),
        }
    }

    /// `None` for missing or `PERMISSION_UNSPECIFIED`.
    pub(crate) fn permission(&self) -> Result<Option<Permission>, ApiError> {
        match self.enum_name("permission")?.as_deref() {
            None | Some("PERMISSION_UNSPECIFIED") => Ok(None),
            Some("PERMISSION_READ") => Ok(Some(Permission::Read)),
            Some("PERMISSION_WRITE") => Ok(Some(Permission::Write)),
            Some(other) => Err(ApiError::invalid_argument(format!(
                "permission: unknown value {other:?}"
            ))),
        }
    }

    /// `None` for missing or `TOKEN_KIND_UNSPECIFIED`.
    pub(crate) fn kind(&self) -> Result<Option<Kind>, ApiError> {
        match self.enum_name("kind")?.as_deref() {
            None | Some("TOKEN_KIND_UNSPECIFIED") => Ok(None),
            Some("TOKEN_KIND_WORKSPACE") => Ok(Some(Kind::Workspace)),
            Some("TOKEN_KIND_REPO") => Ok(Some(Kind::Repo)),
            Some(other) => Err(ApiError::invalid_argument(format!(
                "kind: unknown value {other:?}"
            ))),
        }
    }
}
