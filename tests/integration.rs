//! Every integration test in one binary: the server is linked once instead
//! of once per area (the cold CI build spent minutes linking). Each module
//! is one area; run one with `cargo test --test integration -- AREA::`.

mod support;

mod api;
mod bad_input;
mod bench;
mod browser;
mod client;
mod cluster;
mod deploy;
mod durability;
mod examples;
mod hostile;
mod integrity;
mod isolation;
mod languages;
mod limits;
mod mercure;
mod ops;
mod pipeline;
mod relays;
mod replay;
mod schema;
mod shaping;
mod slow;
mod sources;
mod tls;
mod topics;
mod wire;
