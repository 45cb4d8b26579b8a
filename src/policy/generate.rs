//! Generation of temporary passwords (alphabets: see the parent module).

use rand::{CryptoRng, Rng, rngs::OsRng, seq::SliceRandom};
use zeroize::Zeroizing;

use super::rules::{PasswordRules, min_generated_length_for_score};
use crate::types::Secret;

const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const LOWER_DISTINCT: &[u8] = b"abcdefghjkmnpqrtuvwxy";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const UPPER_DISTINCT: &[u8] = b"ACEFHJKMNPRTUVWXY";
const DIGITS: &[u8] = b"0123456789";
const DIGITS_DISTINCT: &[u8] = b"34679";
const SYMBOLS: &[u8] = b"-.@_";

/// Candidates drawn before [`PasswordRules::generate`] gives up looking for
/// one that passes [`PasswordRules::check`]. With rules that pass
/// [`PasswordRules::validate`], more than a few are needed only with a
/// banned-word list of many thousands of entries.
const MAX_ATTEMPTS: usize = 1000;

/// Shortest password that can hold one character of each class.
const MIN_GENERATED_LENGTH: usize = 4;

/// Characters beyond the length that reliably reaches a zxcvbn score from which
/// generated candidates are no longer scored. Measured (500,000 candidates each, look-alikes
/// excluded): none scored below 3 at 14 characters, none below 4 at 16; at 12 characters
/// 58 in 100,000 scored below 4. Scoring is most of the cost of drawing a password (about
/// 110 µs of 120 at 16 characters), which a bulk reset of 10,000 users pays 10,000 times.
const UNSCORED_MARGIN: usize = 4;

impl PasswordRules {
    /// The generation alphabet of each class, indexed by `CharClass as usize`.
    fn generation_alphabets(&self) -> [&'static [u8]; 4] {
        if self.exclude_lookalikes {
            [LOWER_DISTINCT, UPPER_DISTINCT, DIGITS_DISTINCT, SYMBOLS]
        } else {
            [LOWER, UPPER, DIGITS, SYMBOLS]
        }
    }

    /// `generated_length`, but at least 4 so one character of each class fits.
    fn effective_generated_length(&self) -> usize {
        self.generated_length.max(MIN_GENERATED_LENGTH)
    }

    /// A temporary password from the OS CSPRNG ([`OsRng`]).
    ///
    /// Exactly `generated_length` characters from the alphabets in the
    /// [module documentation](crate::policy): one character drawn uniformly from each
    /// of the four classes, the rest drawn uniformly from all four together
    /// (rand's unbiased uniform sampling), then placed in a uniformly random
    /// order among those that neither start nor end with a symbol.
    ///
    /// The result passes [`check`](Self::check) of these rules without user
    /// inputs: a candidate that zxcvbn scores too low or that contains a
    /// banned word is thrown away and another drawn, up to 1000 times. That
    /// bound is only reached with rules that fail [`validate`](Self::validate)
    /// (then the last candidate is returned, and may fail `check`), or with
    /// an enormous banned-word list. Rules with `generated_length` below 4
    /// get 4 characters.
    ///
    /// Candidates at least [`UNSCORED_MARGIN`] characters longer than the length that
    /// reliably reaches `min_strength_score` (14 for score 3, 16 for score 4) are not
    /// given to zxcvbn: a uniformly random string that long scores high enough (none
    /// of 500,000 measured failed), and every other rule is still checked.
    pub fn generate(&self) -> Secret {
        let score = self.effective_generated_length()
            < min_generated_length_for_score(self.min_strength_score) + UNSCORED_MARGIN;
        let mut candidate = self.draw_candidate(&mut OsRng);
        for _ in 1..MAX_ATTEMPTS {
            if self.check_with(&candidate, &[], score).is_ok() {
                break;
            }
            candidate = self.draw_candidate(&mut OsRng);
        }
        candidate
    }

    /// Approximate entropy in bits of a password from
    /// [`generate`](Self::generate) under these rules:
    /// `2 * log2(letters and digits) + (length - 2) * log2(whole alphabet)`,
    /// counting the two ends, which are never symbols, apart. With the
    /// defaults (16 characters, look-alikes excluded) that is
    /// 2 * log2(43) + 14 * log2(47) = 88.6 bits.
    ///
    /// It is an upper bound: requiring one character of each class makes
    /// the true figure about one bit lower at 16 characters (87.6 bits with
    /// the defaults) and about two at 8; rejecting the rare candidate that
    /// zxcvbn or a banned word refuses costs a negligible fraction of a bit.
    pub fn generated_entropy_bits(&self) -> f64 {
        let alphabets = self.generation_alphabets();
        let total: usize = alphabets.iter().map(|a| a.len()).sum();
        let ends = total - SYMBOLS.len();
        let length = self.effective_generated_length() as f64;
        2.0 * (ends as f64).log2() + (length - 2.0) * (total as f64).log2()
    }

    /// One random candidate, before any check (see [`generate`](Self::generate)).
    fn draw_candidate<R: Rng + CryptoRng + ?Sized>(&self, rng: &mut R) -> Secret {
        let alphabets = self.generation_alphabets();
        let everything: Vec<u8> = alphabets.concat();
        let length = self.effective_generated_length();

        // One of each class, then the rest from the whole alphabet.
        let mut ends_ok: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(length));
        let mut symbols: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(length));
        for index in 0..length {
            let alphabet = alphabets.get(index).copied().unwrap_or(&everything);
            let byte = pick(rng, alphabet);
            if SYMBOLS.contains(&byte) {
                symbols.push(byte);
            } else {
                ends_ok.push(byte);
            }
        }

        // A uniform order among those whose ends are not symbols: the ends
        // are a random ordered pair of the non-symbols, the middle a random
        // order of all the rest. There are always at least three non-symbols.
        ends_ok.shuffle(rng);
        let first = ends_ok.pop();
        let last = ends_ok.pop();
        let mut middle = ends_ok;
        middle.extend_from_slice(&symbols);
        middle.shuffle(rng);

        let mut password = String::with_capacity(length);
        password.extend(
            first
                .into_iter()
                .chain(middle.iter().copied())
                .chain(last)
                .map(char::from),
        );
        Secret::new(password)
    }
}

/// A uniformly chosen byte of a non-empty alphabet (`gen_range` rejects
/// rather than reduces modulo, so there is no bias).
fn pick<R: Rng + ?Sized>(rng: &mut R, alphabet: &[u8]) -> u8 {
    alphabet[rng.gen_range(0..alphabet.len())]
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;
    use rstest::rstest;

    use super::*;
    use crate::policy::CharClass;

    /// Every character that `exclude_lookalikes` promises to leave out.
    const LOOKALIKES: &str = "0OoDQ1lIiL|2Zz5Ss8BG`'\"";

    fn rules_with(length: usize, exclude_lookalikes: bool) -> PasswordRules {
        PasswordRules {
            generated_length: length,
            exclude_lookalikes,
            ..PasswordRules::default()
        }
    }

    fn classes_of(password: &str) -> HashSet<CharClass> {
        password.chars().filter_map(CharClass::of).collect()
    }

    #[rstest]
    #[case(12, true)]
    #[case(16, true)]
    #[case(16, false)]
    #[case(33, false)]
    #[case(64, true)]
    #[case(256, true)]
    fn generated_length_is_exact(#[case] length: usize, #[case] exclude: bool) {
        let rules = rules_with(length, exclude);
        assert_eq!(rules.validate(), Ok(()));
        for _ in 0..3 {
            assert_eq!(rules.generate().expose().chars().count(), length);
        }
    }

    #[rstest]
    #[case(true)]
    #[case(false)]
    fn every_password_has_all_four_classes_even_at_the_minimum_length(#[case] exclude: bool) {
        // At 8 characters a password without, say, a digit is common if the
        // classes are not forced (about 40 % for the look-alike-free alphabet).
        let rules = PasswordRules {
            min_length: 8,
            generated_length: 8,
            min_strength_score: 2,
            ..rules_with(8, exclude)
        };
        assert_eq!(rules.validate(), Ok(()));
        for _ in 0..200 {
            let password = rules.generate();
            assert_eq!(classes_of(password.expose()).len(), 4);
        }
    }

    #[rstest]
    #[case(true, "abcdefghjkmnpqrtuvwxyACEFHJKMNPRTUVWXY34679-.@_")]
    #[case(
        false,
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.@_"
    )]
    fn uses_exactly_the_documented_alphabet(#[case] exclude: bool, #[case] documented: &str) {
        let rules = rules_with(16, exclude);
        let mut seen = HashSet::new();
        for _ in 0..400 {
            let password = rules.draw_candidate(&mut OsRng);
            for c in password.expose().chars() {
                assert!(documented.contains(c), "{c:?} is not in the alphabet");
                seen.insert(c);
            }
        }
        // Every character is reachable (an off-by-one in sampling would not be).
        let missing: String = documented.chars().filter(|c| !seen.contains(c)).collect();
        assert!(missing.is_empty(), "never generated: {missing}");
    }

    #[test]
    fn never_starts_or_ends_with_a_symbol() {
        // Short passwords with many symbols would often do so by chance.
        let rules = PasswordRules {
            min_strength_score: 0,
            ..rules_with(5, true)
        };
        for _ in 0..500 {
            let password = rules.draw_candidate(&mut OsRng);
            let text = password.expose();
            let first = text.chars().next().and_then(CharClass::of);
            let last = text.chars().last().and_then(CharClass::of);
            assert_ne!(first, Some(CharClass::Symbol), "starts with a symbol");
            assert_ne!(last, Some(CharClass::Symbol), "ends with a symbol");
        }
    }

    #[test]
    fn symbols_do_appear_in_the_middle() {
        // The placement rule must not push symbols out altogether.
        let rules = rules_with(16, true);
        let with_two_or_more = (0..200)
            .map(|_| rules.draw_candidate(&mut OsRng))
            .filter(|p| {
                p.expose()
                    .chars()
                    .filter(|c| SYMBOLS.contains(&(*c as u8)))
                    .count()
                    >= 2
            })
            .count();
        assert!(with_two_or_more > 50, "{with_two_or_more} of 200");
    }

    #[test]
    fn positions_are_shuffled() {
        // Symbols can land anywhere inside, and each end can hold any of the
        // other classes: no class is stuck where it was drawn.
        let rules = rules_with(16, true);
        let mut symbol_at = [false; 16];
        let mut first_classes = HashSet::new();
        let mut last_classes = HashSet::new();
        for _ in 0..400 {
            let password = rules.draw_candidate(&mut OsRng);
            let classes: Vec<Option<CharClass>> =
                password.expose().chars().map(CharClass::of).collect();
            for (position, class) in classes.iter().enumerate() {
                if *class == Some(CharClass::Symbol) {
                    symbol_at[position] = true;
                }
            }
            first_classes.insert(classes.first().copied().flatten());
            last_classes.insert(classes.last().copied().flatten());
        }
        assert_eq!(symbol_at[1..15], [true; 14], "{symbol_at:?}");
        assert_eq!(first_classes.len(), 3, "{first_classes:?}");
        assert_eq!(last_classes.len(), 3, "{last_classes:?}");

        // At 4 characters only the one-of-each picks remain: the non-symbols
        // must still take turns at both ends.
        let shortest = rules_with(4, true);
        let ends: HashSet<(Option<CharClass>, Option<CharClass>)> = (0..200)
            .map(|_| {
                let password = shortest.draw_candidate(&mut OsRng);
                let text = password.expose();
                (
                    text.chars().next().and_then(CharClass::of),
                    text.chars().last().and_then(CharClass::of),
                )
            })
            .collect();
        assert_eq!(ends.len(), 6, "{ends:?}");
    }

    #[test]
    fn no_lookalikes_when_excluded_and_some_when_not() {
        let excluded = rules_with(16, true);
        for _ in 0..300 {
            let password = excluded.generate();
            assert!(
                !password.expose().chars().any(|c| LOOKALIKES.contains(c)),
                "a look-alike was generated"
            );
        }
        let included = rules_with(16, false);
        let with_lookalikes = (0..300)
            .map(|_| included.draw_candidate(&mut OsRng))
            .filter(|p| p.expose().chars().any(|c| LOOKALIKES.contains(c)))
            .count();
        assert!(with_lookalikes > 200, "only {with_lookalikes} of 300");
    }

    #[test]
    fn a_thousand_passwords_are_distinct() {
        let rules = PasswordRules::default();
        let passwords: HashSet<String> = (0..1000)
            .map(|_| rules.generate().expose().to_string())
            .collect();
        assert_eq!(passwords.len(), 1000);
    }

    #[test]
    fn default_entropy_is_at_least_80_bits() {
        let defaults = PasswordRules::default();
        let bits = defaults.generated_entropy_bits();
        assert!(bits >= 80.0, "{bits}");
        let expected = 2.0 * 43f64.log2() + 14.0 * 47f64.log2();
        assert!((bits - expected).abs() < 1e-9, "{bits} != {expected}");
        assert!((bits - 88.6).abs() < 0.05, "{bits}");
    }

    #[rstest]
    #[case(16, false, 2.0 * 62f64.log2() + 14.0 * 66f64.log2())]
    #[case(12, true, 2.0 * 43f64.log2() + 10.0 * 47f64.log2())]
    #[case(2, true, 2.0 * 43f64.log2() + 2.0 * 47f64.log2())]
    fn entropy_follows_length_and_alphabet(
        #[case] length: usize,
        #[case] exclude: bool,
        #[case] expected: f64,
    ) {
        let bits = rules_with(length, exclude).generated_entropy_bits();
        assert!((bits - expected).abs() < 1e-9, "{bits} != {expected}");
    }

    #[test]
    fn strongest_score_is_reached_at_the_shortest_allowed_length() {
        let rules = PasswordRules {
            min_strength_score: 4,
            ..rules_with(12, true)
        };
        assert_eq!(rules.validate(), Ok(()));
        for _ in 0..30 {
            assert_eq!(rules.check(&rules.generate(), &[]), Ok(()));
        }
    }

    #[test]
    fn avoids_banned_words() {
        // Single letters (too short for validate(), but check() applies
        // them) make about three candidates in four fail: generate must
        // retry until one passes.
        let letters = PasswordRules {
            banned_words: vec!["a".into(), "C".into()],
            ..rules_with(16, true)
        };
        let rejected = (0..100)
            .map(|_| letters.draw_candidate(&mut OsRng))
            .filter(|p| letters.check(p, &[]).is_err())
            .count();
        assert!(
            rejected >= 40,
            "only {rejected} of 100 rejected: the test proves nothing"
        );
        for _ in 0..50 {
            let password = letters.generate();
            assert_eq!(letters.check(&password, &[]), Ok(()));
            assert!(!password.expose().contains(['a', 'A', 'c', 'C']));
        }

        // A realistic, valid list.
        let realistic = PasswordRules {
            banned_words: vec!["acme".into(), "Contoso".into(), "WIDGET".into()],
            ..rules_with(16, true)
        };
        assert_eq!(realistic.validate(), Ok(()));
        for _ in 0..50 {
            assert_eq!(realistic.check(&realistic.generate(), &[]), Ok(()));
        }
    }

    #[test]
    fn gives_up_after_bounded_attempts_on_impossible_rules() {
        // Every symbol banned: no candidate can pass, yet generate returns.
        let rules = PasswordRules {
            banned_words: ["-", ".", "@", "_"].map(String::from).to_vec(),
            min_strength_score: 0,
            ..rules_with(16, true)
        };
        assert!(rules.validate().is_err());
        let password = rules.generate();
        assert_eq!(password.expose().chars().count(), 16);
        assert!(rules.check(&password, &[]).is_err());
    }

    #[test]
    fn too_short_generated_length_still_holds_all_classes() {
        let rules = PasswordRules {
            min_length: 1,
            min_strength_score: 0,
            ..rules_with(1, true)
        };
        let password = rules.generate();
        assert_eq!(password.expose().chars().count(), 4);
        assert_eq!(classes_of(password.expose()).len(), 4);
    }

    /// The candidates `generate` does not score (the shortest such lengths) pass
    /// zxcvbn anyway: the measurement behind [`UNSCORED_MARGIN`], on a smaller sample.
    #[rstest]
    #[case(3, 14)]
    #[case(4, 16)]
    fn unscored_generated_passwords_reach_the_score(#[case] score: u8, #[case] length: usize) {
        let rules = PasswordRules {
            min_strength_score: score,
            ..rules_with(length, true)
        };
        assert!(length >= min_generated_length_for_score(score) + UNSCORED_MARGIN);
        for _ in 0..1000 {
            let password = rules.generate();
            assert_eq!(rules.check(&password, &[]), Ok(()));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn every_generated_password_passes_check(
            generated_length in 12usize..64,
            min_length in 8usize..=12,
            min_character_classes in 0usize..=4,
            min_strength_score in 0u8..=4,
            exclude_lookalikes in any::<bool>(),
            banned_words in prop::collection::vec("[a-zA-Z3-9]{4,6}", 0..8),
        ) {
            let rules = PasswordRules {
                min_length,
                max_length: 64,
                min_character_classes,
                min_strength_score,
                banned_words,
                generated_length,
                exclude_lookalikes,
            };
            prop_assert_eq!(rules.validate(), Ok(()));
            let password = rules.generate();
            prop_assert_eq!(password.expose().chars().count(), generated_length);
            prop_assert_eq!(classes_of(password.expose()).len(), 4);
            prop_assert_eq!(rules.check(&password, &[]), Ok(()));
        }
    }
}
