// Reconnection against a real node that goes away: kill -9 and a restart under the same node id
// (within the grace period of the WELCOME: the session resumes and a monitor sees no leave and no
// join; past it: a new session), and a graceful restart (SIGTERM: close 1012, sessions handed
// over to the grace period, resumed on the restarted node).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { SpidiClient } from 'spidi-client';

import { SpidiNode, mintToken, waitFor } from '../support/node.js';
import { record } from '../support/tools.js';

const BASE_MS = 100;
const CAP_MS = 800;

/** A node, a member of `room` and a monitor of it, all closed and killed after the suite. */
function site(name, env) {
  const node = new SpidiNode(name, { SPIDI_HEARTBEAT_INTERVAL_MS: '250', ...env });
  const clients = [];
  const open = (options) => {
    const c = new SpidiClient({ url: node.url, reconnectBaseMs: BASE_MS, reconnectCapMs: CAP_MS, ...options });
    clients.push(c);
    return c;
  };
  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await node.cleanup();
  });
  return {
    node,
    member: (room, options = {}) =>
      open({ token: mintToken({ sub: `member-${name}` }), room, clientId: `c-${name}`, ...options }),
    monitor: () => open({ token: mintToken({ sub: 'ops', roles: ['spidi:monitor'] }) }),
  };
}

/** Every roster message a monitor receives for `room`, and its live roster. */
function watchRoster(monitor, room) {
  const messages = [];
  const watch = monitor.watchRoom(room, { onRoster: (_roster, msg) => messages.push(msg) });
  return {
    messages,
    watch,
    deltas: () => messages.filter((m) => !m.full),
    snapshots: () => messages.filter((m) => m.full),
  };
}

/** Each retry waited within its full-jitter window, and the attempts count up from 1. */
function assertBackoff(retries) {
  assert.ok(retries.length >= 1, 'at least one reconnection attempt');
  retries.forEach((r, i) => {
    assert.equal(r.attempt, i + 1);
    assert.ok(r.delayMs >= 0 && r.delayMs < Math.min(CAP_MS, BASE_MS * 2 ** i), JSON.stringify(r));
  });
}

describe('kill -9 and a restart within the grace period', () => {
  const { node, member, monitor } = site('kill-resume', { SPIDI_GRACE_PERIOD_MS: '10000' });
  before(() => node.start());

  it('resumes the same session after backoff; a monitor sees neither leave nor join', async () => {
    const client = member('lobby');
    const log = record(client);
    const welcome = await client.join();
    const mon = watchRoster(monitor(), 'lobby');
    await waitFor(() => mon.watch.roster.has(welcome.sessionId), 'the member in the roster');

    const snapshotsAtKill = mon.snapshots().length;
    await node.kill9();
    await waitFor(() => log.named('reconnecting').length >= 3, 'three failed attempts while the node is down');
    await node.start();

    const resumed = await waitFor(() => log.named('resumed')[0], 'the session resumed');
    assert.equal(resumed.sessionId, welcome.sessionId);
    assert.equal(resumed.resumed, true);
    assert.equal(client.sessionId, welcome.sessionId);
    assert.equal(log.named('welcome').length, 1); // only the first join
    assert.deepEqual(log.named('ended'), []);
    const retries = log.named('reconnecting');
    assertBackoff(retries);
    assert.equal(retries[0].code, 1006); // the socket just dropped
    // Each attempt announced as it starts, numbered as its `reconnecting` said (0: the first).
    assert.deepEqual(
      log.named('connecting').map((c) => c.attempt),
      [0, ...retries.map((r) => r.attempt)],
    );

    // The monitor reconnected too; its new snapshot holds the same session, and heartbeats go on.
    await waitFor(() => mon.snapshots().length > snapshotsAtKill, "the monitor's snapshot after the restart");
    assert.ok(mon.watch.roster.has(welcome.sessionId));
    const heard = Date.now();
    await waitFor(
      () => (mon.watch.roster.get(welcome.sessionId)?.lastHeartbeatAt ?? 0) > heard,
      'a heartbeat of the resumed session in the roster',
    );
    for (const delta of mon.deltas()) {
      assert.ok(!(delta.left ?? []).some((l) => l.sessionId === welcome.sessionId), `a leave: ${JSON.stringify(delta)}`);
      assert.deepEqual(delta.joined ?? [], [], `a join: ${JSON.stringify(delta)}`);
    }
    for (const snap of mon.snapshots()) {
      assert.deepEqual(snap.users.map((u) => u.sessionId), [welcome.sessionId]);
    }
  });
});

describe('kill -9 and a node down longer than the grace period', () => {
  const GRACE_MS = 1500;
  const { node, member, monitor } = site('kill-new', { SPIDI_GRACE_PERIOD_MS: String(GRACE_MS) });
  before(() => node.start());

  it('joins anew (a new session) once the grace period is over', async () => {
    const client = member('lobby');
    const log = record(client);
    const welcome = await client.join();
    assert.equal(welcome.gracePeriodMs, GRACE_MS); // the SDK counts with the server's, not its default
    const mon = watchRoster(monitor(), 'lobby');
    await waitFor(() => mon.watch.roster.has(welcome.sessionId), 'the member in the roster');

    await node.kill9();
    const down = Date.now();
    await waitFor(() => Date.now() - down > GRACE_MS + 300, 'the grace period to pass', GRACE_MS + 1000);
    await node.start();

    const second = await waitFor(() => log.named('welcome')[1], 'a second welcome');
    assert.equal(second.resumed, false);
    assert.notEqual(second.sessionId, welcome.sessionId);
    assert.equal(client.sessionId, second.sessionId);
    assert.deepEqual(log.named('resumed'), []);
    assertBackoff(log.named('reconnecting'));
    // The monitor sees the new session, and the old one end once the server gives up on it.
    await waitFor(() => mon.watch.roster.has(second.sessionId), 'the new session in the roster');
    await waitFor(() => !mon.watch.roster.has(welcome.sessionId), 'the old session gone from the roster', 10_000);
  });
});

describe('graceful restart (SIGTERM)', () => {
  const { node, member, monitor } = site('term', { SPIDI_GRACE_PERIOD_MS: '10000' });
  before(() => node.start());

  it('reconnects on close 1012 and resumes the handed-over session', async () => {
    const client = member('lobby');
    const log = record(client);
    const welcome = await client.join();
    const mon = watchRoster(monitor(), 'lobby');
    await waitFor(() => mon.watch.roster.has(welcome.sessionId), 'the member in the roster');

    await node.terminate();
    await node.start();

    const retries = await waitFor(() => log.named('reconnecting').length && log.named('reconnecting'), 'a retry');
    assert.equal(retries[0].code, 1012);
    const resumed = await waitFor(() => log.named('resumed')[0] ?? log.named('welcome')[1], 'a welcome after the restart');
    assert.equal(resumed.resumed, true);
    assert.equal(resumed.sessionId, welcome.sessionId);
    assert.deepEqual(log.named('sessionEnded'), []);
    assert.equal(log.named('welcome').length, 1);
    assertBackoff(retries);
    await waitFor(() => mon.watch.roster.has(welcome.sessionId) && mon.snapshots().length >= 2, "the monitor's new snapshot");
    for (const delta of mon.deltas()) {
      assert.ok(!(delta.left ?? []).some((l) => l.sessionId === welcome.sessionId), `a leave: ${JSON.stringify(delta)}`);
      assert.deepEqual(delta.joined ?? [], [], `a join: ${JSON.stringify(delta)}`);
    }
  });
});
