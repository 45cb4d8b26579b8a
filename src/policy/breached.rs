//! The breached-password list: an index built once from a list of SHA-1 hashes in the
//! format Have I Been Pwned publishes, then asked whether a chosen password is listed.
//!
//! # The list
//!
//! One hash a line: 40 hexadecimal digits (the SHA-1 of the password's UTF-8 bytes,
//! upper or lower case), optionally followed by `:COUNT` (how often it was seen; ignored),
//! lines ending in LF or CRLF, blank lines ignored. The lines must be grouped by the
//! hash's first byte, as a list sorted by hash is (Have I Been Pwned's downloads are):
//! that is what lets the index be built one shard at a time, streaming, in the memory of
//! one shard. A line that is not a hash, or a list out of order, stops the build with
//! the line's number.
//!
//! # The index
//!
//! 256 shards, one per first byte of the hash; each a binary fuse filter (`xorf`'s
//! `BinaryFuse16`) over 64-bit keys taken from the next 8 bytes of the hash. A shard
//! with no hash stores nothing. File layout, all integers little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `LBBREACH` |
//! | 8 | 4 | format version (1) |
//! | 12 | 4 | fingerprint bits (16) |
//! | 16 | 4 | shard count (256) |
//! | 20 | 4 | zero |
//! | 24 | 8 | the list's size in bytes when the index was built |
//! | 32 | 8 | the list's modification time then, in nanoseconds since 1970 |
//! | 40 | 8 | distinct hashes indexed |
//! | 48 | 8 | lines read |
//! | 56 | 8 | the index's own size, so a truncated copy is caught |
//! | 64 | 256 × 48 | per shard: fingerprints' offset (8), their length in bytes (8), hashes (8), the filter's descriptor (20), zero (4) |
//! | 12352 | … | fingerprints, each shard's starting on a multiple of 8 |
//!
//! The list's size and modification time tell a stale index from a current one without
//! reading 35 GB; the caller compares them ([`BreachedIndex::is_built_from`]).
//!
//! # Fingerprints: 16 bits, not 8
//!
//! A false positive refuses a good password with "appears in a list of breached
//! passwords". With 8-bit fingerprints that happens to about 1 password in 256 (0.4 %):
//! several refusals a day in a large organisation, each one unexplainable to the user.
//! 16 bits make it about 1 in 65,000 (0.0015 %) for about 18 bits per hash instead of
//! 9: 2 GB of disk instead of 1 GB for the full list of ~900 million hashes, mapped into
//! memory and paged in on demand, so only the pages lookups touch stay resident.
//!
//! This module does no I/O of its own: it reads the list and writes the index through
//! the reader and writer it is given, and looks up in bytes it is given (a memory map,
//! in the daemon); opening and mapping files is the caller's.

use std::io::{BufRead, Seek, SeekFrom, Write};

use sha1::{Digest, Sha1};
use xorf::{BinaryFuse16, BinaryFuse16Ref, DmaSerializable, Filter, FilterRef};
use zeroize::Zeroizing;

use crate::types::Secret;

/// First bytes of every index file.
pub const INDEX_MAGIC: [u8; 8] = *b"LBBREACH";
/// Version of the file layout written by [`build_index`].
pub const INDEX_VERSION: u32 = 1;
/// Shards in an index: one per value of the hash's first byte.
pub const SHARD_COUNT: usize = 256;
/// Bits of each fingerprint, which set the false-positive rate (2^-16).
pub const FINGERPRINT_BITS: u32 = 16;

const HEADER_LEN: usize = 64;
const SHARD_ENTRY_LEN: usize = 48;
const DESCRIPTOR_LEN: usize = 20;
const FINGERPRINTS_START: usize = HEADER_LEN + SHARD_COUNT * SHARD_ENTRY_LEN;
/// Every shard's fingerprints start on a multiple of this, so a page-aligned memory map
/// gives `xorf` the `u16` alignment it requires.
const ALIGNMENT: u64 = 8;
const SHA1_HEX_LEN: usize = 40;

/// What identifies the version of the list an index was built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListStamp {
    /// Size of the list file in bytes.
    pub len: u64,
    /// Its modification time, in nanoseconds since 1970-01-01 UTC.
    pub modified_unix_nanos: u64,
}

/// What [`build_index`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexSummary {
    /// Lines of the list read (blank ones included).
    pub lines: u64,
    /// Distinct hashes indexed.
    pub entries: u64,
    /// Size of the index written.
    pub index_bytes: u64,
}

/// Why a list could not be turned into an index. Line numbers count from 1.
#[derive(Debug, thiserror::Error)]
pub enum BreachedListError {
    #[error(
        "line {line} is not a SHA-1 hash: expected 40 hexadecimal digits, optionally \
         followed by :COUNT (e.g. 7C4A8D09CA3762AF61E59520943DC26494F8941B:24230577)"
    )]
    Malformed { line: u64 },
    #[error(
        "line {line} is out of order: the list must be sorted by hash, as Have I Been \
         Pwned publishes it (sort it with LC_ALL=C sort)"
    )]
    Unsorted { line: u64 },
    #[error("cannot read the list: {0}")]
    Read(std::io::Error),
    #[error("cannot write the index: {0}")]
    Write(std::io::Error),
    #[error(
        "the filter for hashes starting with {shard:02X} could not be built from {keys} hashes"
    )]
    Filter { shard: u8, keys: usize },
}

/// Why bytes are not a usable index.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BreachedIndexError {
    #[error("not a breached-password index (it does not start with LBBREACH)")]
    NotAnIndex,
    #[error(
        "index format version {found}, but this lockbridge reads version {INDEX_VERSION}; \
         build the index again"
    )]
    UnsupportedVersion { found: u32 },
    #[error("the index is damaged ({0}); build it again")]
    Damaged(&'static str),
    #[error("the index is not aligned in memory")]
    Misaligned,
}

/// One shard's place in the index bytes; `len` 0 for a shard with no hash.
#[derive(Debug, Clone, Copy)]
struct ShardView {
    offset: usize,
    len: usize,
    descriptor: [u8; DESCRIPTOR_LEN],
}

/// A breached-password index over bytes in the layout of [`build_index`], usually a
/// read-only memory map of the index file. Lookups read three fingerprints from it.
pub struct BreachedIndex {
    bytes: Box<dyn AsRef<[u8]> + Send + Sync>,
    stamp: ListStamp,
    entries: u64,
    shards: Box<[ShardView]>,
}

impl std::fmt::Debug for BreachedIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreachedIndex")
            .field("stamp", &self.stamp)
            .field("entries", &self.entries)
            .field("bytes", &(*self.bytes).as_ref().len())
            .finish()
    }
}

/// The shard and the filter key of a SHA-1 digest.
fn shard_and_key(digest: &[u8; 20]) -> (usize, u64) {
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[1..9]);
    (usize::from(digest[0]), u64::from_be_bytes(key))
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// The digest on one line of the list (without its line ending), `Ok(None)` for a
/// blank line, `Err(())` for anything else.
fn parse_line(line: &[u8]) -> Result<Option<[u8; 20]>, ()> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if line.len() < SHA1_HEX_LEN {
        return Err(());
    }
    let (hex, rest) = line.split_at(SHA1_HEX_LEN);
    match rest {
        [] => {}
        [b':', count @ ..] if !count.is_empty() && count.iter().all(u8::is_ascii_digit) => {}
        _ => return Err(()),
    }
    let mut digest = [0u8; 20];
    for (byte, pair) in digest.iter_mut().zip(hex.chunks_exact(2)) {
        let high = hex_value(pair[0]).ok_or(())?;
        let low = hex_value(pair[1]).ok_or(())?;
        *byte = high << 4 | low;
    }
    Ok(Some(digest))
}

/// The index being written: where the next fingerprints go and each shard's entry.
struct IndexWriter<W> {
    out: W,
    position: u64,
    table: Vec<u8>,
    entries: u64,
}

impl<W: Write + Seek> IndexWriter<W> {
    /// Writes one shard's filter from its keys (in any order, duplicates allowed).
    fn write_shard(&mut self, shard: usize, keys: &mut Vec<u64>) -> Result<(), BreachedListError> {
        keys.sort_unstable();
        keys.dedup();
        let entry = &mut self.table[shard * SHARD_ENTRY_LEN..(shard + 1) * SHARD_ENTRY_LEN];
        if keys.is_empty() {
            return Ok(());
        }
        let filter =
            BinaryFuse16::try_from(keys.as_slice()).map_err(|_| BreachedListError::Filter {
                shard: u8::try_from(shard).unwrap_or(u8::MAX),
                keys: keys.len(),
            })?;
        let fingerprints = filter.dma_fingerprints();
        entry[0..8].copy_from_slice(&self.position.to_le_bytes());
        entry[8..16].copy_from_slice(&(fingerprints.len() as u64).to_le_bytes());
        entry[16..24].copy_from_slice(&(keys.len() as u64).to_le_bytes());
        filter.dma_copy_descriptor_to(&mut entry[24..24 + DESCRIPTOR_LEN]);
        self.out
            .write_all(fingerprints)
            .map_err(BreachedListError::Write)?;
        self.position += fingerprints.len() as u64;
        let padding = (ALIGNMENT - self.position % ALIGNMENT) % ALIGNMENT;
        self.out
            .write_all(&[0u8; ALIGNMENT as usize][..padding as usize])
            .map_err(BreachedListError::Write)?;
        self.position += padding;
        self.entries += keys.len() as u64;
        keys.clear();
        Ok(())
    }
}

/// Builds the index of `list` into `out`, one shard at a time: memory holds the 64-bit
/// keys of one shard (a 256th of the list) and its filter under construction, so about
/// 100 MB for Have I Been Pwned's full list. `stamp` is recorded so that a later
/// [`BreachedIndex::is_built_from`] can tell whether the list changed since.
/// `progress` is told how many bytes of the list were read so far, now and then.
pub fn build_index<R: BufRead, W: Write + Seek>(
    mut list: R,
    stamp: ListStamp,
    out: W,
    progress: &mut dyn FnMut(u64),
) -> Result<IndexSummary, BreachedListError> {
    let mut writer = IndexWriter {
        out,
        position: FINGERPRINTS_START as u64,
        table: vec![0u8; SHARD_COUNT * SHARD_ENTRY_LEN],
        entries: 0,
    };
    // Header and table are written last, when known; reserve their place.
    writer
        .out
        .write_all(&[0u8; FINGERPRINTS_START])
        .map_err(BreachedListError::Write)?;

    let mut line = Vec::with_capacity(128);
    let mut lines: u64 = 0;
    let mut read: u64 = 0;
    let mut current_shard = 0usize;
    let mut keys: Vec<u64> = Vec::new();
    loop {
        line.clear();
        let n = list
            .read_until(b'\n', &mut line)
            .map_err(BreachedListError::Read)?;
        if n == 0 {
            break;
        }
        lines += 1;
        read += n as u64;
        if lines.is_multiple_of(1_000_000) {
            progress(read);
        }
        let mut text = line.as_slice();
        if lines == 1 {
            text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
        }
        let text = text.strip_suffix(b"\n").unwrap_or(text);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let digest = match parse_line(text) {
            Ok(Some(digest)) => digest,
            Ok(None) => continue,
            Err(()) => return Err(BreachedListError::Malformed { line: lines }),
        };
        let (shard, key) = shard_and_key(&digest);
        if shard < current_shard {
            return Err(BreachedListError::Unsorted { line: lines });
        }
        while current_shard < shard {
            writer.write_shard(current_shard, &mut keys)?;
            current_shard += 1;
        }
        keys.push(key);
    }
    while current_shard < SHARD_COUNT {
        writer.write_shard(current_shard, &mut keys)?;
        current_shard += 1;
    }
    progress(read);

    let index_bytes = writer.position;
    let mut header = [0u8; HEADER_LEN];
    header[0..8].copy_from_slice(&INDEX_MAGIC);
    header[8..12].copy_from_slice(&INDEX_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&FINGERPRINT_BITS.to_le_bytes());
    header[16..20].copy_from_slice(&(SHARD_COUNT as u32).to_le_bytes());
    header[24..32].copy_from_slice(&stamp.len.to_le_bytes());
    header[32..40].copy_from_slice(&stamp.modified_unix_nanos.to_le_bytes());
    header[40..48].copy_from_slice(&writer.entries.to_le_bytes());
    header[48..56].copy_from_slice(&lines.to_le_bytes());
    header[56..64].copy_from_slice(&index_bytes.to_le_bytes());
    let out = &mut writer.out;
    out.seek(SeekFrom::Start(0))
        .and_then(|_| out.write_all(&header))
        .and_then(|()| out.write_all(&writer.table))
        .and_then(|()| out.flush())
        .map_err(BreachedListError::Write)?;
    Ok(IndexSummary {
        lines,
        entries: writer.entries,
        index_bytes,
    })
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Whether `xorf` can look up in `len` bytes of fingerprints with this descriptor
/// without indexing past them, whatever the key: the largest position it reads is
/// below `segment_count_length + 2 * segment_length`.
fn descriptor_fits(descriptor: &[u8; DESCRIPTOR_LEN], len: usize) -> bool {
    let segment_length = u64::from(read_u32(descriptor, 8));
    let segment_length_mask = u64::from(read_u32(descriptor, 12));
    let segment_count_length = u64::from(read_u32(descriptor, 16));
    let fingerprints = (len / 2) as u64;
    segment_length.is_power_of_two()
        && segment_length_mask == segment_length - 1
        && segment_count_length.is_multiple_of(segment_length)
        && segment_count_length + 2 * segment_length <= fingerprints.min(u64::from(u32::MAX))
}

impl BreachedIndex {
    /// Checks `bytes` (the header, every shard's bounds and descriptor) so that no
    /// lookup can read outside them, and returns the index over them.
    pub fn from_bytes(
        bytes: Box<dyn AsRef<[u8]> + Send + Sync>,
    ) -> Result<Self, BreachedIndexError> {
        let data = (*bytes).as_ref();
        if data.len() < 8 || data[0..8] != INDEX_MAGIC {
            return Err(BreachedIndexError::NotAnIndex);
        }
        if data.len() < FINGERPRINTS_START {
            return Err(BreachedIndexError::Damaged("shorter than its header"));
        }
        let version = read_u32(data, 8);
        if version != INDEX_VERSION {
            return Err(BreachedIndexError::UnsupportedVersion { found: version });
        }
        if read_u32(data, 12) != FINGERPRINT_BITS || read_u32(data, 16) as usize != SHARD_COUNT {
            return Err(BreachedIndexError::Damaged(
                "unexpected fingerprint size or shard count",
            ));
        }
        if read_u64(data, 56) != data.len() as u64 {
            return Err(BreachedIndexError::Damaged(
                "its size differs from the one recorded",
            ));
        }
        if data.as_ptr().align_offset(ALIGNMENT as usize) != 0 {
            return Err(BreachedIndexError::Misaligned);
        }
        let mut shards = Vec::with_capacity(SHARD_COUNT);
        for shard in 0..SHARD_COUNT {
            let entry = &data[HEADER_LEN + shard * SHARD_ENTRY_LEN..][..SHARD_ENTRY_LEN];
            let offset = read_u64(entry, 0);
            let len = read_u64(entry, 8);
            let mut descriptor = [0u8; DESCRIPTOR_LEN];
            descriptor.copy_from_slice(&entry[24..24 + DESCRIPTOR_LEN]);
            if len == 0 {
                shards.push(ShardView {
                    offset: 0,
                    len: 0,
                    descriptor,
                });
                continue;
            }
            let in_bounds = offset >= FINGERPRINTS_START as u64
                && offset.is_multiple_of(ALIGNMENT)
                && len.is_multiple_of(2)
                && offset
                    .checked_add(len)
                    .is_some_and(|end| end <= data.len() as u64);
            let (Ok(offset), Ok(len)) = (usize::try_from(offset), usize::try_from(len)) else {
                return Err(BreachedIndexError::Damaged("a shard lies outside the file"));
            };
            if !in_bounds {
                return Err(BreachedIndexError::Damaged("a shard lies outside the file"));
            }
            if !descriptor_fits(&descriptor, len) {
                return Err(BreachedIndexError::Damaged(
                    "a shard's filter does not fit its fingerprints",
                ));
            }
            shards.push(ShardView {
                offset,
                len,
                descriptor,
            });
        }
        Ok(Self {
            stamp: ListStamp {
                len: read_u64(data, 24),
                modified_unix_nanos: read_u64(data, 32),
            },
            entries: read_u64(data, 40),
            shards: shards.into_boxed_slice(),
            bytes,
        })
    }

    /// The list's size and modification time when this index was built.
    pub fn stamp(&self) -> ListStamp {
        self.stamp
    }

    /// Whether this index was built from the list as it is now (same size and time).
    pub fn is_built_from(&self, list: ListStamp) -> bool {
        self.stamp == list
    }

    /// Distinct hashes indexed.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Whether the SHA-1 digest `digest` is (probably: see the false-positive rate in
    /// the module's documentation) in the list. Never wrong about a listed hash.
    pub fn contains_sha1(&self, digest: &[u8; 20]) -> bool {
        let (shard, key) = shard_and_key(digest);
        let view = self.shards[shard];
        if view.len == 0 {
            return false;
        }
        let fingerprints = &(*self.bytes).as_ref()[view.offset..view.offset + view.len];
        // Cannot panic: alignment, bounds and descriptor were checked in `from_bytes`.
        BinaryFuse16Ref::from_dma(&view.descriptor, fingerprints).contains(&key)
    }

    /// Whether `password` is in the list: its SHA-1 (of the UTF-8 bytes, as Have I
    /// Been Pwned hashes) looked up.
    pub fn contains(&self, password: &Secret) -> bool {
        let mut digest = Zeroizing::new([0u8; 20]);
        digest.copy_from_slice(&Sha1::digest(password.expose().as_bytes()));
        self.contains_sha1(&digest)
    }
}

#[cfg(test)]
mod tests;
