// Small helpers of the SDK tests: an event recorder, a WebSocket that records what it sends, and
// a loopback TCP proxy whose connections a test can cut (a network failure, server untouched).

import net from 'node:net';

import { WebSocket } from 'ws';

import { freePort } from './node.js';

/** Every event a SpidiClient emits, in order: [{name, payload, at}]. */
export function record(client) {
  const events = [];
  for (const name of ['welcome', 'resumed', 'reconnecting', 'error', 'ended', 'sessionEnded']) {
    client.on(name, (payload) => events.push({ name, payload, at: Date.now() }));
  }
  return {
    events,
    named: (name) => events.filter((e) => e.name === name).map((e) => e.payload),
  };
}

/**
 * A `ws` WebSocket class that keeps the STOMP SEND frames its instances send, as
 * {destination, body} (body parsed as JSON), in `sent`.
 */
export function recordingWebSocket() {
  const sent = [];
  class RecordingWebSocket extends WebSocket {
    send(data, ...rest) {
      const text = String(data);
      if (text.startsWith('SEND\n')) {
        const [head, ...tail] = text.split('\n\n');
        const destination = /^destination:(.*)$/m.exec(head)?.[1];
        const body = tail.join('\n\n').replace(/\0$/, '');
        sent.push({ destination, body: JSON.parse(body) });
      }
      return super.send(data, ...rest);
    }
  }
  return { WebSocket: RecordingWebSocket, sent };
}

/** A TCP proxy on loopback to `targetPort`; cut() drops every connection it carries. */
export class CuttableProxy {
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.sockets = new Set();
    this.server = null;
  }

  async start() {
    this.port = await freePort();
    this.server = net.createServer((client) => {
      const upstream = net.connect(this.targetPort, '127.0.0.1');
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => {});
      }
      client.pipe(upstream);
      upstream.pipe(client);
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    await new Promise((resolve) => this.server.listen(this.port, '127.0.0.1', resolve));
    return this;
  }

  url(pathname = '/ws') {
    return `ws://127.0.0.1:${this.port}${pathname}`;
  }

  /** Reset every carried connection (the client sees close 1006, as when a network drops). */
  cut() {
    for (const s of this.sockets) s.resetAndDestroy();
  }

  async close() {
    this.cut();
    await new Promise((resolve) => this.server?.close(() => resolve()) ?? resolve());
  }
}
