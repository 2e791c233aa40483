//! fieldseal: a TLS 1.3 reverse-proxy sidecar that adds security headers to an unmodified app
//! and seals sensitive JSON fields in flight.
//!
//! The request path, one module per stage: [`server`] (listener, TLS, connections) →
//! [`routing`] → [`proxy`] (request id, forwarding headers, upstream, errors) →
//! [`security_headers`] → [`access_log`]. [`config`] compiles the YAML once; [`admin`] serves
//! health and [`metrics`].
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod audit;
pub mod body;
pub mod cli;
pub mod client_keys_cli;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod explain;
pub mod field_rules;
pub mod guard;
pub mod init;
pub mod key_usage;
pub mod keys_cli;
pub mod limits;
pub mod metrics;
pub mod proxy;
pub mod reason;
pub mod reload;
pub mod replay;
pub mod rewrap;
pub mod rotation;
pub mod routing;

pub mod secret_file;
pub mod security_headers;
pub mod selector;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod transform;
