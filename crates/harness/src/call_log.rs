//! The engine's own timing of each call, taken from its `call` log event (level
//! debug, target `idb_engine::calls`: file, phase, offset, attempt, `ms`), so the
//! engine side's request latency is the engine's, not a guess from outside.
//!
//! The engine logs through `tracing`; the first engine side of a process installs
//! a global subscriber that enables that one event and records `ms` for the file
//! names a side is watching ([`watch`]), and nothing else. If the process already
//! has a global subscriber, nothing is recorded and the engine's request
//! latencies are reported as unknown. The engine gives whole milliseconds.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

/// The engine's module that logs each call.
const CALL_TARGET: &str = "idb_engine::calls";

/// Milliseconds of each call, by file name, for the names being watched. One
/// lock, taken once per engine call.
static WATCHED: Mutex<Option<HashMap<String, Vec<f64>>>> = Mutex::new(None);

/// Whether the subscriber is installed (`Some(false)`: another one was first).
static INSTALLED: OnceLock<bool> = OnceLock::new();

fn watched() -> std::sync::MutexGuard<'static, Option<HashMap<String, Vec<f64>>>> {
    WATCHED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Installs the subscriber if it is not yet; whether it records.
fn install() -> bool {
    *INSTALLED.get_or_init(|| tracing::subscriber::set_global_default(CallLog).is_ok())
}

/// The calls of some file names, recorded from now until [`Watch::finish`].
pub(crate) struct Watch {
    names: Vec<String>,
    recording: bool,
}

/// Starts recording the engine's calls on `names` (file names, unique to a
/// repetition).
pub(crate) fn watch(names: impl IntoIterator<Item = String>) -> Watch {
    let recording = install();
    let names: Vec<String> = names.into_iter().collect();
    if recording {
        let mut watched = watched();
        let map = watched.get_or_insert_with(HashMap::new);
        for name in &names {
            map.insert(name.clone(), Vec::new());
        }
    }
    Watch { names, recording }
}

impl Watch {
    /// The milliseconds of every call on the watched names (`None`: the calls
    /// could not be recorded in this process), and stops watching them.
    pub(crate) fn finish(self) -> Option<Vec<f64>> {
        if !self.recording {
            return None;
        }
        let mut watched = watched();
        let map = watched.get_or_insert_with(HashMap::new);
        Some(
            self.names
                .iter()
                .filter_map(|name| map.remove(name))
                .flatten()
                .collect(),
        )
    }
}

/// The subscriber: enables the engine's `call` event alone.
struct CallLog;

fn is_call(metadata: &Metadata<'_>) -> bool {
    metadata.is_event() && *metadata.level() == Level::DEBUG && metadata.target() == CALL_TARGET
}

/// The `file` and `ms` fields of a `call` event.
#[derive(Default)]
struct CallFields {
    file: Option<String>,
    ms: Option<f64>,
}

impl Visit for CallFields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "ms" {
            self.ms = Some(value as f64);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "file" {
            // The field is the file name's `Display`, and a `Debug` of a
            // displayed value writes it as it is.
            self.file = Some(format!("{value:?}"));
        }
    }
}

impl Subscriber for CallLog {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if is_call(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        is_call(metadata)
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        // No span is ever enabled; an id is still owed.
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = CallFields::default();
        event.record(&mut fields);
        let (Some(file), Some(ms)) = (fields.file, fields.ms) else {
            return;
        };
        if let Some(calls) = watched().as_mut().and_then(|m| m.get_mut(&file)) {
            calls.push(ms);
        }
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_events_of_watched_names_are_recorded() {
        let watch = watch(["watched.bin".to_owned()]);
        let file = "watched.bin";
        // The engine's event, as it logs it.
        tracing::debug!(target: "idb_engine::calls", file = %file, offset = 0u64, ms = 12u64, "call");
        tracing::debug!(target: "idb_engine::calls", file = %"other.bin", ms = 99u64, "call");
        tracing::debug!(target: "elsewhere", file = %file, ms = 5u64, "call");
        assert_eq!(watch.finish(), Some(vec![12.0]));
    }
}
