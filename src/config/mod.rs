//! Configuration: the YAML as written (`raw`), how it is loaded and checked (`compile`), and
//! the runtime form the proxy serves from (`settings`).

pub mod compile;
pub mod error;
pub mod raw;
pub mod settings;

pub use compile::{load, ENV_PREFIX};
pub use error::{ConfigErrors, ConfigProblem};
pub use settings::{ReplayStoreSettings, Route, RouteRules, Settings};
