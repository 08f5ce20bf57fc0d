//! `idb mock-server`: the mock Data Bank as a standalone process.

use anyhow::{Context, bail};
use idb_mock::{MockConfig, Storage};
use tokio::net::TcpListener;

use crate::cli::MockServerArgs;
use crate::exit::Exit;

pub async fn run(args: MockServerArgs) -> anyhow::Result<Exit> {
    let mut config = MockConfig::new()
        .latency(std::time::Duration::from_millis(args.latency_ms))
        .max_chunk(args.max_chunk);
    for spec in &args.datasets {
        let Some((key, token)) = spec.split_once(':') else {
            bail!("--dataset {spec:?} should be KEY:TOKEN, like IDB-1234567:s3cret");
        };
        config = config.dataset(key, token);
    }
    for key in &args.published {
        if !config.dataset_keys().any(|k| k == key) {
            bail!("--published {key}: add the dataset with --dataset {key}:TOKEN too");
        }
        config = config.publish(key);
    }
    if let Some(secs) = args.token_ttl {
        config = config.token_ttl(std::time::Duration::from_secs(secs));
    }
    // The CLI makes the temporary store itself so it can say where it is; the guard
    // removes it when the server stops.
    let temp;
    let where_stored = if args.sink {
        config = config.storage(Storage::Sink);
        "nowhere (sink mode: bytes are counted and hashed only)".to_owned()
    } else {
        let dir = match &args.store {
            Some(dir) => dir.clone(),
            None => {
                temp = tempfile::Builder::new().prefix("idb-mock-").tempdir()?;
                temp.path().to_owned()
            }
        };
        config = config.storage(Storage::Dir(dir.clone()));
        format!("{} (as DATASET/FILENAME)", dir.display())
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // The first line is the readiness signal scripts and tests wait for.
    println!("listening on http://{addr}");
    eprintln!("storing files in {where_stored}; stop with Ctrl-C");
    idb_mock::serve(listener, config, shutdown_signal()).await?;
    eprintln!("stopped");
    Ok(Exit::Success)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
