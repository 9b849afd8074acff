// Monitor-side state kept from snapshots and deltas (docs/protocol.md section 4). Plain objects
// with no I/O: the client feeds them messages and acts on what apply() answers.

/**
 * A room's roster: sessionId → entry, from a ROOM_ROSTER snapshot and the deltas after it.
 * apply() answers 'resync' when a delta's seq does not follow the last one (a message was missed):
 * the caller subscribes again for a new snapshot.
 */
export class RosterState {
  constructor() {
    /** @type {Map<string, object>} */
    this.users = new Map();
    /** @type {number | null} seq of the last message applied; null before the snapshot */
    this.seq = null;
  }

  /**
   * @param {{full: boolean, seq: number, users?: object[], joined?: object[], left?: {sessionId: string}[], updated?: object[]}} msg
   * @returns {'applied' | 'resync' | 'ignored'}
   */
  apply(msg) {
    if (msg.full) {
      this.users = new Map((msg.users ?? []).map((u) => [u.sessionId, u]));
      this.seq = msg.seq;
      return 'applied';
    }
    if (this.seq === null) return 'ignored'; // a delta before its snapshot: the snapshot comes first
    if (msg.seq !== this.seq + 1) {
      this.seq = null;
      return 'resync';
    }
    this.seq = msg.seq;
    // Idempotent, as the protocol asks: a join of a known session replaces it, a leave of an
    // unknown one is ignored, an update of an unknown one adds it.
    for (const entry of msg.joined ?? []) this.users.set(entry.sessionId, entry);
    for (const entry of msg.updated ?? []) {
      this.users.set(entry.sessionId, { ...this.users.get(entry.sessionId), ...entry });
    }
    for (const entry of msg.left ?? []) this.users.delete(entry.sessionId);
    return 'applied';
  }
}

/** The open alerts of a tenant, keyed by ruleId + roomId, from ALERTS, ALERT and ALERT_ACK. */
export class AlertState {
  constructor() {
    /** @type {Map<string, object>} */
    this.alerts = new Map();
  }

  static key(alert) {
    return `${alert.ruleId}\u0000${alert.roomId}`;
  }

  /** @returns {boolean} whether the message was one of the three alert types */
  apply(msg) {
    if (msg.type === 'ALERTS') {
      this.alerts = new Map((msg.alerts ?? []).map((a) => [AlertState.key(a), a]));
      return true;
    }
    if (msg.type === 'ALERT') {
      const key = AlertState.key(msg);
      if (msg.state === 'resolved') {
        this.alerts.delete(key);
        return true;
      }
      const before = this.alerts.get(key);
      // pending → firing continues one episode: its acknowledgement carries over.
      const ack =
        before && before.episodeId === msg.episodeId && before.acknowledgedBy !== undefined
          ? { acknowledgedBy: before.acknowledgedBy, acknowledgedAt: before.acknowledgedAt }
          : {};
      this.alerts.set(key, { ...msg, ...ack });
      return true;
    }
    if (msg.type === 'ALERT_ACK') {
      const key = AlertState.key(msg);
      const open = this.alerts.get(key);
      // An acknowledgement marks the open alert only when it names this episode.
      if (open && (open.episodeId === msg.alertId || open.alertId === msg.alertId)) {
        this.alerts.set(key, { ...open, acknowledgedBy: msg.acknowledgedBy, acknowledgedAt: msg.acknowledgedAt });
      }
      return true;
    }
    return false;
  }

  /** The open alerts, oldest first (by `since`). */
  list() {
    return [...this.alerts.values()].sort((a, b) => (a.since ?? 0) - (b.since ?? 0));
  }
}
