// The end-to-end scenarios, run once per way Centrifugo calls the service (one test file per
// variant). Every assertion is about what the official SDK reports to the application:
// events, close codes, error codes and data; the service's metrics only where the SDK
// cannot see something (a refused secret, which transport carried a call).
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { sdkClient } from './client.mjs';
import { runDir, stopAll, waitFor } from './procs.mjs';
import {
  Centrifugo, Service, Standin, VARIANTS, centrifugoConfig, checkconfig, repo, secret, shippedConfig,
} from './topology.mjs';

const POOL_SIZE = 40;

/**
 * What the suite sets beyond the topology's defaults: short deadlines and windows so outages
 * are quick to reach, small limits (tests/e2e/policy.toml, a publish burst of 3), the info
 * fields a client may see, and a short drain for the restart scenario.
 */
const SUITE_ENV = {
  IDENTITY_VALIDATE_DEADLINE_MS: '1000',
  IDENTITY_PROBE_INTERVAL_MS: '200',
  FALLBACK_DEGRADED_WINDOW_MS: '1000',
  FALLBACK_CONNECT_TTL_S: '60',
  CHANNEL_POLICY_PATH: path.join(repo, 'tests/e2e/policy.toml'),
  PUBLISH_RATE_PER_SECOND: '1',
  PUBLISH_BURST: '3',
  CONNECT_INFO_FIELDS: 'user,family_id',
  SHUTDOWN_DRAIN_DELAY_MS: '500',
  SHUTDOWN_TIMEOUT_MS: '5000',
  LOG_FORMAT: 'json',
};

export function defineSuite(variant) {
  const transport = VARIANTS[variant].shipped;
  describe(`through Centrifugo v6.9.1, ${variant} proxies`, () => {
    const family = `fam-${variant}`;
    const poolTickets = Array.from({ length: POOL_SIZE }, (_, i) => `pool-${variant}-${i}`);
    let proxySecret;
    let standin;
    let service;
    let centrifugo;
    const clients = [];
    let refreshed;
    const client = (options) => {
      const c = sdkClient(centrifugo.url, options);
      clients.push(c);
      return c;
    };
    const mintFor = (who) => () => standin.mint({ family, ...who });

    before(async () => {
      proxySecret = secret();
      const pool = path.join(runDir, `pool-${variant}`);
      writeFileSync(pool, poolTickets.join('\n') + '\n');
      standin = await Standin.start(`standin-${variant}`);
      service = await Service.start({ name: `service-${variant}`, standin, pool, secret: proxySecret, env: SUITE_ENV });
      centrifugo = await Centrifugo.start({ name: `centrifugo-${variant}`, variant, service, secret: proxySecret });
    });

    after(async () => {
      clients.forEach((c) => c.disconnect());
      await stopAll();
    });

    test('Centrifugo accepts the config only with CENTRIFUGO_VAR_PROXY_SECRET set', async () => {
      const overlay = centrifugoConfig(variant, { service: service.ports, port: 1, internalPort: 2 });
      const file = path.join(runDir, `checkconfig-${variant}.json`);
      writeFileSync(file, JSON.stringify(overlay));
      for (const config of [shippedConfig[transport], file]) {
        const ok = await checkconfig(config, { CENTRIFUGO_VAR_PROXY_SECRET: proxySecret });
        assert.equal(ok.code, 0, ok.output);
        const refused = await checkconfig(config, {});
        assert.notEqual(refused.code, 0);
        assert.match(refused.output, /CENTRIFUGO_VAR_PROXY_SECRET/);
      }
    });

    test('a valid ticket connects as the user identity-service named; the client sees the info fields, never meta', async () => {
      const alice = client({ ticket: mintFor({ user: `alice-${variant}` }) }).connect();
      await alice.connected();
      const bob = client({ ticket: mintFor({ user: `bob-${variant}` }) }).connect();
      await bob.connected();
      const { error, publications } = await bob.subscribe(`chat:${family}`);
      assert.equal(error, undefined, JSON.stringify(error));
      await alice.centrifuge.publish(`chat:${family}`, { text: 'hello' });
      await waitFor('the publication', () => publications.length > 0);
      const info = publications[0].info;
      assert.equal(info.user, `alice-${variant}`);
      // CONNECT_INFO_FIELDS=user,family_id: exactly those, and nothing of meta.
      assert.deepEqual(info.connInfo, { user: `alice-${variant}`, family_id: family });
      const seen = JSON.stringify([alice.record.events, bob.record.events, publications]);
      for (const secretish of ['subscription_tier', 'parental_state', '"meta"']) {
        assert.ok(!seen.includes(secretish), `the client saw ${secretish}`);
      }
    });

    test('an unknown ticket gets disconnect 4401 "invalid ticket" and the SDK reconnects with a fresh ticket', async () => {
      let n = 0;
      const stranger = client({ ticket: async () => `unknown-${variant}-${n++}` }).connect();
      await waitFor('two refused attempts', () => stranger.record.closes.length >= 2);
      for (const close of stranger.record.closes) {
        assert.deepEqual(close, { code: 4401, reason: 'invalid ticket' });
      }
      // Still trying: the 4000-4499 range is the SDK's reconnect range; getData ran per attempt.
      assert.equal(stranger.centrifuge.state, 'connecting');
      assert.ok(stranger.record.tickets.length >= 2);
      assert.equal(new Set(stranger.record.tickets).size, stranger.record.tickets.length);
      assert.equal(stranger.events('disconnected').length, 0);
      stranger.disconnect();
    });

    test('a fresh ticket per attempt (getData): after Centrifugo restarts every client reconnects and no ticket is sent twice', async () => {
      const fleet = Array.from({ length: 20 }, (_, i) => client({ ticket: mintFor({ user: `u${i}-${variant}` }) }).connect());
      await Promise.all(fleet.map((c) => c.connected()));
      // The pattern to avoid: the same connect data on every attempt.
      const fixed = client({ fixedData: { token: await standin.mint({ family, user: `fixed-${variant}` }) } }).connect();
      await fixed.connected();
      await standin.resetStats();

      await centrifugo.restart();
      await waitFor('every client connected again', () =>
        fleet.every((c) => c.events('connected').length >= 2), 20000);
      const sent = fleet.flatMap((c) => c.record.tickets);
      assert.equal(new Set(sent).size, sent.length, 'a ticket was sent twice');
      // The fixed-data client sent its used ticket again: refused, 4401, over and over.
      await waitFor('the fixed-data client refused', () => fixed.record.closes.some((c) => c.code === 4401), 10000);
      assert.ok((await standin.stats()).reused >= 1, 'the stand-in never saw the fixed-data ticket again');
      assert.equal(fixed.events('connected').length, 1);
      fixed.disconnect();
      fleet.forEach((c) => c.disconnect());
    });

    test('subscribe, publish, rpc and sub_refresh as the SDK reports them', async () => {
      const carol = client({ ticket: mintFor({ user: `carol-${variant}` }) }).connect();
      await carol.connected();
      const c = carol.centrifuge;

      const allowed = await carol.subscribe(`chat:${family}`);
      assert.equal(allowed.error, undefined, JSON.stringify(allowed.error));
      // A non-temporary subscribe error ends the subscription: the SDK reports it as
      // `unsubscribed` with the error's code and message.
      const denied = await carol.subscribe('chat:another-family');
      assert.deepEqual(denied.error, { channel: 'chat:another-family', code: 403, reason: 'permission denied' });

      assert.deepEqual(await c.publish(`chat:${family}`, { text: 'ok' }), {});
      await assert.rejects(c.publish('chat:another-family', { text: 'no' }), (e) => e.code === 403);
      await assert.rejects(c.publish(`chat:${family}`, { text: 'x'.repeat(300) }), (e) => e.code === 413);
      // PUBLISH_BURST=3 at 1/s: a burst of six is cut.
      const burst = await Promise.allSettled(Array.from({ length: 6 }, () => c.publish(`chat:${family}`, { text: 'b' })));
      const limited = burst.filter((r) => r.status === 'rejected');
      assert.ok(limited.length >= 2, JSON.stringify(burst.map((r) => r.status)));
      for (const r of limited) {
        assert.equal(r.reason.code, 429);
        assert.equal(r.reason.temporary, true);
      }

      const echoed = await c.rpc('demo.echo', { n: 1 });
      assert.deepEqual(echoed.data.echo, { n: 1 });
      await assert.rejects(c.rpc('nosuch.method', {}), (e) => e.code === 404);

      // chat subscriptions last 2 s (tests/e2e/policy.toml); Centrifugo re-checks expiry on the
      // connection's presence tick (about 25 s), so the sub_refresh test below looks at this
      // subscription after the outage test.
      refreshed = { client: carol, sub: allowed.sub, decisions: await subRefreshDecisions() };
    });

    const subRefreshDecisions = () =>
      service.counter('realtime_proxy_decisions_total', { proxy: 'sub_refresh', transport });


    test('identity-service outage: pool tickets connect degraded, normal tickets retry, and refresh ends the degraded session when it returns', { timeout: 120000 }, async () => {
      let useNormal = false;
      let next = 0;
      // The app's ticket source: the pool while identity-service is down (handed out by the app
      // backend), a freshly minted ticket otherwise.
      const degraded = client({
        ticket: async () => (useNormal ? standin.mint({ family, user: `dee-${variant}` }) : poolTickets[next++]),
      });
      degraded.switchToNormal = () => (useNormal = true);
      const normal = client({ ticket: mintFor({ user: `norm-${variant}` }) });

      await standin.setMode('down');
      try {
        await outage(degraded, normal);
      } finally {
        await standin.setMode('up');
      }
      // Centrifugo calls refresh at the degraded connection's expire_at (FALLBACK_CONNECT_TTL_S
      // = 60 s): the service answers expired, the SDK reconnects with a fresh ticket.
      await waitFor('the degraded session ended and reconnected normally', () =>
        degraded.events('connected').length >= 2, 100000, 250);
      degraded.centrifuge.removeSubscription(degraded.centrifuge.getSubscription(`chat:${family}`));
      const again = await degraded.subscribe(`chat:${family}`);
      assert.equal(again.error, undefined, JSON.stringify(again.error));
      degraded.disconnect();
      normal.disconnect();
    });

    async function outage(degraded, normal) {
      degraded.connect();
      normal.connect();
      await degraded.connected(15000);
      // Degraded: only namespaces that allow it (broadcast), everything else fails closed.
      const news = await degraded.subscribe('broadcast:news');
      assert.equal(news.error, undefined, JSON.stringify(news.error));
      const chat = await degraded.subscribe(`chat:${family}`);
      assert.ok(chat.error, 'a degraded connection subscribed to chat');

      // The normal client's attempts failed with an error the SDK retries.
      await waitFor('a retried connect error', () => normal.events('error').length >= 2, 15000);
      assert.equal(normal.events('disconnected').length, 0, JSON.stringify(normal.events('disconnected')));
      for (const { error } of normal.events('error')) {
        assert.equal(error.temporary, true, JSON.stringify(error));
      }
      assert.equal(normal.centrifuge.state, 'connecting');

      degraded.switchToNormal();
      await standin.setMode('up');
      await normal.connected(30000);
    }

    test('sub_refresh: Centrifugo re-checks an expiring subscription and the policy keeps it', { timeout: 60000 }, async () => {
      await waitFor('a sub_refresh call', async () => (await subRefreshDecisions()) > refreshed.decisions, 45000, 500);
      assert.equal(refreshed.sub.state, 'subscribed');
      refreshed.client.disconnect();
    });

    test('a Centrifugo with the wrong proxy secret: the client is refused and the service counts it', async () => {
      const wrong = await Centrifugo.start({ name: `centrifugo-wrong-${variant}`, variant, service, secret: secret() });
      const before = await service.counter('realtime_proxy_signature_rejections_total');
      const victim = sdkClient(wrong.url, { ticket: mintFor({ user: `v-${variant}` }) }).connect();
      clients.push(victim);
      await waitFor('a refused attempt', () => victim.record.closes.length >= 1, 15000);
      assert.equal(victim.record.closes[0].code, 4401, JSON.stringify(victim.record.closes));
      assert.equal(victim.events('connected').length, 0);
      assert.ok((await service.counter('realtime_proxy_signature_rejections_total')) > before);
      victim.disconnect();
      await wrong.proc.stop();
    });

    test('a restart of the service while clients connect, publish and call rpc: only errors the SDK retries, no call hangs, calls reach the new process', { timeout: 90000 }, async () => {
      const workers = Array.from({ length: 8 }, (_, i) => client({ ticket: mintFor({ user: `w${i}-${variant}` }) }).connect());
      await Promise.all(workers.map((w) => w.connected()));
      const outcomes = [];
      let running = true;
      const loops = workers.map(async (w) => {
        // rpc every round, a publish every 20th (the publish rate limit is 1/s per user).
        for (let round = 0; running; round++) {
          const calls = [['rpc', () => w.centrifuge.rpc('demo.echo', { t: round })]];
          if (round % 20 === 0) calls.push(['publish', () => w.centrifuge.publish(`family:${family}`, { t: round })]);
          for (const [kind, call] of calls) {
            const started = Date.now();
            try {
              await call();
              outcomes.push({ kind, ok: true, ms: Date.now() - started });
            } catch (e) {
              outcomes.push({ kind, ok: false, code: e.code, temporary: e.temporary, message: e.message, ms: Date.now() - started });
            }
          }
          await sleep(50);
        }
      });
      await sleep(1000);
      // Clients connecting while the service restarts: their attempts may fail, temporarily.
      const stopping = service.proc.stop('SIGTERM');
      const latecomers = Array.from({ length: 4 }, (_, i) => client({ ticket: mintFor({ user: `late${i}-${variant}` }) }).connect());
      const exit = await stopping;
      assert.equal(exit.code, 0, service.proc.log().slice(-2000));
      const restarted = Date.now();
      await service.start();
      // Centrifugo reaches the new process when its clients reconnect: at once over HTTP; over
      // gRPC each named proxy has its own connection, back after grpc-go's reconnect backoff
      // (1 s, growing). Until then calls fail with the temporary error 100.
      const firstNew = outcomes.length;
      const answered = (kind) => outcomes.slice(firstNew).some((o) => o.ok && o.kind === kind);
      await waitFor('rpc and publish answered by the new process', () => answered('rpc') && answered('publish'), 15000);
      const gap = Date.now() - restarted;
      const steady = outcomes.length;
      await sleep(2000);
      running = false;
      await Promise.all(loops);
      console.log(`restart (${variant}): ${outcomes.length} calls, ${outcomes.filter((o) => !o.ok).length} failed, rpc and publish answered again ${gap} ms after the old process exited`);

      const failures = outcomes.filter((o) => !o.ok);
      const summary = (list) => JSON.stringify(list.slice(0, 5)) + (list.length > 5 ? ` and ${list.length - 5} more` : '');
      // The SDK's own timeout is 5 s: a hung call would show as code 1 (timeout).
      assert.ok(outcomes.every((o) => o.ms < 5000), summary(outcomes.filter((o) => o.ms >= 5000)));
      for (const f of failures) {
        assert.ok(f.temporary === true || f.code < 100, `not retryable: ${JSON.stringify(f)}`);
      }
      const later = outcomes.slice(steady);
      assert.ok(later.length > 0 && later.every((o) => o.ok), summary(later.filter((o) => !o.ok)));
      // The new process answered them (for gRPC: Centrifugo's connection moved to it).
      assert.ok((await service.counter('realtime_proxy_decisions_total', { transport })) > 0);
      assert.ok(workers.every((w) => w.centrifuge.state === 'connected'));
      await Promise.all(latecomers.map((c) => c.connected(20000)));
      for (const c of latecomers) {
        for (const { error } of c.events('error')) {
          assert.ok(error.temporary === true || error.code < 100, `not retryable: ${JSON.stringify(error)}`);
        }
        c.disconnect();
      }
      workers.forEach((w) => w.disconnect());
    });
  });
}
