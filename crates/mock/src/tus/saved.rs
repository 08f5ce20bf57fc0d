//! Tus uploads of a store saved beside their bytes, so that a server started
//! again on the same store (after a shutdown, a crash, SIGKILL) serves them
//! where they were, as a tus server's own storage does.
//!
//! Each upload `<store>/+tus/<id>` has `<store>/+tus/<id>.info`: its length,
//! acknowledged offset, metadata, concatenation, expiry, S3 parts and the
//! newest [`MAX_PERSISTED_LOG`] entries of its log of stored PATCHes, and its
//! registrations (so the registration lookup still knows them: one is saved
//! as being applied before the dataset records the file, and kept at start
//! only if the dataset has the name). It is
//! written on creation, after every PATCH and registration, before the answer, replaced
//! atomically and durably (`atomic-write-file`: temporary file, fsync,
//! rename, fsync of the directory), and removed with the upload.
//!
//! On start every info file is read back: bytes past the saved offset are
//! cut off (a PATCH that was writing when the server died was never
//! answered), bytes short of it win (the offset drops to them), and the
//! upload's blake3 is rebuilt from its bytes (and the info saved again when
//! the offset dropped). A bytes file without info (a creation the server died
//! answering) and the temporary file of an info write it died in are
//! removed; an info file that cannot be used is moved aside to
//! `<id>.info.bad` with a warning, one that cannot be read now is left in
//! place with a warning.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use atomic_write_file::AtomicWriteFile;
use serde::{Deserialize, Serialize};

use super::uploads::{Concat, S3Parts, TusRegistration, Upload, Uploads};
use crate::lock::lock;
use crate::persist::MAX_PERSISTED_LOG;

/// The version of the info files this mock writes and reads.
const INFO_VERSION: u64 = 1;

/// An info file's name is its upload's id and this.
const INFO_SUFFIX: &str = ".info";

/// Where an info file that cannot be used is moved.
const SET_ASIDE_SUFFIX: &str = ".info.bad";

/// One upload, as saved.
#[derive(Debug, Serialize, Deserialize)]
struct Info {
    version: u64,
    /// `None` while deferred.
    length: Option<u64>,
    /// Bytes stored and acknowledged.
    offset: u64,
    metadata: Option<String>,
    /// The partials' URLs of a final upload; `partial` for a partial one.
    #[serde(default)]
    partial: bool,
    #[serde(default)]
    joins: Option<Vec<String>>,
    /// Milliseconds since the Unix epoch.
    expires_ms: u64,
    expires_said_ms: u64,
    parts: S3Parts,
    /// The newest entries of the log, oldest first.
    log: Vec<(u64, u64)>,
    /// Its registrations answered 200.
    #[serde(default)]
    registered: Vec<TusRegistration>,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn time(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

impl Info {
    fn of(upload: &Upload) -> Self {
        let (partial, joins) = match &upload.concat {
            Concat::None => (false, None),
            Concat::Partial => (true, None),
            Concat::Final(urls) => (false, Some(urls.clone())),
        };
        let log = &upload.log[upload.log.len().saturating_sub(MAX_PERSISTED_LOG)..];
        Self {
            version: INFO_VERSION,
            length: upload.length,
            offset: upload.offset,
            metadata: upload.metadata.clone(),
            partial,
            joins,
            expires_ms: millis(upload.expires),
            expires_said_ms: millis(upload.expires_said),
            parts: upload.parts,
            log: log.to_vec(),
            registered: upload.registered.clone(),
        }
    }

    fn concat(&self) -> Concat {
        match (&self.joins, self.partial) {
            (Some(urls), _) => Concat::Final(urls.clone()),
            (None, true) => Concat::Partial,
            (None, false) => Concat::None,
        }
    }
}

/// The info file of the upload whose bytes are at `bytes`.
fn info_path(bytes: &Path) -> std::path::PathBuf {
    let mut name = bytes.as_os_str().to_owned();
    name.push(INFO_SUFFIX);
    name.into()
}

impl Uploads {
    /// Saves `upload` (nothing for a server that does not keep its state, or
    /// a sink).
    pub(crate) fn save(&self, upload: &Upload) -> io::Result<()> {
        let (true, Some(bytes)) = (self.keeps_state(), &upload.path) else {
            return Ok(());
        };
        let json = serde_json::to_vec(&Info::of(upload)).map_err(io::Error::other)?;
        let mut file = AtomicWriteFile::open(info_path(bytes))?;
        file.write_all(&json)?;
        file.commit()
    }

    /// Removes the saved info of the upload whose bytes were at `bytes`.
    pub(crate) fn unsave(&self, bytes: &Path) {
        if self.keeps_state() {
            let _ = fs::remove_file(info_path(bytes));
        }
    }

    /// Takes back every upload saved in the store; what could not be, for
    /// people.
    pub(crate) fn restore(&self, in_dataset: &dyn Fn(&str, &str) -> bool) -> Vec<String> {
        let Some(dir) = self.dir() else {
            return Vec::new();
        };
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                return vec![format!(
                    "cannot read the tus uploads in {}: {e}; they are not served",
                    dir.display()
                )];
            }
        };
        let mut warnings = Vec::new();
        let mut bytes_files = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = name.strip_suffix(INFO_SUFFIX)
                && !name.starts_with('.')
            {
                match self.restore_one(dir, id, in_dataset) {
                    Ok(()) => {}
                    Err(NotRestored::Unusable(why)) => {
                        let info = dir.join(name);
                        let aside = dir.join(format!("{id}{SET_ASIDE_SUFFIX}"));
                        let _ = fs::rename(&info, &aside);
                        warnings.push(format!(
                            "tus upload {id} in {} could not be restored ({why}); its info is \
                             moved to {}",
                            dir.display(),
                            aside.display()
                        ));
                    }
                    // Left as it is: a server started later may read it.
                    Err(NotRestored::Unreadable(why)) => warnings.push(format!(
                        "tus upload {id} in {} is not served: {why}",
                        dir.display()
                    )),
                }
            } else if name.starts_with('.') && name.contains(INFO_SUFFIX) {
                // A temporary file of an info write the server died in.
                let _ = fs::remove_file(dir.join(name));
            } else if !name.contains('.') {
                bytes_files.push(name.to_owned());
            }
        }
        // Bytes without info: a creation whose answer never went out.
        for id in bytes_files {
            let kept = |suffix: &str| dir.join(format!("{id}{suffix}")).exists();
            if self.get(&id).is_err() && !kept(INFO_SUFFIX) && !kept(SET_ASIDE_SUFFIX) {
                let _ = fs::remove_file(dir.join(&id));
            }
        }
        warnings
    }

    /// Takes back the upload `id` of `dir`.
    fn restore_one(
        &self,
        dir: &Path,
        id: &str,
        in_dataset: &dyn Fn(&str, &str) -> bool,
    ) -> Result<(), NotRestored> {
        let bytes = dir.join(id);
        let unreadable = |what: &str, e: io::Error| NotRestored::Unreadable(format!("{what}: {e}"));
        let text = fs::read(info_path(&bytes)).map_err(|e| unreadable("its info", e))?;
        let info: Info =
            serde_json::from_slice(&text).map_err(|e| NotRestored::Unusable(e.to_string()))?;
        if info.version != INFO_VERSION {
            return Err(NotRestored::Unusable(format!(
                "version {}, not {INFO_VERSION}",
                info.version
            )));
        }
        let file = match File::options().read(true).write(true).open(&bytes) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(NotRestored::Unusable("its bytes are gone".to_owned()));
            }
            Err(e) => return Err(unreadable("its bytes", e)),
        };
        let held = file
            .metadata()
            .map_err(|e| unreadable("its bytes", e))?
            .len();
        // Past the offset: a PATCH never answered. Short of it: the bytes win.
        if held > info.offset {
            file.set_len(info.offset)
                .map_err(|e| unreadable("its bytes", e))?;
        }
        let offset = held.min(info.offset);
        let mut hasher = blake3::Hasher::new();
        hash_prefix(&file, offset, &mut hasher).map_err(|e| unreadable("its bytes", e))?;
        let mut log = info.log.clone();
        log.retain(|&(start, len)| start + len <= offset);
        let mut upload = Upload::new(
            info.length,
            Some(bytes),
            info.metadata.clone(),
            info.concat(),
            time(info.expires_ms),
        );
        upload.offset = offset;
        upload.hasher = hasher;
        upload.expires_said = time(info.expires_said_ms);
        upload.parts = info.parts;
        upload.log = log;
        // One saved as being applied (datafile 0) went through only if the
        // dataset has the name.
        upload.registered = info.registered;
        let before = upload.registered.len();
        upload
            .registered
            .retain(|r| r.datafile > 0 || in_dataset(&r.dataset, &r.filename));
        let dropped = upload.registered.len() != before;
        // Saved again as served, so that bytes a later PATCH leaves past the
        // new offset are cut at the next start too.
        if offset != info.offset || dropped {
            self.save(&upload).map_err(|e| unreadable("its info", e))?;
        }
        lock(&self.registrations).extend(upload.registered.iter().cloned());
        self.put_back(id, upload);
        Ok(())
    }
}

/// Why a saved upload is not served.
enum NotRestored {
    /// Its info cannot be used (not JSON of the shape, another version, no
    /// bytes): set aside, with a warning.
    Unusable(String),
    /// It cannot be read now (permissions, no file descriptor left): left in
    /// place, with a warning, for a server started later.
    Unreadable(String),
}

/// Hashes the first `len` bytes of `file` into `hasher`.
fn hash_prefix(file: &File, len: u64, hasher: &mut blake3::Hasher) -> io::Result<()> {
    let copied = io::copy(&mut file.take(len), hasher)?;
    if copied < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the bytes are shorter than they were",
        ));
    }
    Ok(())
}
