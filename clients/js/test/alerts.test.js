// watchAlerts against a real node with its evaluator (embedded PostgreSQL for the rules): an
// alert fires when a member joins, its acknowledgement (REST) marks it, and it resolves when the
// member leaves; the watch's list follows each step.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { SpidiClient } from 'spidi-client';

import { SpidiNode, mintToken, waitFor } from '../support/node.js';

describe('alerts', () => {
  const node = new SpidiNode('alerts', {
    SPIDI_HISTORY: 'true', // the rules live in PostgreSQL
    SPIDI_ALERTING: 'true',
    SPIDI_ALERT_INTERVAL_S: '0.2',
    SPIDI_ALERT_LEASE_S: '1',
    SPIDI_ALERT_RULES_REFRESH_S: '0.2',
    SPIDI_WRITER_FLUSH_INTERVAL_S: '0.2', // the alert event reaches PostgreSQL (acknowledge reads it) soon
  });
  const clients = [];
  before(() => node.start());
  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await node.cleanup();
  });

  it('follows an alert from the snapshot through firing, acknowledgement and resolution', async () => {
    const admin = mintToken({ sub: 'ops-anna', roles: ['spidi:admin'] });
    const rule = await node.api('POST', '/api/v1/alert-rules', admin, {
      name: 'Somebody in the watched room',
      scope: 'tenant',
      kind: 'custom',
      expression: 'online >= 1',
      severity: 'info',
      forSeconds: 0,
    });
    assert.equal(rule.status, 201, JSON.stringify(rule.body));

    const monitor = new SpidiClient({ url: node.url, token: mintToken({ sub: 'ops', roles: ['spidi:monitor'] }) });
    clients.push(monitor);
    const seen = [];
    const watch = monitor.watchAlerts((alerts, msg) => seen.push({ alerts, msg }));
    await waitFor(() => seen.find((s) => s.msg.type === 'ALERTS'), 'the ALERTS snapshot');
    assert.deepEqual(watch.alerts, []);

    const member = new SpidiClient({ url: node.url, token: mintToken({ sub: 'lea' }), room: 'watched' });
    clients.push(member);
    await member.join();
    const firing = await waitFor(
      () => watch.alerts.find((a) => a.roomCode === 'watched' && a.state === 'firing'),
      'the alert firing',
      20_000,
    );
    assert.equal(firing.ruleId, rule.body.id);
    assert.equal(watch.alerts.length, 1);

    // Acknowledged once the history writer has stored the alert's event.
    await waitFor(
      async () => (await node.api('POST', `/api/v1/alerts/${firing.episodeId}/acknowledge`, admin)).status === 200,
      'the acknowledgement accepted',
      10_000,
      200,
    );
    const acked = await waitFor(() => watch.alerts.find((a) => a.acknowledgedBy), 'the acknowledgement');
    assert.equal(acked.acknowledgedBy, 'ops-anna');
    assert.ok(seen.some((s) => s.msg.type === 'ALERT_ACK'));

    await member.leave();
    await waitFor(() => watch.alerts.length === 0, 'the alert resolved', 20_000);
    assert.ok(seen.some((s) => s.msg.type === 'ALERT' && s.msg.state === 'resolved'));
  });
});
