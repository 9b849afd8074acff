// Small helpers of the SDK tests: an event recorder, a WebSocket that records what it sends, and
// a loopback TCP proxy whose connections a test can cut (a network failure, server untouched).

import net from 'node:net';

import { WebSocket } from 'ws';

import { freePort } from './node.js';

/** Every event a SpidiClient emits, in order: [{name, payload, at}]. */
export function record(client) {
  const events = [];
  for (const name of ['welcome', 'resumed', 'reconnecting', 'connecting', 'error', 'ended', 'sessionEnded']) {
    client.on(name, (payload) => events.push({ name, payload, at: Date.now() }));
  }
  return {
    events,
    named: (name) => events.filter((e) => e.name === name).map((e) => e.payload),
  };
}

/**
 * A `ws` WebSocket class that keeps the STOMP SEND frames its instances send, as
 * {destination, body} (body parsed as JSON), in `sent`; SENDs to a destination in `blocked` are
 * not sent at all (as when a suspended tab stops its timers), only kept in `held`.
 */
export function recordingWebSocket() {
  const wire = { sent: [], held: [], blocked: new Set() };
  class RecordingWebSocket extends WebSocket {
    send(data, ...rest) {
      const text = String(data);
      if (text.startsWith('SEND\n')) {
        const [head, ...tail] = text.split('\n\n');
        const destination = /^destination:(.*)$/m.exec(head)?.[1];
        const frame = { destination, body: JSON.parse(tail.join('\n\n').replace(/\0$/, '')) };
        if (wire.blocked.has(destination)) {
          wire.held.push(frame);
          return undefined;
        }
        wire.sent.push(frame);
      }
      return super.send(data, ...rest);
    }
  }
  wire.WebSocket = RecordingWebSocket;
  return wire;
}

/**
 * A TCP proxy on loopback to `targetPort`; cut() drops every connection it carries, `delayMs`
 * holds the client's bytes back that long (a slow network: every round trip takes at least that),
 * and `drop` (a predicate on the text of a server-to-client WebSocket message) loses the first
 * message it matches, as a lossy path would: then `dropped` holds it.
 */
export class CuttableProxy {
  constructor(targetPort, { delayMs = 0 } = {}) {
    this.targetPort = targetPort;
    this.delayMs = delayMs;
    this.sockets = new Set();
    this.server = null;
    /** @type {((text: string) => boolean) | null} */
    this.drop = null;
    this.dropped = [];
  }

  /** Forward the server's bytes: the HTTP upgrade answer, then WebSocket frames one by one. */
  relay(upstream, client) {
    let buf = Buffer.alloc(0);
    let upgraded = false;
    upstream.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (!upgraded) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        client.write(buf.subarray(0, end + 4));
        buf = buf.subarray(end + 4);
        upgraded = true;
      }
      for (;;) {
        if (buf.length < 2) return;
        let length = buf[1] & 0x7f;
        let offset = 2;
        if (length === 126) {
          if (buf.length < 4) return;
          length = buf.readUInt16BE(2);
          offset = 4;
        } else if (length === 127) {
          if (buf.length < 10) return;
          length = Number(buf.readBigUInt64BE(2));
          offset = 10;
        }
        if (buf[1] & 0x80) offset += 4; // (a server does not mask; kept for completeness)
        if (buf.length < offset + length) return;
        const frame = buf.subarray(0, offset + length);
        buf = buf.subarray(offset + length);
        const text = frame.subarray(offset).toString('utf8');
        if (this.drop?.(text)) {
          this.drop = null;
          this.dropped.push(text);
          continue;
        }
        client.write(frame);
      }
    });
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
      if (this.delayMs > 0) {
        // Equal delays keep the order: timers of equal timeout fire in the order they were set.
        client.on('data', (chunk) => setTimeout(() => upstream.destroyed || upstream.write(chunk), this.delayMs));
      } else {
        client.pipe(upstream);
      }
      this.relay(upstream, client);
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
