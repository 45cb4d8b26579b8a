//! The HTTP edge: the router that mounts each feature, the middleware every request
//! passes (request id, tracing, timeout, body limit, metrics), health endpoints, the
//! OpenAPI document, and the one mapping from every error type to an HTTP response.

mod error;
mod health;
mod middleware;
mod openapi;
mod router;

pub use error::ErrorBody;
pub use health::HealthState;
pub use openapi::ApiDoc;
pub use router::{RateLimit, RouterParts, router};
