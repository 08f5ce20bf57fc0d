// An independent tus 1.0 server for idb's integration tests: @tus/server with
// @tus/file-store (npm), plus a stub of the Data Bank's registration call.
//
//   IDB_TUS_NODE_MODULES=<node_modules dir> IDB_PEER_TOKEN=<token> \
//     node server.mjs <store dir>
//
// - Listens on 127.0.0.1, port 0, and prints one line `listening
//   http://127.0.0.1:PORT` on stdout once it accepts connections (the tests'
//   readiness probe). Nothing else goes to stdout.
// - `<base>/files/`: tus 1.0 served by @tus/server, uploads stored in the
//   store dir by @tus/file-store. Every request there (OPTIONS included) needs
//   `Authorization: Token token=<IDB_PEER_TOKEN>`: 401 otherwise.
// - `POST <base>/api/dataset/<KEY>/datafile` with form fields `tus_url`,
//   `filename`, `size` (urlencoded or multipart): the registration call. The
//   upload (the last path segment of tus_url) must be complete and of that
//   size: 200 `{"filename","size","sha256"}`, 409 when it is not complete or
//   the size differs, 404 when there is no such upload. Every call that is not
//   a registration (a protocol 1 call has a `phase` field), and every other
//   method on that path, is 404: this server has no chunked upload API.
// - `GET <base>/registrations` (no token; the server listens on 127.0.0.1
//   only): every registration accepted, in order, as a
//   JSON array of {dataset, tus_url, id, filename, size, path, sha256}; a
//   second registration of one upload is accepted and listed again (the
//   service makes a second datafile), so a test can count them.
// - Exits when stdin closes (the test that started it is gone) and on
//   SIGTERM or SIGINT.
//
// The token is never printed. Errors of the server itself go to stderr.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

/** The most bytes of a registration body read (three short fields). */
const REGISTRATION_BODY_MAX = 64 * 1024;

/** Tus-Max-Size, as the service's server advertises it: 2 TiB. */
const MAX_SIZE = 2 * 1024 ** 4;

/** Unfinished uploads expire this long after creation (the service: about 7 days). */
const EXPIRATION_MS = 7 * 24 * 3600 * 1000;

/** The tus endpoint's path (the tus server's `path` option; served with and without the slash). */
const TUS_PATH = '/files';

/** The registration route: `/api/dataset/<KEY>/datafile`. */
const DATAFILE_ROUTE = /^\/api\/dataset\/([^/]+)\/datafile\/?$/;

function fail(message) {
  process.stderr.write(`tus-node peer: ${message}\n`);
  process.exit(2);
}

const modules = process.env.IDB_TUS_NODE_MODULES;
if (!modules) {
  fail('set IDB_TUS_NODE_MODULES to the node_modules directory that has @tus/server (.ci/run installs it)');
}
const token = process.env.IDB_PEER_TOKEN;
if (!token) {
  fail('set IDB_PEER_TOKEN to the token every request must carry');
}
const storeDir = process.argv[2];
if (!storeDir) {
  fail('usage: node server.mjs <store dir>');
}
fs.mkdirSync(storeDir, { recursive: true });

// The packages live outside the repository: resolve them from that directory.
const requireFromModules = createRequire(path.join(path.resolve(modules), '..', 'idb-tus-node-peer.cjs'));
async function load(name) {
  return import(pathToFileURL(requireFromModules.resolve(name)).href);
}
const { Server } = await load('@tus/server');
const { FileStore } = await load('@tus/file-store');

const datastore = new FileStore({ directory: storeDir, expirationPeriodInMilliseconds: EXPIRATION_MS });
const tus = new Server({ path: TUS_PATH, datastore, maxSize: MAX_SIZE });

/** Registrations accepted, in order. */
const registrations = [];

const tokenDigest = crypto.createHash('sha256').update(token).digest();

/**
 * Whether the request carries the token: `Token token=T` or `Token
 * token="T"` (as the service's Rails code reads it). Compared as sha256
 * digests in constant time, so neither the time nor the length tells
 * anything.
 */
function authorized(req) {
  const value = req.headers.authorization;
  if (typeof value !== 'string') {
    return false;
  }
  const match = /^\s*token\s+token\s*=\s*(?:"([^"]*)"|([^\s,]*))\s*(?:,.*)?$/i.exec(value);
  if (!match) {
    return false;
  }
  const given = match[1] ?? match[2];
  const digest = crypto.createHash('sha256').update(given).digest();
  return given.length > 0 && crypto.timingSafeEqual(digest, tokenDigest);
}

function send(res, status, body, headers = {}) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  const type = typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json';
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function unauthorized(res, extra = {}) {
  send(res, 401, 'Bad credentials', { 'WWW-Authenticate': 'Token realm="Application"', ...extra });
}

/** The request body, or null when it is longer than `max` bytes. */
async function readBody(req, max) {
  const parts = [];
  let length = 0;
  for await (const part of req) {
    length += part.length;
    if (length > max) {
      return null;
    }
    parts.push(part);
  }
  return Buffer.concat(parts);
}

/** The form's text fields, from an urlencoded or multipart body; null for another content type. */
async function formFields(req, body) {
  const type = req.headers['content-type'] ?? '';
  const fields = new Map();
  if (/^application\/x-www-form-urlencoded\b/i.test(type)) {
    for (const [name, value] of new URLSearchParams(body.toString('utf8'))) {
      if (!fields.has(name)) fields.set(name, value);
    }
    return fields;
  }
  if (/^multipart\/form-data\b/i.test(type)) {
    // Node's fetch Request parses multipart bodies.
    const form = await new Request('http://127.0.0.1/', {
      method: 'POST',
      headers: { 'content-type': type },
      body,
    }).formData();
    for (const [name, value] of form) {
      if (fields.has(name)) continue;
      fields.set(name, typeof value === 'string' ? value : Buffer.from(await value.arrayBuffer()).toString('utf8'));
    }
    return fields;
  }
  return null;
}

async function sha256Of(file) {
  const hash = crypto.createHash('sha256');
  for await (const part of fs.createReadStream(file)) {
    hash.update(part);
  }
  return hash.digest('hex');
}

/** `POST /api/dataset/<KEY>/datafile`: the registration call (protocol 1 calls get 404). */
async function register(req, res, dataset) {
  const notChunked = () =>
    send(res, 404, { error: 'not_found', message: 'this server has no chunked upload API; use tus at /files/' });
  if (req.method !== 'POST') {
    notChunked();
    return;
  }
  if (!authorized(req)) {
    unauthorized(res);
    return;
  }
  const body = await readBody(req, REGISTRATION_BODY_MAX);
  if (body === null) {
    send(res, 413, { error: 'too_large', message: `a registration body is at most ${REGISTRATION_BODY_MAX} bytes` });
    return;
  }
  let fields;
  try {
    fields = await formFields(req, body);
  } catch (e) {
    send(res, 400, { error: 'bad_form', message: `the form body cannot be read: ${e.message}` });
    return;
  }
  if (fields === null) {
    send(res, 400, { error: 'bad_form', message: 'send application/x-www-form-urlencoded or multipart/form-data' });
    return;
  }
  if (fields.has('phase')) {
    notChunked();
    return;
  }
  const tusUrl = fields.get('tus_url');
  const filename = fields.get('filename');
  const sizeText = fields.get('size');
  if (!tusUrl || !filename || sizeText === undefined) {
    send(res, 400, { error: 'bad_registration', message: 'a registration needs tus_url, filename and size' });
    return;
  }
  if (!/^\d+$/.test(sizeText.trim()) || !Number.isSafeInteger(Number(sizeText.trim()))) {
    send(res, 400, { error: 'bad_registration', message: 'size must be a non-negative integer' });
    return;
  }
  const size = Number(sizeText.trim());
  let urlPath = tusUrl;
  try {
    urlPath = new URL(tusUrl).pathname;
  } catch {
    // A relative URL: its path is the text itself.
  }
  const id = urlPath.split('/').filter((s) => s !== '').pop() ?? '';
  const missing = () =>
    send(res, 404, { error: 'no_tus_upload', message: `tus upload ${JSON.stringify(id)} is not on this server` });
  if (!/^[A-Za-z0-9_-]+$/.test(id)) {
    missing();
    return;
  }
  let upload;
  try {
    upload = await datastore.getUpload(id);
  } catch {
    missing();
    return;
  }
  if (upload.size === undefined || upload.offset !== upload.size) {
    send(res, 409, {
      error: 'incomplete',
      message: `tus upload ${id} has ${upload.offset} of ${upload.size ?? 'an undeclared number of'} bytes`,
      offset: upload.offset,
      length: upload.size ?? null,
    });
    return;
  }
  if (upload.size !== size) {
    send(res, 409, {
      error: 'size_mismatch',
      message: `tus upload ${id} has ${upload.size} bytes, the registration says ${size}`,
      length: upload.size,
    });
    return;
  }
  const file = upload.storage?.path ?? path.join(storeDir, id);
  const sha256 = await sha256Of(file);
  registrations.push({ dataset, tus_url: tusUrl, id, filename, size, path: path.resolve(file), sha256 });
  send(res, 200, { filename, size, sha256 });
}

async function route(req, res) {
  const pathname = new URL(req.url, 'http://127.0.0.1').pathname;
  if (pathname === TUS_PATH || pathname.startsWith(`${TUS_PATH}/`)) {
    if (!authorized(req)) {
      unauthorized(res, { 'Tus-Resumable': '1.0.0' });
      return;
    }
    await tus.handle(req, res);
    return;
  }
  const datafile = DATAFILE_ROUTE.exec(pathname);
  if (datafile) {
    await register(req, res, decodeURIComponent(datafile[1]));
    return;
  }
  if (pathname === '/registrations' && req.method === 'GET') {
    send(res, 200, registrations);
    return;
  }
  send(res, 404, 'Not Found');
}

const server = http.createServer((req, res) => {
  route(req, res).catch((e) => {
    process.stderr.write(`tus-node peer: ${req.method} ${req.url}: ${e?.stack ?? e}\n`);
    if (!res.headersSent) {
      send(res, 500, 'internal error of the tus-node peer');
    } else {
      res.destroy();
    }
  });
});

function stop() {
  server.close();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// The test that started the server holds its stdin: when that closes (the test
// ended, or died), so does the server.
process.stdin.on('end', stop);
process.stdin.on('close', stop);
process.stdin.on('error', stop);
process.stdin.resume();

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`listening http://127.0.0.1:${server.address().port}\n`);
});
