//! Sealing secrets that wait in the outbox.
//!
//! Owns [`Sealer`] (XChaCha20-Poly1305, a fresh random 24-byte nonce per message,
//! output `nonce || ciphertext+tag`); its key comes from [`derive_key`]. It never writes
//! a secret anywhere, never logs, and keeps no cleartext beyond the [`Secret`] it returns.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use zeroize::Zeroize;

use super::NotifyError;
use crate::types::Secret;
pub use crate::types::derive_key;

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Binds sealed data to this use, so a ciphertext made for something else under the
/// same key does not open here.
const AAD: &[u8] = b"lockbridge outbox secret v1";

/// Encrypts and decrypts secrets kept in the outbox.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    /// A sealer for `key` (use [`derive_key`] with purpose `"outbox-secrets"`).
    pub fn new(key: [u8; 32]) -> Sealer {
        let mut key = key;
        let cipher = XChaCha20Poly1305::new(&key.into());
        key.zeroize();
        Sealer { cipher }
    }

    /// Encrypts `secret` under a fresh random nonce: `nonce || ciphertext`.
    pub fn seal(&self, secret: &Secret) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let payload = Payload {
            msg: secret.expose().as_bytes(),
            aad: AAD,
        };
        // Encryption with XChaCha20-Poly1305 fails only for messages near 2^38 bytes.
        let ciphertext = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), payload)
            .expect("a secret is far below the AEAD size limit");
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Decrypts what [`Sealer::seal`] produced. Fails with [`NotifyError::Unseal`] when the
    /// data was changed or sealed under another key.
    pub fn open(&self, sealed: &[u8]) -> Result<Secret, NotifyError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(NotifyError::Unseal);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad: AAD,
        };
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| NotifyError::Unseal)?;
        match String::from_utf8(plain) {
            Ok(text) => Ok(Secret::new(text)),
            Err(e) => {
                e.into_bytes().zeroize();
                Err(NotifyError::Unseal)
            }
        }
    }
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::new(derive_key(&[7; 32], "outbox-secrets"))
    }

    #[test]
    fn round_trip() {
        let s = sealer();
        let sealed = s.seal(&Secret::new("Tmp-Passw0rd!"));
        assert_eq!(sealed.len(), NONCE_LEN + "Tmp-Passw0rd!".len() + TAG_LEN);
        assert!(
            !sealed.windows(4).any(|w| w == b"Tmp-"),
            "no cleartext in the output"
        );
        assert_eq!(s.open(&sealed).expect("opens").expose(), "Tmp-Passw0rd!");
        assert_eq!(
            s.open(&s.seal(&Secret::new(""))).expect("empty").expose(),
            ""
        );
    }

    #[test]
    fn tampering_is_detected() {
        let s = sealer();
        let sealed = s.seal(&Secret::new("hunter2-hunter2"));
        for i in [0, NONCE_LEN, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(matches!(s.open(&bad), Err(NotifyError::Unseal)), "byte {i}");
        }
        assert!(matches!(
            s.open(&sealed[..sealed.len() - 1]),
            Err(NotifyError::Unseal)
        ));
        assert!(matches!(s.open(&[]), Err(NotifyError::Unseal)));
        let other = Sealer::new(derive_key(&[8; 32], "outbox-secrets"));
        assert!(
            matches!(other.open(&sealed), Err(NotifyError::Unseal)),
            "wrong key"
        );
    }

    #[test]
    fn every_seal_uses_a_new_nonce() {
        let s = sealer();
        let secret = Secret::new("same secret");
        let a = s.seal(&secret);
        let b = s.seal(&secret);
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
        assert_ne!(a, b);
    }

    #[test]
    fn derived_keys_depend_on_purpose_and_master() {
        let master = [1u8; 32];
        let a = derive_key(&master, "api-token-hash");
        assert_eq!(a, derive_key(&master, "api-token-hash"), "deterministic");
        assert_ne!(a, derive_key(&master, "outbox-secrets"));
        assert_ne!(a, derive_key(&[2u8; 32], "api-token-hash"));
        assert_ne!(a, master);
        assert!(!format!("{:?}", sealer()).contains('7'));
    }
}
