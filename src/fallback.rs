//! The static fallback pool: single-use tickets mounted from a Kubernetes Secret, accepted
//! only while identity-service has been unreachable for longer than the degraded window.
//!
//! The pool is loaded once at startup and held as SHA-256 digests, so a heap dump or a
//! debug print never reveals a usable ticket. Taking a ticket is one locked step, which is
//! what makes "single use" hold under any concurrency. The pool is per process: a restart
//! reloads the file and so makes consumed tickets valid again (see the README).

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// How the pool file was found at startup. Spelled as in `/health` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolStatus {
    /// `FALLBACK_TICKETS_PATH` is empty: no fallback path at all.
    Disabled,
    Loaded,
    /// The file does not exist (ENOENT).
    Missing,
    /// The file exists but could not be read (permissions, a directory, I/O error).
    Unreadable,
    /// The file was read but holds no ticket.
    Empty,
}

impl PoolStatus {
    pub const ALL: &'static [Self] = &[
        Self::Disabled,
        Self::Loaded,
        Self::Missing,
        Self::Unreadable,
        Self::Empty,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Loaded => "loaded",
            Self::Missing => "missing",
            Self::Unreadable => "unreadable",
            Self::Empty => "empty",
        }
    }
}

/// SHA-256 of a ticket. Its short hex form names a fallback user without revealing the ticket.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TicketDigest([u8; 32]);

impl TicketDigest {
    pub fn of(ticket: &[u8]) -> Self {
        Self(Sha256::digest(ticket).into())
    }

    /// First 12 hex digits: enough to tell connections apart in logs, useless to an attacker.
    pub fn short_hex(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Debug for TicketDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TicketDigest({}…)", self.short_hex())
    }
}

/// Cheap-to-clone handle to the pool.
#[derive(Clone)]
pub struct TicketPool {
    inner: Arc<Inner>,
}

struct Inner {
    // A std Mutex: the critical section is one hash-set removal, never held across `.await`.
    tickets: Mutex<HashSet<TicketDigest>>,
    status: PoolStatus,
    low_watermark: usize,
}

/// Result of `take`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// The ticket was in the pool and is now gone for good (in this process).
    Taken {
        remaining: usize,
    },
    NotInPool,
    /// In the set, but already consumed (by this process or, with a shared ledger, another).
    Reused,
    /// The consumed-ticket ledger could not record the claim: the caller fails closed.
    LedgerUnavailable,
}

impl TicketPool {
    /// No pool (`FALLBACK_TICKETS_PATH` empty).
    pub fn disabled() -> Self {
        Self::from_parts(HashSet::new(), PoolStatus::Disabled, 0)
    }

    /// Loads the pool file. Never fails: a missing or unreadable file is a status (and a WARN),
    /// because the service must still start and serve while identity-service is up.
    pub fn load(path: Option<&Path>, low_watermark: usize) -> Self {
        let Some(path) = path else {
            return Self::disabled();
        };
        let (tickets, status) = match std::fs::read(path) {
            Ok(bytes) => {
                let tickets = parse_tickets(&bytes);
                let status = if tickets.is_empty() {
                    tracing::warn!(path = %path.display(), "fallback ticket file holds no ticket");
                    PoolStatus::Empty
                } else {
                    PoolStatus::Loaded
                };
                (tickets, status)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(path = %path.display(), "fallback ticket file is missing; the pool is empty");
                (HashSet::new(), PoolStatus::Missing)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "fallback ticket file is unreadable; the pool is empty");
                (HashSet::new(), PoolStatus::Unreadable)
            }
        };
        let pool = Self::from_parts(tickets, status, low_watermark);
        let size = pool.len();
        if low_watermark > 0 && size < low_watermark {
            tracing::warn!(
                size,
                low_watermark,
                "fallback pool starts below its low watermark"
            );
        }
        tracing::info!(status = status.as_str(), size, "fallback pool loaded");
        pool
    }

    fn from_parts(
        tickets: HashSet<TicketDigest>,
        status: PoolStatus,
        low_watermark: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                tickets: Mutex::new(tickets),
                status,
                low_watermark,
            }),
        }
    }

    pub fn status(&self) -> PoolStatus {
        self.inner.status
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes the ticket if present: the one atomic step that makes tickets single use.
    pub fn take(&self, digest: &TicketDigest) -> Take {
        let remaining = {
            let mut tickets = self.lock();
            if !tickets.remove(digest) {
                return Take::NotInPool;
            }
            tickets.len()
        };
        // Exactly one take moves the size from `low_watermark` to below it, so this warns once.
        if self.inner.low_watermark > 0 && remaining + 1 == self.inner.low_watermark {
            tracing::warn!(
                remaining,
                low_watermark = self.inner.low_watermark,
                "fallback pool fell below its low watermark; rotate in fresh tickets"
            );
        }
        Take::Taken { remaining }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<TicketDigest>> {
        // A poisoned lock only means another thread panicked mid-`remove`; the set is intact.
        self.inner
            .tickets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One ticket per line; surrounding whitespace (a Secret's trailing newline, CRLF) and blank
/// lines are ignored; duplicates count once.
pub(crate) fn parse_tickets(bytes: &[u8]) -> HashSet<TicketDigest> {
    bytes
        .split(|b| *b == b'\n')
        .map(<[u8]>::trim_ascii)
        .filter(|line| !line.is_empty())
        .map(TicketDigest::of)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(contents: &[u8]) -> tempfile_like::TempFile {
        tempfile_like::TempFile::new(contents)
    }

    /// A tiny temp-file helper so tests need no extra crate.
    mod tempfile_like {
        use super::*;
        pub struct TempFile(pub std::path::PathBuf);
        impl TempFile {
            pub fn new(contents: &[u8]) -> Self {
                let path = std::env::temp_dir().join(format!(
                    "rt-pool-{}-{}",
                    std::process::id(),
                    TicketDigest::of(contents).short_hex()
                ));
                let mut f = std::fs::File::create(&path).expect("create temp file");
                f.write_all(contents).expect("write temp file");
                Self(path)
            }
        }
        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn parses_lines_trimming_whitespace_and_deduplicating() {
        let set = parse_tickets(b"  a \r\n\nb\n\t\na\nc");
        assert_eq!(set.len(), 3);
        assert!(set.contains(&TicketDigest::of(b"a")));
        assert!(set.contains(&TicketDigest::of(b"c")));
    }

    #[test]
    fn a_ticket_is_taken_once() {
        let f = file_with(b"t1\nt2\n");
        let pool = TicketPool::load(Some(&f.0), 0);
        assert_eq!(pool.status(), PoolStatus::Loaded);
        assert_eq!(
            pool.take(&TicketDigest::of(b"t1")),
            Take::Taken { remaining: 1 }
        );
        assert_eq!(pool.take(&TicketDigest::of(b"t1")), Take::NotInPool);
        assert_eq!(pool.take(&TicketDigest::of(b"nope")), Take::NotInPool);
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn concurrent_takes_of_one_ticket_succeed_once() {
        let f = file_with(b"only\n");
        let pool = TicketPool::load(Some(&f.0), 0);
        let wins: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..64)
                .map(|_| s.spawn(|| pool.take(&TicketDigest::of(b"only")) != Take::NotInPool))
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().expect("thread")))
                .sum()
        });
        assert_eq!(wins, 1);
    }

    #[test]
    fn statuses_for_missing_unreadable_empty_and_disabled() {
        assert_eq!(TicketPool::load(None, 10).status(), PoolStatus::Disabled);
        let missing = std::env::temp_dir().join("rt-pool-definitely-missing");
        assert_eq!(
            TicketPool::load(Some(&missing), 10).status(),
            PoolStatus::Missing
        );
        let dir = std::env::temp_dir();
        assert_eq!(
            TicketPool::load(Some(&dir), 10).status(),
            PoolStatus::Unreadable
        );
        let f = file_with(b"\n  \n\n");
        let pool = TicketPool::load(Some(&f.0), 10);
        assert_eq!(pool.status(), PoolStatus::Empty);
        assert!(pool.is_empty());
    }

    #[test]
    fn short_hex_is_twelve_digits_of_sha256() {
        // sha256("abc") = ba7816bf8f01cfea414140de5dae2223...
        assert_eq!(TicketDigest::of(b"abc").short_hex(), "ba7816bf8f01");
    }
}
