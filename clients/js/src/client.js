// SpidiClient: one STOMP connection (through @stomp/stompjs) to a Spidi node, holding at most one
// presence session and any number of monitor watches. The reconnection loop is ours, not
// stompjs's (its reconnectDelay is 0): stompjs has no jitter, and a reconnect here must fetch a
// new token and resume the session. The rules it follows live in policy.js.

import { Client } from '@stomp/stompjs';

import { CLIENT_CODES, SpidiError } from './errors.js';
import { ROOM_CODE, parseBody } from './message.js';
import { readOptions, resolveWebSocket } from './options.js';
import { Ewma, FATAL_HELLO_CODES, backoffDelay, closeVerdict, withinGrace } from './policy.js';
import { AlertWatch, RoomWatch, RoomsWatch } from './watches.js';

const STOMP_SUBPROTOCOLS = ['v12.stomp', 'v11.stomp', 'v10.stomp'];
const JSON_HEADERS = { 'content-type': 'application/json' };
const LATENCY_MAX_MS = 3_600_000; // the server's bound on latencyMs
const LEAVE_RECEIPT_TIMEOUT_MS = 5_000;
const EVENTS = new Set(['welcome', 'resumed', 'reconnecting', 'connecting', 'error', 'ended', 'sessionEnded', 'connected']);

export class SpidiClient {
  /**
   * @param {import('../index.d.ts').SpidiClientOptions} options
   */
  constructor(options) {
    const o = readOptions(options);
    this._url = o.url;
    this._token = o.token;
    this._getToken = o.getToken;
    this._room = o.room;
    this._hello = o.hello; // the HELLO fields besides roomCode and resumeSessionId
    this._baseMs = o.reconnectBaseMs;
    this._capMs = o.reconnectCapMs;
    this._stompHeartbeatMs = o.stompHeartbeatMs;
    this._connectTimeoutMs = o.connectTimeoutMs;
    this._WebSocket = o.WebSocket;
    this._debug = o.debug;
    this._latency = new Ewma(o.latencyAlpha);
    // Servers before issue 17 do not say their grace period in WELCOME: this stands in for it.
    this._gracePeriodMs = o.gracePeriodMs;

    this._handlers = new Map();
    this._stomp = null; // the stompjs Client of the current attempt
    this._opening = false; // an attempt is fetching its token (no stompjs Client yet)
    this._epoch = 0; // bumped per attempt: callbacks of an older attempt are ignored
    this._connected = false; // CONNECTED received on the current attempt
    this._attempt = 0; // attempts failed in a row (the backoff exponent)
    this._retryTimer = null;
    this._connectTimer = null;
    this._ended = false; // close() or a fatal error: nothing more happens
    this._wantSession = false; // join() called and not left
    this._session = null; // the last WELCOME (with gracePeriodMs filled in)
    this._droppedAt = null; // epoch ms the connection of the current session dropped
    this._helloReceipt = null; // receipt id of the HELLO awaiting its WELCOME
    this._joinWaiters = [];
    this._heartbeatTimer = null;
    this._counter = 0;
    this._watches = new Set();
  }

  // ---- public API ------------------------------------------------------------------------------

  /** The current session id (null when not joined). */
  get sessionId() {
    return this._session?.sessionId ?? null;
  }

  /** The smoothed heartbeat round trip in ms (null before the first measurement). */
  get latencyMs() {
    return this._latency.value;
  }

  /** Whether the STOMP connection is up. */
  get connected() {
    return this._connected;
  }

  /**
   * Listen to an event: welcome, resumed, reconnecting, connecting, error, ended, sessionEnded, connected.
   * @returns {() => void} a function that removes the handler
   */
  on(name, handler) {
    if (!EVENTS.has(name)) throw new TypeError(`SpidiClient.on: unknown event ${JSON.stringify(name)}`);
    if (!this._handlers.has(name)) this._handlers.set(name, new Set());
    this._handlers.get(name).add(handler);
    return () => this.off(name, handler);
  }

  off(name, handler) {
    this._handlers.get(name)?.delete(handler);
  }

  /**
   * Join the room given to the constructor; resolves with the WELCOME. Connection failures are
   * retried (backoff with jitter) until it succeeds; rejects with a SpidiError when the server
   * refuses for good (ROOM_FULL, ROOM_NOT_FOUND, token refused…) or close()/leave() is called.
   */
  join() {
    if (this._ended) return Promise.reject(this._endError());
    if (!this._room) return Promise.reject(new TypeError('SpidiClient.join: no room given to the constructor'));
    if (this._session && this._connected && this._wantSession) return Promise.resolve(this._session);
    this._wantSession = true;
    const promise = new Promise((resolve, reject) => this._joinWaiters.push({ resolve, reject }));
    if (this._connected && this._helloReceipt === null) this._sendHello();
    else this._ensureConnection();
    return promise;
  }

  /**
   * Leave the room (the server ends the session with reason `leave`). Resolves once the server
   * confirmed it, or at once when the connection is down (the server then ends the session after
   * its grace period). The connection closes too unless watches use it.
   */
  async leave() {
    const session = this._session;
    this._wantSession = false;
    this._stopHeartbeats();
    this._session = null;
    this._droppedAt = null;
    this._helloReceipt = null;
    this._rejectJoins(new SpidiError(CLIENT_CODES.LEFT, 'leave() was called before the join completed'));
    if (session && this._connected) {
      const stomp = this._stomp;
      await new Promise((resolve) => {
        const receipt = `leave-${++this._counter}`;
        const timer = setTimeout(resolve, LEAVE_RECEIPT_TIMEOUT_MS);
        stomp.watchForReceipt(receipt, () => {
          clearTimeout(timer);
          resolve();
        });
        this._publish('/app/leave', { sessionId: session.sessionId }, { receipt });
      });
    }
    if (session) this._emit('ended', { reason: 'leave', sessionId: session.sessionId });
    if (!this._needsConnection()) await this._disconnect();
  }

  /** Close the connection for good (a clean DISCONNECT: the server ends the session at once). */
  async close() {
    if (this._ended) return;
    this._ended = true;
    const sessionId = this.sessionId;
    this._wantSession = false;
    this._stopHeartbeats();
    this._rejectJoins(new SpidiError(CLIENT_CODES.CLOSED, 'close() was called'));
    this._watches.clear();
    this._emit('ended', { reason: 'close', sessionId });
    await this._disconnect();
  }

  /**
   * Watch a room as a monitor (role spidi:monitor or spidi:admin): its roster and its metrics.
   * `onRoster(roster, message)` gets the roster Map (sessionId → entry; the SDK's own, read it
   * only) after each snapshot and delta; a gap in `seq` subscribes again for a new snapshot.
   * @returns {{roster: Map<string, object>, stop: () => void}}
   */
  watchRoom(roomCode, { onRoster, onMetrics } = {}) {
    if (typeof roomCode !== 'string' || !ROOM_CODE.test(roomCode)) {
      throw new TypeError(`watchRoom: bad room code ${JSON.stringify(roomCode)}`);
    }
    return this._addWatch(new RoomWatch(this, roomCode, onRoster, onMetrics));
  }

  /** Watch every room of the tenant: `onRooms(rooms, message)` at once and then on change. */
  watchRooms(onRooms) {
    return this._addWatch(new RoomsWatch(this, onRooms));
  }

  /** Watch the tenant's open alerts: `onAlerts(alerts, message)`, alerts oldest first. */
  watchAlerts(onAlerts) {
    return this._addWatch(new AlertWatch(this, onAlerts));
  }

  // ---- connection loop -------------------------------------------------------------------------

  _needsConnection() {
    return !this._ended && (this._wantSession || this._watches.size > 0);
  }

  _ensureConnection() {
    if (this._ended || this._stomp || this._opening || this._retryTimer) return;
    void this._open();
  }

  async _open() {
    const epoch = ++this._epoch;
    this._opening = true;
    // As the Python SDK's `connecting`: 0 for the first attempt, then the number the
    // `reconnecting` before it announced.
    this._emit('connecting', { attempt: this._attempt });
    let token;
    let WebSocketClass;
    try {
      WebSocketClass = await resolveWebSocket(this._WebSocket);
      token = this._getToken ? await this._getToken() : this._token;
      if (typeof token !== 'string' || token === '') throw new Error('getToken() gave no token');
    } catch (exc) {
      if (epoch !== this._epoch || this._ended) return;
      this._opening = false;
      if (exc instanceof SpidiError && exc.fatal) return this._fail(exc);
      this._emitError(new SpidiError(CLIENT_CODES.TOKEN, `cannot get a token: ${exc.message}`));
      return this._scheduleRetry({});
    }
    if (epoch !== this._epoch || this._ended) return;
    this._opening = false;
    const stomp = new Client({
      webSocketFactory: () => new WebSocketClass(this._url, STOMP_SUBPROTOCOLS),
      connectHeaders: { host: new URL(this._url).hostname, Authorization: `Bearer ${token}` },
      reconnectDelay: 0, // the loop is ours (jitter, token refresh, resume)
      connectionTimeout: 0, // ours too (_connectTimer), so no stompjs timer outlives a closed client
      heartbeatIncoming: this._stompHeartbeatMs,
      heartbeatOutgoing: this._stompHeartbeatMs,
      discardWebsocketOnCommFailure: true,
      debug: this._debug,
      onConnect: () => this._onConnected(epoch),
      onStompError: (frame) => this._onStompError(epoch, frame),
      onWebSocketClose: (event) => this._onSocketClosed(epoch, event),
    });
    this._stomp = stomp;
    this._connectTimer = setTimeout(() => {
      this._connectTimer = null;
      if (epoch === this._epoch && !this._connected) stomp.forceDisconnect();
    }, this._connectTimeoutMs);
    stomp.activate();
  }

  _onConnected(epoch) {
    if (epoch !== this._epoch) return;
    clearTimeout(this._connectTimer);
    this._connectTimer = null;
    this._connected = true;
    const stomp = this._stomp;
    stomp.subscribe('/user/queue/session', (m) => this._onSessionMessage(epoch, m), { id: 'session' });
    stomp.subscribe('/user/queue/errors', (m) => this._onErrorMessage(epoch, m), { id: 'errors' });
    for (const watch of this._watches) watch.attach(stomp);
    this._emit('connected', {});
    if (this._wantSession) this._sendHello();
    else this._attempt = 0; // nothing more to wait for: this attempt succeeded
  }

  _onStompError(epoch, frame) {
    if (epoch !== this._epoch) return;
    const message = frame.headers.message || frame.body || 'ERROR frame';
    if (!this._connected) {
      // The only refusal of a CONNECT this client can get is of its token (close 1008 follows).
      // The message is the server's own ("invalid token", "token expired"…), as in the Python SDK.
      return this._fail(new SpidiError(CLIENT_CODES.UNAUTHORIZED, message, { fatal: true }));
    }
    // The server closes the connection after an ERROR frame; _onSocketClosed decides what next.
    this._emitError(new SpidiError(CLIENT_CODES.PROTOCOL, message));
  }

  _onSocketClosed(epoch, event) {
    if (epoch !== this._epoch) return;
    const wasConnected = this._connected;
    this._connected = false;
    this._stomp = null;
    clearTimeout(this._retryTimer); // a HELLO retry of this connection has nowhere to go
    this._retryTimer = null;
    clearTimeout(this._connectTimer);
    this._connectTimer = null;
    this._stopHeartbeats();
    this._helloReceipt = null;
    for (const watch of this._watches) watch.detach();
    if (this._ended) return;
    if (this._session && this._droppedAt === null) this._droppedAt = Date.now();
    const code = event?.code;
    const reason = event?.reason || '';
    const verdict = closeVerdict(code, wasConnected);
    if (verdict === 'auth') {
      return this._fail(
        new SpidiError(CLIENT_CODES.UNAUTHORIZED, `token refused (close ${code}${reason ? `: ${reason}` : ''})`, {
          fatal: true,
          closeCode: code,
        }),
      );
    }
    if (verdict === 'fatal') {
      return this._fail(
        new SpidiError(CLIENT_CODES.CONNECTION_REFUSED, `connection closed with ${code}${reason ? `: ${reason}` : ''}`, {
          fatal: true,
          closeCode: code,
        }),
      );
    }
    if (!this._needsConnection()) return;
    this._scheduleRetry({ code, reason });
  }

  _scheduleRetry({ code, reason }) {
    const n = this._attempt++;
    const delayMs = backoffDelay(n, { baseMs: this._baseMs, capMs: this._capMs });
    this._emit('reconnecting', { attempt: n + 1, delayMs, code, reason });
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (this._needsConnection() && !this._stomp && !this._opening) void this._open();
    }, delayMs);
  }

  async _disconnect() {
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    clearTimeout(this._connectTimer);
    this._connectTimer = null;
    const stomp = this._stomp;
    this._epoch++; // whatever the old connection still reports is ignored
    this._stomp = null;
    this._opening = false;
    this._connected = false;
    if (stomp) await stomp.deactivate();
  }

  _fail(error) {
    this._ended = true;
    this._wantSession = false;
    this._stopHeartbeats();
    this._rejectJoins(error);
    this._emitError(error);
    this._emit('ended', { reason: 'error', error, sessionId: this.sessionId });
    this._watches.clear();
    void this._disconnect();
  }

  _endError() {
    return new SpidiError(CLIENT_CODES.CLOSED, 'the client has ended (close() or a fatal error)');
  }

  // ---- session ---------------------------------------------------------------------------------

  _sendHello() {
    const grace = this._session?.gracePeriodMs ?? this._gracePeriodMs;
    const resume = this._session && withinGrace(this._droppedAt, grace) ? this._session.sessionId : null;
    if (this._session && !resume) {
      // The grace period is over: the server ended the old session, this HELLO opens a new one.
      this._session = null;
      this._droppedAt = null;
    }
    const receipt = `hello-${++this._counter}`;
    this._helloReceipt = receipt;
    const body = { roomCode: this._room, ...this._hello };
    if (resume) body.resumeSessionId = resume;
    this._publish('/app/hello', body, { receipt });
  }

  _onSessionMessage(epoch, message) {
    if (epoch !== this._epoch) return;
    const body = parseBody(message);
    if (body?.type === 'WELCOME') {
      if (!this._wantSession || this._helloReceipt === null) {
        // The answer to a HELLO given up (leave() came first): end that session too.
        this._publish('/app/leave', { sessionId: body.sessionId }, {});
        return;
      }
      this._helloReceipt = null;
      this._session = { ...body, gracePeriodMs: body.gracePeriodMs ?? this._gracePeriodMs };
      this._droppedAt = null;
      this._attempt = 0;
      this._startHeartbeats();
      this._emit(body.resumed ? 'resumed' : 'welcome', body);
      const waiters = this._joinWaiters;
      this._joinWaiters = [];
      for (const w of waiters) w.resolve(body);
    } else if (body?.type === 'SESSION_ENDED' && body.sessionId === this.sessionId) {
      this._stopHeartbeats();
      this._session = null;
      this._droppedAt = null;
      this._emit('sessionEnded', body);
      // Still wanted: join anew. After `shutdown` the node closes next; the reconnect joins.
      if (this._wantSession && this._connected && this._helloReceipt === null && body.reason !== 'shutdown') {
        this._sendHello();
      }
    }
  }

  _onErrorMessage(epoch, message) {
    if (epoch !== this._epoch) return;
    const body = parseBody(message) ?? {};
    const error = new SpidiError(body.code ?? 'ERROR', body.message ?? 'error', {
      codeNumber: body.codeNumber,
      ref: body.ref,
    });
    const ref = body.ref ?? '';
    if (ref === this._helloReceipt || (this._helloReceipt !== null && ref === '/app/hello')) {
      this._helloReceipt = null;
      if (FATAL_HELLO_CODES.has(error.code)) {
        error.fatal = true;
        return this._fail(error);
      }
      // UNAVAILABLE (or anything new): try the HELLO again after a backoff.
      this._emitError(error);
      return this._scheduleHelloRetry(epoch);
    }
    if (ref.startsWith('hb-') && error.code === 'UNKNOWN_SESSION') {
      // The server no longer knows the session (it ended it while we did not hear): join anew.
      this._stopHeartbeats();
      this._session = null;
      this._droppedAt = null;
      this._emitError(error);
      if (this._wantSession && this._helloReceipt === null) this._sendHello();
      return;
    }
    for (const watch of this._watches) watch.onError?.(error);
    this._emitError(error);
  }

  _scheduleHelloRetry(epoch) {
    const n = this._attempt++;
    const delayMs = backoffDelay(n, { baseMs: this._baseMs, capMs: this._capMs });
    this._emit('reconnecting', { attempt: n + 1, delayMs, code: undefined, reason: 'hello refused' });
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (epoch === this._epoch && this._connected && this._wantSession && this._helloReceipt === null) {
        this._sendHello();
      }
    }, delayMs);
  }

  _startHeartbeats() {
    this._stopHeartbeats();
    const interval = this._session.heartbeatIntervalMs;
    this._sendHeartbeat(); // at once: the first measurement comes one interval sooner
    this._heartbeatTimer = setInterval(() => this._sendHeartbeat(), interval);
  }

  _stopHeartbeats() {
    clearInterval(this._heartbeatTimer);
    this._heartbeatTimer = null;
  }

  _sendHeartbeat() {
    if (!this._connected || !this._session) return;
    const stomp = this._stomp;
    const epoch = this._epoch;
    const body = { sessionId: this._session.sessionId };
    // The first heartbeat has nothing measured yet: it carries no latencyMs.
    if (this._latency.value !== null) {
      body.latencyMs = Math.min(LATENCY_MAX_MS, Math.max(0, Math.round(this._latency.value)));
    }
    const receipt = `hb-${++this._counter}`;
    const sentAt = now();
    stomp.watchForReceipt(receipt, () => {
      if (epoch === this._epoch) this._latency.add(now() - sentAt);
    });
    this._publish('/app/heartbeat', body, { receipt });
  }

  _publish(destination, body, headers) {
    this._stomp.publish({ destination, body: JSON.stringify(body), headers: { ...JSON_HEADERS, ...headers } });
  }

  _rejectJoins(error) {
    const waiters = this._joinWaiters;
    this._joinWaiters = [];
    for (const w of waiters) w.reject(error);
  }

  // ---- watches and events ----------------------------------------------------------------------

  _addWatch(watch) {
    if (this._ended) throw this._endError();
    this._watches.add(watch);
    if (this._connected) watch.attach(this._stomp);
    else this._ensureConnection();
    return watch.handle();
  }

  _removeWatch(watch) {
    watch.unsubscribe();
    this._watches.delete(watch);
    if (!this._needsConnection() && !this._ended) void this._disconnect();
  }

  _emit(name, payload) {
    for (const handler of [...(this._handlers.get(name) ?? [])]) {
      try {
        handler(payload);
      } catch (exc) {
        // A failing handler must not break the connection loop; report it where it can be seen.
        queueMicrotask(() => {
          throw exc;
        });
      }
    }
  }

  _emitError(error) {
    this._emit('error', error);
  }
}

function now() {
  return typeof performance !== 'undefined' ? performance.now() : Date.now();
}
