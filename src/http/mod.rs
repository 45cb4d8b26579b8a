//! The HTTP edge: the listening socket and its limits (`server`), the router that mounts
//! each feature, the middleware every request passes (request id, tracing, timeout, body
//! limit, metrics, authentication and rate limits), health endpoints, the OpenAPI
//! document, and the one mapping from every error type to an HTTP response.

mod error;
mod health;
mod limits;
mod middleware;
mod openapi;
mod router;
pub mod server;

pub use error::ErrorBody;
pub use health::{HealthState, READINESS_TTL};
pub use limits::{ClientAddress, RateLimit, TrustedProxies};
pub use openapi::ApiDoc;
pub use router::{RouterParts, router};
pub use server::ServerLimits;
