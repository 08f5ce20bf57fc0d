//! Datasets and their tokens: which token may upload into which dataset, until
//! when.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use idb_wire::{DatasetKey, Token, parse_authorization};

use crate::config::DatasetConfig;
use crate::error::MockError;
use crate::lock::lock;

/// What the server knows about one dataset.
pub(crate) struct Dataset {
    /// It exists but takes no uploads (404).
    pub(crate) published: bool,
    /// The tokens that may upload into it, each with its own expiry. Locked
    /// briefly by every authorisation and by `add_token` / `expire`.
    tokens: Mutex<Vec<Grant>>,
}

/// One token of a dataset.
struct Grant {
    token: Token,
    /// It stops working at this instant (`None`: never).
    expires: Option<Instant>,
}

impl Grant {
    /// A grant of `token` from now for `ttl` (`None`: for ever; a `ttl` past what
    /// the clock can count also means for ever).
    fn new(token: Token, ttl: Option<Duration>) -> Self {
        Self {
            token,
            expires: ttl.and_then(|ttl| Instant::now().checked_add(ttl)),
        }
    }
}

impl Dataset {
    /// Whether `headers` carry a token of this dataset that has not expired.
    pub(crate) fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_authorization)
        else {
            return false;
        };
        let now = Instant::now();
        lock(&self.tokens)
            .iter()
            .any(|g| g.token.expose() == given && g.expires.is_none_or(|at| now < at))
    }
}

/// Every dataset of a server, by key. Fixed at start: tokens can be added,
/// datasets cannot.
pub(crate) struct Datasets {
    by_key: HashMap<String, Dataset>,
}

impl Datasets {
    /// The configured datasets, their tokens living `ttl` from now (`None`: for
    /// ever). A key given twice gets the tokens of both, and is published if
    /// either says so.
    pub(crate) fn new(
        configured: &[DatasetConfig],
        ttl: Option<Duration>,
    ) -> Result<Self, MockError> {
        let mut by_key: HashMap<String, Dataset> = HashMap::new();
        for d in configured {
            DatasetKey::new(&d.key)?;
            let token = Token::new(&d.token)?;
            let entry = by_key.entry(d.key.clone()).or_insert(Dataset {
                published: false,
                tokens: Mutex::default(),
            });
            entry.published |= d.published;
            let tokens = entry.tokens.get_mut().unwrap_or_else(|e| e.into_inner());
            tokens.push(Grant::new(token, ttl));
        }
        Ok(Self { by_key })
    }

    /// The dataset `key`, if the server has it.
    pub(crate) fn get(&self, key: &str) -> Option<&Dataset> {
        self.by_key.get(key)
    }

    /// See [`crate::MockServer::add_token`].
    pub(crate) fn add_token(
        &self,
        dataset: &str,
        token: &str,
        ttl: Option<Duration>,
    ) -> Result<(), MockError> {
        let Some(entry) = self.by_key.get(dataset) else {
            return Err(MockError::UnknownDataset {
                dataset: dataset.chars().take(64).collect(),
            });
        };
        let grant = Grant::new(Token::new(token)?, ttl);
        let mut tokens = lock(&entry.tokens);
        // The same token again: it lives from now on, as a new grant would.
        tokens.retain(|g| g.token != grant.token);
        tokens.push(grant);
        Ok(())
    }

    /// Makes the tokens `which` picks expire now (those expired already stay
    /// as they are); returns whether it picked any.
    pub(crate) fn expire(&self, which: impl Fn(&Token) -> bool) -> bool {
        let now = Instant::now();
        let mut any = false;
        for dataset in self.by_key.values() {
            for grant in lock(&dataset.tokens).iter_mut().filter(|g| which(&g.token)) {
                grant.expires = Some(grant.expires.map_or(now, |at| at.min(now)));
                any = true;
            }
        }
        any
    }
}
