//! The tus uploads of a running server: creation, lookup (with expiry),
//! termination, and what tests can read ([`TusStats`], [`TusRegistration`]).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use idb_wire::VerifyReceipt;

use super::TusProfile;
use super::answer::TusAnswer;
use crate::lock::lock;

/// How an upload takes part in a concatenation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Concat {
    /// A plain upload.
    None,
    /// `Upload-Concat: partial`: sent to be joined.
    Partial,
    /// `Upload-Concat: final;...`: the join of these URLs (as given).
    Final(Vec<String>),
}

/// Why an upload cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    /// Never created, or terminated (404).
    NotFound,
    /// Unfinished past its `Upload-Expires` (410).
    Expired,
}

impl Missing {
    /// The answer to a request for an upload that is `self`.
    pub(crate) fn answer(self, id: &str) -> TusAnswer {
        match self {
            Missing::NotFound => TusAnswer::error(404, format!("no upload {id} on this server")),
            Missing::Expired => TusAnswer::error(
                410,
                format!("upload {id} expired unfinished; create a new upload and send it again"),
            ),
        }
    }
}

/// One tus upload.
pub(crate) struct Upload {
    /// `None` while deferred (`Upload-Defer-Length: 1`).
    pub(crate) length: Option<u64>,
    /// Bytes stored, from 0.
    pub(crate) offset: u64,
    /// The blake3 of the bytes stored.
    pub(crate) hasher: blake3::Hasher,
    /// Where they are (`None` in sink mode).
    pub(crate) file: Option<File>,
    pub(crate) path: Option<PathBuf>,
    /// The `Upload-Metadata` given on creation, echoed by HEAD.
    pub(crate) metadata: Option<String>,
    pub(crate) concat: Concat,
    /// An unfinished upload is gone after this.
    pub(crate) expires: SystemTime,
    /// `(offset, len)` of every PATCH that stored bytes, in order.
    pub(crate) log: Vec<(u64, u64)>,
    /// Set when it was terminated or expired while a request waited for it.
    pub(crate) gone: Option<Missing>,
}

impl Upload {
    /// Whether every declared byte is stored.
    pub(crate) fn complete(&self) -> bool {
        self.length == Some(self.offset)
    }
}

/// Counters of the tus side since start (see [`crate::MockServer::tus_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TusStats {
    /// Uploads created (partials and finals included).
    pub uploads_created: u64,
    /// PATCH requests that stored at least one byte.
    pub patches_applied: u64,
    /// Bytes of PATCH bodies received but not stored by the S3 profile (short
    /// tails that did not end the file).
    pub bytes_dropped: u64,
    /// PATCH requests refused for an `Upload-Checksum` that did not match (460).
    pub checksum_mismatches: u64,
    /// Registration calls answered 200.
    pub registrations: u64,
    /// Registrations of an upload that was not complete, or whose `size`
    /// differed from the bytes stored (the service accepts them).
    pub incomplete_registrations: u64,
    /// Registrations of a name the dataset had already (the service makes a
    /// second datafile).
    pub repeated_registrations: u64,
}

/// One registration call answered 200 (see [`crate::MockServer::tus_registrations`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TusRegistration {
    /// The dataset key of the URL.
    pub dataset: String,
    /// The `filename` field.
    pub filename: String,
    /// The `tus_url` field.
    pub tus_url: String,
    /// The `size` field (trusted by the service, never checked).
    pub size: u64,
    /// The upload's `Upload-Length` then (`None`: still deferred).
    pub length: Option<u64>,
    /// Which datafile of that name in the dataset it made: 1 for the first;
    /// only the first is stored (and is what [`crate::MockServer::receipt`] gives).
    pub datafile: u64,
    /// What was answered: the bytes the upload had, and their blake3.
    pub receipt: VerifyReceipt,
}

/// The live counters behind [`TusStats`].
#[derive(Default)]
pub(crate) struct TusCounters {
    pub(crate) uploads_created: AtomicU64,
    pub(crate) patches_applied: AtomicU64,
    pub(crate) bytes_dropped: AtomicU64,
    pub(crate) checksum_mismatches: AtomicU64,
    pub(crate) registrations: AtomicU64,
    pub(crate) incomplete_registrations: AtomicU64,
    pub(crate) repeated_registrations: AtomicU64,
}

impl TusCounters {
    fn snapshot(&self) -> TusStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TusStats {
            uploads_created: get(&self.uploads_created),
            patches_applied: get(&self.patches_applied),
            bytes_dropped: get(&self.bytes_dropped),
            checksum_mismatches: get(&self.checksum_mismatches),
            registrations: get(&self.registrations),
            incomplete_registrations: get(&self.incomplete_registrations),
            repeated_registrations: get(&self.repeated_registrations),
        }
    }
}

/// Every tus upload of a server, by id.
pub(crate) struct Uploads {
    /// Where upload bytes are kept (`<store>/+tus`); `None`: a sink.
    dir: Option<PathBuf>,
    pub(crate) profile: TusProfile,
    expiry: Duration,
    /// The uploads. The map's lock is held only to find, add or remove one;
    /// an upload's own lock is held while a request reads or changes it (a
    /// whole PATCH body), so different uploads go on in parallel and the
    /// requests on one upload are applied one at a time.
    map: Mutex<HashMap<String, Arc<Mutex<Upload>>>>,
    /// Ids of uploads that expired (answered 410 rather than 404). Grows by
    /// one id per expired upload, for the server's life.
    expired: Mutex<HashSet<String>>,
    next_id: AtomicU64,
    pub(crate) counters: TusCounters,
    /// Every registration answered 200, in order. Grows by one per
    /// registration, for the server's life.
    pub(crate) registrations: Mutex<Vec<TusRegistration>>,
}

impl Uploads {
    /// Uploads kept under `store` (`None`: a sink), behaving as `profile`,
    /// each unfinished one living `expiry` after its last change.
    pub(crate) fn new(store: Option<PathBuf>, profile: TusProfile, expiry: Duration) -> Self {
        Self {
            dir: store.map(|s| s.join(TUS_DIR)),
            profile,
            expiry,
            map: Mutex::default(),
            expired: Mutex::default(),
            next_id: AtomicU64::new(1),
            counters: TusCounters::default(),
            registrations: Mutex::default(),
        }
    }

    /// Whether bytes are kept (`false`: a sink).
    pub(crate) fn stores(&self) -> bool {
        self.dir.is_some()
    }

    /// When an upload changed now expires.
    pub(crate) fn expiry_from_now(&self) -> SystemTime {
        SystemTime::now()
            .checked_add(self.expiry)
            .unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(u32::MAX.into()))
    }

    /// Adds an upload; returns its id.
    pub(crate) fn create(
        &self,
        length: Option<u64>,
        metadata: Option<String>,
        concat: Concat,
    ) -> Result<String, TusAnswer> {
        let (id, path, file) = self.new_file()?;
        let upload = Upload {
            length,
            offset: 0,
            hasher: blake3::Hasher::new(),
            file,
            path,
            metadata,
            concat,
            expires: self.expiry_from_now(),
            log: Vec::new(),
            gone: None,
        };
        self.insert(&id, upload);
        Ok(id)
    }

    /// A fresh id, and its empty file in store mode.
    pub(crate) fn new_file(&self) -> Result<(String, Option<PathBuf>, Option<File>), TusAnswer> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Not guessable from another upload's id: the counter keeps ids unique,
        // the random part keeps them apart across servers on one store.
        let id = format!("{:016x}{n:x}", rand::random::<u64>());
        let Some(dir) = &self.dir else {
            return Ok((id, None, None));
        };
        let path = dir.join(&id);
        let file = fs::create_dir_all(dir).and_then(|()| {
            File::options()
                .create_new(true)
                .read(true)
                .write(true)
                .open(&path)
        });
        match file {
            Ok(file) => Ok((id, Some(path), Some(file))),
            Err(e) => Err(TusAnswer::error(
                500,
                format!("cannot store the upload: {e}"),
            )),
        }
    }

    /// Adds a built upload under `id`.
    pub(crate) fn insert(&self, id: &str, upload: Upload) {
        lock(&self.map).insert(id.to_owned(), Arc::new(Mutex::new(upload)));
        self.counters
            .uploads_created
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The upload `id`, not yet locked (see [`Uploads::live`]).
    pub(crate) fn get(&self, id: &str) -> Result<Arc<Mutex<Upload>>, Missing> {
        if let Some(upload) = lock(&self.map).get(id) {
            return Ok(Arc::clone(upload));
        }
        if lock(&self.expired).contains(id) {
            return Err(Missing::Expired);
        }
        Err(Missing::NotFound)
    }

    /// Locks `upload` (the one [`Uploads::get`] gave for `id`) if it is still
    /// there and not expired; an unfinished upload past its expiry is removed.
    pub(crate) fn live<'a>(
        &self,
        id: &str,
        upload: &'a Mutex<Upload>,
    ) -> Result<MutexGuard<'a, Upload>, Missing> {
        let mut guard = lock(upload);
        if let Some(missing) = guard.gone {
            return Err(missing);
        }
        if !guard.complete() && SystemTime::now() >= guard.expires {
            self.remove(id, &mut guard, Missing::Expired);
            return Err(Missing::Expired);
        }
        Ok(guard)
    }

    /// Removes a locked upload and its bytes (termination or expiry).
    pub(crate) fn remove(&self, id: &str, upload: &mut Upload, why: Missing) {
        upload.gone = Some(why);
        upload.file = None;
        if let Some(path) = upload.path.take() {
            let _ = fs::remove_file(path);
        }
        lock(&self.map).remove(id);
        if why == Missing::Expired {
            lock(&self.expired).insert(id.to_owned());
        }
    }

    /// Makes every unfinished upload expire now (see
    /// [`crate::MockServer::expire_tus_uploads`]).
    pub(crate) fn expire_all(&self) {
        let uploads: Vec<_> = lock(&self.map).values().cloned().collect();
        let now = SystemTime::now();
        for upload in uploads {
            let mut upload = lock(&upload);
            upload.expires = upload.expires.min(now);
        }
    }

    /// The counters so far.
    pub(crate) fn stats(&self) -> TusStats {
        self.counters.snapshot()
    }
}

/// The directory of tus upload bytes under a store root (`+` cannot start a
/// dataset key, so it never collides with a dataset's directory).
const TUS_DIR: &str = "+tus";
