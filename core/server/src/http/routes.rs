//! The route table: what a request path resolves to, decided in one place
//! and consulted by everything that needs to know — the plain-HTTP direct
//! path (does this `GET` open a stream?), CORS (is this the Mercure hub?)
//! and the dispatcher in `http::route`.
//!
//! Order: stream routes from config, Spout's own fixed paths, then
//! `[[static]]` directories (so a static route at `/` serves the rest).

use super::{connections, files, hooks};
use crate::pipeline::{Pipeline, Route, StaticDir};
use http::Method;

/// Where a request goes.
#[derive(Debug, Clone, Copy)]
pub enum Target<'p> {
    /// A `[[stream]]` route: `GET` opens an SSE stream.
    Stream(&'p Route),
    /// `POST /connections/{id}/topics`.
    ConnectionTopics(&'p str),
    /// `/.well-known/mercure` and below (the protocol routes within).
    Mercure,
    /// `POST /hooks/NAME`.
    Hook(&'p str),
    /// `POST /publish`.
    Publish,
    /// `/api/...`: the operator API.
    Api,
    /// `GET /openapi.json`.
    OpenApi,
    /// `POST /tickets`.
    Tickets,
    /// `GET /poll`.
    Poll,
    /// `GET /metrics`.
    Metrics,
    /// `GET /healthz`.
    Healthz,
    /// `GET /readyz`.
    Readyz,
    /// `GET /stats`.
    Stats,
    /// `GET /`: the console, unless `server.console = false`.
    Console,
    /// A file under a `[[static]]` directory.
    Static(&'p StaticDir),
    /// `GET /favicon.ico` when no static directory has one.
    Favicon,
    /// Nothing here.
    NotFound,
}

impl<'p> Target<'p> {
    /// Resolves `path` against the running pipeline; `console` is whether
    /// the built-in console is on.
    pub fn resolve(pipeline: &'p Pipeline, path: &'p str, console: bool) -> Target<'p> {
        if let Some(r) = pipeline.route(path) {
            return Target::Stream(r);
        }
        if let Some(id) = connections::connection_id(path) {
            return Target::ConnectionTopics(id);
        }
        if crate::http::mercure::is_mercure_path(path) {
            return Target::Mercure;
        }
        if let Some(name) = hooks::hook_name(path) {
            return Target::Hook(name);
        }
        if super::api::is_api_path(path) {
            return Target::Api;
        }
        match path {
            "/publish" => Target::Publish,
            "/openapi.json" => Target::OpenApi,
            "/tickets" => Target::Tickets,
            "/poll" => Target::Poll,
            "/metrics" => Target::Metrics,
            "/healthz" => Target::Healthz,
            "/readyz" => Target::Readyz,
            "/stats" => Target::Stats,
            "/" if console => Target::Console,
            _ => match files::find(&pipeline.statics, path) {
                Some(dir) => Target::Static(dir),
                None if path == "/favicon.ico" => Target::Favicon,
                None => Target::NotFound,
            },
        }
    }

    /// Whether it answers `method` (`None`: it decides itself, as the
    /// Mercure hub does, or nothing is here).
    pub fn allows(&self, method: &Method) -> Option<bool> {
        Some(match self {
            Target::Stream(_)
            | Target::Poll
            | Target::Metrics
            | Target::Healthz
            | Target::Readyz
            | Target::Stats
            | Target::OpenApi
            | Target::Console => method == Method::GET,
            Target::Static(_) | Target::Favicon => method == Method::GET || method == Method::HEAD,
            Target::ConnectionTopics(_) | Target::Hook(_) | Target::Publish | Target::Tickets => {
                method == Method::POST
            }
            Target::Mercure | Target::Api | Target::NotFound => return None,
        })
    }

    /// Whether a `GET` here opens an SSE stream (what the direct path
    /// serves itself); `mercure_on` is whether `[mercure]` is configured.
    pub fn streams(&self, mercure_on: bool) -> bool {
        match self {
            Target::Stream(_) => true,
            Target::Mercure => mercure_on,
            _ => false,
        }
    }
}
