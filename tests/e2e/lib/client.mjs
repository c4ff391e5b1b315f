// A client as an application writes it with the official JavaScript SDK (`centrifuge` on
// Node.js with `ws`), recording what the SDK reports: its events, the close codes of its
// WebSocket, and every ticket it sent.
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

import { waitFor } from './procs.mjs';

/**
 * Connects to `url`. `ticket` is the application's ticket source, called by the SDK's
 * `getData` on every connect attempt: the pattern single-use tickets need. With `fixedData`
 * the client instead sends the same connect data every time (what NOT to do).
 */
export function sdkClient(url, { ticket, fixedData, minReconnectDelay = 100, maxReconnectDelay = 1000 } = {}) {
  const record = { events: [], closes: [], tickets: [] };
  // The SDK takes the WebSocket constructor as an option; this one only listens.
  class RecordingWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      this.on('close', (code, reason) => record.closes.push({ code, reason: reason.toString() }));
    }
  }
  const options = {
    websocket: RecordingWebSocket,
    minReconnectDelay,
    maxReconnectDelay,
    timeout: 5000,
  };
  if (fixedData) {
    options.data = fixedData;
    record.tickets.push(fixedData.token);
  } else {
    options.getData = async () => {
      const token = await ticket();
      record.tickets.push(token);
      return { token };
    };
  }
  const client = new Centrifuge(url, options);
  for (const type of ['connecting', 'connected', 'disconnected', 'error', 'state']) {
    client.on(type, (ctx) => record.events.push({ type, ctx }));
  }
  return new Client(client, record);
}

export class Client {
  constructor(centrifuge, record) {
    this.centrifuge = centrifuge;
    this.record = record;
  }

  connect() {
    this.centrifuge.connect();
    return this;
  }

  disconnect() {
    this.centrifuge.disconnect();
  }

  events(type) {
    return this.record.events.filter((e) => e.type === type).map((e) => e.ctx);
  }

  /** Resolves to the first event of `type` (from index `from` on) that `pred` accepts. */
  async event(type, pred = () => true, ms = 10000, from = 0) {
    return waitFor(`SDK event ${type}`, () =>
      this.record.events.slice(from).find((e) => e.type === type && pred(e.ctx))?.ctx, ms);
  }

  async connected(ms = 10000) {
    return this.event('connected', () => true, ms);
  }

  /** A subscription, resolved once `subscribed` or rejected with the SDK's error context. */
  async subscribe(channel, options = {}) {
    const sub = this.centrifuge.newSubscription(channel, options);
    const publications = [];
    sub.on('publication', (ctx) => publications.push(ctx));
    const outcome = new Promise((resolve, reject) => {
      sub.once('subscribed', (ctx) => resolve(ctx));
      sub.once('error', (ctx) => reject(ctx));
      sub.once('unsubscribed', (ctx) => reject(ctx));
    });
    sub.subscribe();
    try {
      const ctx = await outcome;
      return { sub, ctx, publications };
    } catch (ctx) {
      return { sub, error: ctx, publications };
    }
  }
}
