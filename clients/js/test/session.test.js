// The SDK against a real Spidi node: join, heartbeats with measured latency seen by a monitor,
// leave, the errors that stop the retries, and a token refreshed through getToken on reconnect.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { SpidiClient } from 'spidi-client';

import { SpidiNode, mintToken, waitFor } from '../support/node.js';
import { CuttableProxy, record, recordingWebSocket } from '../support/tools.js';

const node = new SpidiNode('session', {
  SPIDI_HEARTBEAT_INTERVAL_MS: '200',
  SPIDI_AUTO_CREATE_ROOMS: 'false',
  SPIDI_ROOMS: 'lobby=100,tiny=1,refresh=10,gaps=10',
});
const clients = [];
const proxies = [];

function client(options) {
  const c = new SpidiClient({ url: node.url, reconnectBaseMs: 50, reconnectCapMs: 400, ...options });
  clients.push(c);
  return c;
}

const monitorToken = () => mintToken({ sub: 'ops', roles: ['spidi:monitor'] });

before(() => node.start());
after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(proxies.map((p) => p.close()));
  await node.cleanup();
});

describe('a session', () => {
  it('joins, reports its measured latency in heartbeats (seen by a monitor), and leaves', async () => {
    const monitor = client({ token: monitorToken() });
    const seen = [];
    const watch = monitor.watchRoom('lobby', { onRoster: (_roster, msg) => seen.push(msg) });
    await waitFor(() => seen.length > 0, 'the roster snapshot');

    // Alice's network adds 30 ms to every round trip: her measured latency must show it.
    const slow = await new CuttableProxy(node.port, { delayMs: 30 }).start();
    proxies.push(slow);
    const wire = recordingWebSocket();
    const alice = client({
      url: slow.url(),
      token: mintToken({ sub: 'alice' }),
      room: 'lobby',
      clientId: 'phone-1',
      appVersion: '2.3.4',
      device: 'Pixel 8',
      os: 'Android 15',
      WebSocket: wire.WebSocket,
    });
    const log = record(alice);
    const welcome = await alice.join();
    assert.equal(welcome.type, 'WELCOME');
    assert.equal(welcome.roomCode, 'lobby');
    assert.equal(welcome.resumed, false);
    assert.equal(welcome.heartbeatIntervalMs, 200);
    assert.equal(alice.sessionId, welcome.sessionId);
    assert.deepEqual(log.named('welcome'), [welcome]);
    const hello = wire.sent.find((f) => f.destination === '/app/hello').body;
    assert.deepEqual(hello, {
      roomCode: 'lobby',
      clientId: 'phone-1',
      appVersion: '2.3.4',
      device: 'Pixel 8',
      os: 'Android 15',
    });

    // Heartbeats: the first carries no latencyMs (nothing measured yet), the next ones do.
    const beats = () => wire.sent.filter((f) => f.destination === '/app/heartbeat').map((f) => f.body);
    await waitFor(() => beats().length >= 4, 'four heartbeats');
    const [first, ...rest] = beats();
    assert.deepEqual(first, { sessionId: welcome.sessionId });
    for (const beat of rest) {
      assert.equal(beat.sessionId, welcome.sessionId);
      assert.ok(Number.isInteger(beat.latencyMs) && beat.latencyMs >= 30, JSON.stringify(beat));
    }
    assert.ok(alice.latencyMs >= 30, `measured latency ${alice.latencyMs}`);

    // The monitor's roster holds the session with a latency the client reported.
    const entry = await waitFor(() => {
      const e = watch.roster.get(welcome.sessionId);
      const reported = new Set(beats().slice(1).map((b) => b.latencyMs));
      return e && reported.has(e.latencyMs) ? e : null;
    }, 'the reported latency in the roster');
    assert.ok(entry.latencyMs >= 30);
    assert.equal(entry.userId, 'alice');
    assert.equal(entry.clientId, 'phone-1');
    assert.equal(entry.device, 'Pixel 8');
    assert.equal('ip' in entry, false); // a monitor sees no addresses

    await alice.leave();
    assert.equal(alice.sessionId, null);
    assert.deepEqual(log.named('ended'), [{ reason: 'leave', sessionId: welcome.sessionId }]);
    const left = await waitFor(
      () => seen.flatMap((m) => m.left ?? []).find((l) => l.sessionId === welcome.sessionId),
      'the leave in the roster',
    );
    assert.equal(left.reason, 'leave');
    assert.equal(watch.roster.has(welcome.sessionId), false);
    assert.equal(alice.connected, false); // nothing else used the connection
    assert.deepEqual(log.named('reconnecting'), []);
    watch.stop();
  });

  it('lets a monitor watch every room and a room\'s metrics; stop() ends a watch', async () => {
    const monitor = client({ token: monitorToken() });
    const rooms = [];
    const metrics = [];
    const roomsWatch = monitor.watchRooms((list, msg) => rooms.push({ list, msg }));
    const roomWatch = monitor.watchRoom('lobby', { onMetrics: (m) => metrics.push(m) });
    const member = client({ token: mintToken({ sub: 'henry' }), room: 'lobby' });
    await member.join();
    const lobby = await waitFor(
      () => rooms.at(-1)?.list.find((r) => r.roomCode === 'lobby' && r.online === 1),
      'the lobby with one member in ROOMS',
    );
    assert.equal(lobby.capacity, 100);
    assert.equal(rooms.at(-1).msg.type, 'ROOMS');
    await waitFor(() => metrics.some((m) => m.roomCode === 'lobby' && m.online === 1), 'ROOM_METRICS of the lobby');
    roomsWatch.stop();
    roomWatch.stop();
    const seen = rooms.length;
    await member.leave();
    await waitFor(() => !monitor.connected, 'the monitor to disconnect (no watch left)');
    assert.equal(rooms.length, seen);
  });

  it('subscribes again for a new snapshot when a roster delta was lost (seq gap)', async () => {
    const proxy = await new CuttableProxy(node.port).start();
    try {
      const monitor = client({ url: proxy.url(), token: monitorToken() });
      const messages = [];
      const watch = monitor.watchRoom('gaps', { onRoster: (_r, msg) => messages.push(msg) });
      await waitFor(() => messages.length === 1, 'the first snapshot');
      // The next roster delta is lost on the way.
      proxy.drop = (text) => text.includes('"ROOM_ROSTER"') && text.includes('"full":false');
      const first = client({ token: mintToken({ sub: 'ivy' }), room: 'gaps' });
      const one = await first.join();
      await waitFor(() => proxy.dropped.length === 1, 'the delta of the first join dropped');
      const second = client({ token: mintToken({ sub: 'jack' }), room: 'gaps' });
      const two = await second.join();
      // The next delta (seq 3 after 1: the second join, or a heartbeat of the first member) shows
      // the gap: a new subscription, whose snapshot holds the member whose join was lost.
      await waitFor(() => watch.roster.has(one.sessionId) && watch.roster.has(two.sessionId), 'both members');
      assert.equal(watch.resyncs, 1);
      const snapshots = messages.filter((m) => m.full);
      assert.equal(snapshots.length, 2);
      assert.ok(snapshots[1].users.some((u) => u.sessionId === one.sessionId));
      assert.ok(!messages.some((m) => !m.full && m.seq === 2), 'the lost delta never arrived');
      await Promise.all([first.leave(), second.leave()]);
      await waitFor(() => watch.roster.size === 0, 'both gone from the roster');
    } finally {
      await proxy.close();
    }
  });

  it('stops retrying on ROOM_FULL, with a clear error', async () => {
    const first = client({ token: mintToken({ sub: 'bob' }), room: 'tiny' });
    await first.join();
    const second = client({ token: mintToken({ sub: 'carol' }), room: 'tiny' });
    const log = record(second);
    await assert.rejects(second.join(), (err) => {
      assert.equal(err.code, 'ROOM_FULL');
      assert.equal(err.codeNumber, 1201);
      assert.equal(err.fatal, true);
      assert.match(err.message, /full/);
      return true;
    });
    const [ended] = log.named('ended');
    assert.equal(ended.reason, 'error');
    assert.equal(ended.error.code, 'ROOM_FULL');
    await waitFor(() => !second.connected, 'the refused client to disconnect');
    // No retry follows, however long one waits past the largest backoff (400 ms here).
    await new Promise((r) => setTimeout(r, 600));
    assert.deepEqual(log.named('reconnecting'), []);
    assert.equal(log.named('welcome').length, 0);
    await assert.rejects(second.join(), { code: 'CLOSED' });
    await first.leave();
  });

  it('stops retrying on ROOM_NOT_FOUND', async () => {
    const c = client({ token: mintToken({ sub: 'dave' }), room: 'nowhere' });
    const log = record(c);
    await assert.rejects(c.join(), { code: 'ROOM_NOT_FOUND', fatal: true });
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(log.named('reconnecting'), []);
  });

  it('stops retrying when the token is refused', async () => {
    const expired = mintToken({ sub: 'erin', ttlS: -10 });
    const c = client({ token: expired, room: 'lobby' });
    const log = record(c);
    await assert.rejects(c.join(), (err) => {
      assert.equal(err.code, 'UNAUTHORIZED');
      assert.match(err.message, /token expired/);
      return true;
    });
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(log.named('reconnecting'), []);
    const noRole = client({ token: mintToken({ sub: 'frank', roles: ['spidi:monitor'] }), room: 'lobby' });
    await assert.rejects(noRole.join(), { code: 'FORBIDDEN', fatal: true });
  });

  it('refreshes an expiring token through getToken before each connection attempt', async () => {
    const proxy = await new CuttableProxy(node.port).start();
    try {
      const tokens = [];
      // The first token expires soon (exp has whole seconds: in 2 to 3 s); the next ones do not.
      const getToken = async () => {
        const token = mintToken({ sub: 'grace', ttlS: tokens.length === 0 ? 3 : 3600 });
        tokens.push({ token, exp: JSON.parse(Buffer.from(token.split('.')[1], 'base64url')).exp });
        return token;
      };
      const c = client({ url: proxy.url(), getToken, room: 'refresh' });
      const log = record(c);
      const welcome = await c.join();
      assert.equal(tokens.length, 1);
      // Once the first token has expired, the network drops.
      await waitFor(() => Date.now() > tokens[0].exp * 1000 + 50, 'the first token to expire', 4000);
      proxy.cut();
      const resumed = await waitFor(() => log.named('resumed')[0], 'the session resumed');
      assert.equal(resumed.sessionId, welcome.sessionId);
      assert.equal(resumed.resumed, true);
      assert.ok(tokens.length >= 2, `getToken called ${tokens.length} times`);
      assert.notEqual(tokens.at(-1).token, tokens[0].token);
      assert.ok(log.named('reconnecting').length >= 1);
      assert.equal(log.named('reconnecting')[0].code, 1006);
      // The first token alone would have been refused now.
      const stale = client({ url: proxy.url(), token: tokens[0].token, room: 'refresh' });
      await assert.rejects(stale.join(), { code: 'UNAUTHORIZED' });
    } finally {
      await proxy.close();
    }
  });
});

describe('a session the server ends', () => {
  const timeoutNode = new SpidiNode('timeout', { SPIDI_HEARTBEAT_INTERVAL_MS: '200', SPIDI_HEARTBEAT_TIMEOUT_MS: '1500' });
  const members = [];
  before(() => timeoutNode.start());
  after(async () => {
    await Promise.all(members.map((c) => c.close()));
    await timeoutNode.cleanup();
  });

  it('is joined anew after SESSION_ENDED (timeout) on a live connection', async () => {
    const wire = recordingWebSocket();
    const c = new SpidiClient({ url: timeoutNode.url, token: mintToken({ sub: 'kim' }), room: 'lobby', WebSocket: wire.WebSocket });
    members.push(c);
    const log = record(c);
    const first = await c.join();
    // Its heartbeats stop reaching the server (the connection stays up): the server times it out.
    wire.blocked.add('/app/heartbeat');
    const ended = await waitFor(() => log.named('sessionEnded')[0], 'SESSION_ENDED');
    assert.deepEqual(ended, { type: 'SESSION_ENDED', sessionId: first.sessionId, reason: 'timeout' });
    wire.blocked.clear();
    const second = await waitFor(() => log.named('welcome')[1], 'a new session');
    assert.equal(second.resumed, false);
    assert.notEqual(second.sessionId, first.sessionId);
    assert.equal(c.sessionId, second.sessionId);
    const hellos = wire.sent.filter((f) => f.destination === '/app/hello').map((f) => f.body);
    assert.equal(hellos.length, 2);
    assert.equal('resumeSessionId' in hellos[1], false); // the ended session is not asked back
    assert.deepEqual(log.named('reconnecting'), []); // the connection never dropped
    assert.deepEqual(log.named('ended'), []);
  });
});
