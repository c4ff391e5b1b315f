//! The ticket set: what the mounted Secret lists, as SHA-256 digests.
//!
//! Held as one sorted `Vec<[u8; 32]>` searched by interpolation: 32 bytes a ticket and no
//! per-entry allocation, so a million tickets take 32 MB. Files are streamed line by line,
//! never read whole, so a load never holds a file and the set at once.
//!
//! `FALLBACK_TICKETS_PATH` is a file or a directory. A directory means every regular file in
//! it (following symlinks, skipping names that start with `.`). When it holds a kubelet
//! `..data` symlink, that symlink is resolved once and the files are read inside its target:
//! kubelet publishes a Secret update by writing a new timestamped directory and swapping
//! `..data`, so reading through one resolution sees one whole version, never half of two.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{PoolStatus, TicketDigest};

/// Longest line accepted, in bytes. A line is a ticket or a digest; anything longer is a
/// broken file, and the bound keeps a file without newlines from growing a buffer unbounded.
pub const MAX_LINE_BYTES: usize = 4096;

/// Prefix of a line that holds the digest of a ticket instead of the ticket.
const DIGEST_PREFIX: &[u8] = b"sha256:";

/// The tickets of one version of the Secret. Immutable: a reload builds a new one.
#[derive(Clone, Default)]
pub struct TicketSet {
    /// Sorted and without duplicates.
    digests: Vec<[u8; 32]>,
}

impl TicketSet {
    /// Builds a set from digests in any order, with duplicates.
    pub fn from_digests(mut digests: Vec<[u8; 32]>) -> Self {
        digests.sort_unstable();
        digests.dedup();
        digests.shrink_to_fit();
        Self { digests }
    }

    pub fn contains(&self, digest: &TicketDigest) -> bool {
        let key = digest.as_bytes();
        let digests = &self.digests;
        // SHA-256 digests are spread evenly over the key space, so where a digest's first
        // eight bytes fall between those of a range's ends says where in the range it sits.
        // Interpolating narrows a million digests to a handful in about four probes, where
        // bisection makes twenty scattered ones, each a cache miss. After INTERPOLATIONS
        // probes (a set that is not even) bisection finishes the search, so it stays O(log n).
        const INTERPOLATIONS: usize = 6;
        let (mut lo, mut hi) = (0, digests.len());
        for _ in 0..INTERPOLATIONS {
            if hi - lo < 8 {
                break;
            }
            let (first, last) = (&digests[lo], &digests[hi - 1]);
            if key < first || key > last {
                return false;
            }
            let (low, high, at) = (prefix(first), prefix(last), prefix(key));
            // Equal prefixes at both ends: nothing to interpolate on.
            let Some(span) = high.checked_sub(low).filter(|span| *span > 0) else {
                break;
            };
            let offset = u128::from(at - low) * (hi - 1 - lo) as u128 / u128::from(span);
            // At most hi - 1 - lo, since at <= high.
            let probe = lo + usize::try_from(offset).unwrap_or(hi - 1 - lo);
            match digests[probe].cmp(key) {
                std::cmp::Ordering::Equal => return true,
                std::cmp::Ordering::Less => lo = probe + 1,
                std::cmp::Ordering::Greater => hi = probe,
            }
        }
        digests[lo..hi].binary_search(key).is_ok()
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = TicketDigest> + '_ {
        self.digests.iter().map(|d| TicketDigest::from_bytes(*d))
    }

    /// A short hash of the set's content (12 hex digits): equal sets, equal generations,
    /// however their files were laid out.
    pub fn generation(&self) -> String {
        let mut hasher = Sha256::new();
        for digest in &self.digests {
            hasher.update(digest);
        }
        hex::encode(&hasher.finalize()[..6])
    }
}

/// A digest's first eight bytes, as a number in the digests' sort order.
fn prefix(digest: &[u8; 32]) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(head)
}

impl std::fmt::Debug for TicketSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TicketSet({} tickets)", self.len())
    }
}

/// Why a path gave no set. The reason is short and never holds file content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The path does not exist.
    #[error("missing: {0}")]
    Missing(String),
    /// The path (or a file under it) could not be read, or a line is malformed.
    #[error("unreadable: {0}")]
    Unreadable(String),
}

impl LoadError {
    pub fn status(&self) -> PoolStatus {
        match self {
            Self::Missing(_) => PoolStatus::Missing,
            Self::Unreadable(_) => PoolStatus::Unreadable,
        }
    }
}

/// A load: the set, and the fingerprint of the bytes it was read from.
#[derive(Debug)]
pub struct Loaded {
    pub set: TicketSet,
    pub fingerprint: Fingerprint,
}

/// SHA-256 over the raw bytes (and names) of every file read. A reload that finds the same
/// fingerprint skips parsing and hashing every ticket again.
pub type Fingerprint = [u8; 32];

/// The most entries reserved from a file's size (128 MiB of digests): a larger file still
/// loads, growing as it is read.
const RESERVE_CAP: usize = 1 << 22;

/// Reads the set at `path`.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let mut digests = Vec::new();
    let mut raw = Sha256::new();
    visit(path, &mut raw, |name, reader, raw| {
        // A line per 32-character ticket: reserving for that up front spares a million-entry
        // vector its doubling copies, whose old and new buffers would both count in the peak.
        if let Ok(meta) = reader.get_ref().metadata() {
            let lines = usize::try_from(meta.len() / 33).unwrap_or(usize::MAX);
            digests.reserve(lines.min(RESERVE_CAP));
        }
        read_tickets(name, reader, raw, &mut digests)
    })?;
    Ok(Loaded {
        set: TicketSet::from_digests(digests),
        fingerprint: raw.finalize().into(),
    })
}

/// Only the fingerprint of what `load` would read: one streaming pass, no parsing.
pub fn fingerprint(path: &Path) -> Result<Fingerprint, LoadError> {
    let mut raw = Sha256::new();
    visit(path, &mut raw, |name, reader, raw| {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => raw.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(unreadable_in(name, &e)),
            }
        }
    })?;
    Ok(raw.finalize().into())
}

/// Opens every source file of `path` in a stable order and hands each to `on_file`, with
/// its name and length folded into the fingerprint so that moving lines between files or
/// renaming a file counts as a change.
fn visit(
    path: &Path,
    raw: &mut Sha256,
    mut on_file: impl FnMut(&str, &mut BufReader<File>, &mut Sha256) -> Result<(), LoadError>,
) -> Result<(), LoadError> {
    for (name, source) in sources(path)? {
        let file = File::open(&source).map_err(|e| unreadable_in(&name, &e))?;
        raw.update((name.len() as u64).to_le_bytes());
        raw.update(name.as_bytes());
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        on_file(&name, &mut reader, raw)?;
        raw.update([0xff]);
    }
    Ok(())
}

/// The files to read, each with the name used in error reasons, resolved once.
fn sources(path: &Path) -> Result<Vec<(String, PathBuf)>, LoadError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => LoadError::Missing("not found".to_owned()),
        kind => LoadError::Unreadable(kind.to_string()),
    })?;
    if meta.is_file() {
        // Resolve a symlinked file (a Secret key) once, so one read sees one version.
        let resolved = std::fs::canonicalize(path).map_err(|e| unreadable_in("", &e))?;
        return Ok(vec![(String::new(), resolved)]);
    }
    if !meta.is_dir() {
        return Err(LoadError::Unreadable(
            "not a regular file or directory".to_owned(),
        ));
    }
    let data = path.join("..data");
    let base = if std::fs::symlink_metadata(&data).is_ok() {
        std::fs::canonicalize(&data).map_err(|e| unreadable_in("..data", &e))?
    } else {
        path.to_path_buf()
    };
    let entries = std::fs::read_dir(&base).map_err(|e| unreadable_in("", &e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| unreadable_in("", &e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        // `metadata` follows symlinks: a link to a regular file is a source. A dangling link
        // is an error rather than a silent skip, so a half-removed mount keeps the last set.
        let meta = std::fs::metadata(entry.path()).map_err(|e| unreadable_in(&name, &e))?;
        if meta.is_file() {
            let resolved =
                std::fs::canonicalize(entry.path()).map_err(|e| unreadable_in(&name, &e))?;
            files.push((name, resolved));
        }
    }
    files.sort();
    Ok(files)
}

fn unreadable_in(name: &str, e: &io::Error) -> LoadError {
    if name.is_empty() {
        LoadError::Unreadable(e.kind().to_string())
    } else {
        LoadError::Unreadable(format!("{name}: {}", e.kind()))
    }
}

/// A ticket list given as bytes, parsed exactly as a file is (the fuzzers and `check-config`
/// style checks use it).
pub fn parse(bytes: &[u8]) -> Result<TicketSet, LoadError> {
    let mut digests = Vec::new();
    read_tickets("", &mut &bytes[..], &mut Sha256::new(), &mut digests)?;
    Ok(TicketSet::from_digests(digests))
}

/// Streams one file's lines into `digests`.
fn read_tickets(
    name: &str,
    reader: &mut impl BufRead,
    raw: &mut Sha256,
    digests: &mut Vec<[u8; 32]>,
) -> Result<(), LoadError> {
    let mut line = Vec::with_capacity(128);
    let mut number = 0usize;
    let limit = u64::try_from(MAX_LINE_BYTES + 1).unwrap_or(u64::MAX);
    loop {
        line.clear();
        let read = reader
            .by_ref()
            .take(limit)
            .read_until(b'\n', &mut line)
            .map_err(|e| unreadable_in(name, &e))?;
        if read == 0 {
            return Ok(());
        }
        number += 1;
        raw.update(&line);
        if line.len() > MAX_LINE_BYTES && line.last() != Some(&b'\n') {
            return Err(line_error(
                name,
                number,
                &format!("longer than {MAX_LINE_BYTES} bytes"),
            ));
        }
        match parse_line(&line) {
            Ok(Some(digest)) => digests.push(digest),
            Ok(None) => {}
            Err(problem) => return Err(line_error(name, number, problem)),
        }
    }
}

fn line_error(name: &str, number: usize, problem: &str) -> LoadError {
    let place = if name.is_empty() {
        format!("line {number}")
    } else {
        format!("{name} line {number}")
    };
    LoadError::Unreadable(format!("{place}: {problem}"))
}

/// One line: surrounding whitespace (a trailing newline, CRLF) ignored, blank lines skipped,
/// `sha256:<64 hex>` taken as the digest of a ticket, anything else as a ticket.
fn parse_line(line: &[u8]) -> Result<Option<[u8; 32]>, &'static str> {
    let line = line.trim_ascii();
    if line.is_empty() {
        return Ok(None);
    }
    match line.strip_prefix(DIGEST_PREFIX) {
        Some(hex_digits) => TicketDigest::from_hex(hex_digits)
            .map(|d| Some(*d.as_bytes()))
            .ok_or("malformed sha256: line (needs 64 hex digits)"),
        None => Ok(Some(*TicketDigest::of(line).as_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::fs::symlink;

    proptest! {
        /// The interpolating search agrees with a plain bisection, for real digests and for sets
        /// bunched into one corner of the key space (which SHA-256 never gives, but the search
        /// must still be right on).
        #[test]
        fn contains_agrees_with_bisection(
            tickets in proptest::collection::vec(any::<u32>(), 0..300),
            probes in proptest::collection::vec(any::<u32>(), 1..60),
            bunched in any::<bool>(),
        ) {
            let shape = |n: u32| -> [u8; 32] {
                let mut d = *TicketDigest::of(&n.to_le_bytes()).as_bytes();
                if bunched {
                    // Everything in a narrow band near the top or the bottom.
                    d[..6].fill(if n.is_multiple_of(2) { 0xff } else { 0x00 });
                }
                d
            };
            let digests: Vec<[u8; 32]> = tickets.iter().map(|&n| shape(n)).collect();
            let set = TicketSet::from_digests(digests.clone());
            let mut sorted = digests;
            sorted.sort_unstable();
            for n in probes.iter().chain(tickets.iter()) {
                let d = shape(*n);
                prop_assert_eq!(
                    set.contains(&TicketDigest::from_bytes(d)),
                    sorted.binary_search(&d).is_ok()
                );
            }
        }
    }

    fn digest(ticket: &str) -> TicketDigest {
        TicketDigest::of(ticket.as_bytes())
    }

    #[test]
    fn lines_are_trimmed_blank_skipped_and_deduplicated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tickets");
        std::fs::write(&file, "  a \r\n\nb\n\t\na\nc").expect("write");
        let set = load(&file).expect("load").set;
        assert_eq!(set.len(), 3);
        assert!(set.contains(&digest("a")) && set.contains(&digest("b")));
        assert!(set.contains(&digest("c")));
        assert!(!set.contains(&digest("d")));
    }

    #[test]
    fn sha256_lines_match_their_tickets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("digests");
        let upper = hex::encode(digest("second").as_bytes()).to_uppercase();
        std::fs::write(
            &file,
            format!(
                "sha256:{}\r\nsha256:{upper}\n",
                hex::encode(digest("first").as_bytes())
            ),
        )
        .expect("write");
        let set = load(&file).expect("load").set;
        assert_eq!(set.len(), 2);
        assert!(set.contains(&digest("first")) && set.contains(&digest("second")));
        // A line naming a digest is not itself a ticket.
        assert!(!set.contains(&digest(&format!("sha256:{upper}"))));
    }

    #[test]
    fn malformed_digest_lines_and_overlong_lines_are_errors_without_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("t");
        std::fs::write(&file, "ok\nsha256:abcd-secretish\n").expect("write");
        let err = load(&file).expect_err("malformed");
        assert_eq!(err.status(), PoolStatus::Unreadable);
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(!err.to_string().contains("secretish"), "{err}");
        std::fs::write(&file, "x".repeat(MAX_LINE_BYTES + 10)).expect("write");
        assert!(load(&file)
            .expect_err("too long")
            .to_string()
            .contains("longer"));
        std::fs::write(&file, format!("{}\n", "x".repeat(MAX_LINE_BYTES))).expect("write");
        assert_eq!(load(&file).expect("at the limit").set.len(), 1);
    }

    #[test]
    fn a_directory_is_every_regular_file_skipping_dot_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("one"), "a\nb\n").expect("write");
        std::fs::write(d.join("two"), "b\nc\n").expect("write");
        std::fs::write(d.join(".hidden"), "h\n").expect("write");
        std::fs::create_dir(d.join("sub")).expect("mkdir");
        std::fs::write(d.join("sub/three"), "s\n").expect("write");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("linked"), "l\n").expect("write");
        symlink(outside.path().join("linked"), d.join("link")).expect("symlink");
        let set = load(d).expect("load").set;
        let mut expected: Vec<_> = ["a", "b", "c", "l"].iter().map(|t| digest(t)).collect();
        expected.sort_by_key(|d| *d.as_bytes());
        assert_eq!(set.iter().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn kubelet_layout_is_read_through_one_resolution_of_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir(d.join("..2026_01")).expect("mkdir");
        std::fs::write(d.join("..2026_01/tickets"), "v1\n").expect("write");
        symlink("..2026_01", d.join("..data")).expect("symlink");
        symlink("..data/tickets", d.join("tickets")).expect("symlink");
        let first = load(d).expect("load");
        assert!(first.set.contains(&digest("v1")));
        // A file only in the top directory is not part of any published version.
        std::fs::write(d.join("stray"), "stray\n").expect("write");
        let again = load(d).expect("load");
        assert!(!again.set.contains(&digest("stray")));
        assert_eq!(again.fingerprint, first.fingerprint);
    }

    #[test]
    fn missing_unreadable_and_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = load(&dir.path().join("nope")).expect_err("missing");
        assert_eq!(missing.status(), PoolStatus::Missing);
        // A path through a regular file fails with ENOTDIR, for root too (unlike mode 000).
        let file = dir.path().join("file");
        std::fs::write(&file, "t\n").expect("write");
        let err = load(&file.join("below")).expect_err("unreadable");
        assert_eq!(err.status(), PoolStatus::Unreadable);
        let dangling = tempfile::tempdir().expect("tempdir");
        symlink("/nonexistent/target", dangling.path().join("gone")).expect("symlink");
        let err = load(dangling.path()).expect_err("dangling link");
        assert_eq!(
            err,
            LoadError::Unreadable("gone: entity not found".to_owned())
        );
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n \r\n").expect("write");
        let loaded = load(&empty).expect("load");
        assert!(loaded.set.is_empty());
        assert_eq!(loaded.set.generation(), TicketSet::default().generation());
    }

    #[test]
    fn generation_follows_content_not_layout_and_fingerprint_follows_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("t");
        std::fs::write(&file, "a\nb\n").expect("write");
        let first = load(&file).expect("load");
        assert_eq!(fingerprint(&file).expect("fingerprint"), first.fingerprint);
        std::fs::write(&file, "b\r\n\na\n").expect("write");
        let second = load(&file).expect("load");
        assert_eq!(first.set.generation(), second.set.generation());
        assert_ne!(first.fingerprint, second.fingerprint);
        assert_eq!(first.set.generation().len(), 12);
        std::fs::write(&file, "a\nb\nc\n").expect("write");
        assert_ne!(
            load(&file).expect("load").set.generation(),
            first.set.generation()
        );
    }
}
