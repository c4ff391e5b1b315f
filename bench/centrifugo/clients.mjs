// One client process of the Centrifugo benchmark (forked by bench.mjs; several of them, so
// one Node event loop is not what limits the figures). It drives official SDK clients
// (`sdkClient` from the end-to-end suite: centrifuge-js on `ws`, a fresh ticket from
// `getData` on every connect attempt) and answers the orchestrator over the IPC channel.
//
// Commands (each answered by one message of the same `cmd`):
//   prepare {base, tickets, id}     mint `tickets` single-use tickets at the stand-in, so
//                                   minting is not inside the measured window (a client that
//                                   runs out mints live; those are counted)
//   load {url, slots, until}        a closed loop per slot until the wall-clock `until`:
//                                   new client, connect(), wait for `connected`, disconnect;
//                                   answers every sample [finished at (epoch ms), latency ms]
//   hold {url, base, clients, id, parallel, deadlineMs, ticketsPerClient}
//                                   mint tickets for the held clients, then connect `clients`
//                                   clients, `parallel` at a time, and keep them connected
//   mark {}                         from now on, count each client's next `connected`
//   watch {deadlineMs}              answers once every held client connected after the mark
//                                   or was given up by the SDK
//                                   (or at the deadline): when they lost their connection and
//                                   with which code, when they connected again, which errors
//                                   they saw
//   close {}                        disconnects everything and exits
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';

import { rmSync } from 'node:fs';

import { sdkClient } from '../../tests/e2e/lib/client.mjs';
import { runDir } from '../../tests/e2e/lib/procs.mjs';
import { Standin } from '../../tests/e2e/lib/topology.mjs';

/** The SDK's own reconnect defaults (the suite's helper defaults to shorter test values). */
const SDK_BACKOFF = { minReconnectDelay: 500, maxReconnectDelay: 20000 };
/** How long one connect may take in the closed loop before it counts as failed. */
const CONNECT_DEADLINE_MS = 10000;
/** Mint requests in flight at once. */
const MINT_PARALLEL = 32;

let standin;
let minted = [];
let liveMints = 0;
let held = [];
let markedAt = 0;

/** The ticket source of every client here: a pre-minted ticket, or a live mint. */
function ticketFor(user) {
  return async () => {
    fetches += 1;
    const ready = minted.pop();
    if (ready) return ready;
    liveMints += 1;
    // At most MINT_PARALLEL live mints at once per process, as an app backend would bound it.
    while (minting >= MINT_PARALLEL) await sleep(5);
    minting += 1;
    try {
      return await standin.mint({ user, family: 'bench' });
    } finally {
      minting -= 1;
    }
  };
}
let minting = 0;
/** getData calls since the mark: one per connect attempt. */
let fetches = 0;

async function mintMany(n, userOf) {
  const out = new Array(n);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(MINT_PARALLEL, n) }, async () => {
    while (next < n) {
      const i = next++;
      out[i] = await standin.mint({ user: userOf(i), family: 'bench' });
    }
  }));
  return out;
}

/** Resolves when `client` reports `connected` (true) or after `ms` (false). */
function connectedWithin(client, ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      client.centrifuge.off('connected', done);
      resolve(false);
    }, ms);
    function done() {
      clearTimeout(timer);
      resolve(true);
    }
    client.centrifuge.once('connected', done);
  });
}

async function load({ url, slots, until, id }) {
  const samples = [];
  let failed = 0;
  let errors = 0;
  let n = 0;
  await Promise.all(Array.from({ length: slots }, async () => {
    while (Date.now() < until) {
      const client = sdkClient(url, { ticket: ticketFor(`l${id}-${n++}`), ...SDK_BACKOFF });
      client.centrifuge.on('error', () => (errors += 1));
      const connected = connectedWithin(client, CONNECT_DEADLINE_MS);
      const started = performance.now();
      client.connect();
      const ok = await connected;
      const ms = performance.now() - started;
      client.disconnect();
      if (ok) samples.push([Date.now(), ms]);
      else failed += 1;
    }
  }));
  return { samples, failed, errors };
}

async function hold({ url, clients, id, parallel, deadlineMs, ticketsPerClient }) {
  const started = performance.now();
  minted = await mintMany(clients * ticketsPerClient, (i) => `s${id}-${i}`);
  const mintMs = performance.now() - started;
  const deadline = Date.now() + deadlineMs;
  let next = 0;
  let failed = 0;
  const connectStarted = performance.now();
  await Promise.all(Array.from({ length: parallel }, async () => {
    while (next < clients && Date.now() < deadline) {
      const i = next++;
      const client = sdkClient(url, { ticket: ticketFor(`s${id}-${i}`), ...SDK_BACKOFF });
      const entry = { client, connectedAt: 0, lostAt: 0, lostCode: 0, errors: [] };
      client.centrifuge.on('connected', () => {
        if (markedAt && !entry.connectedAt) entry.connectedAt = Date.now();
      });
      // The first `connecting` after the mark: the old process closed this client.
      client.centrifuge.on('connecting', (ctx) => {
        if (markedAt && !entry.lostAt) {
          entry.lostAt = Date.now();
          entry.lostCode = `${ctx.code} ${ctx.reason}`;
        }
      });
      client.centrifuge.on('error', (ctx) => {
        if (markedAt) entry.errors.push(ctx.type === 'transport' ? 'transport' : `${ctx.type} ${ctx.error?.code}`);
      });
      const connected = connectedWithin(client, Math.max(1, deadline - Date.now()));
      client.connect();
      if (await connected) held.push(entry);
      else {
        failed += 1;
        client.disconnect();
      }
    }
  }));
  return { held: held.length, failed, mintMs, connectMs: performance.now() - connectStarted };
}

async function watch({ deadlineMs }) {
  const deadline = Date.now() + deadlineMs;
  let waiting = held.length;
  while (Date.now() < deadline) {
    // A client the SDK gave up on (state `disconnected`) will not connect again by itself.
    waiting = held.filter((e) => !e.connectedAt && e.client.centrifuge.state !== 'disconnected').length;
    process.send({ cmd: 'progress', reconnected: held.length - waiting });
    if (waiting === 0) break;
    await sleep(100);
  }
  const kinds = {};
  let withErrors = 0;
  let withNonTransport = 0;
  for (const e of held) {
    if (e.errors.length) withErrors += 1;
    if (e.errors.some((k) => k !== 'transport')) withNonTransport += 1;
    for (const k of e.errors) kinds[k] = (kinds[k] ?? 0) + 1;
  }
  const times = held.filter((e) => e.connectedAt).map((e) => e.connectedAt);
  const disconnected = {};
  for (const e of held) {
    for (const ctx of e.client.events('disconnected')) disconnected[`${ctx.code} ${ctx.reason}`] = (disconnected[`${ctx.code} ${ctx.reason}`] ?? 0) + 1;
  }
  const lost = held.filter((e) => e.lostAt);
  const lostCodes = {};
  for (const e of lost) lostCodes[e.lostCode] = (lostCodes[e.lostCode] ?? 0) + 1;
  return {
    lostFirstAt: lost.length ? Math.min(...lost.map((e) => e.lostAt)) : 0,
    lostLastAt: lost.length ? Math.max(...lost.map((e) => e.lostAt)) : 0,
    lostCodes,
    held: held.length,
    reconnected: times.length,
    lastAt: times.length ? Math.max(...times) : 0,
    times,
    withErrors,
    withNonTransport,
    kinds,
    disconnected,
  };
}

process.on('message', async (msg) => {
  try {
    let answer;
    switch (msg.cmd) {
      case 'prepare':
        // A handle on the stand-in's HTTP side only (minting); its process is the orchestrator's.
        standin = new Standin(null, 0, msg.base);
        minted = await mintMany(msg.tickets, (i) => `l${msg.id}-${i}`);
        liveMints = 0;
        answer = {};
        break;
      case 'load':
        answer = await load(msg);
        answer.liveMints = liveMints;
        break;
      case 'hold':
        standin = new Standin(null, 0, msg.base);
        answer = await hold(msg);
        break;
      case 'mark':
        markedAt = Date.now();
        liveMints = 0;
        fetches = 0;
        answer = {};
        break;
      case 'watch':
        answer = await watch(msg);
        answer.liveMints = liveMints;
        answer.fetches = fetches;
        break;
      case 'close':
        held.forEach((e) => e.client.disconnect());
        held = [];
        process.send({ cmd: 'close' }, () => process.exit(0));
        return;
      default:
        throw new Error(`unknown command ${msg.cmd}`);
    }
    process.send({ cmd: msg.cmd, ...answer });
  } catch (e) {
    process.send({ cmd: msg.cmd, error: e.stack ?? String(e) });
  }
});

process.on('disconnect', () => process.exit(0));
// procs.mjs made a run directory on import; nothing here writes to it.
process.on('exit', () => rmSync(runDir, { recursive: true, force: true }));
