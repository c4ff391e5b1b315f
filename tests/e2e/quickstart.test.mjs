// The quick start as the README gives it: scripts/quickstart.sh starts, prints its SDK
// snippet, and that snippet, run as printed, connects, subscribes and publishes.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';

import { freePort, waitFor } from './lib/procs.mjs';
import { repo } from './lib/topology.mjs';

test('scripts/quickstart.sh runs as written and its SDK snippet connects, subscribes and publishes', { timeout: 180000 }, async () => {
  const ports = {};
  for (const name of ['CENTRIFUGO_PORT', 'CENTRIFUGO_INTERNAL_PORT', 'LISTEN_PORT', 'GRPC_PROXY_LISTEN_PORT', 'STANDIN_GRPC_PORT', 'STANDIN_HTTP_PORT']) {
    ports[name] = String(await freePort());
  }
  const child = spawn('bash', [path.join(repo, 'scripts/quickstart.sh')], {
    env: { ...process.env, ...ports, QUICKSTART_PROXY: 'grpc' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  const snippetFile = path.join(repo, 'tests/e2e', `.quickstart-try-${process.pid}.mjs`);
  try {
    await waitFor('quickstart: ready', () => out.includes('quickstart: ready') || child.exitCode !== null, 150000, 200);
    assert.ok(out.includes('quickstart: ready'), out);
    const snippet = out.split('(cd tests/e2e, where npm ci put centrifuge and ws; save as try.mjs):')[1]
      .split('Take identity-service down')[0]
      .split('\n').map((l) => l.replace(/^ {2}/, '')).join('\n');
    writeFileSync(snippetFile, `${snippet}\nsetTimeout(() => process.exit(0), 1000);\n`);
    const { stdout } = await promisify(execFile)('node', [snippetFile], { cwd: path.join(repo, 'tests/e2e'), timeout: 20000 });
    assert.match(stdout, /^connected [0-9a-f-]{36}$/m, stdout);
    assert.match(stdout, /publication \{ text: 'hello' \}/, stdout);
  } finally {
    rmSync(snippetFile, { force: true });
    child.kill('SIGINT');
    assert.equal(await exited, 0, out);
  }
});
