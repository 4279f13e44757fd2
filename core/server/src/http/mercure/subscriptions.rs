//! Mercure's subscription events and subscriptions API: who is subscribed
//! to what, as JSON-LD documents, published as private updates on
//! `/.well-known/mercure/subscriptions/{topic}/{subscriber}` topics and
//! served at `GET /.well-known/mercure/subscriptions[/{topic}[/{subscriber}]]`.

use super::{verify, wire_id, Access, Claims, TopicSelector, CONTEXT, SUBSCRIPTIONS_PATH};
use crate::app::App;
use crate::event::{Data, Extra, NewEvent};
use crate::http::{json_response, query_pairs, ApiError, Body, Conn};
use crate::topic::validate_topic;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

/// `/.well-known/mercure/subscriptions/{topic}/{subscriber}`, both escaped.
pub fn subscription_id(topic: &str, subscriber: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!("{SUBSCRIPTIONS_PATH}/{}/{}", enc(topic), enc(subscriber))
}

/// The JSON-LD document of one subscription (without `@context`).
fn document(access: &Access, topic: &str, active: bool) -> Value {
    let mut doc = json!({
        "id": subscription_id(topic, &access.subscriber),
        "type": "Subscription",
        "subscriber": access.subscriber,
        "topic": topic,
        "active": active,
    });
    if let (Some(p), Some(obj)) = (&access.payload, doc.as_object_mut()) {
        obj.insert("payload".into(), p.clone());
    }
    doc
}

/// One private update per subscribed topic saying the subscriber came
/// (`active: true`) or went.
pub fn subscription_events(access: &Access, active: bool) -> Vec<NewEvent> {
    access
        .topics
        .iter()
        .filter_map(|topic| {
            let mut doc = document(access, topic, active);
            if let Some(obj) = doc.as_object_mut() {
                obj.insert("@context".into(), CONTEXT.into());
            }
            let id = subscription_id(topic, &access.subscriber);
            if let Err(e) = validate_topic(&id) {
                tracing::debug!(topic = %id, error = %e, "subscription event not published");
                return None;
            }
            Some(NewEvent {
                topic: id,
                kind: None,
                data: Data::Text(doc.to_string()),
                to: None,
                key: None,
                extra: Some(Box::new(Extra {
                    private: true,
                    ..Extra::default()
                })),
            })
        })
        .collect()
}

/// Appends subscription events in the background (a connection ending
/// cannot wait for the log); a failure is logged.
pub fn announce(app: &Arc<App>, events: Vec<NewEvent>) {
    if events.is_empty() {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let log = app.log.clone();
    rt.spawn(async move {
        if let Err(e) = log.append(events).await {
            tracing::warn!(error = %e, "subscription event not stored");
        }
    });
}

fn decode(segment: &str) -> String {
    let plus = segment.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

/// `GET /.well-known/mercure/subscriptions[/{topic}[/{subscriber}]]`: the
/// active subscriptions, for a token whose `mercure.subscribe` claim
/// matches the requested URL path.
pub async fn list<B>(
    app: &Arc<App>,
    conn: &Conn,
    req: &Request<B>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path();
    let query = query_pairs(req);
    let pipeline = app.pipeline.load_full();
    let Some((who, _)) = verify(pipeline.mercure.auth.as_ref(), req, &query, conn).await? else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the subscriptions API needs a token",
        ));
    };
    let granted = Claims::from_json(&who.claims).subscribe.unwrap_or_default();
    if !granted.iter().any(|g| TopicSelector::new(g).matches(path)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the token's mercure.subscribe claim does not cover {path}"),
        ));
    }
    let rest = path.strip_prefix(SUBSCRIPTIONS_PATH).unwrap_or("");
    let mut parts = rest.split('/').filter(|s| !s.is_empty()).map(decode);
    let (topic, subscriber) = (parts.next(), parts.next());
    let head = app.log.head();
    let last = if head == 0 {
        "earliest".to_owned()
    } else {
        wire_id(app, head)
    };
    let mut docs = Vec::new();
    for s in app.hub.admitted_subscribers() {
        let Some(access) = s
            .admission
            .as_ref()
            .and_then(|a| a.as_any().downcast_ref::<Access>())
        else {
            continue;
        };
        if subscriber
            .as_deref()
            .is_some_and(|id| id != access.subscriber)
        {
            continue;
        }
        for t in &access.topics {
            if topic.as_deref().is_none_or(|want| want == t) {
                docs.push(document(access, t, true));
            }
        }
    }
    let mut resp = if subscriber.is_some() {
        let Some(mut doc) = docs.pop() else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such active subscription",
            ));
        };
        if let Some(obj) = doc.as_object_mut() {
            obj.insert("@context".into(), CONTEXT.into());
            obj.insert("lastEventID".into(), last.into());
        }
        json_response(StatusCode::OK, &doc)
    } else {
        json_response(
            StatusCode::OK,
            &json!({
                "@context": CONTEXT,
                "id": path,
                "type": "Subscriptions",
                "lastEventID": last,
                "subscriptions": docs,
            }),
        )
    };
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/ld+json"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_ids_escape_topic_and_subscriber() {
        assert_eq!(
            subscription_id("https://ex.com/books/{id}", "urn:uuid:1"),
            "/.well-known/mercure/subscriptions/https%3A%2F%2Fex.com%2Fbooks%2F%7Bid%7D/urn%3Auuid%3A1"
        );
        assert_eq!(
            decode("https%3A%2F%2Fex.com%2Fbooks%2F%7Bid%7D"),
            "https://ex.com/books/{id}"
        );
    }

    #[test]
    fn events_are_private_json_ld() {
        let a = Access::new(
            "urn:uuid:1".into(),
            vec!["a".into()],
            None,
            Some(json!({"u": 1})),
        );
        let evs = subscription_events(&a, false);
        assert_eq!(evs.len(), 1);
        assert!(evs[0].extra.as_ref().is_some_and(|x| x.private));
        let Data::Text(t) = &evs[0].data else {
            panic!()
        };
        let v: Value = serde_json::from_str(t).unwrap();
        assert_eq!(v["active"], false);
        assert_eq!(v["payload"]["u"], 1);
        assert_eq!(v["@context"], CONTEXT);
    }
}
