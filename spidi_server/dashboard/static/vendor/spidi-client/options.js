// The options of SpidiClient: checked once, each with its default, so that a bad one fails at
// construction with a message naming it.

import { CLIENT_CODES, SpidiError } from './errors.js';
import { ROOM_CODE } from './message.js';
import { DEFAULT_GRACE_PERIOD_MS, RECONNECT_BASE_MS, RECONNECT_CAP_MS } from './policy.js';

const POSITIVE_MS = ['reconnectBaseMs', 'reconnectCapMs', 'gracePeriodMs', 'connectTimeoutMs'];

function randomClientId() {
  return `js-${Math.random().toString(36).slice(2, 10)}`;
}

/**
 * The options with their defaults; a TypeError naming the first bad one.
 * @param {import('../index.d.ts').SpidiClientOptions} options
 */
export function readOptions(options) {
  if (!options || typeof options !== 'object') throw new TypeError('SpidiClient: options object required');
  const { url, token, getToken, room } = options;
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    parsed = null;
  }
  if (parsed?.protocol !== 'ws:' && parsed?.protocol !== 'wss:') {
    throw new TypeError(`SpidiClient: url must be a ws:// or wss:// URL, got ${JSON.stringify(url)}`);
  }
  if (getToken !== undefined && typeof getToken !== 'function') {
    throw new TypeError('SpidiClient: getToken must be a function returning a token (or a promise of one)');
  }
  if (getToken === undefined && (typeof token !== 'string' || token === '')) {
    throw new TypeError('SpidiClient: token (a JWT string) or getToken is required');
  }
  if (room !== undefined && (typeof room !== 'string' || !ROOM_CODE.test(room))) {
    throw new TypeError(`SpidiClient: room must be 1-64 of A-Z a-z 0-9 _ . : -, got ${JSON.stringify(room)}`);
  }
  for (const name of POSITIVE_MS) {
    const v = options[name];
    if (v !== undefined && !(Number.isFinite(v) && v > 0)) {
      throw new TypeError(`SpidiClient: ${name} must be a positive number of ms, got ${v}`);
    }
  }
  return {
    url,
    token,
    getToken,
    room,
    hello: {
      clientId: options.clientId ?? randomClientId(),
      appVersion: options.appVersion ?? 'unknown',
      device: options.device,
      os: options.os,
    },
    reconnectBaseMs: options.reconnectBaseMs ?? RECONNECT_BASE_MS,
    reconnectCapMs: options.reconnectCapMs ?? RECONNECT_CAP_MS,
    gracePeriodMs: options.gracePeriodMs ?? DEFAULT_GRACE_PERIOD_MS,
    connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
    stompHeartbeatMs: options.stompHeartbeatMs ?? 10_000,
    latencyAlpha: options.latencyAlpha ?? 0.3,
    WebSocket: options.WebSocket,
    debug: options.debug ?? (() => {}),
  };
}

/** The WebSocket class to use: the one given, `ws` under Node, the browser's otherwise. */
export async function resolveWebSocket(given) {
  if (given) return given;
  if (typeof process !== 'undefined' && process.versions?.node) {
    const mod = await import('ws');
    return mod.WebSocket ?? mod.default;
  }
  if (typeof globalThis.WebSocket === 'function') return globalThis.WebSocket;
  throw new SpidiError(CLIENT_CODES.CONNECTION_REFUSED, 'no WebSocket implementation: pass options.WebSocket', {
    fatal: true,
  });
}
