// The reconnection policy, in one place: which failures are worth another try, how long to wait
// before it, and which errors end the client. No I/O here, so every rule is testable alone.

/** Default first backoff window (ms) and its cap. */
export const RECONNECT_BASE_MS = 500;
export const RECONNECT_CAP_MS = 30_000;

/** What a WELCOME without gracePeriodMs (servers before issue 17) means: the server default. */
export const DEFAULT_GRACE_PERIOD_MS = 15_000;

/**
 * HELLO refusals that another try cannot cure: the client stops with the error.
 * (UNAVAILABLE, the only other HELLO refusal, says "retry".)
 */
export const FATAL_HELLO_CODES = new Set([
  'ROOM_FULL',
  'ROOM_NOT_FOUND',
  'ROOM_DISABLED',
  'FORBIDDEN', // the token has no role that may join
  'BAD_REQUEST', // a malformed HELLO (room code, clientId…) is malformed again next time
  'BAD_JSON',
]);

/**
 * WebSocket close codes after which reconnecting would only repeat the failure: the server
 * refused what this client sends (1007 invalid UTF-8, 1009 too large). 1008 before CONNECTED is
 * an authentication refusal (fatal too, see closeVerdict); 1008 on an established connection is a
 * rate limit or a slow consumer, and 1002 a STOMP heart-beat timeout: both are retried.
 */
const FATAL_CLOSE_CODES = new Set([1007, 1009]);

/**
 * The delay before the n-th reconnection attempt in a row (n = 0, 1, 2 …): exponential backoff
 * with full jitter, uniform in [0, min(cap, base · 2^n)).
 * @param {number} n attempts that failed in a row before this one
 * @param {{baseMs?: number, capMs?: number, random?: () => number}} [opts]
 */
export function backoffDelay(n, { baseMs = RECONNECT_BASE_MS, capMs = RECONNECT_CAP_MS, random = Math.random } = {}) {
  const window = Math.min(capMs, baseMs * 2 ** Math.min(n, 52));
  return Math.floor(random() * window);
}

/**
 * What to do after the WebSocket closed: 'retry', 'auth' (fatal: the token was refused) or
 * 'fatal' (the server refused this client's traffic).
 * @param {number | undefined} code WebSocket close code (1006 when the socket just dropped)
 * @param {boolean} wasConnected whether CONNECTED had arrived on this connection
 */
export function closeVerdict(code, wasConnected) {
  if (code === 1008 && !wasConnected) return 'auth';
  if (FATAL_CLOSE_CODES.has(code)) return 'fatal';
  return 'retry';
}

/**
 * Whether a session dropped at `droppedAt` may still be resumed at `now`.
 * @param {number | null} droppedAt epoch ms the connection dropped (null: it did not)
 */
export function withinGrace(droppedAt, gracePeriodMs, now = Date.now()) {
  return droppedAt !== null && now - droppedAt < gracePeriodMs;
}

/**
 * Exponentially weighted moving average of latency samples (ms).
 */
export class Ewma {
  /** @param {number} alpha weight of a new sample, 0 < alpha ≤ 1 */
  constructor(alpha = 0.3) {
    if (!(alpha > 0 && alpha <= 1)) throw new RangeError(`latency alpha must be in (0, 1], got ${alpha}`);
    this.alpha = alpha;
    /** @type {number | null} */
    this.value = null;
  }

  /** Add a sample; returns the new average. */
  add(sample) {
    this.value = this.value === null ? sample : this.value + this.alpha * (sample - this.value);
    return this.value;
  }
}
