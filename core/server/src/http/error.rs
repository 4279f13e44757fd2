//! Every error a request can meet, mapped to its status and JSON body in
//! one place: the layers below speak their own errors ([`AuthError`],
//! [`LimitError`], [`IngestError`], [`LogError`], [`HubError`],
//! [`PublishError`]) and never HTTP.

use super::{json_response, Body};
use crate::hub::HubError;
use crate::limits::LimitError;
use crate::log::LogError;
use crate::pipeline::auth::AuthError;
use crate::pipeline::ingest::IngestError;
use crate::publish::PublishError;
use http::header::HeaderValue;
use http::{Response, StatusCode};

/// An API error: status plus the JSON body `{"error": code, "detail": text}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, also the metric label.
    pub error: &'static str,
    /// Human-readable explanation.
    pub detail: String,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with the given status, code and detail.
    pub fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// Adds a `Retry-After: secs` header.
    pub fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    /// A 400 Bad Request.
    pub fn bad_request(error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, error, detail)
    }

    /// Renders the error, logging it at debug and counting it.
    pub fn into_response(self) -> Response<Body> {
        tracing::debug!(status = self.status.as_u16(), error = self.error, detail = %self.detail, "request rejected");
        metrics::counter!("spout_http_errors_total", "error" => self.error).increment(1);
        #[derive(serde::Serialize)]
        struct ErrorBody<'a> {
            error: &'a str,
            detail: &'a str,
        }
        let mut resp = json_response(
            self.status,
            &ErrorBody {
                error: self.error,
                detail: &self.detail,
            },
        );
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<HubError> for ApiError {
    /// A subscription the hub refused: 503 when full or shutting down, 429
    /// (counted) when the user holds its maximum of streams.
    fn from(e: HubError) -> ApiError {
        let (status, code) = match e {
            HubError::Full(_) => (StatusCode::SERVICE_UNAVAILABLE, "too_many_connections"),
            HubError::Closing => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            HubError::UserFull(_) => {
                metrics::counter!("spout_limit_rejections_total", "limit" => "per_user")
                    .increment(1);
                (StatusCode::TOO_MANY_REQUESTS, "too_many_user_connections")
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> ApiError {
        let code = match &e {
            PublishError::Json { .. } => "invalid_json",
            PublishError::MissingTopic { .. } => "missing_topic",
            PublishError::Topic { .. } => "invalid_topic",
            PublishError::Field { .. } => "invalid_field",
            PublishError::Empty => "empty_body",
            PublishError::TooLarge { .. } => {
                return ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "event_too_large",
                    e.to_string(),
                )
            }
        };
        ApiError::bad_request(code, e.to_string())
    }
}

/// The answer to a failed append: 409 when an idempotency key (or Mercure
/// update id) was used before with other content, 503 while shutting down or
/// while the shared log (Redis) is unreachable, else 500.
impl From<LogError> for ApiError {
    fn from(e: LogError) -> ApiError {
        match e {
            LogError::Conflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, "id_conflict", e.to_string())
            }
            LogError::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                e.to_string(),
            ),
            LogError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                e.to_string(),
            ),
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage_error",
                other.to_string(),
            ),
        }
    }
}

impl From<AuthError> for ApiError {
    /// The plugin's denial with its status (401, 403, 429, …); 403 for a
    /// topic outside the grant; 503 `auth_unavailable` when the plugin
    /// could not run (auth fails closed).
    fn from(e: AuthError) -> ApiError {
        match &e {
            AuthError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "auth_unavailable",
                e.to_string(),
            ),
            AuthError::Denied { status, reason } => {
                let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::UNAUTHORIZED);
                let error = match status {
                    StatusCode::UNAUTHORIZED => "unauthorized",
                    StatusCode::FORBIDDEN => "forbidden",
                    StatusCode::TOO_MANY_REQUESTS => "rate_limited",
                    _ => "denied",
                };
                ApiError::new(status, error, reason.clone())
            }
            AuthError::Forbidden { .. } | AuthError::UserChanged => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
            }
        }
    }
}

impl From<LimitError> for ApiError {
    /// 429 `rate_limited` with `Retry-After`.
    fn from(e: LimitError) -> ApiError {
        match e {
            LimitError::PerIp {
                detail,
                retry_after,
            } => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail)
                .retry_after(retry_after),
        }
    }
}

impl From<IngestError> for ApiError {
    /// 422 for invalid or refused events (a transform's own 4xx when it
    /// chose one), 503 when a transform could not run, the log's mapping
    /// otherwise.
    fn from(e: IngestError) -> ApiError {
        match e {
            IngestError::SourceInvalid(d) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "source_invalid", d)
            }
            IngestError::TransformFailed(err) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "transform_failed",
                err.to_string(),
            ),
            IngestError::Rejected { status, reason } => {
                let status = StatusCode::from_u16(status)
                    .ok()
                    .filter(StatusCode::is_client_error)
                    .unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
                ApiError::new(status, "rejected_by_transform", reason)
            }
            IngestError::TransformInvalid(d) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "transform_invalid", d)
            }
            IngestError::Log(e) => e.into(),
        }
    }
}
