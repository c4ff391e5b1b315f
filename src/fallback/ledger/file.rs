//! `FALLBACK_LEDGER=file`: an append-only file of consumed digests, one 64-hex line each.
//!
//! A claim is written and fsynced before it is answered, so a ticket accepted once stays
//! consumed across restarts and crashes on this host. The file is read whole at startup
//! (it only holds what was consumed, at 65 bytes a ticket). A torn last line (a crash mid-
//! write) is cut off with a WARN, so the next append starts on a clean line.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Claim, ConsumedSet, LedgerError};
use crate::fallback::config::LedgerKind;
use crate::fallback::metrics::{FallbackMetrics, LedgerOp};
use crate::fallback::TicketDigest;

/// 64 hex digits and a newline.
const LINE_BYTES: usize = 65;

#[derive(Clone)]
pub struct FileLedger {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// What the file holds. Only inserted into under `file`'s lock, after the fsync; read
    /// without it, so a reused ticket is refused without waiting behind a write.
    consumed: ConsumedSet,
    // std Mutex, held across the blocking write and fsync on purpose: the check, the write
    // and the insert are the one step that makes a claim single use. Claims run on the
    // blocking pool, never on a runtime worker.
    file: Mutex<Appender>,
    healthy: AtomicBool,
    metrics: FallbackMetrics,
}

struct Appender {
    file: File,
    /// Bytes of whole lines: where a failed write is cut back to.
    len: u64,
}

impl FileLedger {
    /// Opens (creating if needed) and reads the ledger. Fails when the file cannot be opened
    /// or read: a ledger that cannot record must not start as if it could.
    pub fn open(path: &Path, metrics: FallbackMetrics) -> Result<Self, LedgerError> {
        let consumed = ConsumedSet::default();
        let appender = read(path, &consumed).inspect_err(|e| {
            metrics.ledger_error(LedgerKind::File, LedgerOp::Load);
            tracing::error!(path = %path.display(), error = %e, "cannot open the fallback ledger file");
        })?;
        tracing::info!(path = %path.display(), consumed = consumed.len(), "fallback ledger file loaded");
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                consumed,
                file: Mutex::new(appender),
                healthy: AtomicBool::new(true),
                metrics,
            }),
        })
    }

    pub fn consumed(&self) -> &ConsumedSet {
        &self.inner.consumed
    }

    /// Whether the last write succeeded.
    pub fn healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    pub async fn claim(&self, digest: &TicketDigest) -> Result<Claim, LedgerError> {
        let inner = self.inner.clone();
        let digest = *digest;
        tokio::task::spawn_blocking(move || inner.claim(&digest))
            .await
            .unwrap_or(Err(LedgerError::Write(io::ErrorKind::Other)))
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Appender> {
        // A panic mid-claim leaves `len` and the set consistent with the file (the insert
        // follows the fsync), so the state is usable after poisoning.
        self.file.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn claim(&self, digest: &TicketDigest) -> Result<Claim, LedgerError> {
        let mut state = self.lock();
        if self.consumed.contains(digest) {
            return Ok(Claim::AlreadyClaimed);
        }
        let mut line = hex::encode(digest.as_bytes()).into_bytes();
        line.push(b'\n');
        let written = state
            .file
            .write_all(&line)
            .and_then(|()| state.file.sync_data());
        match written {
            Ok(()) => {
                state.len += LINE_BYTES as u64;
                self.consumed.insert(digest);
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!(path = %self.path.display(), "fallback ledger file writable again");
                    self.metrics.ledger_reachable.set(1);
                }
                Ok(Claim::Won)
            }
            Err(e) => {
                // Cut a partial line back off, so the next append is not glued to it.
                let len = state.len;
                let _ = state.file.set_len(len);
                self.healthy.store(false, Ordering::Relaxed);
                self.metrics.ledger_reachable.set(0);
                self.metrics.ledger_error(LedgerKind::File, LedgerOp::Claim);
                tracing::error!(
                    path = %self.path.display(),
                    error = %e,
                    ticket = %digest.short_hex(),
                    "cannot record a fallback ticket in the ledger file; refusing it (503)"
                );
                Err(LedgerError::Write(e.kind()))
            }
        }
    }
}

/// Reads every whole line and truncates a torn tail.
fn read(path: &Path, consumed: &ConsumedSet) -> Result<Appender, LedgerError> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| LedgerError::Open(e.kind()))?;
    // A device or a pipe would never end (or never hold what was written).
    if !file
        .metadata()
        .map_err(|e| LedgerError::Open(e.kind()))?
        .is_file()
    {
        return Err(LedgerError::Open(io::ErrorKind::InvalidInput));
    }
    let mut reader = BufReader::new(&mut file);
    let mut line = Vec::with_capacity(LINE_BYTES);
    let (mut good_len, mut malformed) = (0u64, 0usize);
    loop {
        line.clear();
        let read = reader
            .by_ref()
            .take(LINE_BYTES as u64 * 4)
            .read_until(b'\n', &mut line)
            .map_err(|e| LedgerError::Open(e.kind()))?;
        if read == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            if read < LINE_BYTES * 4 {
                tracing::warn!(
                    path = %path.display(),
                    bytes = read,
                    "the fallback ledger file ends in a torn line (a crash mid-write?); ignoring it"
                );
                break;
            }
            // An overlong run without newline: not a line of ours; skip to the next one.
            malformed += 1;
            good_len += read as u64;
            continue;
        }
        good_len += read as u64;
        match TicketDigest::from_hex(line.trim_ascii()) {
            Some(digest) => {
                consumed.insert(&digest);
            }
            None if line.trim_ascii().is_empty() => {}
            None => malformed += 1,
        }
    }
    drop(reader);
    if malformed > 0 {
        tracing::warn!(path = %path.display(), malformed, "the fallback ledger file holds malformed lines; skipped");
    }
    let len = file
        .metadata()
        .map_err(|e| LedgerError::Open(e.kind()))?
        .len();
    if len != good_len {
        file.set_len(good_len)
            .and_then(|()| file.sync_data())
            .map_err(|e| LedgerError::Open(e.kind()))?;
    }
    // A newly created file must survive a crash too: its directory entry is fsynced once.
    if len == 0 {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| LedgerError::Open(e.kind()))?;
        }
    }
    Ok(Appender {
        file,
        len: good_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> FallbackMetrics {
        FallbackMetrics::new(&prometheus::Registry::new())
    }

    #[tokio::test]
    async fn claims_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger");
        let (a, b) = (TicketDigest::of(b"a"), TicketDigest::of(b"b"));
        {
            let ledger = FileLedger::open(&path, metrics()).expect("open");
            assert_eq!(ledger.claim(&a).await.expect("claim"), Claim::Won);
        }
        let ledger = FileLedger::open(&path, metrics()).expect("reopen");
        assert!(ledger.consumed().contains(&a));
        assert_eq!(
            ledger.claim(&a).await.expect("claim"),
            Claim::AlreadyClaimed
        );
        assert_eq!(ledger.claim(&b).await.expect("claim"), Claim::Won);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text,
            format!(
                "{}\n{}\n",
                hex::encode(a.as_bytes()),
                hex::encode(b.as_bytes())
            )
        );
    }

    #[tokio::test]
    async fn a_torn_last_line_is_ignored_and_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger");
        let (a, b) = (TicketDigest::of(b"a"), TicketDigest::of(b"b"));
        let whole = format!("{}\n", hex::encode(a.as_bytes()));
        let torn = &hex::encode(b.as_bytes())[..20];
        std::fs::write(&path, format!("{whole}{torn}")).expect("write");
        let ledger = FileLedger::open(&path, metrics()).expect("open");
        assert!(ledger.consumed().contains(&a));
        assert!(!ledger.consumed().contains(&b));
        assert_eq!(ledger.claim(&b).await.expect("claim"), Claim::Won);
        drop(ledger);
        let reopened = FileLedger::open(&path, metrics()).expect("reopen");
        assert!(reopened.consumed().contains(&a) && reopened.consumed().contains(&b));
    }

    #[tokio::test]
    async fn a_failed_write_fails_closed_and_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger");
        let m = metrics();
        let ledger = FileLedger::open(&path, m.clone()).expect("open");
        // The disk "fails": every write on a read-only handle does (EBADF), for root too.
        ledger.inner.lock().file = File::open(&path).expect("read-only handle");
        let d = TicketDigest::of(b"a");
        assert!(matches!(ledger.claim(&d).await, Err(LedgerError::Write(_))));
        assert!(!ledger.consumed().contains(&d));
        assert!(!ledger.healthy());
        assert_eq!(
            m.ledger_errors.with_label_values(&["file", "claim"]).get(),
            1
        );
    }

    #[test]
    fn an_unopenable_path_or_a_device_is_an_error() {
        let err = FileLedger::open(Path::new("/nonexistent-dir/ledger"), metrics());
        assert!(matches!(err, Err(LedgerError::Open(_))));
        let err = FileLedger::open(Path::new("/dev/full"), metrics());
        assert!(matches!(err, Err(LedgerError::Open(_))));
    }
}
