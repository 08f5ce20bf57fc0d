//! Where the token comes from: the IDB_TOKEN environment variable or a file.
//! Never from a command-line value, which other users can see in `ps`.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use idb_engine::Token;

/// The environment variable that holds the token.
pub const TOKEN_ENV: &str = "IDB_TOKEN";

/// Where a token was read from, for messages (never the token itself).
#[derive(Debug, Clone)]
pub enum TokenSource {
    Env,
    File(PathBuf),
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Env => write!(f, "the {TOKEN_ENV} environment variable"),
            TokenSource::File(path) => write!(f, "the file {}", path.display()),
        }
    }
}

/// Reads the token from `--token-file` if given, else from `IDB_TOKEN`.
pub fn load(token_file: Option<&Path>) -> anyhow::Result<(Token, TokenSource)> {
    let (text, source) = match token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the token file {}", path.display()))?;
            (text, TokenSource::File(path.to_owned()))
        }
        None => match std::env::var(TOKEN_ENV) {
            Ok(text) => (text, TokenSource::Env),
            Err(std::env::VarError::NotPresent) => bail!(
                "no token: set {TOKEN_ENV} or pass --token-file PATH (the dataset's edit page \
                 on the Data Bank issues tokens)"
            ),
            Err(std::env::VarError::NotUnicode(_)) => bail!("{TOKEN_ENV} is not valid text"),
        },
    };
    let token =
        Token::new(&text).with_context(|| format!("the token in {source} is not usable"))?;
    Ok((token, source))
}
