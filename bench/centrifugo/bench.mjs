// The service measured through the real Centrifugo v6.9.1 and its official JavaScript SDK
// (run it with bench/centrifugo/run.sh, which raises the open-file limit and finds both
// binaries). The topology is the end-to-end suite's (tests/e2e/lib): the stand-in
// identity-service, this service (release build), and one Centrifugo per proxy transport with
// the overlay of the shipped config (ports and the in-memory engine changed only). The SDK
// clients run in forked processes (clients.mjs), so one Node event loop does not cap them.
//
//   connect: closed loops of SDK clients (connect, wait for `connected`, disconnect) through
//     each Centrifugo, over HTTP and over gRPC proxies, at BENCH_CF_CONCURRENCY and at
//     BENCH_CF_LATENCY_CONCURRENCY in flight, BENCH_CF_ROUNDS rounds with the order of the two
//     transports rotated: connects/s, p50/p99 of connect() -> `connected`, and CPU per
//     connect (utime+stime from /proc/<pid>/stat) of this service and of Centrifugo.
//   storm: BENCH_CF_STORM_CLIENTS clients held connected, then Centrifugo restarted, by
//     SIGKILL (a crash) and by SIGTERM (its graceful shutdown), a new process on the same
//     port: time until every client is connected again, the stand-in's peak Validate calls
//     in flight, and the errors the clients saw.
//
// Everything listens on 127.0.0.1; every wait has a deadline and the whole run is cut at
// BENCH_CF_MAX_MINUTES. Prints markdown tables; the raw figures go to <run dir>/results.json.
import { fork } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

import { runDir, stopAll } from '../../tests/e2e/lib/procs.mjs';
import { Centrifugo, Service, Standin, secret } from '../../tests/e2e/lib/topology.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const int = (name, fallback, min, max) => {
  const v = Number(process.env[name] ?? fallback);
  if (!Number.isInteger(v) || v < min || v > max) throw new Error(`${name}=${process.env[name]} is not an integer in ${min}..${max}`);
  return v;
};
const cfg = {
  rounds: int('BENCH_CF_ROUNDS', 3, 1, 9),
  seconds: int('BENCH_CF_SECONDS', 5, 1, 60),
  warmupSeconds: int('BENCH_CF_WARMUP_SECONDS', 1, 0, 10),
  concurrency: int('BENCH_CF_CONCURRENCY', 16, 1, 512),
  latencyConcurrency: int('BENCH_CF_LATENCY_CONCURRENCY', 1, 1, 512),
  workers: int('BENCH_CF_WORKERS', 2, 1, 16),
  stormClients: int('BENCH_CF_STORM_CLIENTS', 10000, 1, 100000),
  stormWorkers: int('BENCH_CF_STORM_WORKERS', 4, 1, 32),
  stormRounds: int('BENCH_CF_STORM_ROUNDS', 2, 1, 9),
  stormSeconds: int('BENCH_CF_STORM_SECONDS', 120, 10, 600),
  stormTickets: int('BENCH_CF_STORM_TICKETS', 4, 1, 20),
  maxMinutes: int('BENCH_CF_MAX_MINUTES', 30, 1, 240),
  clkTck: int('CLK_TCK', 100, 1, 10000),
};
const scenario = process.argv[2] ?? 'all';
if (!['all', 'connect', 'storm'].includes(scenario)) {
  console.error('usage: node bench/centrifugo/bench.mjs [all|connect|storm]');
  process.exit(2);
}
const VARIANTS = ['http', 'grpc'];

// ---------- measuring ----------

/** utime+stime of `pid` in clock ticks (fields 14 and 15, counted after the `(comm)`). */
function cpuTicks(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return NaN;
  }
}

/** Busy clock ticks of the whole machine (all CPUs), from /proc/stat. */
function machineBusyTicks() {
  const [user, nice, system, , , irq, softirq, steal] = readFileSync('/proc/stat', 'utf8')
    .split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return user + nice + system + irq + softirq + steal;
}

/** CPU snapshots of named pids plus the machine, for the difference over a window. */
function snapshot(pids) {
  const self = process.cpuUsage();
  return {
    at: Date.now(),
    machine: machineBusyTicks(),
    self: ((self.user + self.system) / 1e6) * cfg.clkTck,
    pids: Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, cpuTicks(pid)])),
  };
}

/** CPU seconds per named pid over [a, b], and other processes in % of one core. */
function cpuBetween(a, b) {
  const seconds = (b.at - a.at) / 1000;
  const used = {};
  let known = b.self - a.self;
  for (const name of Object.keys(a.pids)) {
    used[name] = (b.pids[name] - a.pids[name]) / cfg.clkTck;
    known += b.pids[name] - a.pids[name];
  }
  const otherPct = Math.max(0, ((b.machine - a.machine - known) / cfg.clkTck / seconds) * 100);
  return { seconds, used, otherPct };
}

const quantile = (sorted, q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : NaN);
const spread = (xs) => {
  const s = [...xs].sort((x, y) => x - y);
  const mid = s.length >> 1;
  return { min: s[0], median: s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2, max: s[s.length - 1] };
};
const fmt = (x, digits = 1) => (Number.isFinite(x) ? x.toFixed(digits) : '–');
const fmtSpread = (xs, digits = 1) => {
  const s = spread(xs);
  return xs.length > 1 ? `${fmt(s.median, digits)} (${fmt(s.min, digits)}-${fmt(s.max, digits)})` : fmt(s.median, digits);
};

// ---------- client processes ----------

/** A forked clients.mjs, with one outstanding command at a time. */
class Worker {
  constructor(id) {
    this.id = id;
    this.child = fork(path.join(here, 'clients.mjs'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.pending = null;
    this.onProgress = () => {};
    this.child.on('message', (msg) => {
      if (msg.cmd === 'progress') return this.onProgress(msg);
      const p = this.pending;
      this.pending = null;
      if (!p) return;
      if (msg.error) p.reject(new Error(`client process ${this.id}: ${msg.error}`));
      else p.resolve(msg);
    });
    this.child.on('exit', (code) => this.pending?.reject(new Error(`client process ${this.id} exited (${code})`)));
  }

  /** Sends `cmd` and resolves to its answer, or rejects after `ms`. */
  request(cmd, args = {}, ms = 60000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`client process ${this.id}: no answer to ${cmd} in ${ms} ms`)), ms);
      this.pending = {
        resolve: (v) => (clearTimeout(timer), resolve(v)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      };
      this.child.send({ cmd, id: this.id, ...args });
    });
  }

  async close() {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    try {
      await this.request('close', {}, 10000);
    } catch {
      this.child.kill('SIGKILL');
    }
    await Promise.race([exited, sleep(5000)]);
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}

const forkWorkers = (n) => Array.from({ length: n }, (_, i) => new Worker(i));
const split = (total, parts) => Array.from({ length: parts }, (_, i) => Math.floor(total / parts) + (i < total % parts ? 1 : 0));

// ---------- the topology ----------

const SERVICE_ENV = {
  // As bench/run.sh: no span export, no per-request log lines.
  LOG_LEVEL: 'warn',
  OTEL_SDK_DISABLED: 'true',
};

async function topology() {
  const proxySecret = secret();
  const standin = await Standin.start('standin');
  const service = await Service.start({ standin, secret: proxySecret, env: SERVICE_ENV });
  const centrifugos = {};
  for (const variant of VARIANTS) {
    centrifugos[variant] = await Centrifugo.start({ name: `centrifugo-${variant}`, variant, service, secret: proxySecret });
  }
  return { standin, service, centrifugos };
}

const pidsOf = ({ standin, service, centrifugos }, workers = []) => ({
  service: service.proc.child.pid,
  standin: standin.proc.child.pid,
  ...Object.fromEntries(VARIANTS.map((v) => [`centrifugo-${v}`, centrifugos[v].proc.child.pid])),
  ...Object.fromEntries(workers.map((w) => [`clients-${w.id}`, w.child.pid])),
});

// ---------- connect ----------

/** Connects per second seen in the last run of each (variant, concurrency), for sizing tickets. */
const lastRate = new Map();

async function connectRun(topo, variant, concurrency) {
  const centrifugo = topo.centrifugos[variant];
  const workers = forkWorkers(Math.min(cfg.workers, concurrency));
  try {
    const slots = split(concurrency, workers.length);
    const windowSeconds = cfg.warmupSeconds + cfg.seconds;
    const rate = lastRate.get(`${variant}/${concurrency}`) ?? Math.min(3000, 400 * concurrency);
    await Promise.all(workers.map((w, i) => w.request('prepare', {
      base: topo.standin.base,
      tickets: Math.ceil((rate * windowSeconds * 1.5 * slots[i]) / concurrency) + 50,
    }, 120000)));
    const start = Date.now() + 100;
    const windowStart = start + cfg.warmupSeconds * 1000;
    const until = windowStart + cfg.seconds * 1000;
    const answers = Promise.all(workers.map((w, i) =>
      w.request('load', { url: centrifugo.url, slots: slots[i], until }, (windowSeconds + 30) * 1000)));
    await sleep(windowStart - Date.now());
    const a = snapshot(pidsOf(topo, workers));
    await sleep(until - Date.now());
    const b = snapshot(pidsOf(topo, workers));
    const results = await answers;
    const latencies = results.flatMap((r) => r.samples)
      .filter(([at]) => at >= windowStart && at <= until)
      .map(([, ms]) => ms)
      .sort((x, y) => x - y);
    const cpu = cpuBetween(a, b);
    const connects = latencies.length;
    const svcUs = (cpu.used.service / connects) * 1e6;
    const cfUs = (cpu.used[`centrifugo-${variant}`] / connects) * 1e6;
    const clientUs = (workers.reduce((s, w) => s + cpu.used[`clients-${w.id}`], 0) / connects) * 1e6;
    lastRate.set(`${variant}/${concurrency}`, connects / cpu.seconds);
    return {
      variant,
      concurrency,
      connects,
      perSecond: connects / cpu.seconds,
      p50: quantile(latencies, 0.5),
      p99: quantile(latencies, 0.99),
      max: latencies[latencies.length - 1],
      svcUs,
      cfUs,
      identityUs: (cpu.used.standin / connects) * 1e6,
      clientUs,
      share: svcUs / cfUs,
      otherPct: cpu.otherPct,
      failed: results.reduce((s, r) => s + r.failed, 0),
      errors: results.reduce((s, r) => s + r.errors, 0),
      liveMints: results.reduce((s, r) => s + r.liveMints, 0),
    };
  } finally {
    await Promise.all(workers.map((w) => w.close()));
  }
}

async function connectScenario(topo) {
  const runs = [];
  for (let round = 0; round < cfg.rounds; round++) {
    const order = round % 2 === 0 ? VARIANTS : [...VARIANTS].reverse();
    for (const concurrency of [cfg.concurrency, cfg.latencyConcurrency]) {
      for (const variant of order) {
        const r = await connectRun(topo, variant, concurrency);
        r.round = round + 1;
        runs.push(r);
        console.log(`round ${r.round} ${variant} C=${concurrency}: ${fmt(r.perSecond, 0)} connects/s, p50 ${fmt(r.p50, 2)} ms, p99 ${fmt(r.p99, 2)} ms, ` +
          `service ${fmt(r.svcUs)} µs, Centrifugo ${fmt(r.cfUs)} µs, stand-in ${fmt(r.identityUs)} µs, clients ${fmt(r.clientUs)} µs per connect, ` +
          `share ${fmt(r.share, 3)}, other ${fmt(r.otherPct, 0)}% of a core, failed ${r.failed}, errors ${r.errors}, live mints ${r.liveMints}`);
      }
    }
  }
  console.log(`\n### Connects through Centrifugo (${cfg.rounds} rounds of ${cfg.seconds} s after ${cfg.warmupSeconds} s warm-up; median (min-max) over rounds)\n`);
  console.log('| proxies | in flight | connects/s | p50 ms | p99 ms | service CPU µs/connect | Centrifugo CPU µs/connect | service ÷ Centrifugo | other processes, % of a core |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const concurrency of [cfg.concurrency, cfg.latencyConcurrency]) {
    for (const variant of VARIANTS) {
      const rs = runs.filter((r) => r.variant === variant && r.concurrency === concurrency);
      const col = (k, d) => fmtSpread(rs.map((r) => r[k]), d);
      console.log(`| ${variant.toUpperCase()} | ${concurrency} | ${col('perSecond', 0)} | ${col('p50', 2)} | ${col('p99', 2)} | ${col('svcUs')} | ${col('cfUs')} | ${col('share', 3)} | ${col('otherPct', 0)} |`);
    }
  }
  const failures = runs.reduce((s, r) => s + r.failed, 0);
  console.log(`\nconnects that did not complete within 10 s: ${failures}; SDK error events: ${runs.reduce((s, r) => s + r.errors, 0)}; tickets minted inside the window: ${runs.reduce((s, r) => s + r.liveMints, 0)}`);
  return runs;
}

// ---------- storm ----------

/** `how` the old Centrifugo goes: `term` (SIGTERM, its graceful shutdown) or `kill` (SIGKILL, a crash). */
async function stormRun(topo, variant, round, how) {
  const centrifugo = topo.centrifugos[variant];
  const workers = forkWorkers(Math.min(cfg.stormWorkers, cfg.stormClients));
  try {
    const counts = split(cfg.stormClients, workers.length);
    const holding = await Promise.all(workers.map((w, i) => w.request('hold', {
      url: centrifugo.url,
      base: topo.standin.base,
      clients: counts[i],
      parallel: 32,
      deadlineMs: cfg.stormSeconds * 1000,
      ticketsPerClient: cfg.stormTickets,
    }, (cfg.stormSeconds + 120) * 1000)));
    const held = holding.reduce((s, h) => s + h.held, 0);
    const connectMs = Math.max(...holding.map((h) => h.connectMs));
    console.log(`storm ${variant} ${how} #${round}: ${held} clients connected (${holding.reduce((s, h) => s + h.failed, 0)} failed) in ${fmt(connectMs / 1000, 1)} s ` +
      `(${fmt(held / (connectMs / 1000), 0)}/s, 32 at a time per client process); Centrifugo's open-file limit: ${openFileLimit(centrifugo.proc.child.pid)}`);
    await sleep(2000);
    await Promise.all(workers.map((w) => w.request('mark')));
    await topo.standin.resetStats();
    const progress = new Map();
    workers.forEach((w) => (w.onProgress = (m) => progress.set(w.id, m.reconnected)));
    const oldPid = centrifugo.proc.child.pid;
    const t0 = Date.now();
    const a = snapshot({ service: topo.service.proc.child.pid, standin: topo.standin.proc.child.pid });
    // Centrifugo's own shutdown.timeout is 30 s; SIGKILL only past it.
    const exit = how === 'kill' ? await centrifugo.proc.stop('SIGKILL', 5000) : await centrifugo.proc.stop('SIGTERM', 35000);
    const stoppedAt = Date.now();
    await centrifugo.start();
    const upAt = Date.now();
    const aNew = snapshot({ centrifugo: centrifugo.proc.child.pid });
    const watched = await Promise.all(workers.map((w) => w.request('watch', { deadlineMs: cfg.stormSeconds * 1000 }, (cfg.stormSeconds + 30) * 1000)));
    const reconnected = watched.reduce((s, r) => s + r.reconnected, 0);
    const lastAt = Math.max(...watched.map((r) => r.lastAt));
    const b = snapshot({ service: topo.service.proc.child.pid, standin: topo.standin.proc.child.pid });
    const bNew = snapshot({ centrifugo: centrifugo.proc.child.pid });
    const stats = await topo.standin.stats();
    const times = watched.flatMap((r) => r.times).map((t) => t - t0).sort((x, y) => x - y);
    const kinds = merge(watched.map((r) => r.kinds));
    const cpu = cpuBetween(a, b);
    const cfCpu = cpuBetween(aNew, bNew);
    const result = {
      variant,
      how,
      round,
      held,
      reconnected,
      oldPid,
      stopMs: stoppedAt - t0,
      exit,
      lostFirstMs: Math.min(...watched.map((r) => r.lostFirstAt || Infinity)) - t0,
      lostLastMs: Math.max(...watched.map((r) => r.lostLastAt)) - t0,
      lostCodes: merge(watched.map((r) => r.lostCodes)),
      upMs: upAt - t0,
      allMs: reconnected === held ? lastAt - t0 : NaN,
      lastMs: lastAt - t0,
      ended: held - reconnected,
      allAfterUpMs: reconnected === held ? lastAt - upAt : NaN,
      p50Ms: quantile(times, 0.5),
      p99Ms: quantile(times, 0.99),
      peakInFlight: stats.peak_in_flight,
      validateCalls: stats.validate_calls,
      accepted: stats.accepted,
      reused: stats.reused,
      unknown: stats.unknown,
      withErrors: watched.reduce((s, r) => s + r.withErrors, 0),
      withNonTransport: watched.reduce((s, r) => s + r.withNonTransport, 0),
      disconnected: merge(watched.map((r) => r.disconnected)),
      kinds,
      svcSeconds: cpu.used.service,
      standinSeconds: cpu.used.standin,
      newCfSeconds: cfCpu.used.centrifugo,
      liveMints: watched.reduce((s, r) => s + r.liveMints, 0),
      ticketsPerClient: watched.reduce((s, r) => s + r.fetches, 0) / held,
    };
    console.log(`storm ${variant} ${how} #${round}: ${reconnected}/${held} reconnected; the old Centrifugo closed clients from ${result.lostFirstMs} to ${result.lostLastMs} ms ` +
      `(${JSON.stringify(result.lostCodes)}) and exited (${JSON.stringify(exit)}) after ${result.stopMs} ms, new one healthy at ${result.upMs} ms, ` +
      `all connected at ${result.allMs} ms, the last that did at ${result.lastMs} ms (p50 ${result.p50Ms}, p99 ${result.p99Ms} ms after the signal); Validate calls ${stats.validate_calls} ` +
      `(accepted ${stats.accepted}, reused ${stats.reused}, unknown ${stats.unknown}), peak in flight ${stats.peak_in_flight}; ` +
      `clients with errors ${result.withErrors} (other than transport: ${result.withNonTransport}), disconnected ${JSON.stringify(result.disconnected)}, error kinds ${JSON.stringify(kinds)}; ` +
      `CPU s: service ${fmt(result.svcSeconds, 2)}, new Centrifugo ${fmt(result.newCfSeconds, 2)}, stand-in ${fmt(result.standinSeconds, 2)}; getData calls per client ${fmt(result.ticketsPerClient, 2)} (live mints ${result.liveMints})`);
    return result;
  } finally {
    await Promise.all(workers.map((w) => w.close()));
  }
}

/** Sums counts by key. */
function merge(maps) {
  const out = {};
  for (const m of maps) for (const [k, n] of Object.entries(m)) out[k] = (out[k] ?? 0) + n;
  return out;
}

function openFileLimit(pid) {
  try {
    return readFileSync(`/proc/${pid}/limits`, 'utf8').match(/Max open files\s+(\d+)/)[1] 
  } catch {
    return '?';
  }
}

async function stormScenario(topo) {
  const runs = [];
  for (let round = 1; round <= cfg.stormRounds; round++) {
    for (const variant of round % 2 === 1 ? VARIANTS : [...VARIANTS].reverse()) {
      for (const how of ['kill', 'term']) runs.push(await stormRun(topo, variant, round, how));
    }
  }
  console.log(`\n### Reconnect storm: ${cfg.stormClients} SDK clients, Centrifugo restarted (${cfg.stormRounds} rounds; median (min-max); times in s after the signal)\n`);
  console.log('| proxies | old process | clients | old process closed its last client | old process gone | new one healthy | last client connected again | connected again | p50 / p99 client connected | peak Validate in flight | Validate calls | clients with errors: any (not transport) | getData calls per client |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const how of ['kill', 'term']) {
    for (const variant of VARIANTS) {
      const rs = runs.filter((r) => r.variant === variant && r.how === how);
      const col = (k, d = 2, scale = 1) => fmtSpread(rs.map((r) => r[k] / scale), d);
      console.log(`| ${variant.toUpperCase()} | ${how === 'kill' ? 'SIGKILL' : 'SIGTERM'} | ${rs[0].held} | ${col('lostLastMs', 2, 1000)} | ${col('stopMs', 2, 1000)} | ${col('upMs', 2, 1000)} | ` +
        `${col('lastMs', 2, 1000)} | ${rs.map((r) => r.reconnected).join(', ')} | ${col('p50Ms', 2, 1000)} / ${col('p99Ms', 2, 1000)} | ${col('peakInFlight', 0)} | ${col('validateCalls', 0)} | ` +
        `${col('withErrors', 0)} (${col('withNonTransport', 0)}) | ${col('ticketsPerClient', 2)} |`);
    }
  }
  const ended = runs.filter((r) => r.ended > 0);
  for (const r of ended) {
    console.log(`${r.variant} ${r.how} #${r.round}: ${r.ended} clients did not connect again; the SDK reported them disconnected with ${JSON.stringify(r.disconnected)}`);
  }
  return runs;
}

// ---------- main ----------

const cutoff = setTimeout(async () => {
  console.error(`bench: cut at BENCH_CF_MAX_MINUTES=${cfg.maxMinutes}`);
  await stopAll();
  process.exit(1);
}, cfg.maxMinutes * 60000);
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, async () => {
    await stopAll();
    process.exit(130);
  });
}

try {
  console.log(`bench: ${JSON.stringify(cfg)}; logs and configs in ${runDir}`);
  const topo = await topology();
  const results = { cfg };
  if (scenario !== 'storm') results.connect = await connectScenario(topo);
  if (scenario !== 'connect') results.storm = await stormScenario(topo);
  writeFileSync(path.join(runDir, 'results.json'), JSON.stringify(results, null, 2));
  console.log(`\nraw figures: ${path.join(runDir, 'results.json')}`);
} catch (e) {
  console.error(`bench: ${e.stack ?? e}`);
  process.exitCode = 1;
} finally {
  clearTimeout(cutoff);
  await stopAll();
}
