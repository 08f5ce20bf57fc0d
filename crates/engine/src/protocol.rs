//! The small interface the pipeline sends through, so a protocol plugs in without
//! touching it: begin, send at an offset, ask the offset, finish.

use std::future::Future;

use bytes::Bytes;
use idb_wire::{Phase, Token, VerifyReceipt, WriteMode, setup_body, transfer_body, verify_body};

use crate::Error;
use crate::client::{Answer, DatafileClient, Transport};

/// The file a call is about.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileRef<'a> {
    pub(crate) filename: &'a str,
    pub(crate) size: u64,
}

/// Why a call did not succeed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// No answer (connection failed or nothing moved for the idle timeout).
    Transport(Transport),
    /// An answer other than success; its `outcome` says what it means.
    Refused(Answer),
    /// A call that must go once (tus registration) was sent before, its answer
    /// lost, and the server cannot say whether it went through (it answered
    /// the lookup with this status).
    Unsettled {
        /// The lookup's HTTP status.
        status: u16,
    },
    /// The call cannot succeed, and why (the server speaks no protocol asked for).
    Fatal(Box<Error>),
    /// A close went through, and its answer reports another size than was
    /// sent (without a whole receipt, which [`crate::file_upload`] compares).
    SizeMismatch {
        /// The bytes the server says it has.
        reported: u64,
    },
}

/// One upload protocol, as the pipeline uses it.
pub(crate) trait Protocol: Send + Sync {
    /// Ready to send (a negotiated protocol asks the server which, once).
    fn prepare(&self) -> impl Future<Output = Result<(), CallError>> + Send {
        std::future::ready(Ok(()))
    }

    /// Whether files go as partial uploads in parallel (tus concatenation):
    /// the run's window then starts low.
    fn partials(&self) -> bool {
        false
    }

    /// Opens (or reopens, resetting) the upload of `file`.
    fn begin(&self, file: FileRef<'_>)
    -> impl Future<Output = Result<WriteMode, CallError>> + Send;

    /// Sends `bytes` at `offset`.
    fn send(
        &self,
        file: FileRef<'_>,
        offset: u64,
        bytes: Bytes,
    ) -> impl Future<Output = Result<(), CallError>> + Send;

    /// How many bytes the server holds, if the protocol can say.
    fn query_offset(
        &self,
        file: FileRef<'_>,
    ) -> impl Future<Output = Result<Option<u64>, CallError>> + Send;

    /// How many times the token was replaced (to tell whether a 401 came before
    /// or after a replacement).
    fn token_generation(&self) -> u64;

    /// Uses `token` from now on; `Ok(false)` if it is the one in use already.
    fn replace_token(&self, token: &Token) -> Result<bool, Error>;

    /// When the server last answered anything (any status) in this run.
    fn last_answer(&self) -> Option<tokio::time::Instant>;

    /// Whether the server answered anything (any status) yet.
    fn heard_from(&self) -> bool {
        self.last_answer().is_some()
    }

    /// Chunk lengths (but the last) are whole multiples of this (tus: the
    /// part size the server stores; protocol 1: any length).
    fn granule(&self, _file: FileRef<'_>) -> u64 {
        1
    }

    /// Before [`Protocol::finish`]: makes sure the server holds the whole file
    /// (tus: joins partials, checks with HEAD). `Some(address)` when `finish`
    /// then commits it by a call that must go exactly once (tus registration):
    /// the journal records it before.
    fn prepare_finish(
        &self,
        _file: FileRef<'_>,
    ) -> impl Future<Output = Result<Option<String>, CallError>> + Send {
        std::future::ready(Ok(None))
    }

    /// The commit [`Protocol::prepare_finish`] prepared was not sent after all
    /// (the journal could not record it first): forget that it may have been.
    fn registration_not_sent(&self, _file: FileRef<'_>) {}

    /// What the journal keeps of the file's upload beside the offset (tus:
    /// where it lives on the server); `None` for nothing.
    fn saved(&self, _file: FileRef<'_>) -> Option<crate::tus::TusRecord> {
        None
    }

    /// Takes back what [`Protocol::saved`] kept, when a journal is resumed.
    fn restore(&self, _file: FileRef<'_>, _record: crate::tus::TusRecord) {}

    /// Which protocol the run speaks, once [`Protocol::prepare`] succeeded
    /// (before it, protocol 1).
    fn speaks(&self) -> crate::Protocol {
        crate::Protocol::Chunked
    }

    /// Closes the upload; the server's receipt, if it sends one.
    fn finish(
        &self,
        file: FileRef<'_>,
    ) -> impl Future<Output = Result<Option<VerifyReceipt>, CallError>> + Send;
}

fn ok_or_refused(answer: Answer) -> Result<Answer, CallError> {
    if answer.outcome.is_ok() {
        Ok(answer)
    } else {
        Err(CallError::Refused(answer))
    }
}

/// Protocol 1, the chunked datafile API.
impl Protocol for DatafileClient {
    async fn begin(&self, file: FileRef<'_>) -> Result<WriteMode, CallError> {
        let body = setup_body(&Self::boundary(), file.filename, file.size);
        let answer = self
            .call(Phase::Setup, body)
            .await
            .map_err(CallError::Transport)?;
        let answer = ok_or_refused(answer)?;
        Ok(if answer.offset_mode {
            WriteMode::Offset
        } else {
            WriteMode::Strict
        })
    }

    async fn send(&self, file: FileRef<'_>, offset: u64, bytes: Bytes) -> Result<(), CallError> {
        let body = transfer_body(&Self::boundary(), file.filename, offset, bytes);
        let answer = self
            .call(Phase::Transfer, body)
            .await
            .map_err(CallError::Transport)?;
        ok_or_refused(answer).map(drop)
    }

    async fn query_offset(&self, _: FileRef<'_>) -> Result<Option<u64>, CallError> {
        // Protocol 1 has no call for it: the server tells the offset only in a 409.
        Ok(None)
    }

    fn token_generation(&self) -> u64 {
        DatafileClient::token_generation(self)
    }

    fn replace_token(&self, token: &Token) -> Result<bool, Error> {
        DatafileClient::replace_token(self, token)
    }

    fn last_answer(&self) -> Option<tokio::time::Instant> {
        DatafileClient::last_answer(self)
    }

    async fn finish(&self, file: FileRef<'_>) -> Result<Option<VerifyReceipt>, CallError> {
        let body = verify_body(&Self::boundary(), file.filename);
        let answer = self
            .close(body, file.filename, self.idle_timeout())
            .await
            .map_err(CallError::Transport)?;
        let answer = ok_or_refused(answer)?;
        if let Some(mismatch) = answer.size_mismatch(file) {
            return Err(mismatch);
        }
        Ok(answer.receipt.map(|receipt| *receipt))
    }
}
