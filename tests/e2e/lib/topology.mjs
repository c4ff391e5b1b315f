// The end-to-end topology, all real processes on loopback: the stand-in identity-service
// (`realtime-service standin`), this service (`realtime-service serve`), and Centrifugo
// v6.9.1 with a shipped config from deploy/centrifugo/ in which only ports, addresses, the
// engine and (for the compressed variant) `grpc.compression` are changed, by a generated
// overlay. The quick-start script builds the same topology from the same functions.
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { LOOPBACK, Proc, freePort, get, runDir, waitFor } from './procs.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, '../../..');
export const shippedConfig = {
  http: path.join(repo, 'deploy/centrifugo/config.json'),
  grpc: path.join(repo, 'deploy/centrifugo/config-grpc.json'),
};

/** The three ways Centrifugo can call the service. */
export const VARIANTS = {
  http: { shipped: 'http', compression: false },
  grpc: { shipped: 'grpc', compression: false },
  'grpc-gzip': { shipped: 'grpc', compression: true },
};

export function serviceBinary() {
  return process.env.REALTIME_BIN || path.join(repo, 'target/debug/realtime-service');
}

export function centrifugoBinary() {
  const bin = process.env.CENTRIFUGO_BIN;
  if (!bin) throw new Error('CENTRIFUGO_BIN is not set: run tests/e2e/run.sh (it runs setup.sh first)');
  return bin;
}

/** Every `endpoint` under `value` that starts with `from` starts with `to` instead. */
function pointEndpoints(value, from, to) {
  if (Array.isArray(value)) {
    value.forEach((v) => pointEndpoints(v, from, to));
  } else if (value && typeof value === 'object') {
    for (const [key, child] of Object.entries(value)) {
      if (key === 'endpoint' && typeof child === 'string' && child.startsWith(from)) {
        value[key] = to + child.slice(from.length);
      } else {
        pointEndpoints(child, from, to);
      }
    }
  }
}

/** Every proxy's `grpc` section, for switching compression on. */
function grpcSections(config) {
  const proxies = [config.client.proxy.connect, config.client.proxy.refresh, ...config.proxies];
  return proxies.map((p) => p.grpc).filter(Boolean);
}

/**
 * The shipped config for `variant`, with the service at `service` (`{http, grpc}` ports),
 * Centrifugo's own ports, and the in-memory engine (no Redis behind Centrifugo).
 */
export function centrifugoConfig(variant, { service, port, internalPort }) {
  const { shipped, compression } = VARIANTS[variant];
  const config = JSON.parse(readFileSync(shippedConfig[shipped], 'utf8'));
  pointEndpoints(config, 'http://realtime-service:9730', `http://${LOOPBACK}:${service.http}`);
  pointEndpoints(config, 'grpc://realtime-service:9731', `grpc://${LOOPBACK}:${service.grpc}`);
  config.http_server.port = port;
  config.http_server.internal_port = String(internalPort);
  config.http_server.address = LOOPBACK;
  config.engine = { type: 'memory' };
  if (compression) grpcSections(config).forEach((g) => (g.compression = true));
  return config;
}

const run = promisify(execFile);

/** `centrifugo checkconfig` on `file`: resolves to {code, output}. */
export async function checkconfig(file, env) {
  try {
    const { stdout, stderr } = await run(centrifugoBinary(), ['checkconfig', '-c', file], {
      env: { PATH: process.env.PATH, ...env },
      timeout: 20000,
    });
    return { code: 0, output: stdout + stderr };
  } catch (e) {
    return { code: e.code ?? 1, output: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

/** The stand-in identity-service, with its HTTP side as methods. */
export class Standin {
  static async start(name = 'standin', { grpc, http } = {}) {
    grpc ??= await freePort();
    http ??= await freePort();
    const proc = new Proc(name, serviceBinary(), ['standin'], {
      STANDIN_GRPC_LISTEN: `${LOOPBACK}:${grpc}`,
      STANDIN_HTTP_LISTEN: `${LOOPBACK}:${http}`,
      LOG_LEVEL: 'warn',
    });
    const standin = new Standin(proc, grpc, `http://${LOOPBACK}:${http}`);
    await waitFor('the stand-in', async () => (await get(`${standin.base}/stats`)).ok);
    return standin;
  }

  constructor(proc, grpcPort, base) {
    this.proc = proc;
    this.grpcAddress = `${LOOPBACK}:${grpcPort}`;
    this.base = base;
    this.rpcUrl = `${base}/rpc`;
  }

  /** A fresh single-use ticket for `who` ({user, family, tier, admin}). */
  async mint(who = {}) {
    const res = await fetch(`${this.base}/tickets`, {
      method: 'POST',
      body: JSON.stringify(who),
      signal: AbortSignal.timeout(2000),
    });
    if (!res.ok) throw new Error(`minting a ticket: HTTP ${res.status} ${await res.text()}`);
    return (await res.json()).ticket;
  }

  async setMode(mode) {
    const res = await fetch(`${this.base}/mode`, { method: 'PUT', body: mode, signal: AbortSignal.timeout(5000) });
    if (res.status !== 204) throw new Error(`setting mode ${mode}: HTTP ${res.status}`);
  }

  async stats() {
    return (await get(`${this.base}/stats`)).json();
  }

  async resetStats() {
    await fetch(`${this.base}/stats/reset`, { method: 'POST', signal: AbortSignal.timeout(2000) });
  }
}

/** This service, `serve`, on fixed ports so a restart comes back where Centrifugo looks. */
export class Service {
  /**
   * `ports` ({http, grpc}) default to free ones; `env` overrides the defaults below, which are
   * the product's own except for what a loopback topology needs.
   */
  static async start({ name = 'service', standin, pool, secret, ports, env = {} }) {
    ports ??= { http: await freePort(), grpc: await freePort() };
    const service = new Service(name, ports, {
      LISTEN_HOST: LOOPBACK,
      LISTEN_PORT: String(ports.http),
      GRPC_PROXY_LISTEN_PORT: String(ports.grpc),
      CENTRIFUGO_PROXY_AUTH: 'static_header',
      CENTRIFUGO_PROXY_SECRET: secret,
      IDENTITY_VALIDATE_GRPC_ADDRESS: standin.grpcAddress,
      FALLBACK_TICKETS_PATH: pool,
      FALLBACK_LOW_WATERMARK: '0',
      RPC_ROUTES: `demo=${standin.rpcUrl}`,
      ...env,
    });
    await service.start();
    return service;
  }

  constructor(name, ports, env) {
    this.name = name;
    this.ports = ports;
    this.env = env;
    this.generation = 0;
    this.base = `http://${LOOPBACK}:${ports.http}`;
  }

  /** Starts a process (again) on the same ports and waits until it is ready. */
  async start() {
    this.generation += 1;
    this.proc = new Proc(`${this.name}-${this.generation}`, serviceBinary(), ['serve'], this.env);
    const proc = this.proc;
    await waitFor(`${this.name} ready`, async () => {
      if (proc.child.exitCode !== null) throw new Error(`exited: ${proc.log()}`);
      return (await get(`${this.base}/readyz`)).ok;
    });
  }

  async metrics() {
    return (await get(`${this.base}/metrics`)).text();
  }

  /** The sum of a counter's samples whose labels include every `labels` pair. */
  async counter(name, labels = {}) {
    const text = await this.metrics();
    let sum = 0;
    for (const line of text.split('\n')) {
      if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
      const matches = Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`));
      if (matches) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
    return sum;
  }
}

/** Centrifugo v6.9.1 with the overlay of a shipped config. */
export class Centrifugo {
  static async start({ name = 'centrifugo', variant, service, secret, port, internalPort }) {
    port ??= await freePort();
    internalPort ??= await freePort();
    const config = centrifugoConfig(variant, { service: service.ports, port, internalPort });
    const file = path.join(runDir, `${name}.json`);
    writeFileSync(file, JSON.stringify(config, null, 2));
    const centrifugo = new Centrifugo(name, file, port, internalPort, secret);
    await centrifugo.start();
    return centrifugo;
  }

  constructor(name, file, port, internalPort, secret) {
    this.name = name;
    this.file = file;
    this.port = port;
    this.internalPort = internalPort;
    this.secret = secret;
    this.generation = 0;
    this.url = `ws://${LOOPBACK}:${port}/connection/websocket`;
  }

  async start() {
    this.generation += 1;
    this.proc = new Proc(`${this.name}-${this.generation}`, centrifugoBinary(), ['-c', this.file], {
      CENTRIFUGO_VAR_PROXY_SECRET: this.secret,
    });
    const proc = this.proc;
    await waitFor(`${this.name} healthy`, async () => {
      if (proc.child.exitCode !== null) throw new Error(`exited: ${proc.log()}`);
      return (await get(`http://${LOOPBACK}:${this.internalPort}/health`)).ok;
    });
  }

  async restart() {
    await this.proc.stop();
    await this.start();
  }
}

/** A random secret of the length the service requires. */
export function secret() {
  return [...crypto.getRandomValues(new Uint8Array(24))].map((b) => b.toString(16).padStart(2, '0')).join('');
}
