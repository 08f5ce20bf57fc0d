//! The tus uploads of a running server: creation, lookup (with expiry),
//! termination, and what tests can read ([`TusStats`], [`TusRegistration`]).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use idb_wire::VerifyReceipt;

use super::TusProfile;
use super::answer::TusAnswer;
use crate::disk_space::DiskSpace;
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

/// The S3 multipart upload behind an upload of the s3 profile, as far as S3's
/// limits need it: how many parts, and which are under S3's 5 MiB minimum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct S3Parts {
    /// Parts stored so far (S3 takes at most [`super::S3_MAX_PARTS`]).
    pub(crate) count: u64,
    /// Whether the last part is under [`super::S3_MIN_PART`] (allowed for
    /// the last part only).
    pub(crate) last_small: bool,
    /// Whether a part before the last is: S3 then refuses to complete the
    /// object, whatever comes later.
    pub(crate) inner_small: bool,
}

/// One tus upload.
pub(crate) struct Upload {
    /// `None` while deferred (`Upload-Defer-Length: 1`).
    pub(crate) length: Option<u64>,
    /// Bytes stored, from 0.
    pub(crate) offset: u64,
    /// The blake3 of the bytes stored.
    pub(crate) hasher: blake3::Hasher,
    /// Where they are (`None` in sink mode). Opened by each request that
    /// reads or writes them, and closed at its end: an upload holds no file
    /// descriptor between requests.
    pub(crate) path: Option<PathBuf>,
    /// The `Upload-Metadata` given on creation, echoed by HEAD.
    pub(crate) metadata: Option<String>,
    pub(crate) concat: Concat,
    /// An unfinished upload is gone after this: its creation or its last
    /// PATCH (in the s3 profile, the last that stored bytes), plus the expiry.
    pub(crate) expires: SystemTime,
    /// The `Upload-Expires` answered: the same, except that the s3 profile,
    /// like the service's server, moves it on for a PATCH it stored nothing
    /// of too (its storage expires by the last part stored).
    pub(crate) expires_said: SystemTime,
    /// The s3 profile's parts (unused by the plain profile).
    pub(crate) parts: S3Parts,
    /// `(offset, len)` of every PATCH that stored bytes, in order.
    pub(crate) log: Vec<(u64, u64)>,
    /// Set when it was terminated or expired while a request waited for it.
    pub(crate) gone: Option<Missing>,
    /// Its registrations answered 200, saved with it so that the lookup
    /// still finds them after a restart.
    pub(crate) registered: Vec<TusRegistration>,
}

impl Upload {
    /// An upload made now, living `expires` from now, at offset 0 (a final
    /// upload of a concatenation sets its offset and log after).
    pub(crate) fn new(
        length: Option<u64>,
        path: Option<PathBuf>,
        metadata: Option<String>,
        concat: Concat,
        expires: SystemTime,
    ) -> Self {
        Self {
            length,
            offset: 0,
            hasher: blake3::Hasher::new(),
            path,
            metadata,
            concat,
            expires,
            expires_said: expires,
            parts: S3Parts::default(),
            log: Vec::new(),
            gone: None,
            registered: Vec::new(),
        }
    }

    /// Whether every declared byte is stored.
    pub(crate) fn complete(&self) -> bool {
        self.length == Some(self.offset)
    }

    /// Opens its bytes to write (`None` in sink mode), for one request.
    pub(crate) fn open_to_write(&self) -> io::Result<Option<File>> {
        self.path
            .as_deref()
            .map(|path| File::options().write(true).open(path))
            .transpose()
    }

    /// Opens its bytes to read (`None` in sink mode), for one request.
    pub(crate) fn open_to_read(&self) -> io::Result<Option<File>> {
        self.path.as_deref().map(File::open).transpose()
    }
}

/// Counters of the tus side since start (see [`crate::MockServer::tus_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TusStats {
    /// Uploads created (partials and finals included).
    pub uploads_created: u64,
    /// PATCH requests that stored at least one byte.
    pub patches_applied: u64,
    /// Bytes of PATCH bodies received but not stored by the S3 profile
    /// (bodies shorter than a part that did not end the file).
    pub bytes_dropped: u64,
    /// PATCH requests refused for an `Upload-Checksum` that did not match (460).
    pub checksum_mismatches: u64,
    /// PATCH requests answered 204 whose `Upload-Checksum` matched their
    /// body (whatever the S3 profile then kept of it): how a test tells
    /// "checksums sent and checked" from "none sent".
    pub checksums_matched: u64,
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// 0 after a restart when the server stopped while applying it (the
    /// dataset has the name; which datafile it made was not saved).
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
    pub(crate) checksums_matched: AtomicU64,
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
            checksums_matched: get(&self.checksums_matched),
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
    /// Whether each upload is saved beside its bytes, to be served again by
    /// a server started on the same store (`saved.rs`).
    keeps_state: bool,
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
    /// The room of the disk, shared with protocol 1's sessions
    /// ([`crate::MockConfig::disk_full_after`]).
    pub(crate) disk: Arc<DiskSpace>,
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
            keeps_state: false,
            profile,
            expiry,
            map: Mutex::default(),
            expired: Mutex::default(),
            next_id: AtomicU64::new(1),
            counters: TusCounters::default(),
            disk: Arc::default(),
            registrations: Mutex::default(),
        }
    }

    /// Writes PATCH bodies in the room of `disk` (see `disk_space.rs`).
    pub(crate) fn on_disk(mut self, disk: Arc<DiskSpace>) -> Self {
        self.disk = disk;
        self
    }

    /// Saves every upload beside its bytes, and takes back those saved
    /// before (a store of the caller's, not a temporary one); what could not
    /// be taken back, for people.
    /// `in_dataset` says whether a dataset has a name (a registration saved
    /// as being applied is kept only then).
    pub(crate) fn keeping_state(
        mut self,
        in_dataset: impl Fn(&str, &str) -> bool,
    ) -> (Self, Vec<String>) {
        self.keeps_state = self.dir.is_some();
        let warnings = self.restore(&in_dataset);
        (self, warnings)
    }

    /// Whether uploads are saved (`saved.rs`).
    pub(crate) fn keeps_state(&self) -> bool {
        self.keeps_state
    }

    /// Where upload bytes are kept (`None`: a sink).
    pub(crate) fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
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
        let (id, path) = self.new_file()?;
        let upload = Upload::new(length, path, metadata, concat, self.expiry_from_now());
        self.insert(&id, upload)?;
        Ok(id)
    }

    /// A fresh id, and its empty file in store mode (created and closed).
    pub(crate) fn new_file(&self) -> Result<(String, Option<PathBuf>), TusAnswer> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Not guessable from another upload's id: the counter keeps ids unique,
        // the random part keeps them apart across servers on one store.
        let id = format!("{:016x}{n:x}", rand::random::<u64>());
        let Some(dir) = &self.dir else {
            return Ok((id, None));
        };
        let path = dir.join(&id);
        match fs::create_dir_all(dir).and_then(|()| create_empty(&path)) {
            Ok(()) => Ok((id, Some(path))),
            Err(e) => Err(TusAnswer::error(
                500,
                format!("cannot store the upload: {e}"),
            )),
        }
    }

    /// Adds a built upload under `id`, saved first; one that cannot be
    /// saved is not made (its bytes are removed).
    pub(crate) fn insert(&self, id: &str, upload: Upload) -> Result<(), TusAnswer> {
        if let Err(e) = self.save(&upload) {
            if let Some(path) = &upload.path {
                let _ = fs::remove_file(path);
            }
            return Err(TusAnswer::error(
                500,
                format!("cannot save the upload: {e}"),
            ));
        }
        self.put_back(id, upload);
        self.counters
            .uploads_created
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Adds an upload under `id` as it is (one taken back from the store).
    pub(crate) fn put_back(&self, id: &str, upload: Upload) {
        lock(&self.map).insert(id.to_owned(), Arc::new(Mutex::new(upload)));
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
        if let Some(path) = upload.path.take() {
            self.unsave(&path);
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
            upload.expires_said = upload.expires_said.min(now);
        }
    }

    /// When the upload `id` goes if unfinished (see
    /// [`crate::MockServer::tus_upload_expiry`]); `None` when it is not here.
    pub(crate) fn expiry_of(&self, id: &str) -> Option<SystemTime> {
        let upload = self.get(id).ok()?;
        let upload = lock(&upload);
        upload.gone.is_none().then_some(upload.expires)
    }

    /// The counters so far.
    pub(crate) fn stats(&self) -> TusStats {
        self.counters.snapshot()
    }
}

/// Creates an empty file at `path` (never one that is there already).
fn create_empty(path: &Path) -> io::Result<()> {
    File::options()
        .create_new(true)
        .write(true)
        .open(path)
        .map(drop)
}

/// The directory of tus upload bytes under a store root (`+` cannot start a
/// dataset key, so it never collides with a dataset's directory).
const TUS_DIR: &str = "+tus";
