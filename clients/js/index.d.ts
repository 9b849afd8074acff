// Types of spidi-client (the JavaScript SDK of the Spidi presence server; docs/protocol.md).

export interface SpidiClientOptions {
  /** ws:// or wss:// endpoint, e.g. "wss://presence.example.com/ws". */
  url: string;
  /** A JWT (sent as `Authorization: Bearer` in CONNECT). Either this or getToken. */
  token?: string;
  /** Called before every connection attempt (the first and each reconnect) for a fresh JWT. */
  getToken?: () => string | Promise<string>;
  /** The room join() joins (1–64 of A-Z a-z 0-9 _ . : -). Not needed for a monitor. */
  room?: string;
  /** Identifies this installation/tab (≤ 128); a random one when absent. */
  clientId?: string;
  /** Your application's version (≤ 64); "unknown" when absent. */
  appVersion?: string;
  device?: string;
  os?: string;
  /** First backoff window in ms (default 500). */
  reconnectBaseMs?: number;
  /** Largest backoff window in ms (default 30000). */
  reconnectCapMs?: number;
  /** Grace period assumed when WELCOME does not say it (servers before gracePeriodMs; default 15000). */
  gracePeriodMs?: number;
  /** A connection attempt not CONNECTED after this is given up and retried (default 10000). */
  connectTimeoutMs?: number;
  /** STOMP heart-beat offered both ways, ms (default 10000). */
  stompHeartbeatMs?: number;
  /** Weight of a new sample in the latency EWMA, 0 < alpha ≤ 1 (default 0.3). */
  latencyAlpha?: number;
  /** WebSocket class to use (default: `ws` under Node, the browser's WebSocket elsewhere). */
  WebSocket?: unknown;
  /** stompjs debug output. */
  debug?: (message: string) => void;
}

export interface Welcome {
  type: 'WELCOME';
  sessionId: string;
  roomId: string;
  roomCode: string;
  heartbeatIntervalMs: number;
  timeoutMs: number;
  /** The resume window after a dropped connection (servers from issue 17 on). */
  gracePeriodMs?: number;
  resumed: boolean;
}

export interface RosterEntry {
  sessionId: string;
  userId: string;
  clientId: string;
  appVersion: string;
  device: string;
  os: string;
  /** Admins only (and monitors when the server sets monitors_see_ip): absent otherwise. */
  ip?: string | null;
  latencyMs: number | null;
  connectedAt: number;
  lastHeartbeatAt: number;
  [key: string]: unknown;
}

export interface RosterMessage {
  type: 'ROOM_ROSTER';
  roomId: string;
  roomCode: string;
  seq: number;
  full: boolean;
  users?: RosterEntry[];
  joined?: RosterEntry[];
  left?: { sessionId: string; reason: string }[];
  updated?: Partial<RosterEntry>[];
  ts?: number;
}

export interface RoomMetrics {
  type: 'ROOM_METRICS';
  roomId: string;
  roomCode: string;
  online: number;
  users: number;
  peak: number;
  capacity: number;
  avgLatencyMs: number | null;
  seq: number;
  ts: number;
}

export interface RoomSummary {
  roomId: string;
  roomCode: string;
  online: number;
  users: number;
  peak: number;
  capacity: number;
  avgLatencyMs: number | null;
}

export interface Alert {
  type: 'ALERT';
  alertId: string;
  episodeId: string;
  ruleId: string;
  roomId: string;
  roomCode: string;
  state: 'pending' | 'firing' | 'resolved';
  acknowledgedBy?: string;
  acknowledgedAt?: number;
  [key: string]: unknown;
}

/** Codes the SDK gives itself; server codes (ROOM_FULL, UNAVAILABLE…) are in docs/protocol.md. */
export declare const CLIENT_CODES: {
  readonly UNAUTHORIZED: 'UNAUTHORIZED';
  readonly CONNECTION_REFUSED: 'CONNECTION_REFUSED';
  readonly PROTOCOL: 'PROTOCOL';
  readonly TOKEN: 'TOKEN';
  readonly CLOSED: 'CLOSED';
  readonly LEFT: 'LEFT';
};

export declare class SpidiError extends Error {
  /** A server code (ROOM_FULL, ROOM_NOT_FOUND, UNAVAILABLE…) or one of CLIENT_CODES. */
  code: string;
  /** The server's number for its codes (1201 for ROOM_FULL…). */
  codeNumber?: number;
  /** True when the client stopped because of it (no more retries). */
  fatal: boolean;
  /** The request the server answered (receipt id or destination). */
  ref?: string;
  /** The WebSocket close code, for errors that came with a close. */
  closeCode?: number;
}

export interface SpidiEvents {
  /** A new session (the first join, or a new one after the grace period or a server-ended session). */
  welcome: Welcome;
  /** The same session re-attached after a reconnect (nobody saw a leave or a join). */
  resumed: Welcome;
  /** The connection dropped (or HELLO was refused with UNAVAILABLE): the next attempt in delayMs. */
  reconnecting: { attempt: number; delayMs: number; code?: number; reason?: string };
  /** A connection attempt starts now: attempt 0 first, then the number `reconnecting` gave. */
  connecting: { attempt: number };
  error: SpidiError;
  /** The session or the client ended: leave(), close(), or a fatal error (no more retries). */
  ended: { reason: 'leave' | 'close' | 'error'; sessionId: string | null; error?: SpidiError };
  /** The server ended the session (SESSION_ENDED: timeout, node_lost…); the client joins anew. */
  sessionEnded: { type: 'SESSION_ENDED'; sessionId: string; reason: string };
  /** CONNECTED arrived (each connection). */
  connected: Record<string, never>;
}

export interface Watch {
  stop(): void;
}

export interface RoomWatch extends Watch {
  /** sessionId → entry; the SDK's own Map, read it only. */
  readonly roster: Map<string, RosterEntry>;
  /** How often a seq gap made the watch subscribe again. */
  readonly resyncs: number;
}

export interface AlertWatch extends Watch {
  readonly alerts: Alert[];
}

export declare class SpidiClient {
  constructor(options: SpidiClientOptions);
  readonly sessionId: string | null;
  /** Smoothed heartbeat round trip, ms (null before the first measurement). */
  readonly latencyMs: number | null;
  readonly connected: boolean;
  on<K extends keyof SpidiEvents>(name: K, handler: (payload: SpidiEvents[K]) => void): () => void;
  off<K extends keyof SpidiEvents>(name: K, handler: (payload: SpidiEvents[K]) => void): void;
  /** Resolves with the WELCOME; rejects with a SpidiError on a fatal refusal or close(). */
  join(): Promise<Welcome>;
  leave(): Promise<void>;
  close(): Promise<void>;
  watchRoom(
    roomCode: string,
    handlers?: {
      onRoster?: (roster: Map<string, RosterEntry>, message: RosterMessage) => void;
      onMetrics?: (metrics: RoomMetrics) => void;
    },
  ): RoomWatch;
  watchRooms(onRooms: (rooms: RoomSummary[], message: { type: 'ROOMS'; rooms: RoomSummary[]; ts: number }) => void): Watch;
  watchAlerts(onAlerts: (alerts: Alert[], message: Record<string, unknown>) => void): AlertWatch;
}

export declare const RECONNECT_BASE_MS: number;
export declare const RECONNECT_CAP_MS: number;
export declare const DEFAULT_GRACE_PERIOD_MS: number;
export declare const FATAL_HELLO_CODES: ReadonlySet<string>;
/** Delay before the n-th attempt in a row (n from 0): uniform in [0, min(cap, base · 2^n)). */
export declare function backoffDelay(
  n: number,
  options?: { baseMs?: number; capMs?: number; random?: () => number },
): number;
export declare function closeVerdict(code: number | undefined, wasConnected: boolean): 'retry' | 'auth' | 'fatal';

export declare class RosterState {
  users: Map<string, RosterEntry>;
  seq: number | null;
  apply(message: RosterMessage): 'applied' | 'resync' | 'ignored';
}

export declare class AlertState {
  alerts: Map<string, Alert>;
  static key(alert: { ruleId: string; roomId: string }): string;
  apply(message: Record<string, unknown>): boolean;
  list(): Alert[];
}
