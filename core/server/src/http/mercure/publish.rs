//! `POST /.well-known/mercure`: a Mercure publisher's form becomes one event.

use super::{verify, Claims};
use crate::app::App;
use crate::event::{Data, Extra, NewEvent};
use crate::http::publish::read_limited;
use crate::http::{ApiError, Body, Conn};
use crate::pipeline::ingest::Producer;
use crate::publish::check_field;
use crate::topic::validate_topic;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, ORIGIN};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use std::sync::Arc;

/// One parsed update form.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Update {
    /// `topic` fields in order; the first is canonical.
    pub topics: Vec<String>,
    /// `data`.
    pub data: String,
    /// `private` was present.
    pub private: bool,
    /// `id`.
    pub id: Option<String>,
    /// `type`.
    pub kind: Option<String>,
    /// `retry`, ms.
    pub retry: Option<u32>,
}

/// Decodes one form component (`+` is a space, `%XX` a byte); bytes that are
/// not UTF-8 are an error, not replaced, so nothing is stored altered.
fn form_decode(raw: &[u8]) -> Result<String, ApiError> {
    let plus: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    let bytes: Vec<u8> = percent_encoding::percent_decode(&plus).collect();
    String::from_utf8(bytes)
        .map_err(|_| ApiError::bad_request("invalid_utf8", "a form field is not valid UTF-8"))
}

/// Parses and validates an `application/x-www-form-urlencoded` update.
pub fn parse_form(body: &[u8], max_topics: usize, max_data: usize) -> Result<Update, ApiError> {
    let mut u = Update::default();
    let bad = |field: &str, problem: &str| {
        ApiError::bad_request("invalid_field", format!("field `{field}` {problem}"))
    };
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let mut kv = pair.splitn(2, |&b| b == b'=');
        let (k, v) = (
            form_decode(kv.next().unwrap_or_default())?,
            form_decode(kv.next().unwrap_or_default())?,
        );
        let v = std::borrow::Cow::Owned::<str>(v);
        match &*k {
            "topic" => {
                if u.topics.len() == max_topics {
                    return Err(ApiError::bad_request(
                        "too_many_topics",
                        format!("at most {max_topics} topic fields per update"),
                    ));
                }
                validate_topic(&v).map_err(|e| {
                    ApiError::bad_request("invalid_topic", format!("topic {v:?}: {e}"))
                })?;
                if !u.topics.iter().any(|t| *t == v) {
                    u.topics.push(v.into_owned());
                }
            }
            "data" => u.data = v.into_owned(),
            "private" => u.private = true,
            "id" => {
                check_field(&v).map_err(|p| bad("id", p))?;
                u.id = Some(v.into_owned());
            }
            "type" => {
                check_field(&v).map_err(|p| bad("type", p))?;
                u.kind = Some(v.into_owned());
            }
            "retry" => {
                u.retry = Some(
                    v.trim()
                        .parse()
                        .map_err(|_| bad("retry", "is not a number of milliseconds"))?,
                )
            }
            _ => {}
        }
    }
    if u.topics.is_empty() {
        return Err(ApiError::bad_request(
            "missing_topic",
            "give at least one topic field",
        ));
    }
    if u.data.len() > max_data {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "event_too_large",
            format!(
                "data is {} bytes, over the limit of {max_data}",
                u.data.len()
            ),
        ));
    }
    Ok(u)
}

/// Handles a publish: origin check, token with `mercure.publish` covering
/// every topic, form, append; answers `200 text/plain` with the update's id.
pub async fn publish<B>(
    app: &Arc<App>,
    conn: &Conn,
    req: Request<B>,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let Some(cfg) = &app.config.mercure else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no Mercure hub",
        ));
    };
    if let Some(origin) = req.headers().get(ORIGIN).and_then(|o| o.to_str().ok()) {
        if !cfg
            .publish_origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                format!("origin {origin:?} may not publish; see [mercure] publish_origins"),
            ));
        }
    }
    let pipeline = app.pipeline.load_full();
    let plugin = pipeline
        .mercure
        .publish_auth
        .as_ref()
        .or(pipeline.mercure.auth.as_ref());
    let query = crate::http::query_pairs(&req);
    let Some((who, _)) = verify(plugin, &req, &query, conn).await? else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "publishing needs a token (Authorization: Bearer, or the mercureAuthorization cookie)",
        ));
    };
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content-type {content_type:?}: Mercure updates are application/x-www-form-urlencoded"),
        ));
    }
    let limits = &app.config.server.limits;
    let body = read_limited(app, req).await?;
    let update = parse_form(
        &body,
        limits.max_topics,
        limits.max_event_bytes.as_u64() as usize,
    )?;

    let granted: Vec<super::TopicSelector> = Claims::from_json(&who.claims)
        .publish
        .unwrap_or_default()
        .iter()
        .map(|s| super::TopicSelector::new(s))
        .collect();
    if let Some(t) = update
        .topics
        .iter()
        .find(|t| !granted.iter().any(|g| g.matches(t)))
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the token's mercure.publish claim does not cover topic {t:?}"),
        ));
    }

    let mut topics = update.topics.into_iter();
    let topic = topics.next().unwrap_or_default();
    let event = NewEvent {
        topic,
        kind: update.kind,
        data: Data::Text(update.data),
        to: None,
        key: None,
        extra: Some(Box::new(Extra {
            also: topics.map(String::into_boxed_str).collect(),
            private: update.private,
            wire_id: update.id.clone().map(String::into_boxed_str),
            retry: update.retry,
        })),
    };
    // The one ingest path: `[publish] transforms` apply to Mercure updates
    // as to every other publish.
    let transforms = app.pipeline.load().publish.transforms.clone();
    let ids = app
        .ingest
        .ingest(Producer::Publisher, vec![event], &transforms)
        .await?;
    metrics::counter!("spout_mercure_updates_total").increment(1);
    let id = match (update.id, ids.first()) {
        (Some(id), _) => id,
        (None, Some(seq)) => seq.to_string(),
        (None, None) => String::new(),
    };
    tracing::debug!(%id, private = update.private, "mercure update published");
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from(id))));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_mercure_form() {
        let body = b"topic=https%3A%2F%2Fex.com%2Fbooks%2F1&topic=b&data=%7B%22a%22%3A1%7D&private=on&id=urn%3Auuid%3Ax&type=t&retry=3000";
        let u = parse_form(body, 10, 1000).unwrap();
        assert_eq!(u.topics, ["https://ex.com/books/1", "b"]);
        assert_eq!(u.data, "{\"a\":1}");
        assert!(u.private);
        assert_eq!(u.id.as_deref(), Some("urn:uuid:x"));
        assert_eq!(u.kind.as_deref(), Some("t"));
        assert_eq!(u.retry, Some(3000));
    }

    #[test]
    fn rejects_bad_forms() {
        let code = |b: &[u8]| parse_form(b, 2, 10).unwrap_err().error;
        assert_eq!(code(b"data=x"), "missing_topic");
        assert_eq!(code(b"topic=a&topic=b&topic=c"), "too_many_topics");
        assert_eq!(code(b"topic=a%20b"), "invalid_topic");
        assert_eq!(code(b"topic=a&type=x%0Ay"), "invalid_field");
        assert_eq!(code(b"topic=a&retry=soon"), "invalid_field");
        assert_eq!(code(b"topic=a&data=01234567890"), "event_too_large");
        assert_eq!(code(b"topic=a&data=%FF%FE"), "invalid_utf8");
    }
}
