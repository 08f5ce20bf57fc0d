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
        self.insert(&id, upload);
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
    /// alone. A task that has not started when the copy ends (a pool full of
    /// joins) is not waited for: this thread hashes instead, so joins never
    /// wait on one another.
    fn join(&self, ids: &[String], into: &File) -> Result<(u64, blake3::Hasher), TusAnswer> {
        let (to_hash, partials) = mpsc::channel::<(File, u64)>();
        // Whoever takes the receiver first hashes.
        let work = Arc::new(Mutex::new(Some(partials)));
        let (hashed_tx, hashed) = mpsc::sync_channel(1);
        let task_work = Arc::clone(&work);
        let hash = move || {
            let taken = lock(&task_work).take();
            if let Some(partials) = taken {
                let _ = hashed_tx.send(hash_in_order(partials));
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(hash)),
            Err(_) => drop(std::thread::spawn(hash)),
        }
        let copied = self.copy_partials(ids, into, &to_hash);
        drop(to_hash);
        let not_started = lock(&work).take();
        let hashed = match not_started {
            Some(partials) => hash_in_order(partials),
            None => hashed
                .recv()
                .unwrap_or_else(|_| Err(io::Error::other("the hashing task ended early"))),
        };
        let length = copied?;
        let hasher =
            hashed.map_err(|e| TusAnswer::error(500, format!("cannot join the partials: {e}")))?;
        Ok((length, hasher))
    }

    /// The copying side of [`Uploads::join`]: checks each partial, hands it to
    /// the hashing thread, copies it; the total length.
    fn copy_partials(
        &self,
        ids: &[String],
        into: &File,
        to_hash: &mpsc::Sender<(File, u64)>,
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
                    // A hashing thread that is gone failed: its error is told.
                    let _ = to_hash.send((from.try_clone()?, size));
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

/// Hashes the partials that come, in order, each from its start (positional
/// reads: the copy moves the file's shared position).
fn hash_in_order(partials: mpsc::Receiver<(File, u64)>) -> io::Result<blake3::Hasher> {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; HASH_BUFFER];
    for (file, size) in partials {
        let mut done = 0u64;
        while done < size {
            let n = (size - done).min(buffer.len() as u64) as usize;
            file.read_exact_at(&mut buffer[..n], done)?;
            hasher.update(&buffer[..n]);
            done += n as u64;
        }
    }
    Ok(hasher)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Two complete partials holding `a` and `b`; their URLs.
    fn two_partials(uploads: &Uploads, a: &[u8], b: &[u8]) -> Vec<String> {
        [a, b]
            .into_iter()
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
                uploads.insert(&id, upload);
                format!("http://127.0.0.1/files/{id}")
            })
            .collect()
    }

    #[test]
    fn a_join_on_a_full_blocking_pool_hashes_on_its_own_thread() {
        let store = tempfile::tempdir().unwrap();
        let uploads = Arc::new(Uploads::new(
            Some(store.path().to_owned()),
            TusProfile::Plain,
            Duration::from_secs(3600),
        ));
        let (a, b) = (vec![1u8; 3 << 20], vec![2u8; (1 << 20) + 7]);
        let urls = two_partials(&uploads, &a, &b);
        // One blocking thread, taken by the join itself: its hashing task
        // cannot start before the join ends.
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
        let upload = uploads.get(&id).unwrap();
        let upload = lock(&upload);
        let whole = [a, b].concat();
        assert_eq!(upload.offset, whole.len() as u64);
        assert_eq!(upload.hasher.finalize(), blake3::hash(&whole));
        assert_eq!(fs::read(upload.path.as_ref().unwrap()).unwrap(), whole);
    }
}
