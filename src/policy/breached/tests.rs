use std::io::Cursor;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use sha1::{Digest, Sha1};

use super::*;

const STAMP: ListStamp = ListStamp {
    len: 1234,
    modified_unix_nanos: 1_700_000_000_000_000_000,
};

fn sha1(password: &str) -> [u8; 20] {
    Sha1::digest(password.as_bytes()).into()
}

fn hex_upper(digest: &[u8; 20]) -> String {
    hex::encode_upper(digest)
}

/// A list in Have I Been Pwned's format (sorted, `HASH:COUNT`, CRLF) of these digests.
fn hibp_list(digests: &[[u8; 20]]) -> String {
    let mut sorted = digests.to_vec();
    sorted.sort_unstable();
    sorted
        .iter()
        .enumerate()
        .map(|(i, d)| format!("{}:{}\r\n", hex_upper(d), i + 1))
        .collect()
}

fn random_digests(count: usize, seed: u64) -> Vec<[u8; 20]> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..count).map(|_| rng.r#gen()).collect()
}

fn build(list: &str) -> Result<(IndexSummary, Vec<u8>), BreachedListError> {
    let mut out = Cursor::new(Vec::new());
    let summary = build_index(list.as_bytes(), STAMP, &mut out, &mut |_| {})?;
    Ok((summary, out.into_inner()))
}

fn open(bytes: Vec<u8>) -> Result<BreachedIndex, BreachedIndexError> {
    BreachedIndex::from_bytes(Box::new(bytes))
}

fn index_of(list: &str) -> BreachedIndex {
    let (_, bytes) = build(list).expect("build");
    open(bytes).expect("open")
}

#[test]
fn every_listed_hash_is_found_and_few_others_are() {
    let mut digests = random_digests(5000, 1);
    digests.push(sha1("Password1!"));
    digests.push(sha1("Summer2024!"));
    let (summary, bytes) = build(&hibp_list(&digests)).expect("build");
    assert_eq!(summary.entries, 5002);
    assert_eq!(summary.lines, 5002);
    assert_eq!(summary.index_bytes, bytes.len() as u64);
    let index = open(bytes).expect("open");
    assert_eq!(index.entries(), 5002);
    for digest in &digests {
        assert!(index.contains_sha1(digest));
    }
    assert!(index.contains(&Secret::new("Password1!")));
    assert!(index.contains(&Secret::new("Summer2024!")));
    assert!(!index.contains(&Secret::new("Tangerine Voyage Lantern 7")));

    // 2^-16 expected: about 3 of 200,000; allow for chance and small shards.
    let absent = random_digests(200_000, 2);
    let false_positives = absent.iter().filter(|d| index.contains_sha1(d)).count();
    assert!(false_positives <= 30, "{false_positives} false positives");
}

#[test]
fn counts_are_optional_and_case_and_line_endings_do_not_matter() {
    let digests = [sha1("Password1!"), sha1("Summer2024!"), sha1("letmein")];
    let mut sorted = digests;
    sorted.sort_unstable();
    let list = format!(
        "\u{feff}{}\n{}:3\r\n\n{}",
        hex::encode(sorted[0]),
        hex_upper(&sorted[1]),
        hex_upper(&sorted[2])
    );
    let (summary, bytes) = build(&list).expect("build");
    assert_eq!((summary.lines, summary.entries), (4, 3));
    let index = open(bytes).expect("open");
    for digest in &digests {
        assert!(index.contains_sha1(digest));
    }
}

#[test]
fn a_hash_listed_twice_is_indexed_once() {
    let digest = sha1("Password1!");
    let list = format!("{0}:1\n{0}:2\n", hex_upper(&digest));
    let index = index_of(&list);
    assert_eq!(index.entries(), 1);
    assert!(index.contains_sha1(&digest));
}

#[test]
fn empty_shards_store_nothing_and_find_nothing() {
    // Only the first and the last shard have hashes, one of them a single one.
    let mut low = random_digests(50, 3);
    for d in &mut low {
        d[0] = 0x00;
    }
    let mut high = [0xAB; 20];
    high[0] = 0xFF;
    low.push(high);
    let (_, bytes) = build(&hibp_list(&low)).expect("build");
    let index = open(bytes.clone()).expect("open");
    for digest in &low {
        assert!(index.contains_sha1(digest));
    }
    let elsewhere = random_digests(10_000, 4);
    assert!(
        elsewhere
            .iter()
            .filter(|d| d[0] != 0x00 && d[0] != 0xFF)
            .all(|d| !index.contains_sha1(d))
    );
    // 254 empty shards cost their table entries only.
    assert!(bytes.len() < FINGERPRINTS_START + 4096, "{}", bytes.len());

    let empty = index_of("");
    assert_eq!(empty.entries(), 0);
    assert!(!empty.contains(&Secret::new("Password1!")));
}

#[test]
fn staleness_is_told_by_the_lists_size_and_time() {
    let index = index_of(&hibp_list(&[sha1("Password1!")]));
    assert_eq!(index.stamp(), STAMP);
    assert!(index.is_built_from(STAMP));
    assert!(!index.is_built_from(ListStamp {
        len: STAMP.len + 1,
        ..STAMP
    }));
    assert!(!index.is_built_from(ListStamp {
        modified_unix_nanos: STAMP.modified_unix_nanos + 1,
        ..STAMP
    }));
}

#[rstest::rstest]
#[case::too_short("7C4A8D09CA3762AF61E59520943DC26494F894")]
#[case::not_hex("7C4A8D09CA3762AF61E59520943DC26494F8941G:1")]
#[case::colon_without_count("7C4A8D09CA3762AF61E59520943DC26494F8941B:")]
#[case::count_not_a_number("7C4A8D09CA3762AF61E59520943DC26494F8941B:12x")]
#[case::too_long("7C4A8D09CA3762AF61E59520943DC26494F8941B0")]
#[case::trailing_space("7C4A8D09CA3762AF61E59520943DC26494F8941B ")]
#[case::a_password_not_its_hash("Password1!")]
fn a_malformed_line_is_named_by_its_number(#[case] bad: &str) {
    let list = format!(
        "0000000000000000000000000000000000000001:5\r\n{bad}\r\nFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF:1\r\n"
    );
    let error = build(&list).expect_err("malformed");
    assert!(
        matches!(error, BreachedListError::Malformed { line: 2 }),
        "{error:?}"
    );
    assert!(
        error.to_string().starts_with("line 2 is not a SHA-1 hash"),
        "{error}"
    );
}

#[test]
fn a_list_out_of_order_is_refused_at_the_first_line_out_of_place() {
    let list = "\
        1000000000000000000000000000000000000000:1\n\
        2000000000000000000000000000000000000000:1\n\
        1100000000000000000000000000000000000000:1\n";
    let error = build(list).expect_err("unsorted");
    assert!(
        matches!(error, BreachedListError::Unsorted { line: 3 }),
        "{error:?}"
    );
}

#[test]
fn progress_ends_with_every_byte_read() {
    let list = hibp_list(&random_digests(100, 5));
    let mut last = 0;
    build_index(
        list.as_bytes(),
        STAMP,
        Cursor::new(Vec::new()),
        &mut |read| last = read,
    )
    .expect("build");
    assert_eq!(last, list.len() as u64);
}

#[test]
fn damaged_indexes_are_refused_not_trusted() {
    let (_, bytes) = build(&hibp_list(&random_digests(2000, 6))).expect("build");

    assert_eq!(
        open(b"0123456789".to_vec()).err(),
        Some(BreachedIndexError::NotAnIndex)
    );
    let mut truncated = bytes.clone();
    truncated.truncate(bytes.len() - 2);
    assert!(matches!(
        open(truncated),
        Err(BreachedIndexError::Damaged(_))
    ));

    let mut newer = bytes.clone();
    newer[8] = 2;
    assert_eq!(
        open(newer).err(),
        Some(BreachedIndexError::UnsupportedVersion { found: 2 })
    );

    // A first shard whose descriptor claims more fingerprints than it has.
    let mut overstated = bytes;
    let descriptor = HEADER_LEN + 24;
    overstated[descriptor + 16..descriptor + 20].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        open(overstated),
        Err(BreachedIndexError::Damaged(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_set_of_hashes_is_found_entirely(
        digests in prop::collection::vec(any::<[u8; 20]>(), 0..300),
    ) {
        let index = index_of(&hibp_list(&digests));
        for digest in &digests {
            prop_assert!(index.contains_sha1(digest));
        }
    }

    #[test]
    fn a_flipped_byte_in_the_header_or_table_never_panics(
        at in 0usize..FINGERPRINTS_START,
        value in any::<u8>(),
        probes in prop::collection::vec(any::<[u8; 20]>(), 50),
    ) {
        let (_, mut bytes) = build(&hibp_list(&random_digests(3000, 7))).expect("build");
        bytes[at] = value;
        if let Ok(index) = open(bytes) {
            for probe in &probes {
                let _ = index.contains_sha1(probe);
            }
        }
    }
}
