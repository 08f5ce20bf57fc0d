//! Integration tests of the `idb` binary: each test runs the real executable as a
//! child process against a mock Data Bank on 127.0.0.1 (in this process, or as
//! `idb mock-server`), and checks exit codes, output and the bytes the server stored.
//!
//! One binary, one module per theme (as ripgrep's tests are laid out):
//! - `upload`: byte-exact uploads around chunk boundaries, several files, refusals
//!   that fail one file (409 already exists, 413 chunk too large).
//! - `bwlimit`: `--bwlimit` holds the whole run to its rate, measured by the
//!   mock; 0 is refused (exit 2).
//! - `auth`: where the token comes from, refused tokens (exit 3) without printing
//!   them, unknown and published datasets (404).
//! - `input`: bad input found before anything is sent (exit 2, no request).
//! - `mock_server`: `idb mock-server` as a process: readiness line, SIGTERM, --store.
//! - `mock_state`: its saved state: an upload cut by SIGTERM/SIGKILL of the server
//!   finishes on a server restarted on the same --store and port; a corrupt
//!   `+state.json` is reported and the server starts empty.
//! - `mock_faults`: its mode, fault and bandwidth flags: refused values, and each
//!   knob seen on the wire with raw HTTP.
//! - `runs`: thousands of files under a small descriptor limit, a file deleted
//!   before its turn, a second process on the same name, a stop by signal.
//! - `output`: bars on a terminal, plain lines in a log, escaped names, a closed
//!   stdout, the token at every verbosity, a token that expires mid-run, address
//!   hints, completions and the manual page.
//! - `select`: which files `idb upload` sends: directories with -r, globs,
//!   --files-from lists, shards, symbolic links, clashing and unprintable names.
//! - `rerun`: re-running a command: receipts skip verified files (by metadata
//!   or blake3), changed files meet the verified name, `--force`, a re-run after
//!   SIGINT; the token in no file of the state directory.
//! - `status_clean`: `idb status` and `idb clean` (changed, old, and in-use
//!   journals; receipts kept).
//! - `cli`: help, usage errors, `idb demo`.
//! - `tus`: protocol 2 (tus 1.0 and registration) against the mock: `--protocol
//!   auto` choosing, in order and by concatenation, answers lost at exact calls
//!   (`proxy`: a TCP proxy that loses the answer to one kind of request), kill -9
//!   mid-PATCH and between the registration and its answer, the s3 profile's
//!   part-size trap past 10000 x 5 MiB.
//! - `tls`: HTTPS against a mock whose certificate a throwaway authority issued:
//!   refused plainly by default, byte-exact with `--ca-cert` (also across a
//!   `kill -9`), bad `--ca-cert` files (exit 2), `idb mock-server`'s TLS flags.
//! - `fault_matrix`: `idb upload --json` under each kind of fault (resets, 500
//!   bursts, 429, stalls, truncated chunks, lost answers, a killed and restarted
//!   server, a full disk), seeded: every file verified byte-exact or failed with
//!   its reason; a summary line per scenario on stderr.
//! - `bench`: `idb bench` at tiny sizes, every scenario in-process and against
//!   `idb mock-server --sink` as a process: the JSON document, every metric,
//!   the report and the plot (valid SVG, one series per side).
//! - `servers`: servers the mock will not play (raw HTTP): one echoing the
//!   request's headers in its errors (the token never printed or saved), one
//!   that never answers, a web server that is no Data Bank.
//! - `tus_node_peer`: the independent tus server the tests use as a real peer
//!   (`tus_peer`: `@tus/server` run by Node, with a registration stub), over
//!   raw HTTP: what it advertises, a byte-exact round trip, its token check,
//!   registrations counted, protocol 1 answered 404; skipped, saying why,
//!   when `.ci/run` could not install it.

mod auth;
mod bench;
mod bwlimit;
mod cli;
mod fault_matrix;
mod input;
mod mock_faults;
mod mock_server;
mod mock_state;
mod output;
mod proxy;
mod rerun;
mod resume;
mod runs;
mod select;
mod servers;
mod status_clean;
mod tls;
mod tus;
mod tus_node_peer;
mod tus_peer;
mod upload;
mod util;
