// The quick start without Docker: the real Centrifugo v6.9.1 with a shipped config, this
// service and the stand-in identity-service, on loopback, until Ctrl-C. Started by
// scripts/quickstart.sh (which installs Centrifugo and builds the service first); the
// end-to-end suite runs it too (quickstart.test.mjs), so what the README promises is tested.
//
// Environment: QUICKSTART_PROXY=http|grpc (default http), CENTRIFUGO_PORT (8000),
// CENTRIFUGO_INTERNAL_PORT (9000), LISTEN_PORT (9730), GRPC_PROXY_LISTEN_PORT (9731),
// STANDIN_GRPC_PORT (50051), STANDIN_HTTP_PORT (50052).
import { writeFileSync } from 'node:fs';
import path from 'node:path';

import { LOOPBACK, runDir, stopAll } from './lib/procs.mjs';
import { Centrifugo, Service, Standin, secret } from './lib/topology.mjs';

const num = (name, fallback) => Number(process.env[name] ?? fallback);
const variant = process.env.QUICKSTART_PROXY ?? 'http';
if (!['http', 'grpc'].includes(variant)) {
  console.error(`QUICKSTART_PROXY=${variant}: use http or grpc`);
  process.exit(2);
}

const proxySecret = secret();
const pool = path.join(runDir, 'pool');
writeFileSync(pool, ['quickstart-pool-1', 'quickstart-pool-2', 'quickstart-pool-3'].join('\n') + '\n');

let stopping = false;
async function stop(code) {
  if (stopping) return;
  stopping = true;
  await stopAll();
  process.exit(code);
}
process.on('SIGINT', () => stop(0));
process.on('SIGTERM', () => stop(0));

try {
  const standin = await Standin.start('standin', { grpc: num('STANDIN_GRPC_PORT', 50051), http: num('STANDIN_HTTP_PORT', 50052) });
  const service = await Service.start({
    standin,
    pool,
    secret: proxySecret,
    ports: { http: num('LISTEN_PORT', 9730), grpc: num('GRPC_PROXY_LISTEN_PORT', 9731) },
  });
  const centrifugo = await Centrifugo.start({
    variant,
    service,
    secret: proxySecret,
    port: num('CENTRIFUGO_PORT', 8000),
    internalPort: num('CENTRIFUGO_INTERNAL_PORT', 9000),
  });
  console.log(`
realtime-service quick start (${variant} proxies), logs in ${runDir}
  Centrifugo v6.9.1   ${centrifugo.url}   (config: ${centrifugo.file})
  realtime-service    ${service.base}   (gRPC ${LOOPBACK}:${service.ports.grpc})
  identity stand-in   gRPC ${standin.grpcAddress}, tickets at ${standin.base}/tickets

Connect with the JavaScript SDK (cd tests/e2e, where npm ci put centrifuge and ws; save as try.mjs):

  import { Centrifuge } from 'centrifuge';
  import WebSocket from 'ws';
  const mint = async () => (await (await fetch('${standin.base}/tickets', { method: 'POST' })).json()).ticket;
  const client = new Centrifuge('${centrifugo.url}', {
    websocket: WebSocket,
    getData: async () => ({ token: await mint() }), // a fresh single-use ticket per attempt
  });
  client.on('connected', (ctx) => console.log('connected', ctx.client));
  client.connect();
  const sub = client.newSubscription('chat:demo-family');
  sub.on('publication', (ctx) => console.log('publication', ctx.data));
  sub.subscribe();
  await sub.ready();
  await client.publish('chat:demo-family', { text: 'hello' });

Take identity-service down (pool tickets quickstart-pool-1..3 then connect, degraded):
  curl -X PUT --data down ${standin.base}/mode      # and --data up to bring it back

Ctrl-C stops everything.
quickstart: ready`);
} catch (e) {
  console.error(`quickstart failed: ${e.message}\nlogs: ${runDir}`);
  await stop(1);
}
