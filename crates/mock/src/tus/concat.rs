//! The concatenation extension's final upload: the partials named in
//! `Upload-Concat: final;<url> <url> ...`, joined in order inside the request
//! (as the service's server does), each checked complete first. The s3
//! profile then removes the partials, as the service's S3 storage deletes
//! them after the join.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, mpsc};

use super::answer::TusAnswer;
use super::headers::upload_id;
use super::part_size::{S3_MAX_PART, S3_MAX_PARTS, S3_MIN_PART};
use super::uploads::{Concat, Missing, Upload, Uploads};
use super::{TUS_MAX_SIZE, TusProfile};
use crate::lock::lock;

/// The buffer a partial's bytes are hashed through: 1 MiB.
const HASH_BUFFER: usize = 1 << 20;

impl Uploads {
    /// Joins the partials `urls` into a new, complete upload; returns its id,
    /// and the ids of the partials the join removed (s3 profile).
    pub(crate) fn create_final(
        &self,
        urls: Vec<String>,
        metadata: Option<String>,
    ) -> Result<(String, Vec<String>), TusAnswer> {
        let bad = |message: String| Err(TusAnswer::error(400, message));
        if !self.stores() {
            return bad(
                "this server is a sink: it keeps no bytes to join; start it with a store \
                 to use concatenation"
                    .to_owned(),
            );
        }
        if self.profile == TusProfile::S3 && urls.len() as u64 > S3_MAX_PARTS {
            return bad(format!(
                "{} partials named; the service joins at most {S3_MAX_PARTS}",
                urls.len()
            ));
        }
        let mut ids = Vec::with_capacity(urls.len());
        for url in &urls {
            match upload_id(url) {
                Some(id) => ids.push(id.to_owned()),
                None => return bad(format!("{url:?} in Upload-Concat is not an upload URL")),
            }
        }
        let (id, path) = self.new_file()?;
        let Some(path) = path else {
            return bad("no store to join into".to_owned());
        };
        let joined = File::options()
            .write(true)
            .open(&path)
            .map_err(|e| TusAnswer::error(500, format!("cannot join the partials: {e}")))
            .and_then(|file| self.join(&ids, &file));
        let (length, hasher) = match joined {
            Ok(joined) => joined,
            Err(answer) => {
                let _ = fs::remove_file(&path);
                return Err(answer);
            }
        };
        let mut upload = Upload::new(
            Some(length),
            Some(path),
            metadata,
            Concat::Final(urls),
            self.expiry_from_now(),
        );
        upload.offset = length;
        upload.hasher = hasher;
        upload.log = vec![(0, length)];
        self.insert(&id, upload)?;
        let removed = if self.profile == TusProfile::S3 {
            self.remove_partials(&ids)
        } else {
            Vec::new()
        };
        Ok((id, removed))
    }

    /// Removes the joined partials `ids` that are still here; their ids.
    fn remove_partials(&self, ids: &[String]) -> Vec<String> {
        let mut removed = Vec::new();
        for id in ids {
            if let Ok(upload) = self.get(id)
                && let Ok(mut partial) = self.live(id, &upload)
            {
                self.remove(id, &mut partial, Missing::NotFound);
                removed.push(id.clone());
            }
        }
        removed
    }

    /// Copies the partials `ids`, in order, into `into`; their total length
    /// and blake3. Each partial is locked only while it is checked and copied.
    /// The kernel copies (`copy_file_range`, through `io::copy`) while a task
    /// on the runtime's blocking pool (where the mock's CPU is counted) hashes
    /// the same partials in order, so a join takes about the time of the hash
    /// alone. A task that has not started when its queue fills or the copy
    /// ends (a pool full of joins) is not waited for: this thread hashes
    /// instead, so joins never wait on one another ([`Hashing`]).
    fn join(&self, ids: &[String], into: &File) -> Result<(u64, blake3::Hasher), TusAnswer> {
        let (to_hash, partials) = mpsc::sync_channel::<(File, u64)>(HASH_QUEUE);
        // Whoever takes the receiver first hashes.
        let work = Arc::new(Mutex::new(Some(partials)));
        let (hashed_tx, hashed) = mpsc::sync_channel(1);
        let task_work = Arc::clone(&work);
        let hash = move || {
            let taken = lock(&task_work).take();
            if let Some(partials) = taken {
                let _ = hashed_tx.send(hash_in_order(partials).map(|(hasher, _)| hasher));
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(hash)),
            Err(_) => drop(std::thread::spawn(hash)),
        }
        let mut hashing = Hashing {
            to_hash: Some(to_hash),
            work,
            here: None,
        };
        // A failed copy answers at once; a task still hashing ends alone.
        let length = self.copy_partials(ids, into, &mut hashing)?;
        let hasher = hashing
            .finish(hashed)
            .map_err(|e| TusAnswer::error(500, format!("cannot join the partials: {e}")))?;
        Ok((length, hasher))
    }

    /// The copying side of [`Uploads::join`]: checks each partial, hands it to
    /// `hashing`, copies it; the total length.
    fn copy_partials(
        &self,
        ids: &[String],
        into: &File,
        hashing: &mut Hashing,
    ) -> Result<u64, TusAnswer> {
        let mut length = 0u64;
        let last = ids.len() - 1;
        for (i, id) in ids.iter().enumerate() {
            let refuse = |message: String| TusAnswer::error(400, message);
            let upload = self
                .get(id)
                .map_err(|_| refuse(format!("partial {id} is not on this server (or expired)")))?;
            let partial = self
                .live(id, &upload)
                .map_err(|_| refuse(format!("partial {id} is not on this server (or expired)")))?;
            if partial.concat != Concat::Partial {
                return Err(refuse(format!(
                    "upload {id} was not created with Upload-Concat: partial"
                )));
            }
            if !partial.complete() {
                return Err(refuse(format!(
                    "partial {id} is not complete ({} of {:?} bytes); finish it first",
                    partial.offset, partial.length
                )));
            }
            let size = partial.offset;
            if self.profile == TusProfile::S3
                && (size > S3_MAX_PART || (i < last && size < S3_MIN_PART))
            {
                return Err(refuse(format!(
                    "partial {id} has {size} bytes; the service needs each partial but the last \
                     from {S3_MIN_PART} to {S3_MAX_PART} bytes"
                )));
            }
            if length + size > TUS_MAX_SIZE {
                return Err(TusAnswer::error(
                    413,
                    format!("the partials add up to more than {TUS_MAX_SIZE} bytes"),
                ));
            }
            let copied = partial.open_to_read().and_then(|from| match from {
                Some(from) => {
                    hashing.hash(from.try_clone()?, size)?;
                    copy(from, size, into, length)
                }
                None => Err(io::Error::other(format!(
                    "partial {id} has no bytes stored"
                ))),
            });
            copied.map_err(|e| TusAnswer::error(500, format!("cannot join the partials: {e}")))?;
            length += size;
        }
        Ok(length)
    }
}

/// Copies `size` bytes from the start of `from` to `at` in `into`, in the
/// kernel where it can.
fn copy(from: File, size: u64, into: &File, at: u64) -> io::Result<()> {
    let mut into = into;
    into.seek(SeekFrom::Start(at))?;
    let copied = io::copy(&mut from.take(size), &mut into)?;
    if copied < size {
        return Err(io::Error::other(format!(
            "a partial ended after {copied} of its {size} bytes"
        )));
    }
    Ok(())
}

/// Partials waiting to be hashed during a join, each an open file: few, so a
/// join of thousands of partials holds few descriptors.
const HASH_QUEUE: usize = 4;

/// The partials waiting to be hashed, in order: each open, and its length.
type ToHash = mpsc::Receiver<(File, u64)>;

/// The hashing side of a join: a task fed through a short queue, or this
/// thread once the task is known not to have started.
struct Hashing {
    /// The queue to the task (`None` once this thread hashes).
    to_hash: Option<mpsc::SyncSender<(File, u64)>>,
    /// The queue's receiving end until the task or this thread takes it.
    work: Arc<Mutex<Option<ToHash>>>,
    /// The hash so far and the buffer it reads through, once this thread
    /// hashes.
    here: Option<(blake3::Hasher, Vec<u8>)>,
}

impl Hashing {
    /// Hashes `size` bytes of `file` after the partials handed over before.
    fn hash(&mut self, file: File, size: u64) -> io::Result<()> {
        if let Some((hasher, buffer)) = &mut self.here {
            return hash_file(hasher, buffer, &file, size);
        }
        let Some(to_hash) = &self.to_hash else {
            return Ok(());
        };
        let item = match to_hash.try_send((file, size)) {
            // A task that ended early tells why through its answer.
            Ok(()) | Err(mpsc::TrySendError::Disconnected(_)) => return Ok(()),
            Err(mpsc::TrySendError::Full(item)) => item,
        };
        let untaken = lock(&self.work).take();
        match untaken {
            // The task runs: it makes room.
            None => {
                let _ = to_hash.send(item);
                Ok(())
            }
            // It has not started: hash what waits, then go on here.
            Some(waiting) => {
                self.to_hash = None;
                let (mut hasher, mut buffer) = hash_in_order(waiting)?;
                hash_file(&mut hasher, &mut buffer, &item.0, item.1)?;
                self.here = Some((hasher, buffer));
                Ok(())
            }
        }
    }

    /// The hash of every partial handed over: this thread's, the task's, or
    /// (a task that never started) hashed here now.
    fn finish(
        mut self,
        hashed: mpsc::Receiver<io::Result<blake3::Hasher>>,
    ) -> io::Result<blake3::Hasher> {
        if let Some((hasher, _)) = self.here.take() {
            return Ok(hasher);
        }
        drop(self.to_hash.take());
        let untaken = lock(&self.work).take();
        match untaken {
            Some(waiting) => hash_in_order(waiting).map(|(hasher, _)| hasher),
            None => hashed
                .recv()
                .unwrap_or_else(|_| Err(io::Error::other("the hashing task ended early"))),
        }
    }
}

/// Hashes the partials that come, in order, until their queue closes.
fn hash_in_order(partials: ToHash) -> io::Result<(blake3::Hasher, Vec<u8>)> {
    let (mut hasher, mut buffer) = (blake3::Hasher::new(), Vec::new());
    for (file, size) in partials {
        hash_file(&mut hasher, &mut buffer, &file, size)?;
    }
    Ok((hasher, buffer))
}

/// Adds `size` bytes of `file`, from its start, to `hasher` (positional
/// reads: the copy moves the file's shared position).
fn hash_file(
    hasher: &mut blake3::Hasher,
    buffer: &mut Vec<u8>,
    file: &File,
    size: u64,
) -> io::Result<()> {
    buffer.resize(HASH_BUFFER, 0);
    let mut done = 0u64;
    while done < size {
        let n = (size - done).min(buffer.len() as u64) as usize;
        file.read_exact_at(&mut buffer[..n], done)?;
        hasher.update(&buffer[..n]);
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Complete partials holding `parts`; their URLs.
    fn partials(uploads: &Uploads, parts: &[Vec<u8>]) -> Vec<String> {
        parts
            .iter()
            .map(|bytes| {
                let (id, path) = uploads.new_file().unwrap();
                let path = path.expect("a store");
                fs::write(&path, bytes).unwrap();
                let length = bytes.len() as u64;
                let mut upload = Upload::new(
                    Some(length),
                    Some(path),
                    None,
                    Concat::Partial,
                    uploads.expiry_from_now(),
                );
                upload.offset = length;
                uploads.insert(&id, upload).unwrap();
                format!("http://127.0.0.1/files/{id}")
            })
            .collect()
    }

    /// More partials than the hashing queue holds, each different.
    fn many_parts() -> Vec<Vec<u8>> {
        (0..2 * HASH_QUEUE as u8 + 3)
            .map(|i| vec![i; (1 << 20) + usize::from(i)])
            .collect()
    }

    /// A store of uploads behaving as the plain profile.
    fn store(dir: &tempfile::TempDir) -> Arc<Uploads> {
        Arc::new(Uploads::new(
            Some(dir.path().to_owned()),
            TusProfile::Plain,
            Duration::from_secs(3600),
        ))
    }

    /// Asserts the joined upload `id` holds `parts`, hashed right.
    fn assert_joined(uploads: &Uploads, id: &str, parts: Vec<Vec<u8>>) {
        let upload = uploads.get(id).unwrap();
        let upload = lock(&upload);
        let whole = parts.concat();
        assert_eq!(upload.offset, whole.len() as u64);
        assert_eq!(upload.hasher.finalize(), blake3::hash(&whole));
        assert_eq!(fs::read(upload.path.as_ref().unwrap()).unwrap(), whole);
    }

    #[test]
    fn a_join_on_a_full_blocking_pool_hashes_on_its_own_thread() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = store(&dir);
        let parts = many_parts();
        let urls = partials(&uploads, &parts);
        // One blocking thread, taken by the join itself: its hashing task
        // cannot start before the join ends, and its queue fills.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(1)
            .enable_time()
            .build()
            .unwrap();
        let joining = Arc::clone(&uploads);
        let joined = runtime.block_on(async move {
            let join = tokio::task::spawn_blocking(move || joining.create_final(urls, None));
            // A bound only for a regression (a join waiting on its own
            // hashing task would never end), never reached otherwise.
            tokio::time::timeout(Duration::from_secs(60), join).await
        });
        // Not waiting for a stuck join's thread, to fail rather than hang.
        runtime.shutdown_background();
        let (id, removed) = joined
            .expect("the join waited for a task that could not start")
            .unwrap()
            .unwrap();
        assert!(removed.is_empty(), "the plain profile keeps partials");
        assert_joined(&uploads, &id, parts);
    }

    #[test]
    fn a_join_hashes_on_the_blocking_pool_through_a_short_queue() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = store(&dir);
        let parts = many_parts();
        let urls = partials(&uploads, &parts);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let joining = Arc::clone(&uploads);
        let (id, _) = runtime
            .block_on(runtime.spawn_blocking(move || joining.create_final(urls, None)))
            .unwrap()
            .unwrap();
        assert_joined(&uploads, &id, parts);
    }

    #[test]
    fn a_join_naming_a_missing_partial_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = store(&dir);
        let parts = many_parts();
        let mut urls = partials(&uploads, &parts);
        urls.push("http://127.0.0.1/files/nothing-here".to_owned());
        let refused = uploads.create_final(urls, None).unwrap_err();
        assert_eq!(refused.status, 400, "{refused:?}");
    }
}
