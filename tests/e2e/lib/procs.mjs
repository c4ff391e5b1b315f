// Processes for the end-to-end suite: free loopback ports, child processes whose output goes
// to a log file (shown when a test fails), readiness polling, and a stop that never hangs.
import { spawn } from 'node:child_process';
import { createWriteStream, mkdtempSync, readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const LOOPBACK = '127.0.0.1';

/** A directory for this run's logs and generated files. */
export const runDir = mkdtempSync(path.join(os.tmpdir(), 'realtime-e2e-'));

/** A port free on loopback right now. */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, LOOPBACK, () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Polls `check` until it returns a truthy value, or throws after `ms`. */
export async function waitFor(what, check, ms = 15000, every = 50) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value) return value;
    } catch (e) {
      last = e;
    }
    await sleep(every);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

/** GET with a short timeout; resolves to the Response or throws. */
export async function get(url, ms = 2000) {
  return fetch(url, { signal: AbortSignal.timeout(ms) });
}

const running = new Set();

/** A child process with its output in `<runDir>/<name>.log`. */
export class Proc {
  constructor(name, command, args, env) {
    this.name = name;
    this.logPath = path.join(runDir, `${name}.log`);
    const log = createWriteStream(this.logPath, { flags: 'a' });
    this.child = spawn(command, args, {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout.pipe(log);
    this.child.stderr.pipe(log);
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        running.delete(this);
        resolve({ code, signal });
      });
    });
    running.add(this);
  }

  log() {
    try {
      return readFileSync(this.logPath, 'utf8');
    } catch {
      return '';
    }
  }

  /** SIGTERM (or `signal`), then SIGKILL if it has not exited within `ms`. */
  async stop(signal = 'SIGTERM', ms = 20000) {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.exited;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), ms);
    const result = await this.exited;
    clearTimeout(timer);
    return result;
  }
}

/** Kills whatever a failed test left running. */
export async function stopAll() {
  await Promise.all([...running].map((p) => p.stop('SIGKILL', 1000)));
}

process.on('exit', () => {
  for (const p of running) p.child.kill('SIGKILL');
});
