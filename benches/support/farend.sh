#!/usr/bin/env bash
# The far end's cost: `idb upload` of one file with 64 MiB chunks at 0 ms into
# `idb mock-server --sink` and into the streaming Python server beside this
# script, RUNS times each, alternating, a fresh server for every run. Prints one
# line per run (wall seconds of the upload, and the server's own CPU line) and
# the medians.
#
#   benches/support/farend.sh [IDB] [RUNS] [FILE] [SIDES]
#
# IDB defaults to target/release/idb, RUNS to 5, FILE to a 512 MiB file of random
# bytes made in /dev/shm; SIDES is a space-separated list of "NAME=COMMAND"
# servers (default: the mock and python); a COMMAND is started with
# `--listen 127.0.0.1:0 --dataset IDB-1:tok` appended and must print
# `listening on URL` first.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
idb="${1:-target/release/idb}"
runs="${2:-5}"
file="${3:-/dev/shm/idb-farend-512M.bin}"
sides="${4:-mock=$idb mock-server --sink|python=python3 $here/stream_server.py}"

if [[ ! -f "$file" ]]; then
    head -c 512M /dev/urandom >"$file"
fi
# Into the page cache, so the client's reads cost no disk time.
cat "$file" >/dev/null

work="$(mktemp -d)"
server=""
# The server of a run that failed half way is stopped too.
trap '[[ -n "$server" ]] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

IFS='|' read -r -a side_list <<<"$sides"
for ((run = 1; run <= runs; run++)); do
    for side in "${side_list[@]}"; do
        name="${side%%=*}"
        command="${side#*=}"
        # shellcheck disable=SC2086
        $command --listen 127.0.0.1:0 --dataset IDB-1:tok >"$work/out" 2>"$work/err" &
        server=$!
        url=""
        until [[ -n "$url" ]]; do
            kill -0 "$server" 2>/dev/null || { cat "$work/err" >&2; exit 1; }
            sleep 0.02
            url="$(sed -n 's/^listening on //p' "$work/out" | head -n 1)"
        done
        rm -rf "$work/state"
        start=$(date +%s.%N)
        IDB_TOKEN=tok "$idb" upload -q --state-dir "$work/state" --chunk-size 64MiB \
            --server "$url" --dataset IDB-1 "$file" >/dev/null 2>"$work/client" ||
            { cat "$work/client" "$work/err" >&2; kill -INT "$server"; exit 1; }
        end=$(date +%s.%N)
        kill -INT "$server"
        wait "$server" || true
        server=""
        wall=$(echo "$end - $start" | bc -l)
        cpu="$(grep -i 'cpu' "$work/err" | tail -n 1 || true)"
        printf '%s run %d: %.3f s  %s\n' "$name" "$run" "$wall" "$cpu"
        echo "$wall" >>"$work/$name.times"
    done
done
for side in "${side_list[@]}"; do
    name="${side%%=*}"
    printf '%s: median %.3f s of %d runs\n' "$name" "$(median <"$work/$name.times")" "$runs"
done
