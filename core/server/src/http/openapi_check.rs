//! The OpenAPI document (`openapi.json`, served at `GET /openapi.json`)
//! against the router, in both directions: every (path, method) the
//! document lists resolves to a route that answers that method, and every
//! route Spout serves is in the document with exactly the methods it
//! answers. Plus the document's own shape: JSON, OpenAPI 3.1, every `$ref`
//! resolves.

use super::routes::Target;
use super::{api, mercure};
use crate::pipeline::{MercureRules, Pipeline, PublishRules, Route};
use http::Method;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const DOC: &str = include_str!("openapi.json");

/// The methods a route can answer (OPTIONS is every route's CORS preflight,
/// outside the route table and the document).
const METHODS: [Method; 6] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

fn doc() -> Value {
    serde_json::from_str(DOC).expect("openapi.json is not JSON")
}

/// A pipeline with the default stream route `/events` only: the document
/// shows it as the example of a `[[stream]]` route.
fn pipeline() -> Pipeline {
    Pipeline {
        generation: 0,
        plugins: BTreeMap::new(),
        streams: vec![Route {
            path: crate::pipeline::DEFAULT_STREAM.into(),
            auth: None,
            filters: Arc::from(Vec::new()),
            batch: None,
            compress: None,
            presence: false,
        }],
        publish: PublishRules::default(),
        sources: Vec::new(),
        brokers: Vec::new(),
        mercure: MercureRules::default(),
        statics: Vec::new(),
        api: None,
    }
}

/// The document's operations: path template → methods.
fn documented() -> BTreeMap<String, BTreeSet<Method>> {
    let doc = doc();
    let paths = doc["paths"].as_object().expect("paths is an object");
    paths
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .expect("a path item is an object")
                .keys()
                .filter_map(|k| match k.as_str() {
                    "parameters" | "summary" | "description" | "servers" => None,
                    m => Some(
                        Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                            .unwrap_or_else(|_| panic!("{path}: {m} is not a method")),
                    ),
                })
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

/// A concrete URL path for a path template (`{x}` → a sample value).
fn concrete(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let j = rest[i..].find('}').expect("unclosed {") + i;
        out.push_str("sample");
        rest = &rest[j + 1..];
    }
    out.push_str(rest);
    out
}

/// What the Mercure hub answers at `path` (it routes within itself; see
/// `mercure::route`): GET and POST on the hub, GET on the subscriptions API.
fn mercure_allows(path: &str, method: &Method) -> bool {
    if path == mercure::PATH {
        return method == Method::GET || method == Method::POST;
    }
    let subs = path == mercure::SUBSCRIPTIONS_PATH
        || path
            .strip_prefix(mercure::SUBSCRIPTIONS_PATH)
            .is_some_and(|r| r.starts_with('/'));
    subs && method == Method::GET
}

/// Whether `method` on `path` reaches a handler that takes it.
fn answers(p: &Pipeline, path: &str, method: &Method) -> bool {
    let target = Target::resolve(p, path, true);
    match target {
        Target::Api => api::ENDPOINTS
            .iter()
            .any(|(ep, ms)| *ep == path && ms.contains(method)),
        Target::Mercure => mercure_allows(path, method),
        Target::NotFound => false,
        t => t.allows(method) == Some(true),
    }
}

/// The document's path templates for each route Spout has. A `match`
/// without a catch-all: a new `Target` does not compile until it is
/// placed here (and so in the document).
fn templates_of(t: &Target<'_>) -> &'static [&'static str] {
    match t {
        Target::Stream(_) => &["/events"],
        Target::ConnectionTopics(_) => &["/connections/{id}/topics"],
        Target::Mercure => &[
            "/.well-known/mercure",
            "/.well-known/mercure/subscriptions",
            "/.well-known/mercure/subscriptions/{topic}",
            "/.well-known/mercure/subscriptions/{topic}/{subscriber}",
        ],
        Target::Hook(_) => &["/hooks/{name}"],
        Target::Publish => &["/publish"],
        // Each endpoint of `api::ENDPOINTS`, checked on its own below.
        Target::Api => &[],
        Target::OpenApi => &["/openapi.json"],
        Target::Tickets => &["/tickets"],
        Target::Poll => &["/poll"],
        Target::Metrics => &["/metrics"],
        Target::Healthz => &["/healthz"],
        Target::Readyz => &["/readyz"],
        Target::Stats => &["/stats"],
        Target::Console => &["/"],
        // Config's `[[static]]` directories: not fixed paths.
        Target::Static(_) => &[],
        Target::Favicon => &["/favicon.ico"],
        Target::NotFound => &[],
    }
}

#[test]
fn document_is_openapi_3_1_and_every_ref_resolves() {
    let doc = doc();
    let version = doc["openapi"].as_str().expect("openapi is a string");
    assert!(
        version.starts_with("3.1."),
        "openapi is {version}, not 3.1.x"
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    fn walk(doc: &Value, v: &Value, at: &str, bad: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref") {
                    let r = r.as_str().unwrap_or("");
                    let ok = r
                        .strip_prefix('#')
                        .and_then(|ptr| doc.pointer(ptr))
                        .is_some();
                    if !ok {
                        bad.push(format!("{at}: $ref {r:?}"));
                    }
                }
                for (k, x) in m {
                    walk(doc, x, &format!("{at}/{k}"), bad);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(doc, x, &format!("{at}/{i}"), bad);
                }
            }
            _ => {}
        }
    }
    let mut bad = Vec::new();
    walk(&doc, &doc, "#", &mut bad);
    assert!(bad.is_empty(), "unresolved references: {bad:#?}");
}

#[test]
fn every_operation_has_an_id_responses_and_declared_path_parameters() {
    let doc = doc();
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let at = format!("{method} {path}");
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{at}: no operationId"));
            assert!(
                ids.insert(id.to_owned()),
                "{at}: operationId {id} used twice"
            );
            let responses = op["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{at}: no responses"));
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{at}: no success response"
            );
            for (status, r) in responses {
                // Every error answer is documented with the Error schema.
                // (431 comes from the HTTP layer, with an empty body.)
                let is_error =
                    (status.starts_with('4') || status.starts_with('5')) && status != "431";
                let r = match r.get("$ref").and_then(Value::as_str) {
                    Some(p) => doc.pointer(&p[1..]).unwrap(),
                    None => r,
                };
                if is_error {
                    assert_eq!(
                        r["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/Error",
                        "{at} {status}: not the Error schema"
                    );
                    let desc = r["description"].as_str().unwrap_or("");
                    assert!(desc.contains('`'), "{at} {status}: name the error codes");
                }
            }
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .filter_map(|p| p["name"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            let in_template: BTreeSet<&str> = path
                .split('{')
                .skip(1)
                .filter_map(|s| s.split('}').next())
                .collect();
            assert_eq!(declared, in_template, "{at}: path parameters");
        }
    }
}

/// Document → router: each documented operation reaches a handler that
/// takes its method.
#[test]
fn every_documented_operation_is_routed() {
    let p = pipeline();
    for (template, methods) in documented() {
        let path = concrete(&template);
        for m in &methods {
            assert!(
                answers(&p, &path, m),
                "the document lists {m} {template}, which the router does not answer ({:?})",
                Target::resolve(&p, &path, true)
            );
        }
    }
}

/// Router → document: every route Spout has is documented with exactly the
/// methods it answers.
#[test]
fn every_route_is_documented_with_exactly_its_methods() {
    let p = pipeline();
    let doc = documented();
    let mut expected: BTreeMap<String, BTreeSet<Method>> = BTreeMap::new();
    // One sample request path per route kind (the document's templates
    // filled in); `templates_of` says where each kind is documented.
    let samples = [
        "/events",
        "/connections/abc/topics",
        "/.well-known/mercure",
        "/.well-known/mercure/subscriptions",
        "/.well-known/mercure/subscriptions/t",
        "/.well-known/mercure/subscriptions/t/s",
        "/hooks/github",
        "/publish",
        "/openapi.json",
        "/tickets",
        "/poll",
        "/metrics",
        "/healthz",
        "/readyz",
        "/stats",
        "/",
        "/favicon.ico",
    ];
    let mut kinds = std::collections::HashSet::new();
    for sample in samples {
        let t = Target::resolve(&p, sample, true);
        kinds.insert(std::mem::discriminant(&t));
        let templates = templates_of(&t);
        let template = templates
            .iter()
            .find(|tpl| concrete(tpl).split('/').count() == sample.split('/').count())
            .unwrap_or_else(|| panic!("{sample} resolves to {t:?}, documented nowhere"));
        let methods: BTreeSet<Method> = METHODS
            .iter()
            .filter(|m| answers(&p, sample, m))
            .cloned()
            .collect();
        assert!(!methods.is_empty(), "{sample}: answers no method");
        expected.insert((*template).to_owned(), methods);
    }
    // Every route kind with fixed paths has a sample above.
    for t in [
        Target::Api,
        Target::Stream(&p.streams[0]),
        Target::ConnectionTopics("x"),
        Target::Mercure,
        Target::Hook("x"),
        Target::Publish,
        Target::OpenApi,
        Target::Tickets,
        Target::Poll,
        Target::Metrics,
        Target::Healthz,
        Target::Readyz,
        Target::Stats,
        Target::Console,
        Target::Favicon,
    ] {
        if !templates_of(&t).is_empty() {
            assert!(
                kinds.contains(&std::mem::discriminant(&t)),
                "{t:?} has no sample path in this test"
            );
        }
    }
    for (path, methods) in api::ENDPOINTS {
        assert!(matches!(Target::resolve(&p, path, true), Target::Api));
        expected.insert((*path).to_owned(), methods.iter().cloned().collect());
    }
    for (path, methods) in &expected {
        assert_eq!(
            doc.get(path),
            Some(methods),
            "{path}: the router answers {methods:?}; the document lists {:?}",
            doc.get(path)
        );
    }
    let extra: Vec<&String> = doc.keys().filter(|p| !expected.contains_key(*p)).collect();
    assert!(
        extra.is_empty(),
        "the document lists paths no route serves: {extra:?}"
    );
}

#[test]
fn api_paths_need_the_api_key() {
    let doc = doc();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let api = path.starts_with("/api/");
            let secured = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("apiKey").is_some()));
            assert_eq!(api, secured, "{method} {path}: apiKey security");
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["apiKey"]["name"],
        "x-api-key"
    );
}
