// Monitor subscriptions that outlive connections: each watch subscribes again on every new
// connection (attach) and forgets its subscriptions when one drops (detach). The state they keep
// (state.js) is replaced by the snapshot each new subscription starts with.

import { parseBody as parse } from './message.js';
import { AlertState, RosterState } from './state.js';

class Watch {
  constructor(client) {
    this.client = client;
    this.stomp = null;
    this.subs = [];
  }

  attach(stomp) {
    this.stomp = stomp;
    this.subscribe();
  }

  detach() {
    this.stomp = null;
    this.subs = [];
  }

  unsubscribe() {
    for (const sub of this.subs) {
      try {
        sub.unsubscribe();
      } catch {
        // the connection went meanwhile: nothing to unsubscribe
      }
    }
    this.subs = [];
  }

  handle() {
    return { stop: () => this.client._removeWatch(this) };
  }
}

export class RoomWatch extends Watch {
  constructor(client, roomCode, onRoster, onMetrics) {
    super(client);
    this.roomCode = roomCode;
    this.onRoster = onRoster;
    this.onMetrics = onMetrics;
    this.state = new RosterState();
    this.rosterSub = null;
    this.resyncs = 0; // how often a seq gap made it subscribe again
  }

  subscribe() {
    const base = `/topic/rooms/${this.roomCode}`;
    this.subscribeRoster();
    if (this.onMetrics) {
      this.subs.push(
        this.stomp.subscribe(`${base}/metrics`, (m) => {
          const body = parse(m);
          if (body?.type === 'ROOM_METRICS') this.onMetrics(body);
        }),
      );
    }
  }

  subscribeRoster() {
    const sub = this.stomp.subscribe(`/topic/rooms/${this.roomCode}/roster`, (m) => {
      if (sub !== this.rosterSub) return; // a message of a subscription given up
      const body = parse(m);
      if (body?.type !== 'ROOM_ROSTER') return;
      const verdict = this.state.apply(body);
      if (verdict === 'resync') {
        // A message was missed: a new subscription starts with a new snapshot.
        this.resyncs++;
        this.subs = this.subs.filter((s) => s !== sub);
        sub.unsubscribe();
        this.subscribeRoster();
        return;
      }
      if (verdict === 'applied') this.onRoster?.(this.state.users, body);
    });
    this.rosterSub = sub;
    this.subs.push(sub);
  }

  handle() {
    const watch = this;
    return {
      get roster() {
        return watch.state.users;
      },
      get resyncs() {
        return watch.resyncs;
      },
      stop: () => this.client._removeWatch(this),
    };
  }
}

export class RoomsWatch extends Watch {
  constructor(client, onRooms) {
    super(client);
    this.onRooms = onRooms;
  }

  subscribe() {
    this.subs.push(
      this.stomp.subscribe('/topic/rooms', (m) => {
        const body = parse(m);
        if (body?.type === 'ROOMS') this.onRooms?.(body.rooms ?? [], body);
      }),
    );
  }
}

export class AlertWatch extends Watch {
  constructor(client, onAlerts) {
    super(client);
    this.onAlerts = onAlerts;
    this.state = new AlertState();
  }

  subscribe() {
    this.subs.push(
      this.stomp.subscribe('/topic/alerts', (m) => {
        const body = parse(m);
        if (body && this.state.apply(body)) this.onAlerts?.(this.state.list(), body);
      }),
    );
  }

  handle() {
    const watch = this;
    return {
      get alerts() {
        return watch.state.list();
      },
      stop: () => this.client._removeWatch(this),
    };
  }
}
