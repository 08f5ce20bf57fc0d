//! Datasets and their tokens: which token may upload into which dataset, until
//! when.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use idb_wire::{DatasetKey, Token, parse_authorization};

use crate::config::DatasetConfig;
use crate::error::{MockError, cut, rule};
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
    /// The blake3 of the token, which requests are compared with (see
    /// [`Dataset::authorized`]).
    digest: blake3::Hash,
    /// It stops working at this instant (`None`: never).
    expires: Option<Instant>,
}

impl Grant {
    /// A grant of `token` from now for `ttl` (`None`: for ever; a `ttl` past what
    /// the clock can count also means for ever).
    fn new(token: Token, ttl: Option<Duration>) -> Self {
        Self {
            digest: blake3::hash(token.expose().as_bytes()),
            token,
            expires: ttl.and_then(|ttl| Instant::now().checked_add(ttl)),
        }
    }
}

impl Dataset {
    /// Whether `headers` carry a token of this dataset that has not expired.
    ///
    /// The time this takes does not depend on how much of a token an attacker
    /// guessed right: the given token is hashed (blake3) and the digest compared
    /// with each grant's digest by `blake3::Hash`'s `==`, which is constant-time
    /// over the 32 bytes (the crate documents it so). Comparing digests also
    /// hides the tokens' lengths, which a byte-by-byte comparison of unequal
    /// lengths would reveal, and needs no new dependency. Every grant is looked
    /// at (no early return), so the time does not say which grant matched.
    pub(crate) fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_authorization)
        else {
            return false;
        };
        let given = blake3::hash(given.as_bytes());
        let now = Instant::now();
        lock(&self.tokens).iter().fold(false, |found, g| {
            // `|` and `&`, not `||` and `&&`: no comparison is skipped.
            found | ((g.digest == given) & g.expires.is_none_or(|at| now < at))
        })
    }
}

/// Every dataset of a server, by key. Fixed at start: tokens can be added,
/// datasets cannot.
pub(crate) struct Datasets {
    by_key: HashMap<String, Dataset>,
    /// Held by `add_token` from its check that no other dataset has the token
    /// to its grant, so two grants of one token to two datasets at once cannot
    /// both pass the check. Bounds nothing else; authorisations never take it.
    granting: Mutex<()>,
}

impl Datasets {
    /// The configured datasets, their tokens living `ttl` from now (`None`: for
    /// ever). A key given twice ([`MockError::DuplicateDataset`]) or one token
    /// given to two datasets ([`MockError::SharedToken`]) is refused: a Data Bank
    /// token opens one dataset only.
    pub(crate) fn new(
        configured: &[DatasetConfig],
        ttl: Option<Duration>,
    ) -> Result<Self, MockError> {
        let mut by_key: HashMap<String, Dataset> = HashMap::new();
        for d in configured {
            DatasetKey::new(&d.key).map_err(|e| MockError::BadDatasetKey {
                key: cut(&d.key),
                reason: rule(&e),
            })?;
            let token = Token::new(&d.token).map_err(|e| MockError::BadToken {
                dataset: cut(&d.key),
                reason: rule(&e),
            })?;
            if by_key.contains_key(&d.key) {
                return Err(MockError::DuplicateDataset { key: d.key.clone() });
            }
            if let Some(first) = holder_of(&by_key, &token) {
                return Err(MockError::SharedToken {
                    first: first.to_owned(),
                    second: d.key.clone(),
                });
            }
            let grants = vec![Grant::new(token, ttl)];
            by_key.insert(
                d.key.clone(),
                Dataset {
                    published: d.published,
                    tokens: Mutex::new(grants),
                },
            );
        }
        Ok(Self {
            by_key,
            granting: Mutex::new(()),
        })
    }

    /// Whether `headers` carry a token of any dataset that has not expired:
    /// all that a tus request is checked for (its dataset is checked at
    /// registration, as the service does).
    pub(crate) fn token_known(&self, headers: &HeaderMap) -> bool {
        self.by_key
            .values()
            .fold(false, |found, d| found | d.authorized(headers))
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
                dataset: cut(dataset),
            });
        };
        let token = Token::new(token).map_err(|e| MockError::BadToken {
            dataset: cut(dataset),
            reason: rule(&e),
        })?;
        let _granting = lock(&self.granting);
        if let Some(first) = holder_of(&self.by_key, &token).filter(|&key| key != dataset) {
            return Err(MockError::SharedToken {
                first: first.to_owned(),
                second: dataset.to_owned(),
            });
        }
        let grant = Grant::new(token, ttl);
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

/// The dataset that has `token` among its grants, if any (expired grants count:
/// a token stays its dataset's).
fn holder_of<'a>(by_key: &'a HashMap<String, Dataset>, token: &Token) -> Option<&'a str> {
    by_key.iter().find_map(|(key, dataset)| {
        lock(&dataset.tokens)
            .iter()
            .any(|g| g.token == *token)
            .then_some(key.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_token(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!("Token token={token}");
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn only_the_exact_token_is_authorized_by_its_digest() {
        let configured = [DatasetConfig {
            key: "IDB-1".into(),
            token: "tok-secret".into(),
            published: false,
        }];
        let datasets = Datasets::new(&configured, None).unwrap();
        let dataset = datasets.get("IDB-1").unwrap();
        assert!(dataset.authorized(&with_token("tok-secret")));
        for wrong in [
            "tok-secre",
            "tok-secret2",
            "tok-secreT",
            "x",
            "tok-secrettok-secret",
        ] {
            assert!(!dataset.authorized(&with_token(wrong)), "{wrong}");
        }
        assert!(!dataset.authorized(&HeaderMap::new()));
    }
}
