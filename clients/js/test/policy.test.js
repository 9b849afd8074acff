// The SDK's rules without a server: backoff with full jitter, what a close means, and the
// roster and alert state kept from snapshots and deltas (seq gaps answered with a resync).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  AlertState,
  RosterState,
  SpidiClient,
  backoffDelay,
  closeVerdict,
  DEFAULT_GRACE_PERIOD_MS,
  RECONNECT_BASE_MS,
  RECONNECT_CAP_MS,
} from 'spidi-client';

describe('backoff', () => {
  it('is uniform in [0, min(cap, base * 2^n)): full jitter', () => {
    assert.equal(RECONNECT_BASE_MS, 500);
    assert.equal(RECONNECT_CAP_MS, 30_000);
    const top = (n) => backoffDelay(n, { random: () => 0.999999 });
    assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 7].map(top), [499, 999, 1999, 3999, 7999, 15999, 29999, 29999]);
    assert.equal(backoffDelay(3, { random: () => 0 }), 0);
    assert.equal(backoffDelay(1000, { random: () => 0.5 }), 15_000); // no overflow far out
    assert.equal(backoffDelay(2, { baseMs: 100, capMs: 300, random: () => 0.5 }), 150);
    // Real randomness spreads over the window rather than sitting at its top.
    const samples = Array.from({ length: 2000 }, () => backoffDelay(4));
    assert.ok(samples.every((d) => d >= 0 && d < 8000));
    assert.ok(Math.min(...samples) < 800 && Math.max(...samples) > 7200, 'spread over the whole window');
  });
});

describe('close verdicts', () => {
  it('retries drops and restarts, stops on refused tokens and refused traffic', () => {
    for (const code of [1000, 1001, 1002, 1005, 1006, 1011, 1012, 1013, 4001]) {
      assert.equal(closeVerdict(code, true), 'retry', `close ${code}`);
    }
    assert.equal(closeVerdict(1006, false), 'retry'); // nothing listening (yet)
    assert.equal(closeVerdict(1008, false), 'auth'); // refused at CONNECT
    assert.equal(closeVerdict(1008, true), 'retry'); // rate limit or slow consumer
    assert.equal(closeVerdict(1007, true), 'fatal');
    assert.equal(closeVerdict(1009, true), 'fatal');
    assert.equal(DEFAULT_GRACE_PERIOD_MS, 15_000);
  });
});

describe('options', () => {
  it('refuses bad options with a clear error', () => {
    assert.throws(() => new SpidiClient(), /options object required/);
    assert.throws(() => new SpidiClient({ url: 'http://x/ws', token: 't' }), /ws:\/\/ or wss:\/\//);
    assert.throws(() => new SpidiClient({ url: 'ws://x/ws' }), /token .* or getToken is required/);
    assert.throws(() => new SpidiClient({ url: 'ws://x/ws', getToken: 'abc' }), /getToken must be a function/);
    assert.throws(() => new SpidiClient({ url: 'ws://x/ws', token: 't', room: 'a b' }), /room must be/);
    assert.throws(() => new SpidiClient({ url: 'ws://x/ws', token: 't', reconnectCapMs: -1 }), /reconnectCapMs/);
    const c = new SpidiClient({ url: 'ws://x/ws', token: 't' });
    assert.throws(() => c.on('nope', () => {}), /unknown event/);
    assert.throws(() => c.watchRoom('bad room'), /bad room code/);
    return assert.rejects(c.join(), /no room given/);
  });
});

const entry = (sessionId, extra = {}) => ({ sessionId, userId: `u-${sessionId}`, latencyMs: 0, ...extra });

describe('roster state', () => {
  it('starts from the snapshot and applies deltas idempotently', () => {
    const r = new RosterState();
    assert.equal(r.apply({ full: false, seq: 5, joined: [entry('x')] }), 'ignored'); // before a snapshot
    assert.equal(r.apply({ full: true, seq: 1, users: [entry('a'), entry('b')] }), 'applied');
    assert.deepEqual([...r.users.keys()], ['a', 'b']);
    const delta = { full: false, seq: 2, joined: [entry('b', { device: 'new' }), entry('c')], left: [{ sessionId: 'a' }, { sessionId: 'zz' }], updated: [{ sessionId: 'c', latencyMs: 42 }] };
    assert.equal(r.apply(delta), 'applied');
    assert.deepEqual([...r.users.keys()].sort(), ['b', 'c']);
    assert.equal(r.users.get('b').device, 'new'); // a join of a known session replaces it
    assert.equal(r.users.get('c').latencyMs, 42);
    assert.equal(r.users.get('c').userId, 'u-c'); // an update keeps what it does not carry
    assert.equal(r.seq, 2);
  });

  it('answers resync on a seq gap, and starts again from the next snapshot', () => {
    const r = new RosterState();
    r.apply({ full: true, seq: 1, users: [entry('a')] });
    assert.equal(r.apply({ full: false, seq: 3, left: [{ sessionId: 'a' }] }), 'resync');
    assert.ok(r.users.has('a')); // the gapped delta is not applied
    assert.equal(r.apply({ full: false, seq: 4, joined: [entry('q')] }), 'ignored'); // until the snapshot
    assert.equal(r.apply({ full: true, seq: 1, users: [entry('b')] }), 'applied');
    assert.deepEqual([...r.users.keys()], ['b']);
    assert.equal(r.apply({ full: false, seq: 2, joined: [entry('c')] }), 'applied');
    assert.equal(r.apply({ full: false, seq: 2, joined: [entry('d')] }), 'resync'); // a repeat is a gap too
  });
});

describe('alert state', () => {
  const alert = (extra) => ({ type: 'ALERT', ruleId: 'r1', roomId: 'room1', alertId: 'a1', episodeId: 'a1', state: 'pending', since: 10, ...extra });

  it('keeps one open alert per rule and room, carries acknowledgements within an episode', () => {
    const s = new AlertState();
    assert.equal(s.apply({ type: 'ROOMS' }), false);
    s.apply({ type: 'ALERTS', alerts: [alert({ ruleId: 'r2', since: 5 })] });
    s.apply(alert());
    assert.deepEqual(s.list().map((a) => a.ruleId), ['r2', 'r1']); // oldest first
    s.apply({ type: 'ALERT_ACK', ruleId: 'r1', roomId: 'room1', alertId: 'a1', acknowledgedBy: 'anna', acknowledgedAt: 20 });
    s.apply(alert({ alertId: 'a2', state: 'firing', previousState: 'pending' })); // same episode
    const open = s.alerts.get(AlertState.key({ ruleId: 'r1', roomId: 'room1' }));
    assert.equal(open.state, 'firing');
    assert.equal(open.acknowledgedBy, 'anna');
    // An acknowledgement of another episode does not carry over.
    s.apply({ type: 'ALERT_ACK', ruleId: 'r2', roomId: 'room1', alertId: 'old', acknowledgedBy: 'bo', acknowledgedAt: 30 });
    assert.equal(s.list()[0].acknowledgedBy, undefined);
    s.apply(alert({ alertId: 'a3', state: 'resolved' }));
    assert.deepEqual(s.list().map((a) => a.ruleId), ['r2']);
    // A new episode starts unacknowledged.
    s.apply(alert({ alertId: 'b1', episodeId: 'b1' }));
    assert.equal(s.alerts.get(AlertState.key({ ruleId: 'r1', roomId: 'room1' })).acknowledgedBy, undefined);
  });
});
