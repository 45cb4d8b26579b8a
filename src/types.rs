//! Small shared types used by every layer. Nothing here does I/O.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// A password, one-time code or token in memory.
///
/// `Debug` and `Display` print `[redacted]`, there is no `Serialize`, and the
/// memory is zeroed on drop, so a secret cannot leak into logs, error bodies
/// or audit records by accident. Reading it requires an explicit `expose()`.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The cleartext. Call only where the value must leave the process
    /// (an LDAP write, an email body rendered at send time, a one-time display).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

impl PartialEq for Secret {
    /// Constant-time, so comparing a secret never leaks how much of it matched.
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.expose()
            .as_bytes()
            .ct_eq(other.expose().as_bytes())
            .into()
    }
}

/// A password the API hands its caller once, in a response body, because the caller
/// asked to see it (or it would otherwise be lost). Serialises as the plain string;
/// `Debug` stays redacted so a logged response cannot show it; zeroed on drop.
#[derive(Clone, PartialEq)]
pub struct RevealedPassword(Secret);

impl RevealedPassword {
    pub fn new(secret: Secret) -> Self {
        Self(secret)
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl fmt::Debug for RevealedPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RevealedPassword([redacted])")
    }
}

impl serde::Serialize for RevealedPassword {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.expose())
    }
}

/// Derives a 32-byte key for one `purpose` from the master key (HKDF-SHA256, no salt,
/// info = `"lockbridge " + purpose`). Different purposes give independent keys, so the
/// token-hash key, the outbox key and the audit seal key can never be confused.
pub fn derive_key(master: &[u8; 32], purpose: &str) -> [u8; 32] {
    use hkdf::Hkdf;
    use sha2::Sha256;
    let hk = Hkdf::<Sha256>::new(None, master);
    let mut info = Vec::with_capacity(11 + purpose.len());
    info.extend_from_slice(b"lockbridge ");
    info.extend_from_slice(purpose.as_bytes());
    let mut key = [0u8; 32];
    // HKDF-SHA256 can produce up to 255 * 32 bytes; 32 always fits.
    hk.expand(&info, &mut key)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    key
}

/// The 32-byte master key every other key is derived from (token hashing, sealing of
/// queued secrets, audit seals). `Debug` prints `[redacted]` and the bytes are zeroed on
/// drop, so a configuration dump cannot leak it.
#[derive(Clone)]
pub struct MasterKey(zeroize::Zeroizing<[u8; 32]>);

impl MasterKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(zeroize::Zeroizing::new(bytes))
    }

    /// The key bytes, for key derivation only.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key for one purpose ([`derive_key`]).
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        derive_key(self.expose(), purpose)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

/// What is wrong with a JSON request body, in the client's terms rather than the web
/// framework's ("Failed to deserialize the JSON body into the target type"). Values the
/// client sent are left out (see [`without_values`]).
pub fn json_body_problem(e: &axum::extract::rejection::JsonRejection) -> String {
    use axum::extract::rejection::JsonRejection as J;
    match e {
        J::MissingJsonContentType(_) => {
            "the body must be JSON, sent with the header `Content-Type: application/json`".into()
        }
        J::JsonSyntaxError(e) => format!("the body is not valid JSON ({})", cause(e)),
        J::JsonDataError(e) => format!("the body does not fit this request: {}", cause(e)),
        J::BytesRejection(e) => format!("the body could not be read ({})", cause(e)),
        other => without_values(&other.body_text()),
    }
}

/// What is wrong with a query string, in the client's terms (see [`json_body_problem`]).
pub fn query_problem(e: &axum::extract::rejection::QueryRejection) -> String {
    format!("the query string does not fit this request: {}", cause(e))
}

/// The innermost message under a framework rejection, without the values it quotes.
fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    without_values(&inner.to_string())
}

/// `message` with the values serde quotes after "invalid type:" and "invalid value:"
/// dropped, keeping their kind: a password sent as a number must not be echoed into an
/// error body or a log ("invalid type: integer `123456`, expected a string" becomes
/// "invalid type: integer, expected a string"). Field names stay.
pub fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = ["invalid type: ", "invalid value: "]
        .iter()
        .filter_map(|m| rest.find(m).map(|i| (i, m.len())))
        .min()
    {
        let (start, marker) = at;
        let value_start = start + marker;
        let value_end = rest[value_start..]
            .find(", expected")
            .map_or(rest.len(), |i| value_start + i);
        let kind = rest[value_start..value_end]
            .split_whitespace()
            .next()
            .unwrap_or_default();
        out.push_str(&rest[..value_start]);
        out.push_str(kind);
        rest = &rest[value_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_dropped_from_deserialization_messages_and_field_names_kept() {
        assert_eq!(
            without_values(
                "password: invalid type: integer `123456`, expected a string at line 1 column 20"
            ),
            "password: invalid type: integer, expected a string at line 1 column 20"
        );
        assert_eq!(
            without_values(
                r#"a: invalid value: string "hunter2", expected x; b: invalid type: map, expected y"#
            ),
            "a: invalid value: string, expected x; b: invalid type: map, expected y"
        );
        assert_eq!(
            without_values("missing field `userName` at line 1 column 2"),
            "missing field `userName` at line 1 column 2"
        );
        assert_eq!(
            without_values("invalid type: floating point `1.5`"),
            "invalid type: floating"
        );
    }

    #[test]
    fn a_json_body_problem_names_the_field_but_not_the_value() {
        use axum::extract::FromRequest;
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Body {
            password: String,
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let problem = |content_type: &str, body: &'static str| {
            let request = axum::http::Request::builder()
                .method("POST")
                .header("content-type", content_type)
                .body(axum::body::Body::from(body))
                .expect("request");
            let rejection = runtime
                .block_on(axum::Json::<Body>::from_request(request, &()))
                .expect_err("rejected");
            json_body_problem(&rejection)
        };
        let typed = problem("application/json", r#"{"password": 98127364}"#);
        assert!(typed.starts_with("the body does not fit this request: password: invalid type: integer, expected a string"), "{typed}");
        assert!(
            !typed.contains("98127364") && !typed.contains("deserialize"),
            "{typed}"
        );
        let missing = problem("application/json", "{}");
        assert!(missing.contains("missing field `password`"), "{missing}");
        let broken = problem("application/json", "{\"password\": ");
        assert!(
            broken.starts_with("the body is not valid JSON ("),
            "{broken}"
        );
        let text = problem("text/plain", "password=x");
        assert!(text.contains("Content-Type: application/json"), "{text}");
    }

    #[test]
    fn master_key_never_prints() {
        let k = MasterKey::new([0xAB; 32]);
        let shown = format!("{k:?}");
        assert!(!shown.contains("171") && !shown.to_lowercase().contains("ab,"));
        assert_eq!(k.expose(), &[0xAB; 32]);
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(s, Secret::new("hunter2"));
        assert_ne!(s, Secret::new("hunter3"));
    }
}
