//! fieldseal: a TLS 1.3 reverse-proxy sidecar that adds security headers to an unmodified app
//! and seals sensitive JSON fields in flight.
//!
//! The request path, one module per stage: [`server`] (listener, TLS, connections) →
//! [`routing`] → [`proxy`] (strict checks, forwarding headers, the field and envelope stages,
//! upstream, errors) → [`security_headers`] → [`access_log`]. The field engine is
//! [`transform`]: compiled selectors, selection, the byte-level engine, the rules over a body
//! and their outcome vocabulary;
//! [`guard`] inspects answers after it; [`reason`] is the one vocabulary of refusals.
//! [`config`] compiles the YAML once (routes merged with the field policy); [`admin`] serves
//! health and [`metrics`]; [`cli`] parses the command line and [`lifecycle`] runs the process.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod audit;
pub mod body;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod file;
pub mod guard;
pub mod identity;
pub mod key_usage;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod proxy;
pub mod reason;
pub mod reload;
pub mod replay;
pub mod replicas;
pub mod rotation;
pub mod routing;
pub mod secret_file;
pub mod security_headers;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod transform;
