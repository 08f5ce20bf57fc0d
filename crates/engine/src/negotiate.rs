//! Choosing the protocol of a run (`--protocol auto|chunked|tus`) when the
//! first file needs the server, not before: a run whose files are all skipped
//! by their receipts, or refused because another process uploads them, asks
//! the server nothing. The probe is one call, retried like a first setup.

use bytes::Bytes;
use idb_wire::{Token, VerifyReceipt, WriteMode};
use tokio::sync::OnceCell;

use crate::client::DatafileClient;
use crate::protocol::{CallError, FileRef, Protocol};
use crate::tus::{Probe, TusClient, TusRecord, endpoint, probe};
use crate::{Error, Event, EventSink, UploadConfig};

/// The protocol a run chose.
enum Chosen<'a> {
    Chunked,
    Tus(Box<TusClient<'a>>),
}

/// The run's protocol: chosen once, by the first call that needs it.
pub(crate) struct Negotiated<'a> {
    client: &'a DatafileClient,
    config: &'a UploadConfig,
    events: &'a dyn EventSink,
    chosen: OnceCell<Chosen<'a>>,
}

impl<'a> Negotiated<'a> {
    pub(crate) fn new(
        client: &'a DatafileClient,
        config: &'a UploadConfig,
        events: &'a dyn EventSink,
    ) -> Self {
        Self {
            client,
            config,
            events,
            chosen: OnceCell::new(),
        }
    }

    /// The protocol, asking the server the first time (`Auto` or `Tus`).
    async fn chosen(&self) -> Result<&Chosen<'a>, CallError> {
        self.chosen.get_or_try_init(|| self.choose()).await
    }

    async fn choose(&self) -> Result<Chosen<'a>, CallError> {
        let config = self.config;
        if config.protocol == crate::Protocol::Chunked {
            return Ok(Chosen::Chunked);
        }
        let server = &config.server;
        let endpoint = endpoint(server);
        match probe(self.client, server).await? {
            Probe::Tus(mut offer) => {
                if !config.tus_checksum {
                    offer.no_checksums();
                }
                self.events.emit(Event::ProtocolChosen {
                    protocol: crate::Protocol::Tus,
                    reason: format!(
                        "{} at {endpoint}{}",
                        offer.describe(),
                        if config.protocol == crate::Protocol::Auto {
                            "; the service's current path (--protocol chunked for the documented API)"
                        } else {
                            ""
                        }
                    ),
                });
                Ok(Chosen::Tus(Box::new(TusClient::new(
                    self.client,
                    server,
                    offer,
                    config,
                ))))
            }
            Probe::Absent(answered) if config.protocol == crate::Protocol::Tus => {
                Err(CallError::Fatal(Box::new(Error::NoTus {
                    endpoint,
                    answered,
                })))
            }
            Probe::Absent(answered) => {
                self.events.emit(Event::ProtocolChosen {
                    protocol: crate::Protocol::Chunked,
                    reason: format!("no tus server at {endpoint} ({answered})"),
                });
                Ok(Chosen::Chunked)
            }
        }
    }
}

impl Protocol for Negotiated<'_> {
    async fn prepare(&self) -> Result<(), CallError> {
        self.chosen().await.map(drop)
    }

    async fn begin(&self, file: FileRef<'_>) -> Result<WriteMode, CallError> {
        match self.chosen().await? {
            Chosen::Chunked => self.client.begin(file).await,
            Chosen::Tus(tus) => tus.begin(file).await,
        }
    }

    async fn send(&self, file: FileRef<'_>, offset: u64, bytes: Bytes) -> Result<(), CallError> {
        match self.chosen().await? {
            Chosen::Chunked => self.client.send(file, offset, bytes).await,
            Chosen::Tus(tus) => tus.send(file, offset, bytes).await,
        }
    }

    async fn query_offset(&self, file: FileRef<'_>) -> Result<Option<u64>, CallError> {
        match self.chosen().await? {
            Chosen::Chunked => self.client.query_offset(file).await,
            Chosen::Tus(tus) => tus.query_offset(file).await,
        }
    }

    fn granule(&self, file: FileRef<'_>) -> u64 {
        match self.chosen.get() {
            Some(Chosen::Tus(tus)) => tus.granule(file),
            _ => 1,
        }
    }

    fn partials(&self) -> bool {
        matches!(self.chosen.get(), Some(Chosen::Tus(tus)) if tus.concatenates())
    }

    fn token_generation(&self) -> u64 {
        self.client.token_generation()
    }

    fn replace_token(&self, token: &Token) -> Result<bool, Error> {
        self.client.replace_token(token)
    }

    fn last_answer(&self) -> Option<tokio::time::Instant> {
        self.client.last_answer()
    }

    async fn prepare_finish(&self, file: FileRef<'_>) -> Result<Option<String>, CallError> {
        match self.chosen().await? {
            Chosen::Chunked => self.client.prepare_finish(file).await,
            Chosen::Tus(tus) => tus.prepare_finish(file).await,
        }
    }

    fn saved(&self, file: FileRef<'_>) -> Option<TusRecord> {
        match self.chosen.get() {
            Some(Chosen::Tus(tus)) => tus.saved(file),
            _ => None,
        }
    }

    fn registration_not_sent(&self, file: FileRef<'_>) {
        if let Some(Chosen::Tus(tus)) = self.chosen.get() {
            tus.registration_not_sent(file);
        }
    }

    fn restore(&self, file: FileRef<'_>, record: TusRecord) {
        if let Some(Chosen::Tus(tus)) = self.chosen.get() {
            tus.restore(file, record);
        }
    }

    fn speaks(&self) -> crate::Protocol {
        match self.chosen.get() {
            Some(Chosen::Tus(_)) => crate::Protocol::Tus,
            _ => crate::Protocol::Chunked,
        }
    }

    async fn finish(&self, file: FileRef<'_>) -> Result<Option<VerifyReceipt>, CallError> {
        match self.chosen().await? {
            Chosen::Chunked => self.client.finish(file).await,
            Chosen::Tus(tus) => tus.finish(file).await,
        }
    }
}
