/*
 * A small STOMP 1.2 client over WebSocket for the Spidi dashboard, as an ES module. No dependencies.
 *
 *   import { StompClient } from "./stomp.js";
 *   const client = new StompClient(url, {token, tokenIn: "passcode" | "query"});
 *   client.onStateChange = (state, detail) => ...;   // connecting | connected | reconnecting | closed
 *   client.onConnect = (headers) => { client.subscribe("/topic/rooms", (body, frame) => ...) };
 *   client.activate();  ...  client.deactivate();
 *
 * Frames are parsed from bytes: several frames in one message, one frame over several messages,
 * content-length bodies (which may hold NUL) and bare EOL heart-beats between frames all work.
 * Subscriptions live for one connection: onConnect runs again after every reconnect and should
 * subscribe again. Reconnects back off exponentially (with jitter) up to maxDelayMs.
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8");
const LF = 10, CR = 13, NUL = 0, COLON = 58;

function escapeHeader(value) {
  return String(value)
    .replace(/\\/g, "\\\\")
    .replace(/\r/g, "\\r")
    .replace(/\n/g, "\\n")
    .replace(/:/g, "\\c");
}

function unescapeHeader(value) {
  return value.replace(/\\([\\rnc])/g, (_, c) => ({ "\\": "\\", r: "\r", n: "\n", c: ":" })[c]);
}

/** Serialise one frame to a string (what is sent as one WebSocket text message). */
function serializeFrame(command, headers, body) {
  const raw = command === "CONNECT" || command === "STOMP";
  let out = command + "\n";
  const hasBody = body !== undefined && body !== null && body !== "";
  for (const [k, v] of Object.entries(headers || {})) {
    if (v === undefined || v === null) continue;
    out += (raw ? k : escapeHeader(k)) + ":" + (raw ? v : escapeHeader(v)) + "\n";
  }
  if (hasBody && !(headers && "content-length" in headers)) {
    out += "content-length:" + encoder.encode(body).length + "\n";
  }
  return out + "\n" + (hasBody ? body : "") + "\0";
}

/** Incremental STOMP frame parser over bytes. feed() returns complete frames; EOLs count as heart-beats. */
class FrameParser {
  constructor() {
    this.buf = new Uint8Array(0);
    this.heartbeats = 0;
  }

  feed(data) {
    const chunk = typeof data === "string" ? encoder.encode(data) : new Uint8Array(data);
    if (this.buf.length === 0) {
      this.buf = chunk;
    } else {
      const merged = new Uint8Array(this.buf.length + chunk.length);
      merged.set(this.buf, 0);
      merged.set(chunk, this.buf.length);
      this.buf = merged;
    }
    const frames = [];
    let pos = 0;
    const buf = this.buf;
    for (;;) {
      // Bare EOLs between frames are heart-beats.
      while (pos < buf.length && (buf[pos] === LF || buf[pos] === CR)) {
        if (buf[pos] === LF) this.heartbeats++;
        pos++;
      }
      if (pos >= buf.length) break;
      const parsed = this._parseOne(buf, pos);
      if (parsed === null) break; // incomplete: wait for more bytes
      frames.push(parsed.frame);
      pos = parsed.next;
    }
    this.buf = pos >= buf.length ? new Uint8Array(0) : buf.slice(pos);
    return frames;
  }

  _parseOne(buf, start) {
    // Find the end of the header block: an empty line (LF LF or LF CR LF).
    let lineStart = start;
    const lines = [];
    let bodyStart = -1;
    for (let i = start; i < buf.length; i++) {
      if (buf[i] !== LF) continue;
      let end = i;
      if (end > lineStart && buf[end - 1] === CR) end--;
      if (end === lineStart) {
        bodyStart = i + 1;
        break;
      }
      lines.push(decoder.decode(buf.subarray(lineStart, end)));
      lineStart = i + 1;
    }
    if (bodyStart < 0) return null;
    if (lines.length === 0) throw new Error("STOMP: frame without a command");
    const command = lines[0];
    const raw = command === "CONNECTED";
    const headers = {};
    for (let j = 1; j < lines.length; j++) {
      const line = lines[j];
      const colon = line.indexOf(":");
      if (colon < 0) throw new Error("STOMP: bad header line " + JSON.stringify(line));
      let key = line.slice(0, colon);
      let value = line.slice(colon + 1);
      if (!raw) {
        key = unescapeHeader(key);
        value = unescapeHeader(value);
      }
      if (!(key in headers)) headers[key] = value; // the first occurrence wins
    }
    let bodyEnd;
    if ("content-length" in headers) {
      const n = parseInt(headers["content-length"], 10);
      if (!(n >= 0)) throw new Error("STOMP: bad content-length");
      if (buf.length < bodyStart + n + 1) return null;
      bodyEnd = bodyStart + n;
      if (buf[bodyEnd] !== NUL) throw new Error("STOMP: frame body not followed by NUL");
    } else {
      bodyEnd = buf.indexOf(NUL, bodyStart);
      if (bodyEnd < 0) return null;
    }
    const body = decoder.decode(buf.subarray(bodyStart, bodyEnd));
    return { frame: { command, headers, body }, next: bodyEnd + 1 };
  }
}

/** The heart-beat periods agreed on: [we send every ms, we expect every ms]; 0 = off. */
function negotiateHeartbeat(ours, theirsHeader) {
  const [cx, cy] = ours;
  const parts = String(theirsHeader || "0,0").split(",").map((v) => parseInt(v, 10) || 0);
  const [sx, sy] = [parts[0] || 0, parts[1] || 0];
  return [cx && sy ? Math.max(cx, sy) : 0, cy && sx ? Math.max(cy, sx) : 0];
}

const SUBPROTOCOLS = ["v12.stomp", "v11.stomp", "v10.stomp"];

class StompClient {
  constructor(url, options) {
    const o = options || {};
    this.url = url;
    this.token = o.token || "";
    this.tokenIn = o.tokenIn || "passcode"; // or "query": ?access_token=
    this.heartbeat = o.heartbeat || [10000, 10000];
    this.minDelayMs = o.minDelayMs || 500;
    this.maxDelayMs = o.maxDelayMs || 15000;
    this.connectTimeoutMs = o.connectTimeoutMs || 10000;
    this.debug = o.debug || null;
    this.onConnect = null; // (headers) => void, after each CONNECTED
    this.onStateChange = null; // (state, detail) => void
    this.onError = null; // (message, headers, body) => void, for ERROR frames
    this.onAuthFailure = null; // (message) => void; reconnecting stops
    this.state = "idle";
    this.ws = null;
    this.active = false;
    this.attempt = 0;
    this.subs = new Map();
    this.nextSubId = 0;
    this.receipts = new Map();
    this.nextReceipt = 0;
    this._timers = [];
    this._retryTimer = null;
    this.retryAt = 0;
  }

  activate() {
    if (this.active) return;
    this.active = true;
    this.attempt = 0;
    this._open();
  }

  deactivate() {
    this.active = false;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.state === "connected") {
      try {
        this.ws.send(serializeFrame("DISCONNECT", {}));
      } catch (e) { /* closing anyway */ }
    }
    this._teardown(1000, "bye");
    this._setState("closed", "signed out");
  }

  /** Reconnect now (skipping the back-off wait). */
  reconnectNow() {
    if (!this.active) return;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    if (this.state !== "connected" && this.state !== "connecting") {
      this.attempt = 0;
      this._open();
    }
  }

  get connected() {
    return this.state === "connected";
  }

  subscribe(destination, callback, headers) {
    if (!this.connected) throw new Error("STOMP: not connected");
    const id = "sub-" + ++this.nextSubId;
    this.subs.set(id, { destination, callback });
    this._send("SUBSCRIBE", Object.assign({ id, destination, ack: "auto" }, headers || {}));
    return {
      id,
      destination,
      unsubscribe: () => this.unsubscribe(id),
    };
  }

  unsubscribe(id) {
    if (!this.subs.delete(id)) return;
    if (this.connected) this._send("UNSUBSCRIBE", { id });
  }

  send(destination, body, headers) {
    const text = typeof body === "string" ? body : JSON.stringify(body);
    this._send("SEND", Object.assign({ destination, "content-type": "application/json" }, headers || {}), text);
  }

  // -- internals ---------------------------------------------------------------------------

  _setState(state, detail) {
    this.state = state;
    if (this.onStateChange) this.onStateChange(state, detail);
  }

  _log(...args) {
    if (this.debug) this.debug(...args);
  }

  _open() {
    this._teardown();
    this.parser = new FrameParser();
    this.subs.clear();
    this._setState("connecting", this.url);
    let url = this.url;
    if (this.tokenIn === "query" && this.token) {
      url += (url.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(this.token);
    }
    let ws;
    try {
      ws = new WebSocket(url, SUBPROTOCOLS);
    } catch (e) {
      this._scheduleReconnect(String(e.message || e));
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.lastReceived = Date.now();
    this._sawError = null;
    this._connectTimer = setTimeout(() => {
      if (this.ws === ws && this.state !== "connected") {
        this._log("connect timeout");
        try { ws.close(); } catch (e) { /* ignore */ }
        this._onClose(ws, { code: 4000, reason: "connect timeout" });
      }
    }, this.connectTimeoutMs);
    ws.onopen = () => {
      if (this.ws !== ws) return;
      const headers = {
        "accept-version": "1.2,1.1,1.0",
        host: "spidi",
        "heart-beat": this.heartbeat.join(","),
      };
      if (this.tokenIn !== "query" && this.token) {
        headers.login = "dashboard";
        headers.passcode = this.token;
      }
      ws.send(serializeFrame("CONNECT", headers));
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.lastReceived = Date.now();
      let frames;
      try {
        frames = this.parser.feed(ev.data);
      } catch (e) {
        this._log("parse error", e);
        try { ws.close(4002, "bad frame"); } catch (e2) { /* ignore */ }
        this._onClose(ws, { code: 4002, reason: String(e.message || e) });
        return;
      }
      for (const frame of frames) this._dispatch(frame);
    };
    ws.onclose = (ev) => this._onClose(ws, ev);
    ws.onerror = () => { /* onclose follows */ };
  }

  _dispatch(frame) {
    this._log("<<<", frame.command, frame.headers);
    switch (frame.command) {
      case "CONNECTED": {
        clearTimeout(this._connectTimer);
        this.attempt = 0;
        this.serverInfo = frame.headers;
        const [sendEvery, expectEvery] = negotiateHeartbeat(this.heartbeat, frame.headers["heart-beat"]);
        this._startHeartbeats(sendEvery, expectEvery);
        this._setState("connected", frame.headers.server || "");
        if (this.onConnect) {
          try {
            this.onConnect(frame.headers);
          } catch (e) {
            console.error(e);
          }
        }
        break;
      }
      case "MESSAGE": {
        const sub = this.subs.get(frame.headers.subscription);
        if (!sub) return; // unsubscribed meanwhile
        let body = frame.body;
        const ctype = frame.headers["content-type"] || "";
        if (ctype.startsWith("application/json")) {
          try {
            body = JSON.parse(frame.body);
          } catch (e) {
            this._log("bad JSON body", e);
            return;
          }
        }
        try {
          sub.callback(body, frame);
        } catch (e) {
          console.error(e);
        }
        break;
      }
      case "RECEIPT": {
        const cb = this.receipts.get(frame.headers["receipt-id"]);
        if (cb) {
          this.receipts.delete(frame.headers["receipt-id"]);
          cb(frame);
        }
        break;
      }
      case "ERROR": {
        const message = frame.headers.message || frame.body || "error";
        this._sawError = { message, beforeConnect: this.state !== "connected" };
        if (this.onError) this.onError(message, frame.headers, frame.body);
        break;
      }
      default:
        this._log("ignored frame", frame.command);
    }
  }

  _startHeartbeats(sendEvery, expectEvery) {
    this._clearTimers();
    const ws = this.ws;
    if (sendEvery > 0) {
      this._timers.push(
        setInterval(() => {
          if (this.ws === ws && ws.readyState === WebSocket.OPEN) ws.send("\n");
        }, sendEvery)
      );
    }
    if (expectEvery > 0) {
      const limit = expectEvery * 2;
      this._timers.push(
        setInterval(() => {
          if (this.ws === ws && Date.now() - this.lastReceived > limit) {
            this._log("server heart-beat missed");
            try { ws.close(4001, "heart-beat timeout"); } catch (e) { /* ignore */ }
            this._onClose(ws, { code: 4001, reason: "server heart-beat timeout" });
          }
        }, Math.min(expectEvery, 5000))
      );
    }
  }

  _clearTimers() {
    for (const t of this._timers) clearInterval(t);
    this._timers = [];
  }

  _teardown(code, reason) {
    this._clearTimers();
    clearTimeout(this._connectTimer);
    const ws = this.ws;
    this.ws = null;
    this.subs.clear();
    this.receipts.clear();
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(code || 1000, reason || "");
      } catch (e) { /* ignore */ }
    }
  }

  _onClose(ws, ev) {
    if (this.ws !== ws) return;
    const saw = this._sawError;
    this._teardown();
    if (!this.active) return;
    // A refused token will not get better by retrying: stop and tell the application.
    if ((ev.code === 1008 && saw && saw.beforeConnect) || (saw && saw.beforeConnect && /token/i.test(saw.message))) {
      this.active = false;
      this._setState("closed", saw.message);
      if (this.onAuthFailure) this.onAuthFailure(saw.message);
      return;
    }
    const why = (saw && saw.message) || ev.reason || (ev.code ? "closed (" + ev.code + ")" : "closed");
    this._scheduleReconnect(why);
  }

  _scheduleReconnect(why) {
    const base = Math.min(this.maxDelayMs, this.minDelayMs * Math.pow(2, this.attempt));
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    this.attempt++;
    this.retryAt = Date.now() + delay;
    this._setState("reconnecting", { why, delay, attempt: this.attempt });
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (this.active) this._open();
    }, delay);
  }

  _send(command, headers, body) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this._log(">>>", command, headers);
    this.ws.send(serializeFrame(command, headers, body));
    return true;
  }
}

export { StompClient, FrameParser, serializeFrame, negotiateHeartbeat, escapeHeader, unescapeHeader };
