//! One verification in progress (a "flow"): which account it is for, which methods the
//! user must still pass, the code sent last (only its keyed hash), and how many wrong
//! tries are left. Pure: the routes load and save it through the store, conditionally
//! on its version, so two requests cannot both spend one code.

use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::types::Secret;

/// A way to prove who one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// A code mailed to the alternate email address.
    Email,
    /// A code texted to the mobile phone.
    Sms,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Email => "email",
            Method::Sms => "sms",
        }
    }

    pub fn parse(text: &str) -> Option<Method> {
        match text {
            "email" => Some(Method::Email),
            "sms" => Some(Method::Sms),
            _ => None,
        }
    }
}

/// A code sent and not yet entered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCode {
    pub method: Method,
    /// Hex of HMAC(key, flow id, method, code).
    pub hash: String,
    pub expires_at: DateTime<Utc>,
}

/// The flow's state, saved as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowState {
    /// The name as the user typed it (shown back to them).
    pub user_name: String,
    /// `None`: no account self-service may act on, or one without methods. Such a flow
    /// only ever leads to "contact an administrator", which then does nothing.
    pub user_dn: Option<String>,
    /// The methods this account has, in the order offered.
    pub available: Vec<Method>,
    /// How many methods must be passed in all.
    pub required: usize,
    pub verified: Vec<Method>,
    pub pending: Option<PendingCode>,
    /// Wrong codes entered so far (all methods together).
    pub wrong_tries: u32,
    /// Codes sent so far (all methods together).
    #[serde(default)]
    pub sends: u32,
    /// Security info: the new address or number waiting for its code (sent there, not
    /// to the one on file).
    #[serde(default)]
    pub proposed: Option<String>,
}

/// What entering a code did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeCheck {
    /// Right: the method is verified.
    Verified(Method),
    /// Wrong; this many tries are left.
    Wrong { left: u32 },
    /// Wrong, and that was the last try: the flow must end.
    TooManyTries,
    /// The code was right or wrong, but too late: a new one must be sent.
    Expired,
    /// No code is waiting (replayed, or never sent).
    NoneSent,
}

impl FlowState {
    pub fn new(
        user_name: &str,
        user_dn: Option<String>,
        available: Vec<Method>,
        required: usize,
    ) -> Self {
        FlowState {
            user_name: user_name.to_owned(),
            user_dn,
            required,
            available,
            verified: Vec::new(),
            pending: None,
            wrong_tries: 0,
            sends: 0,
            proposed: None,
        }
    }

    /// The account can be verified at all: it has as many methods as it must pass
    /// (else: contact an administrator).
    pub fn can_verify(&self) -> bool {
        self.user_dn.is_some() && self.required > 0 && self.available.len() >= self.required
    }

    /// Every method needed has been passed.
    pub fn is_verified(&self) -> bool {
        self.can_verify() && self.verified.len() >= self.required
    }

    /// Methods not passed yet.
    pub fn remaining(&self) -> Vec<Method> {
        self.available
            .iter()
            .copied()
            .filter(|m| !self.verified.contains(m))
            .collect()
    }

    /// Whether the user must choose among the remaining methods (more remain than are
    /// still needed); otherwise the next one is taken in order.
    pub fn must_choose(&self) -> bool {
        let still_needed = self.required.saturating_sub(self.verified.len());
        still_needed > 0 && self.remaining().len() > still_needed
    }

    /// Records a new code for `method`, replacing any code waiting: only the last one
    /// sent counts.
    pub fn issue(
        &mut self,
        key: &[u8; 32],
        flow_id: &str,
        method: Method,
        code: &Secret,
        valid: Duration,
        now: DateTime<Utc>,
    ) {
        self.pending = Some(PendingCode {
            method,
            hash: code_hash(key, flow_id, method, code),
            expires_at: now + valid,
        });
    }

    /// Checks an entered code against the one waiting. A right code is spent; a wrong
    /// one counts against `max_tries`.
    pub fn check(
        &mut self,
        key: &[u8; 32],
        flow_id: &str,
        entered: &Secret,
        max_tries: u32,
        now: DateTime<Utc>,
    ) -> CodeCheck {
        let Some(pending) = self.pending.clone() else {
            return CodeCheck::NoneSent;
        };
        let normalized: String = entered
            .expose()
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect();
        let expected = code_hash(key, flow_id, pending.method, &Secret::new(normalized));
        let right: bool = expected.as_bytes().ct_eq(pending.hash.as_bytes()).into();
        if now >= pending.expires_at {
            self.pending = None;
            return CodeCheck::Expired;
        }
        if right {
            self.pending = None;
            if !self.verified.contains(&pending.method) {
                self.verified.push(pending.method);
            }
            return CodeCheck::Verified(pending.method);
        }
        let outcome = self.miss(max_tries);
        if outcome == CodeCheck::TooManyTries {
            self.pending = None;
        }
        outcome
    }
}

impl FlowState {
    /// Whether this flow only stands in for a name that cannot be verified (unknown, no
    /// usable methods, blocked): its pages look like a real one's and no code is right.
    pub fn is_decoy(&self) -> bool {
        !self.can_verify()
    }

    /// A wrong code: counted against `max_tries`. [`Self::check`] counts a wrong code
    /// with it, and a decoy counts every code with it, so their answers cannot differ.
    pub fn miss(&mut self, max_tries: u32) -> CodeCheck {
        self.wrong_tries += 1;
        if self.wrong_tries >= max_tries {
            CodeCheck::TooManyTries
        } else {
            CodeCheck::Wrong {
                left: max_tries - self.wrong_tries,
            }
        }
    }
}

/// A new code of `digits` digits from the OS CSPRNG (leading zeros kept).
pub fn new_code(digits: u8) -> Secret {
    let mut rng = rand::rngs::OsRng;
    let code: String = (0..digits)
        .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
        .collect();
    Secret::new(code)
}

fn code_hash(key: &[u8; 32], flow_id: &str, method: Method, code: &Secret) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"selfservice code\0");
    mac.update(flow_id.as_bytes());
    mac.update(b"\0");
    mac.update(method.as_str().as_bytes());
    mac.update(b"\0");
    mac.update(code.expose().as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// `a•••@example.net`: enough for the owner to recognise the address, not enough to
/// learn it.
pub fn mask_email(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}•••@{domain}")
        }
        None => "•••".into(),
    }
}

/// `•••• 02`: the last two digits only.
pub fn mask_phone(number: &str) -> String {
    let digits: Vec<char> = number.chars().filter(char::is_ascii_digit).collect();
    let tail: String = digits[digits.len().saturating_sub(2)..].iter().collect();
    format!("•••• {tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn flow(required: usize) -> FlowState {
        FlowState::new(
            "bob",
            Some("uid=bob".into()),
            vec![Method::Email, Method::Sms],
            required,
        )
    }

    #[test]
    fn a_right_code_verifies_once_and_cannot_be_replayed() {
        let now = Utc::now();
        let mut f = flow(1);
        let code = new_code(8);
        f.issue(&KEY, "f1", Method::Email, &code, Duration::minutes(10), now);
        assert_eq!(
            f.check(&KEY, "f1", &code, 5, now),
            CodeCheck::Verified(Method::Email)
        );
        assert!(f.is_verified());
        assert_eq!(f.check(&KEY, "f1", &code, 5, now), CodeCheck::NoneSent);
    }

    #[test]
    fn a_code_is_bound_to_its_flow_and_method() {
        let now = Utc::now();
        let mut f = flow(1);
        let code = new_code(6);
        f.issue(&KEY, "f1", Method::Email, &code, Duration::minutes(10), now);
        let mut other = f.clone();
        assert_eq!(
            other.check(&KEY, "f2", &code, 5, now),
            CodeCheck::Wrong { left: 4 }
        );
        assert_eq!(
            f.check(&[8; 32], "f1", &code, 5, now),
            CodeCheck::Wrong { left: 4 }
        );
    }

    #[test]
    fn five_wrong_codes_end_the_flow() {
        let now = Utc::now();
        let mut f = flow(1);
        f.issue(
            &KEY,
            "f",
            Method::Sms,
            &Secret::new("12345678"),
            Duration::minutes(10),
            now,
        );
        for left in (1..5).rev() {
            assert_eq!(
                f.check(&KEY, "f", &Secret::new("00000000"), 5, now),
                CodeCheck::Wrong { left }
            );
        }
        assert_eq!(
            f.check(&KEY, "f", &Secret::new("00000000"), 5, now),
            CodeCheck::TooManyTries
        );
        assert_eq!(
            f.check(&KEY, "f", &Secret::new("12345678"), 5, now),
            CodeCheck::NoneSent
        );
    }

    #[test]
    fn a_decoy_counts_wrong_codes_as_a_real_flow_does() {
        let now = Utc::now();
        let mut real = flow(1);
        real.issue(
            &KEY,
            "f",
            Method::Email,
            &Secret::new("12345678"),
            Duration::minutes(10),
            now,
        );
        let mut decoy = FlowState::new("x", None, vec![], 1);
        assert!(decoy.is_decoy() && !real.is_decoy());
        for _ in 0..5 {
            assert_eq!(
                decoy.miss(5),
                real.check(&KEY, "f", &Secret::new("00000000"), 5, now)
            );
        }
        assert_eq!(decoy.wrong_tries, real.wrong_tries);
    }

    #[test]
    fn an_expired_code_is_refused_even_when_right() {
        let now = Utc::now();
        let mut f = flow(1);
        let code = new_code(8);
        f.issue(&KEY, "f", Method::Email, &code, Duration::minutes(10), now);
        let later = now + Duration::minutes(10);
        assert_eq!(f.check(&KEY, "f", &code, 5, later), CodeCheck::Expired);
        assert!(!f.is_verified());
    }

    #[test]
    fn spaces_and_dashes_in_an_entered_code_are_ignored() {
        let now = Utc::now();
        let mut f = flow(1);
        f.issue(
            &KEY,
            "f",
            Method::Email,
            &Secret::new("12345678"),
            Duration::minutes(10),
            now,
        );
        assert_eq!(
            f.check(&KEY, "f", &Secret::new(" 1234-5678 "), 5, now),
            CodeCheck::Verified(Method::Email)
        );
    }

    #[test]
    fn administrators_need_every_method_and_others_choose() {
        let mut admin = flow(2);
        assert!(!admin.must_choose());
        admin.verified.push(Method::Email);
        assert!(!admin.is_verified());
        assert_eq!(admin.remaining(), vec![Method::Sms]);
        let user = flow(1);
        assert!(user.must_choose());
        let only_mail = FlowState::new("c", Some("uid=c".into()), vec![Method::Email], 2);
        assert!(
            !only_mail.can_verify(),
            "an administrator with one method cannot verify"
        );
        let unknown = FlowState::new("x", None, vec![], 1);
        assert!(!unknown.can_verify() && !unknown.is_verified());
    }

    #[test]
    fn codes_have_the_asked_digits() {
        for digits in 6..=8 {
            let c = new_code(digits);
            assert_eq!(c.expose().len(), usize::from(digits));
            assert!(c.expose().chars().all(|c| c.is_ascii_digit()));
        }
    }

    #[test]
    fn masks_keep_little() {
        assert_eq!(mask_email("bob.personal@example.net"), "b•••@example.net");
        assert_eq!(mask_phone("+1 555 0102"), "•••• 02");
    }
}
