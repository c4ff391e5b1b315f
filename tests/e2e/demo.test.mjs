// `realtime-service demo` next to stock Centrifugo: with CENTRIFUGO_PROXY_AUTH=static_header
// (and GRPC_PROXY_LISTEN_PORT for the gRPC proxies) the demo writes a Centrifugo config and
// prints the command line that starts Centrifugo against it; run as printed (only Centrifugo's
// own ports moved, by its environment), an SDK client connects, subscribes, publishes and
// calls the demo's rpc backend.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, test } from 'node:test';

import { sdkClient } from './lib/client.mjs';
import { LOOPBACK, Proc, freePort, get, runDir, stopAll, waitFor } from './lib/procs.mjs';
import { centrifugoBinary, serviceBinary } from './lib/topology.mjs';

after(stopAll);

for (const proxies of ['http', 'grpc']) {
  test(`the demo with static_header writes a Centrifugo config that works (${proxies} proxies)`, { timeout: 60000 }, async () => {
    const config = path.join(runDir, `demo-${proxies}.json`);
    const env = {
      CENTRIFUGO_PROXY_AUTH: 'static_header',
      LISTEN_HOST: LOOPBACK,
      LISTEN_PORT: String(await freePort()),
      DEMO_CENTRIFUGO_CONFIG: config,
    };
    if (proxies === 'grpc') env.GRPC_PROXY_LISTEN_PORT = String(await freePort());
    const demo = new Proc(`demo-${proxies}`, serviceBinary(), ['demo'], env);
    const line = await waitFor('the printed centrifugo command', () =>
      demo.log().split('\n').find((l) => l.startsWith('CENTRIFUGO_VAR_PROXY_SECRET=')), 30000);
    const [assignment, command, flag, file] = line.trim().split(/\s+/);
    assert.equal(command, 'centrifugo');
    assert.equal(flag, '-c');
    assert.equal(file, config);
    const [, secret] = assignment.split('=');

    const port = await freePort();
    const internal = await freePort();
    new Proc(`demo-centrifugo-${proxies}`, centrifugoBinary(), ['-c', file], {
      CENTRIFUGO_VAR_PROXY_SECRET: secret,
      CENTRIFUGO_HTTP_SERVER_PORT: String(port),
      CENTRIFUGO_HTTP_SERVER_INTERNAL_PORT: String(internal),
    });
    await waitFor('Centrifugo healthy', async () => (await get(`http://${LOOPBACK}:${internal}/health`)).ok);

    const client = sdkClient(`ws://${LOOPBACK}:${port}/connection/websocket`, { ticket: async () => 'demo-ticket-ok' }).connect();
    try {
      await client.connected();
      const { error, publications } = await client.subscribe('chat:demo-family');
      assert.equal(error, undefined, JSON.stringify(error));
      await client.centrifuge.publish('chat:demo-family', { text: 'hello' });
      await waitFor('the publication', () => publications.length > 0);
      assert.deepEqual(publications[0].data, { text: 'hello' });
      const echoed = await client.centrifuge.rpc('demo.echo', { n: 1 });
      assert.deepEqual(echoed.data.echo, { n: 1 });
    } finally {
      client.disconnect();
      await stopAll();
    }
  });
}
