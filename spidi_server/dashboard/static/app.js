/*
 * Spidi operators' dashboard. Plain JS, no build step; talks STOMP (stomp.js) to the node's
 * WebSocket and reads room history from the REST API of the ops port.
 *
 * Views (location.hash): "#/" every room of the tenant, "#/rooms/<code>" one room.
 * Open alerts come from /topic/alerts (a snapshot, then transitions and acknowledgements) and
 * show in both views; the Acknowledge button calls the REST API with the signed-in token.
 */
(function () {
  "use strict";

  const { StompClient } = window.SpidiStomp;

  const TOKEN_KEY = "spidi.dashboard.token";
  const WSURL_KEY = "spidi.dashboard.wsUrl";
  const READ_ROLES = ["spidi:monitor", "spidi:admin"];
  const MAX_ROSTER_ROWS = 500;
  const HISTORY_REFRESH_MS = 60000;
  const RANGES = {
    "1h": { ms: 3600e3, bucket: "1m", label: "last hour" },
    "24h": { ms: 86400e3, bucket: "1h", label: "last 24 hours" },
    "7d": { ms: 7 * 86400e3, bucket: "1h", label: "last 7 days" },
  };
  // Worst first where alerts are ranked; the rank also sorts the rooms table's alert column.
  const SEVERITY_RANK = { critical: 3, warning: 2, info: 1 };
  const LATENCY_BUCKETS = [
    { lo: 0, hi: 25, label: "<25" },
    { lo: 25, hi: 50, label: "25–50" },
    { lo: 50, hi: 100, label: "50–100" },
    { lo: 100, hi: 200, label: "100–200" },
    { lo: 200, hi: 500, label: "200–500" },
    { lo: 500, hi: 1000, label: "0.5–1 s" },
    { lo: 1000, hi: Infinity, label: "≥1 s" },
  ];

  const state = {
    config: null,
    wsUrl: "",
    token: "",
    claims: null,
    client: null,
    connState: "idle",
    connDetail: null,
    rooms: new Map(),
    roomsLoaded: false,
    roomsAt: 0,
    sort: { key: "online", dir: -1 },
    filter: "",
    room: null,
    rosterSort: { key: "connectedAt", dir: -1 },
    rosterFilter: "",
    historyRange: "1h",
    alerts: new Map(), // "<ruleId>/<roomId>" -> open alert: the ALERT message, plus its acknowledgement
    alertsByRoom: new Map(), // roomCode -> the room's open alerts, worst first
    alertsReady: false,
    alertsError: null,
    acking: new Set(), // keys of the alerts whose acknowledgement is on its way
  };

  // -- small helpers ---------------------------------------------------------------------------

  const $ = (sel, root) => (root || document).querySelector(sel);
  const SVG_NS = "http://www.w3.org/2000/svg";

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children.flat()) if (c) node.append(c);
    return node;
  }

  const numberFmt = new Intl.NumberFormat(undefined);
  const fmtInt = (v) => (typeof v === "number" && isFinite(v) ? numberFmt.format(Math.round(v)) : "—");

  function fmtMs(v) {
    if (v === null || v === undefined || v === "" || !isFinite(Number(v))) return "—";
    v = Number(v);
    if (v >= 10000) return (v / 1000).toFixed(1) + " s";
    if (v < 10 && v !== Math.round(v)) return v.toFixed(1) + " ms";
    return numberFmt.format(Math.round(v)) + " ms";
  }

  function fmtDuration(ms) {
    if (!(ms >= 0)) ms = 0;
    const s = Math.floor(ms / 1000);
    if (s < 60) return s + " s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + " min " + (s % 60) + " s";
    const h = Math.floor(m / 60);
    if (h < 24) return h + " h " + (m % 60) + " min";
    return Math.floor(h / 24) + " d " + (h % 24) + " h";
  }

  function fmtAgo(ms) {
    if (!(ms >= 0)) ms = 0;
    return ms < 1500 ? "just now" : fmtDuration(ms) + " ago";
  }

  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hour12: false });
  const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric" });
  const fullFmt = new Intl.DateTimeFormat(undefined, {
    weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", hour12: false,
  });

  function toMs(ts) {
    if (typeof ts === "number") return ts > 1e11 ? ts : ts * 1000;
    if (typeof ts === "string") {
      if (/^\d+(\.\d+)?$/.test(ts)) return toMs(Number(ts));
      const t = Date.parse(ts);
      return isNaN(t) ? null : t;
    }
    return null;
  }

  const num = (v) => (v === null || v === undefined || v === "" || !isFinite(Number(v)) ? null : Number(v));

  function decodeJwt(token) {
    const parts = token.split(".");
    if (parts.length !== 3) return null;
    try {
      const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
      const padded = b64 + "===".slice((b64.length + 3) % 4);
      const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
      const claims = JSON.parse(new TextDecoder().decode(bytes));
      return claims && typeof claims === "object" ? claims : null;
    } catch (e) {
      return null;
    }
  }

  function rolesOf(claims) {
    const roles = claims && claims.roles;
    return Array.isArray(roles) ? roles : typeof roles === "string" ? [roles] : [];
  }

  function capacityClass(ratio) {
    return ratio >= 0.9 ? "crit" : ratio >= 0.7 ? "warn" : "ok";
  }

  function latencyClass(v) {
    return v === null ? "" : v >= 500 ? "crit" : v >= 200 ? "warn" : "";
  }

  function capacityBar(online, capacity) {
    const ratio = capacity > 0 ? Math.min(1, online / capacity) : 0;
    const fill = el("span", { class: "bar-fill " + capacityClass(ratio) });
    fill.style.width = (ratio * 100).toFixed(1) + "%";
    return el(
      "div",
      { class: "cap" },
      el("div", { class: "bar", role: "presentation" }, fill),
      el(
        "span",
        { class: "cap-text" },
        el("b", { class: "online", text: fmtInt(online) }),
        el("span", { class: "muted", text: " / " + (capacity > 0 ? fmtInt(capacity) : "∞") })
      )
    );
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function setClass(node, cls) {
    if (node.getAttribute("class") !== cls) node.setAttribute("class", cls);
  }

  /**
   * Bring a tbody to the rows of ``items`` in order, keyed by data-<attr>: existing rows are
   * updated in place (a click or a text selection in the table survives live updates).
   */
  function reconcile(tbody, items, attr, key, create, update) {
    const existing = new Map();
    for (const tr of tbody.rows) existing.set(tr.dataset[attr], tr);
    let prev = null;
    for (const item of items) {
      const k = String(key(item));
      let tr = existing.get(k);
      if (tr) existing.delete(k);
      else {
        tr = create(item);
        tr.dataset[attr] = k;
      }
      update(tr, item);
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (tr !== want) tbody.insertBefore(tr, want);
      prev = tr;
    }
    for (const tr of existing.values()) tr.remove();
  }

  let toastTimer = null;
  function toast(message, kind) {
    const box = $("#toast");
    box.textContent = message;
    box.className = "toast show " + (kind || "error");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => (box.className = "toast"), 6000);
  }

  const pending = new Set();
  function schedule(what) {
    if (pending.size === 0) requestAnimationFrame(flushRenders);
    pending.add(what);
  }
  function flushRenders() {
    const items = [...pending];
    pending.clear();
    for (const what of items) {
      if (what === "rooms") renderRooms();
      else if (what === "roomKpis") renderRoomKpis();
      else if (what === "roster") renderRoster();
      else if (what === "alerts") renderAlerts();
    }
  }

  // -- views -------------------------------------------------------------------------------------

  function showView(name) {
    for (const id of ["signin", "global", "room"]) $("#" + id).hidden = id !== name;
    document.body.dataset.view = name;
    document.title = (name === "room" && state.room ? state.room.code + " · " : name === "global" ? "Rooms · " : "") + "Spidi";
    renderCrumbs();
  }

  function renderCrumbs() {
    const crumbs = $("#crumbs");
    crumbs.replaceChildren();
    const view = document.body.dataset.view;
    if (view === "global") crumbs.append(el("span", { class: "crumb current", text: "Rooms" }));
    if (view === "room" && state.room) {
      crumbs.append(
        el("a", { class: "crumb", href: "#/", text: "Rooms" }),
        el("span", { class: "crumb-sep", text: "/" }),
        el("span", { class: "crumb current", text: state.room.code })
      );
    }
  }

  function route() {
    if (!state.token) return;
    const m = location.hash.match(/^#\/rooms\/(.+)$/);
    if (m) {
      let code;
      try {
        code = decodeURIComponent(m[1]);
      } catch (e) {
        code = m[1];
      }
      if (!state.room || state.room.code !== code) enterRoom(code);
      showView("room");
    } else {
      leaveRoom();
      showView("global");
      schedule("rooms");
    }
  }

  // -- sign-in -----------------------------------------------------------------------------------

  function showSignin(message) {
    showView("signin");
    $("#who").hidden = true;
    const input = $("#token");
    if (!input.value && state.config && state.config.devToken) input.value = state.config.devToken;
    $("#dev-hint").hidden = !(state.config && state.config.devToken);
    $("#ws-url").value = state.wsUrl;
    const err = $("#signin-error");
    err.hidden = !message;
    err.textContent = message || "";
    input.focus();
  }

  function checkToken(token) {
    if (!token) return "Paste a token first.";
    const claims = decodeJwt(token);
    if (!claims) return "This does not look like a JWT (three base64url parts separated by dots).";
    if (typeof claims.exp === "number" && claims.exp * 1000 < Date.now()) {
      return "This token expired " + fullFmt.format(new Date(claims.exp * 1000)) + ".";
    }
    if (!rolesOf(claims).some((r) => READ_ROLES.includes(r))) {
      return "This token cannot watch rooms: it needs the role spidi:monitor or spidi:admin.";
    }
    return null;
  }

  function signIn(token, wsUrl) {
    const problem = checkToken(token);
    if (problem) {
      showSignin(problem);
      return;
    }
    state.token = token;
    state.claims = decodeJwt(token);
    sessionStorage.setItem(TOKEN_KEY, token);
    if (wsUrl && wsUrl !== (state.config && state.config.wsUrl)) {
      sessionStorage.setItem(WSURL_KEY, wsUrl);
      state.wsUrl = wsUrl;
    } else if (wsUrl) {
      sessionStorage.removeItem(WSURL_KEY);
      state.wsUrl = wsUrl;
    }
    renderWho();
    connect();
    route();
  }

  /** Back to the sign-in form; after a refusal the refused token stays in the box to be seen. */
  function signOut(message, keepToken) {
    if (state.client) {
      state.client.deactivate();
      state.client = null;
    }
    leaveRoom();
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = "";
    state.claims = null;
    state.rooms.clear();
    state.roomsLoaded = false;
    state.alerts.clear();
    state.alertsByRoom.clear();
    state.alertsReady = false;
    state.alertsError = null;
    if (!keepToken) $("#token").value = "";
    if (location.hash && location.hash !== "#/") history.replaceState(null, "", "#/");
    setConnState("idle", null);
    showSignin(message);
  }

  function renderWho() {
    const c = state.claims || {};
    $("#who").hidden = false;
    $("#who-name").textContent = c.sub || "?";
    const roles = rolesOf(c).filter((r) => r.startsWith("spidi:")).map((r) => r.slice(6));
    $("#who-meta").textContent = (c.tenant || "default") + " · " + roles.join(", ");
  }

  // -- connection --------------------------------------------------------------------------------

  function connect() {
    if (state.client) state.client.deactivate();
    const client = new StompClient(state.wsUrl, { token: state.token, tokenIn: "passcode" });
    state.client = client;
    client.onStateChange = (s, detail) => {
      if (state.client === client) setConnState(s, detail);
    };
    client.onConnect = () => onConnected(client);
    client.onAuthFailure = (message) => {
      if (state.client === client) signOut("The server refused the token: " + message, true);
    };
    client.onError = (message) => {
      if (client.state === "connected") toast("Server error: " + message);
    };
    client.activate();
  }

  function onConnected(client) {
    client.subscribe("/user/queue/errors", onAppError);
    client.subscribe("/topic/rooms", onRooms);
    client.subscribe("/topic/alerts", onAlerts);
    if (state.room) subscribeRoom(state.room);
  }

  function setConnState(s, detail) {
    state.connState = s;
    state.connDetail = detail;
    renderConn();
  }

  function renderConn() {
    const box = $("#conn");
    const s = state.connState;
    box.dataset.state = s;
    let text;
    if (s === "connected") text = "Live";
    else if (s === "connecting") text = "Connecting…";
    else if (s === "reconnecting") {
      const left = Math.max(0, Math.ceil(((state.client && state.client.retryAt) - Date.now()) / 1000));
      text = "Reconnecting in " + left + " s";
    } else if (s === "closed") text = "Disconnected";
    else text = "Not connected";
    $("#conn-text").textContent = text;
    const why = s === "reconnecting" && state.connDetail ? state.connDetail.why : "";
    box.title = s === "connected" ? "Connected to " + state.wsUrl : why ? "Connection lost: " + why : state.wsUrl;
    $("#retry").hidden = s !== "reconnecting";
    const banner = $("#offline");
    const offline = !!state.token && (s === "reconnecting" || (s === "connecting" && state.roomsLoaded));
    banner.hidden = !offline;
    if (offline) {
      banner.querySelector(".msg").textContent =
        "Connection to " + state.wsUrl + " lost" + (why ? " (" + why + ")" : "") + ". Figures below may be stale.";
    }
    document.body.classList.toggle("stale", offline);
  }

  function onAppError(msg) {
    const text = (msg && (msg.message || msg.code)) || "unknown error";
    const ref = (msg && msg.ref) || "";
    if (state.room && ref.startsWith("/topic/rooms/" + state.room.code + "/")) {
      state.room.error = text;
      renderRoomError();
    } else if (ref === "/topic/rooms") {
      $("#rooms-error").hidden = false;
      $("#rooms-error").textContent = text;
    } else if (ref === "/topic/alerts") {
      state.alertsError = text;
      schedule("alerts");
    } else {
      toast(text);
    }
  }

  // -- global view ---------------------------------------------------------------------------------

  function onRooms(msg) {
    if (!msg || !Array.isArray(msg.rooms)) return;
    const rooms = new Map();
    for (const r of msg.rooms) {
      if (r && r.roomCode) rooms.set(r.roomCode, r);
    }
    state.rooms = rooms;
    state.roomsLoaded = true;
    state.roomsAt = Date.now();
    $("#rooms-error").hidden = true;
    schedule("rooms");
    if (state.room) {
      const r = rooms.get(state.room.code);
      if (r) learnRoomId(state.room, r.roomId);
      schedule("roomKpis");
    }
  }

  const ROOM_COLUMNS = {
    roomCode: (r) => String(r.roomCode).toLowerCase(),
    online: (r) => num(r.online) || 0,
    users: (r) => num(r.users) || 0,
    peak: (r) => num(r.peak) || 0,
    avgLatencyMs: (r) => num(r.avgLatencyMs),
    alert: (r) => {
      const alerts = state.alertsByRoom.get(r.roomCode);
      return alerts ? SEVERITY_RANK[alerts[0].severity] || 0 : null;
    },
  };

  function compare(a, b) {
    if (a === b) return 0;
    if (a === null) return 1; // empty values last whatever the direction
    if (b === null) return -1;
    return a < b ? -1 : 1;
  }

  function sortRows(rows, columns, sort, tiebreak) {
    const key = columns[sort.key] || columns[Object.keys(columns)[0]];
    return rows.sort((a, b) => {
      const va = key(a), vb = key(b);
      if (va === null || vb === null) return compare(va, vb) || compare(tiebreak(a), tiebreak(b));
      return sort.dir * compare(va, vb) || compare(tiebreak(a), tiebreak(b));
    });
  }

  function renderSortHeaders(table, sort) {
    for (const th of table.querySelectorAll("th[data-key]")) {
      const active = th.dataset.key === sort.key;
      th.setAttribute("aria-sort", active ? (sort.dir > 0 ? "ascending" : "descending") : "none");
    }
  }

  function renderRooms() {
    if (document.body.dataset.view !== "global") return;
    const all = [...state.rooms.values()];
    let online = 0, users = 0, capacity = 0, latSum = 0, latN = 0;
    for (const r of all) {
      const o = num(r.online) || 0;
      online += o;
      users += num(r.users) || 0;
      capacity += num(r.capacity) || 0;
      const lat = num(r.avgLatencyMs);
      if (lat !== null && o > 0) {
        latSum += lat * o;
        latN += o;
      }
    }
    $("#total-rooms").textContent = state.roomsLoaded ? fmtInt(all.length) : "…";
    $("#total-online").textContent = state.roomsLoaded ? fmtInt(online) : "…";
    $("#total-users").textContent = state.roomsLoaded ? fmtInt(users) : "…";
    $("#total-capacity").textContent = capacity > 0 ? ((online / capacity) * 100).toFixed(1) + " %" : "—";
    $("#total-capacity-sub").textContent = capacity > 0 ? "of " + fmtInt(capacity) + " places" : "no capacity set";
    $("#total-latency").textContent = latN ? fmtMs(latSum / latN) : "—";

    const filter = state.filter.trim().toLowerCase();
    const rows = filter ? all.filter((r) => String(r.roomCode).toLowerCase().includes(filter)) : all;
    sortRows(rows, ROOM_COLUMNS, state.sort, (r) => String(r.roomCode));
    const table = $("#rooms-table");
    renderSortHeaders(table, state.sort);
    reconcile(table.tBodies[0], rows, "room", (r) => r.roomCode, createRoomRow, updateRoomRow);
    const empty = $("#rooms-empty");
    empty.hidden = rows.length > 0 || !state.roomsLoaded;
    empty.textContent = all.length ? "No room matches “" + state.filter + "”." : "No rooms yet: rooms appear when a client joins one.";
    $("#rooms-loading").hidden = state.roomsLoaded;
    $("#rooms-count").textContent = state.roomsLoaded
      ? filter
        ? rows.length + " of " + all.length
        : all.length + (all.length === 1 ? " room" : " rooms")
      : "";
    renderRoomsUpdated();
  }

  function createRoomRow(r) {
    const href = "#/rooms/" + encodeURIComponent(r.roomCode);
    const tr = el(
      "tr",
      { class: "clickable" },
      el("td", { class: "c-code" }, el("a", { href, text: r.roomCode })),
      el("td", { class: "c-cap" }, capacityBar(0, 0)),
      el("td", { class: "num c-users" }),
      el("td", { class: "num c-peak" }),
      el("td", { class: "num c-latency" }),
      el("td", { class: "c-alert muted", text: "—" })
    );
    tr.addEventListener("click", (ev) => {
      if (!ev.target.closest("a") && !String(window.getSelection() || "")) location.hash = href;
    });
    return tr;
  }

  function updateRoomRow(tr, r) {
    const online = num(r.online) || 0;
    const capacity = num(r.capacity) || 0;
    const ratio = capacity > 0 ? Math.min(1, online / capacity) : 0;
    const fill = tr.querySelector(".bar-fill");
    fill.style.width = (ratio * 100).toFixed(1) + "%";
    setClass(fill, "bar-fill " + capacityClass(ratio));
    setText(tr.querySelector(".online"), fmtInt(online));
    setText(tr.querySelector(".cap-text .muted"), " / " + (capacity > 0 ? fmtInt(capacity) : "∞"));
    setText(tr.querySelector(".c-users"), fmtInt(num(r.users) || 0));
    setText(tr.querySelector(".c-peak"), fmtInt(num(r.peak) || 0));
    const lat = num(r.avgLatencyMs);
    const cell = tr.querySelector(".c-latency");
    setText(cell, fmtMs(lat));
    setClass(cell, "num c-latency " + latencyClass(lat));
    updateAlertCell(tr.querySelector(".c-alert"), state.alertsByRoom.get(r.roomCode) || []);
  }

  /** A room's alert cell: its worst open alert's severity (more: "+n"), the rule names as tooltip. */
  function updateAlertCell(cell, alerts) {
    const sig = alerts.map((a) => [a.ruleName, a.severity, a.state].join(":")).join("|");
    if (cell.dataset.sig === sig) return;
    cell.dataset.sig = sig;
    if (!alerts.length) {
      cell.className = "c-alert muted";
      cell.replaceChildren("—");
      cell.removeAttribute("title");
      return;
    }
    cell.className = "c-alert";
    cell.replaceChildren(severityBadge(alerts[0].severity, alerts.every((a) => a.state === "pending")));
    if (alerts.length > 1) cell.append(el("span", { class: "muted small more", text: "+" + (alerts.length - 1) }));
    cell.title = alerts.map((a) => (a.ruleName || "rule") + " (" + a.severity + ", " + a.state + ")").join("\n");
  }

  function renderRoomsUpdated() {
    $("#rooms-updated").textContent = state.roomsAt ? "Updated " + fmtAgo(Date.now() - state.roomsAt) : "";
  }

  // -- alerts ------------------------------------------------------------------------------------

  const alertKey = (a) => a.ruleId + "/" + a.roomId;

  /**
   * /topic/alerts: ALERTS (the open alerts, at once and after every reconnection) replaces what we
   * hold; ALERT is one transition ("resolved" ends the rule's alert in that room); ALERT_ACK marks
   * the open alert of that episode acknowledged. Alerts are keyed by rule and room.
   */
  function onAlerts(msg) {
    if (!msg) return;
    if (msg.type === "ALERTS" && Array.isArray(msg.alerts)) {
      state.alerts = new Map();
      for (const a of msg.alerts) if (a && a.ruleId) state.alerts.set(alertKey(a), Object.assign({}, a));
      state.alertsReady = true;
      state.alertsError = null;
    } else if (msg.type === "ALERT" && msg.ruleId) {
      const key = alertKey(msg);
      if (msg.state === "resolved") state.alerts.delete(key);
      else {
        const prev = state.alerts.get(key);
        const next = Object.assign({}, msg);
        // pending -> firing continues the episode: an acknowledgement of it still holds.
        if (prev && prev.episodeId === msg.episodeId && !next.acknowledgedBy) {
          next.acknowledgedBy = prev.acknowledgedBy;
          next.acknowledgedAt = prev.acknowledgedAt;
        }
        state.alerts.set(key, next);
      }
    } else if (msg.type === "ALERT_ACK" && msg.ruleId) {
      markAcknowledged(alertKey(msg), msg.alertId, msg.acknowledgedBy, msg.acknowledgedAt);
    } else {
      return;
    }
    indexAlerts();
    schedule("alerts");
  }

  function markAcknowledged(key, alertId, by, at) {
    const a = state.alerts.get(key);
    // An acknowledgement of an earlier episode says nothing about this one.
    if (!a || (a.episodeId !== alertId && a.alertId !== alertId)) return;
    a.acknowledgedBy = by;
    a.acknowledgedAt = toMs(at);
  }

  function byWorst(a, b) {
    return (SEVERITY_RANK[b.severity] || 0) - (SEVERITY_RANK[a.severity] || 0) ||
      (a.state === "firing" ? 0 : 1) - (b.state === "firing" ? 0 : 1) || (num(b.since) || 0) - (num(a.since) || 0);
  }

  const byNewest = (a, b) => (num(b.since) || 0) - (num(a.since) || 0) || (num(b.at) || 0) - (num(a.at) || 0);

  function indexAlerts() {
    const byRoom = new Map();
    for (const a of state.alerts.values()) {
      if (!a.roomCode) continue;
      if (!byRoom.has(a.roomCode)) byRoom.set(a.roomCode, []);
      byRoom.get(a.roomCode).push(a);
    }
    for (const list of byRoom.values()) list.sort(byWorst);
    state.alertsByRoom = byRoom;
  }

  function renderAlerts() {
    const view = document.body.dataset.view;
    if (view === "global") {
      renderRooms();
      renderAlertPanel();
    } else if (view === "room") {
      renderRoomAlerts();
    }
  }

  function renderAlertPanel() {
    if (document.body.dataset.view !== "global") return;
    const now = Date.now();
    const alerts = [...state.alerts.values()].sort(byNewest);
    reconcile($("#alerts-table").tBodies[0], alerts, "alert", alertKey, () => createAlertRow(true),
      (tr, a) => updateAlertRow(tr, a, now));
    const err = $("#alerts-error");
    err.hidden = !state.alertsError;
    err.textContent = state.alertsError ? "Alerts are unavailable: " + state.alertsError : "";
    const empty = $("#alerts-empty");
    empty.hidden = alerts.length > 0 || !!state.alertsError;
    empty.textContent = state.alertsReady ? "No open alerts." : "Waiting for alerts…";
    const firing = alerts.filter((a) => a.state === "firing").length;
    $("#alerts-count").textContent = alerts.length
      ? alerts.length + " open" + (firing && firing < alerts.length ? " · " + firing + " firing" : "")
      : "";
  }

  function renderRoomAlerts() {
    const r = state.room;
    if (!r) return;
    const alerts = (state.alertsByRoom.get(r.code) || []).slice().sort(byNewest);
    const now = Date.now();
    $("#room-alerts-card").hidden = !alerts.length;
    reconcile($("#room-alerts-table").tBodies[0], alerts, "alert", alertKey, () => createAlertRow(false),
      (tr, a) => updateAlertRow(tr, a, now));
    $("#room-alerts-count").textContent = alerts.length ? String(alerts.length) : "";
  }

  function severityBadge(severity, pending) {
    return el("span", { class: "sev sev-" + (severity || "info") + (pending ? " pending" : ""), text: severity || "?" });
  }

  function createAlertRow(withRoom) {
    const tr = el(
      "tr",
      {},
      el("td", { class: "c-sev" }),
      el("td", { class: "c-rule" }, el("div", { class: "primary-text" }), el("div", { class: "muted small mono expr" })),
      withRoom ? el("td", { class: "c-room" }, el("a", { class: "mono" })) : null,
      el("td", { class: "c-state" }),
      el("td", { class: "num c-value" }),
      el("td", { class: "num c-since" }),
      el("td", { class: "c-ack" })
    );
    return tr;
  }

  function fmtAlertValue(kind, v) {
    v = num(v);
    if (v === null) return "—";
    if (kind === "latency") return fmtMs(v);
    if (kind === "capacity" || kind === "heartbeat") return (v * 100).toFixed(v < 0.1 && v > 0 ? 1 : 0) + " %";
    return fmtTick(v, 2);
  }

  function updateAlertRow(tr, a, now) {
    const sev = tr.querySelector(".c-sev");
    const sevSig = a.severity + ":" + a.state;
    if (sev.dataset.sig !== sevSig) {
      sev.dataset.sig = sevSig;
      sev.replaceChildren(severityBadge(a.severity, a.state === "pending"));
    }
    const rule = tr.querySelector(".c-rule");
    setText(rule.firstChild, a.ruleName || "—");
    setText(rule.lastChild, a.expression || "");
    if (rule.lastChild.title !== (a.expression || "")) rule.lastChild.title = a.expression || "";
    const link = tr.querySelector(".c-room a");
    if (link) {
      setText(link, a.roomCode || "—");
      const href = "#/rooms/" + encodeURIComponent(a.roomCode || "");
      if (link.getAttribute("href") !== href) link.setAttribute("href", href);
    }
    const st = tr.querySelector(".c-state");
    if (st.textContent !== a.state) st.replaceChildren(el("span", { class: "tag state-" + a.state, text: a.state }));
    const value = tr.querySelector(".c-value");
    setText(value, fmtAlertValue(a.kind, a.value));
    const threshold = num(a.threshold) === null ? "" : "threshold " + fmtAlertValue(a.kind, a.threshold);
    if (value.title !== threshold) value.title = threshold;
    const since = num(a.since);
    setText(tr.querySelector(".c-since"), since === null ? "—" : fmtDuration(now - since));
    updateAckCell(tr.querySelector(".c-ack"), a);
  }

  function updateAckCell(cell, a) {
    const key = alertKey(a);
    const busy = state.acking.has(key);
    const sig = a.acknowledgedBy ? "by:" + a.acknowledgedBy + ":" + a.acknowledgedAt : busy ? "busy" : "open";
    if (cell.dataset.sig === sig) return;
    cell.dataset.sig = sig;
    if (a.acknowledgedBy) {
      const at = toMs(a.acknowledgedAt);
      cell.replaceChildren(
        el("span", { class: "acked" }, "✓ ", el("b", { text: a.acknowledgedBy }), at ? " · " + timeFmt.format(at) : "")
      );
      cell.title = "Acknowledged by " + a.acknowledgedBy + (at ? ", " + fullFmt.format(new Date(at)) : "");
      return;
    }
    cell.removeAttribute("title");
    cell.replaceChildren(
      el("button", {
        type: "button",
        class: "small-btn ack",
        disabled: busy,
        text: busy ? "Acknowledging…" : "Acknowledge",
        onclick: () => acknowledge(key),
      })
    );
  }

  /** POST the acknowledgement of the alert's episode; the ALERT_ACK that follows tells every dashboard. */
  async function acknowledge(key) {
    const a = state.alerts.get(key);
    if (!a || state.acking.has(key)) return;
    const id = a.episodeId || a.alertId;
    state.acking.add(key);
    schedule("alerts");
    try {
      const resp = await fetch("/api/v1/alerts/" + encodeURIComponent(id) + "/acknowledge", {
        method: "POST",
        headers: { Authorization: "Bearer " + state.token, Accept: "application/json" },
        cache: "no-store",
      });
      if (resp.ok) {
        const body = await resp.json();
        markAcknowledged(key, id, body.acknowledgedBy, body.acknowledgedAt);
      } else {
        let detail = "";
        try {
          detail = (await resp.json()).detail || "";
        } catch (e) {
          /* not a problem document */
        }
        const reasons = {
          401: "the API refused the token",
          403: "this token may not acknowledge alerts",
          404: "the alert is not in the history yet; try again in a few seconds",
          503: "the history store is unavailable",
        };
        toast("Could not acknowledge the alert: " + (reasons[resp.status] || detail || "HTTP " + resp.status));
      }
    } catch (e) {
      toast("Could not acknowledge the alert: the API could not be reached.");
    } finally {
      state.acking.delete(key);
      schedule("alerts");
    }
  }

  // -- room view -------------------------------------------------------------------------------------

  function enterRoom(code) {
    leaveRoom();
    const known = state.rooms.get(code);
    state.room = {
      code,
      roomId: (known && known.roomId) || null,
      metrics: null,
      metricsAt: 0,
      roster: new Map(),
      rosterSeq: 0,
      rosterReady: false,
      resubscribes: 0,
      subs: {},
      error: null,
      history: null,
      historyAbort: null,
      historyTimer: null,
    };
    $("#room-title").textContent = code;
    $("#room-id").textContent = state.room.roomId ? "id " + state.room.roomId : "";
    $("#roster-filter").value = state.rosterFilter;
    renderRoomError();
    renderRoomKpis();
    renderRoomAlerts();
    renderRoster();
    renderHistogram();
    renderHistory();
    if (state.client && state.client.connected) subscribeRoom(state.room);
    loadHistory();
    state.room.historyTimer = setInterval(loadHistory, HISTORY_REFRESH_MS);
    window.scrollTo(0, 0);
  }

  function leaveRoom() {
    const r = state.room;
    if (!r) return;
    for (const sub of Object.values(r.subs)) if (sub) sub.unsubscribe();
    if (r.historyAbort) r.historyAbort.abort();
    clearInterval(r.historyTimer);
    state.room = null;
  }

  function subscribeRoom(r) {
    const client = state.client;
    r.error = null;
    renderRoomError();
    r.subs.metrics = client.subscribe("/topic/rooms/" + r.code + "/metrics", (msg) => onMetrics(r, msg));
    subscribeRoster(r);
  }

  function subscribeRoster(r) {
    if (r.subs.roster) r.subs.roster.unsubscribe();
    r.rosterReady = false;
    r.rosterSeq = 0;
    r.subs.roster = state.client.subscribe("/topic/rooms/" + r.code + "/roster", (msg) => onRoster(r, msg));
  }

  function learnRoomId(r, roomId) {
    if (!roomId || r.roomId || state.room !== r) return;
    r.roomId = roomId;
    $("#room-id").textContent = "id " + roomId;
    loadHistory();
  }

  function onMetrics(r, msg) {
    if (state.room !== r || !msg) return;
    r.metrics = msg;
    r.metricsAt = Date.now();
    learnRoomId(r, msg.roomId);
    schedule("roomKpis");
  }

  function onRoster(r, msg) {
    if (state.room !== r || !msg) return;
    learnRoomId(r, msg.roomId);
    const seq = typeof msg.seq === "number" ? msg.seq : null;
    if (msg.full) {
      r.roster = new Map();
      for (const u of msg.users || []) if (u && u.sessionId) r.roster.set(u.sessionId, u);
      r.rosterReady = true;
      if (seq !== null) r.rosterSeq = seq;
    } else {
      if (!r.rosterReady) {
        // A delta ahead of the snapshot: the snapshot (read later) already holds it.
        if (seq !== null) r.rosterSeq = seq;
        return;
      }
      if (seq !== null) {
        if (seq <= r.rosterSeq) return; // a repeat
        if (seq !== r.rosterSeq + 1) {
          // A gap: we missed a delta. Start again from a fresh snapshot.
          r.resubscribes++;
          subscribeRoster(r);
          return;
        }
        r.rosterSeq = seq;
      }
      for (const u of msg.joined || []) if (u && u.sessionId) r.roster.set(u.sessionId, u);
      for (const u of msg.updated || []) {
        if (!u || !u.sessionId) continue;
        r.roster.set(u.sessionId, Object.assign({}, r.roster.get(u.sessionId) || {}, u));
      }
      for (const u of msg.left || []) if (u && u.sessionId) r.roster.delete(u.sessionId);
    }
    schedule("roster");
    schedule("roomKpis");
  }

  function renderRoomError() {
    const box = $("#room-error");
    const err = state.room && state.room.error;
    box.hidden = !err;
    box.textContent = err ? "This room cannot be watched: " + err : "";
  }

  function renderRoomKpis() {
    const r = state.room;
    if (!r) return;
    const m = r.metrics || state.rooms.get(r.code) || {};
    const online = num(m.online);
    const capacity = num(m.capacity) || 0;
    $("#room-online").textContent = online === null ? "…" : fmtInt(online);
    $("#room-capacity").textContent = capacity > 0 ? "of " + fmtInt(capacity) + " places" : "no capacity limit";
    const fill = $("#room-cap-fill");
    const ratio = capacity > 0 && online !== null ? Math.min(1, online / capacity) : 0;
    fill.style.width = (ratio * 100).toFixed(1) + "%";
    fill.className = "bar-fill " + capacityClass(ratio);
    $("#room-users").textContent = m.users === undefined ? "…" : fmtInt(num(m.users) || 0);
    $("#room-peak").textContent = m.peak === undefined ? "…" : fmtInt(num(m.peak) || 0);
    let lat = num(m.avgLatencyMs);
    // The room's average counts only reported latencies: with none reported it says 0, show "—".
    if (r.rosterReady && r.roster.size && ![...r.roster.values()].some((u) => num(u.latencyMs) !== null)) lat = null;
    const latBox = $("#room-latency");
    latBox.textContent = fmtMs(lat);
    latBox.className = "kpi-value " + latencyClass(lat);
    renderRoomUpdated();
  }

  function renderRoomUpdated() {
    const r = state.room;
    if (!r) return;
    $("#room-updated").textContent = r.metricsAt ? "Updated " + fmtAgo(Date.now() - r.metricsAt) : "Waiting for metrics…";
  }

  const ROSTER_COLUMNS = {
    userId: (u) => String(u.userId || "").toLowerCase(),
    device: (u) => String(u.device || "").toLowerCase() || null,
    os: (u) => String(u.os || "").toLowerCase() || null,
    appVersion: (u) => versionKey(u.appVersion),
    ip: (u) => ipKey(u.ip),
    latencyMs: (u) => num(u.latencyMs),
    // Durations: "connected for" and "last heartbeat … ago" grow as the timestamp gets older.
    connectedAt: (u) => negate(num(u.connectedAt)),
    lastHeartbeatAt: (u) => negate(num(u.lastHeartbeatAt)),
  };

  const negate = (v) => (v === null ? null : -v);

  function versionKey(v) {
    if (!v) return null;
    return String(v).split(/[.\-+]/).map((p) => (/^\d+$/.test(p) ? p.padStart(8, "0") : p)).join(".");
  }

  function ipKey(ip) {
    if (!ip) return null;
    const m = String(ip).match(/^(\d+)\.(\d+)\.(\d+)\.(\d+)$/);
    return m ? m.slice(1).map((p) => p.padStart(3, "0")).join(".") : String(ip);
  }

  function renderRoster() {
    const r = state.room;
    if (!r) return;
    const now = Date.now();
    const all = [...r.roster.values()];
    const f = state.rosterFilter.trim().toLowerCase();
    const rows = f
      ? all.filter((u) =>
          [u.userId, u.clientId, u.device, u.os, u.appVersion, u.ip].some((v) => v && String(v).toLowerCase().includes(f))
        )
      : all;
    sortRows(rows, ROSTER_COLUMNS, state.rosterSort, (u) => String(u.sessionId));
    const table = $("#roster-table");
    renderSortHeaders(table, state.rosterSort);
    reconcile(table.tBodies[0], rows.slice(0, MAX_ROSTER_ROWS), "session", (u) => u.sessionId, createRosterRow,
      (tr, u) => updateRosterRow(tr, u, now));
    const empty = $("#roster-empty");
    empty.hidden = rows.length > 0 || !r.rosterReady;
    empty.textContent = all.length ? "Nobody matches “" + state.rosterFilter + "”." : "Nobody is in this room right now.";
    $("#roster-loading").hidden = r.rosterReady || !!r.error;
    let count = r.rosterReady ? all.length + (all.length === 1 ? " session" : " sessions") : "";
    if (f && r.rosterReady) count = rows.length + " of " + all.length;
    if (rows.length > MAX_ROSTER_ROWS) count += " · first " + MAX_ROSTER_ROWS + " shown";
    $("#roster-count").textContent = count;
    renderHistogram();
  }

  function createRosterRow() {
    return el(
      "tr",
      {},
      el("td", { class: "c-user" }, el("div", { class: "primary-text" }), el("div", { class: "muted small" })),
      el("td", { class: "c-device" }),
      el("td", { class: "c-os" }),
      el("td", { class: "c-app" }),
      el("td", { class: "c-ip mono" }),
      el("td", { class: "num c-latency" }),
      el("td", { class: "num c-since" }),
      el("td", { class: "num c-last" })
    );
  }

  function updateRosterRow(tr, u, now) {
    const c = tr.cells;
    setText(c[0].firstChild, u.userId || "—");
    setText(c[0].lastChild, u.clientId || "");
    setText(c[1], u.device || "—");
    setText(c[2], u.os || "—");
    if (c[3].textContent !== (u.appVersion || "—")) {
      c[3].replaceChildren(u.appVersion ? el("span", { class: "tag", text: u.appVersion }) : "—");
    }
    setText(c[4], u.ip || "—");
    const lat = num(u.latencyMs);
    setText(c[5], fmtMs(lat));
    setClass(c[5], "num c-latency " + latencyClass(lat));
    const connectedAt = num(u.connectedAt);
    setText(c[6], connectedAt === null ? "—" : fmtDuration(now - connectedAt));
    const last = num(u.lastHeartbeatAt);
    const silent = last === null ? 0 : now - last;
    setText(c[7], last === null ? "—" : fmtAgo(silent));
    setClass(c[7], "num c-last " + (silent > 45000 ? "crit" : silent > 30000 ? "warn" : ""));
    const title = last === null ? "" : "Last heartbeat " + fullFmt.format(new Date(last));
    if (c[7].title !== title) c[7].title = title;
  }

  // -- latency distribution -----------------------------------------------------------------------

  function quantile(sorted, q) {
    if (!sorted.length) return null;
    const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
    return sorted[i];
  }

  function renderHistogram() {
    const r = state.room;
    const box = $("#histogram");
    if (!r) return;
    const latencies = [];
    let unknown = 0;
    for (const u of r.roster.values()) {
      const v = num(u.latencyMs);
      if (v === null) unknown++;
      else latencies.push(v);
    }
    latencies.sort((a, b) => a - b);
    const counts = LATENCY_BUCKETS.map((b) => latencies.filter((v) => v >= b.lo && v < b.hi).length);
    $("#lat-p50").textContent = fmtMs(quantile(latencies, 0.5));
    $("#lat-p95").textContent = fmtMs(quantile(latencies, 0.95));
    $("#lat-max").textContent = fmtMs(latencies.length ? latencies[latencies.length - 1] : null);
    const plural = (n, word) => n + " " + word + (n === 1 ? "" : "s");
    $("#lat-note").textContent =
      (latencies.length ? plural(latencies.length, "session") + " reporting" : "") +
      (latencies.length && unknown ? " · " : "") +
      (unknown ? plural(unknown, "session") + " without a heartbeat yet" : "");

    const width = Math.max(260, box.clientWidth || 360);
    const height = 170;
    const m = { l: 8, r: 8, t: 18, b: 22 };
    const max = Math.max(1, ...counts);
    const slot = (width - m.l - m.r) / counts.length;
    const bw = Math.max(6, slot * 0.72);
    const plotH = height - m.t - m.b;
    const root = svg("svg", {
      viewBox: `0 0 ${width} ${height}`, width, height, class: "chart", role: "img",
      "aria-label": "Latency distribution of the roster",
    });
    root.append(svg("line", { x1: m.l, x2: width - m.r, y1: m.t + plotH + 0.5, y2: m.t + plotH + 0.5, class: "axis" }));
    counts.forEach((c, i) => {
      const x = m.l + i * slot + (slot - bw) / 2;
      const h = c ? Math.max(2, (c / max) * plotH) : 0;
      const b = LATENCY_BUCKETS[i];
      const cls = b.lo >= 500 ? "crit" : b.lo >= 200 ? "warn" : "ok";
      if (c) root.append(svg("rect", { x, y: m.t + plotH - h, width: bw, height: h, rx: 3, class: "hbar " + cls }));
      root.append(
        latencies.length ? svg("text", { x: x + bw / 2, y: m.t + plotH - h - 5, class: "hcount" + (c ? "" : " zero"), "text-anchor": "middle", text: String(c) }) : null,
        svg("text", { x: x + bw / 2, y: height - 6, class: "tick", "text-anchor": "middle", text: b.label })
      );
    });
    if (!latencies.length) {
      root.append(svg("text", { x: width / 2, y: m.t + plotH / 2, "text-anchor": "middle", class: "placeholder",
        text: r.roster.size ? "No latency reported yet" : "Nobody in the room" }));
    }
    box.replaceChildren(root);
  }

  // -- history -------------------------------------------------------------------------------------

  async function loadHistory() {
    const r = state.room;
    if (!r) return;
    if (!r.roomId) {
      r.history = { status: "waiting" };
      renderHistory();
      return;
    }
    if (r.historyAbort) r.historyAbort.abort();
    const abort = new AbortController();
    r.historyAbort = abort;
    const rangeKey = state.historyRange;
    const range = RANGES[rangeKey];
    const to = new Date();
    const from = new Date(to.getTime() - range.ms);
    const iso = (d) => d.toISOString().replace(/\.\d{3}Z$/, "Z");
    const url =
      "/api/v1/rooms/" + encodeURIComponent(r.roomId) + "/stats?from=" + encodeURIComponent(iso(from)) +
      "&to=" + encodeURIComponent(iso(to)) + "&bucket=" + range.bucket;
    if (!r.history || r.history.range !== rangeKey) {
      r.history = { status: "loading", range: rangeKey };
      renderHistory();
    }
    let result;
    try {
      const resp = await fetch(url, {
        headers: { Authorization: "Bearer " + state.token, Accept: "application/json" },
        signal: abort.signal,
        cache: "no-store",
      });
      if (!resp.ok) {
        const reasons = {
          400: "the history API rejected the request",
          401: "the history API refused the token",
          403: "this token may not read history",
          404: "no history is recorded for this room",
          503: "the history store is unavailable",
        };
        result = { status: "none", reason: (reasons[resp.status] || "the history API answered an error") + " (HTTP " + resp.status + ")" };
      } else {
        const data = await resp.json();
        const points = (data && Array.isArray(data.points) ? data.points : [])
          .map((p) => Object.assign({}, p, { t: toMs(p.ts) }))
          .filter((p) => p.t !== null)
          .sort((a, b) => a.t - b.t);
        result = points.length
          ? { status: "ok", points, bucket: data.bucket || range.bucket }
          : { status: "none", reason: "nothing recorded in the " + range.label };
      }
    } catch (e) {
      if (e && e.name === "AbortError") return;
      result = { status: "none", reason: "the history API could not be reached" };
    }
    if (state.room !== r || r.historyAbort !== abort) return;
    r.historyAbort = null;
    r.history = Object.assign(result, { range: rangeKey, from: from.getTime(), to: to.getTime() });
    renderHistory();
  }

  function renderHistory() {
    const r = state.room;
    if (!r) return;
    for (const b of document.querySelectorAll("#range button")) {
      b.setAttribute("aria-pressed", String(b.dataset.range === state.historyRange));
    }
    const h = r.history || { status: "loading" };
    const status = $("#history-status");
    const charts = $("#history-charts");
    if (h.status !== "ok") {
      charts.hidden = true;
      status.hidden = false;
      status.replaceChildren();
      if (h.status === "none") {
        status.append(el("strong", { text: "No history" }), el("span", { class: "muted", text: " — " + h.reason + "." }));
      } else {
        status.append(el("span", { class: "muted", text: h.status === "waiting" ? "Waiting for the room's id…" : "Loading history…" }));
      }
      return;
    }
    status.replaceChildren(); // not "Loading…" behind the charts: readers and tests see the truth
    status.hidden = true;
    charts.hidden = false;
    const t = (p) => p.t;
    const stepMs = { "1m": 60e3, "1h": 3600e3, "1d": 86400e3 }[h.bucket] || 0;
    lineChart($("#chart-online"), {
      from: h.from, to: h.to, stepMs, integer: true, unit: "",
      series: [
        { name: "Online (avg)", cls: "s-online", area: true, points: h.points.map((p) => [t(p), num(p.onlineAvg)]) },
        { name: "Online (max)", cls: "s-online-max", dashed: true, points: h.points.map((p) => [t(p), num(p.onlineMax)]) },
      ],
    });
    lineChart($("#chart-latency"), {
      from: h.from, to: h.to, stepMs, unit: " ms",
      series: [
        { name: "Latency (avg)", cls: "s-lat", points: h.points.map((p) => [t(p), num(p.latencyAvgMs)]) },
        { name: "Latency (p95)", cls: "s-lat-p95", dashed: true, points: h.points.map((p) => [t(p), num(p.latencyP95Ms)]) },
      ],
    });
  }

  function niceStep(raw) {
    if (!(raw > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const n = raw / p;
    return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 2.5 ? 2.5 : n <= 5 ? 5 : 10) * p;
  }

  function timeTicks(from, to) {
    const span = to - from;
    const out = [];
    if (span <= 3 * 3600e3) {
      const step = 10 * 60e3;
      for (let t = Math.ceil(from / step) * step; t <= to; t += step) out.push([t, timeFmt.format(t)]);
    } else if (span <= 2 * 86400e3) {
      const d = new Date(from);
      d.setMinutes(0, 0, 0);
      d.setHours(d.getHours() + 1);
      while (d.getHours() % 3) d.setHours(d.getHours() + 1);
      for (; d.getTime() <= to; d.setHours(d.getHours() + 3)) out.push([d.getTime(), timeFmt.format(d)]);
    } else {
      const d = new Date(from);
      d.setHours(0, 0, 0, 0);
      d.setDate(d.getDate() + 1);
      for (; d.getTime() <= to; d.setDate(d.getDate() + 1)) out.push([d.getTime(), dayFmt.format(d)]);
    }
    return out;
  }

  function lineChart(box, opts) {
    const width = Math.max(320, box.clientWidth || 600);
    const height = 150;
    const m = { l: 46, r: 12, t: 10, b: 22 };
    const pw = width - m.l - m.r;
    const ph = height - m.t - m.b;
    let max = 0;
    for (const s of opts.series) for (const [, v] of s.points) if (v !== null && v > max) max = v;
    let step = niceStep(max / 4 || 1);
    if (opts.integer) step = Math.max(1, Math.ceil(step));
    const top = Math.max(step, Math.ceil(max / step) * step);
    const x = (t) => m.l + ((t - opts.from) / (opts.to - opts.from)) * pw;
    const y = (v) => m.t + ph - (v / top) * ph;
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "chart" });
    for (let v = 0; v <= top + step / 2; v += step) {
      root.append(
        svg("line", { x1: m.l, x2: width - m.r, y1: Math.round(y(v)) + 0.5, y2: Math.round(y(v)) + 0.5, class: v ? "grid" : "axis" }),
        svg("text", { x: m.l - 6, y: y(v) + 4, "text-anchor": "end", class: "tick", text: fmtTick(v) })
      );
    }
    for (const [t, label] of timeTicks(opts.from, opts.to)) {
      const xx = Math.round(x(t)) + 0.5;
      root.append(
        svg("line", { x1: xx, x2: xx, y1: m.t + ph, y2: m.t + ph + 4, class: "axis" }),
        svg("text", { x: xx, y: height - 6, "text-anchor": "middle", class: "tick", text: label })
      );
    }
    const clip = "clip-" + Math.random().toString(36).slice(2);
    root.append(svg("defs", {}, svg("clipPath", { id: clip }, svg("rect", { x: m.l, y: m.t - 2, width: pw, height: ph + 4 }))));
    const plot = svg("g", { "clip-path": `url(#${clip})` });
    root.append(plot);
    for (const s of opts.series) {
      // Split into runs of present values: a null leaves a gap.
      // A bucket missing from the answer (nothing recorded) is a gap as well.
      const runs = [];
      let run = [];
      let prevT = null;
      for (const [t, v] of s.points) {
        const missing = opts.stepMs && prevT !== null && t - prevT > opts.stepMs * 1.5;
        if ((v === null || missing) && run.length) {
          runs.push(run);
          run = [];
        }
        if (v !== null) run.push([x(t), y(v)]);
        prevT = t;
      }
      if (run.length) runs.push(run);
      for (const pts of runs) {
        if (pts.length === 1) {
          plot.append(svg("circle", { cx: pts[0][0], cy: pts[0][1], r: 2.5, class: "dot " + s.cls }));
          continue;
        }
        const d = pts.map((p, i) => (i ? "L" : "M") + p[0].toFixed(1) + " " + p[1].toFixed(1)).join("");
        if (s.area) {
          const base = y(0).toFixed(1);
          plot.append(svg("path", { d: d + `L${pts[pts.length - 1][0].toFixed(1)} ${base}L${pts[0][0].toFixed(1)} ${base}Z`, class: "area " + s.cls }));
        }
        plot.append(svg("path", { d, class: "line " + s.cls + (s.dashed ? " dashed" : "") }));
      }
    }
    // Hover read-out: the nearest bucket's values.
    const cursor = svg("line", { y1: m.t, y2: m.t + ph, class: "cursor", visibility: "hidden" });
    const overlay = svg("rect", { x: m.l, y: m.t, width: pw, height: ph, class: "overlay" });
    root.append(cursor, overlay);
    const tip = el("div", { class: "tip", hidden: true });
    const times = opts.series[0].points.map((p) => p[0]);
    overlay.addEventListener("mousemove", (ev) => {
      const rect = root.getBoundingClientRect();
      const px = ((ev.clientX - rect.left) / rect.width) * width;
      const t = opts.from + ((px - m.l) / pw) * (opts.to - opts.from);
      let best = 0;
      for (let i = 1; i < times.length; i++) if (Math.abs(times[i] - t) < Math.abs(times[best] - t)) best = i;
      const bx = x(times[best]);
      cursor.setAttribute("x1", bx);
      cursor.setAttribute("x2", bx);
      cursor.setAttribute("visibility", "visible");
      tip.replaceChildren(
        el("div", { class: "tip-time", text: fullFmt.format(new Date(times[best])) }),
        ...opts.series.map((s) => {
          const v = s.points[best][1];
          return el("div", {}, el("span", { class: "swatch " + s.cls }), s.name + ": ",
            el("b", { text: v === null ? "—" : opts.unit === " ms" ? fmtMs(v) : fmtTick(v, 1) }));
        })
      );
      tip.hidden = false;
      const left = (bx / width) * rect.width;
      tip.style.left = Math.min(rect.width - 170, Math.max(0, left + 12)) + "px";
    });
    overlay.addEventListener("mouseleave", () => {
      cursor.setAttribute("visibility", "hidden");
      tip.hidden = true;
    });
    const legend = el(
      "div",
      { class: "legend" },
      opts.series.map((s) => el("span", { class: "legend-item" }, el("span", { class: "swatch " + s.cls + (s.dashed ? " dashed" : "") }), s.name))
    );
    box.replaceChildren(legend, el("div", { class: "chart-wrap" }, root, tip));
  }

  function fmtTick(v, digits) {
    if (v >= 1e6) return (v / 1e6).toFixed(1).replace(/\.0$/, "") + "M";
    if (v >= 1e4) return (v / 1e3).toFixed(1).replace(/\.0$/, "") + "k";
    if (v !== Math.round(v)) return v.toFixed(digits || 1);
    return numberFmt.format(v);
  }

  // -- wiring ------------------------------------------------------------------------------------

  function bindSortable(table, getSort, rerender) {
    for (const th of table.querySelectorAll("th[data-key]")) {
      const activate = () => {
        const sort = getSort();
        if (sort.key === th.dataset.key) sort.dir = -sort.dir;
        else {
          sort.key = th.dataset.key;
          sort.dir = th.classList.contains("num") || th.dataset.desc ? -1 : 1;
        }
        rerender();
      };
      th.tabIndex = 0;
      th.addEventListener("click", activate);
      th.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" || ev.key === " ") {
          ev.preventDefault();
          activate();
        }
      });
    }
  }

  function tick() {
    if (state.connState === "reconnecting") renderConn();
    const view = document.body.dataset.view;
    if (view === "global") {
      renderRoomsUpdated();
      renderAlertPanel();
    }
    if (view === "room" && state.room) {
      renderRoomUpdated();
      renderRoster();
      renderRoomAlerts();
    }
  }

  let resizeTimer = null;
  function onResize() {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      if (document.body.dataset.view === "room" && state.room) {
        renderHistogram();
        renderHistory();
      }
    }, 150);
  }

  async function loadConfig() {
    try {
      const resp = await fetch("/dashboard/config", { cache: "no-store" });
      if (resp.ok) return await resp.json();
    } catch (e) {
      /* fall through */
    }
    return { wsUrl: (location.protocol === "https:" ? "wss://" : "ws://") + location.hostname + ":8765/ws" };
  }

  async function main() {
    $("#signin-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      signIn($("#token").value.trim(), $("#ws-url").value.trim());
    });
    $("#signout").addEventListener("click", () => signOut());
    $("#retry").addEventListener("click", () => state.client && state.client.reconnectNow());
    $("#offline-retry").addEventListener("click", () => state.client && state.client.reconnectNow());
    $("#filter").addEventListener("input", (ev) => {
      state.filter = ev.target.value;
      renderRooms();
    });
    $("#roster-filter").addEventListener("input", (ev) => {
      state.rosterFilter = ev.target.value;
      renderRoster();
    });
    bindSortable($("#rooms-table"), () => state.sort, renderRooms);
    bindSortable($("#roster-table"), () => state.rosterSort, renderRoster);
    for (const b of document.querySelectorAll("#range button")) {
      b.addEventListener("click", () => {
        state.historyRange = b.dataset.range;
        loadHistory();
        renderHistory();
      });
    }
    // Back in view or back online: do not sit out the rest of a long back-off.
    const wake = () => {
      if (document.visibilityState === "visible" && state.client && state.connState === "reconnecting") {
        state.client.reconnectNow();
      }
    };
    document.addEventListener("visibilitychange", wake);
    window.addEventListener("online", wake);
    window.addEventListener("hashchange", route);
    window.addEventListener("resize", onResize);
    setInterval(tick, 1000);

    state.config = await loadConfig();
    state.wsUrl = sessionStorage.getItem(WSURL_KEY) || state.config.wsUrl;
    document.body.dataset.dev = state.config.dev ? "1" : "0";
    $("#env").hidden = !state.config.dev;
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved && !checkToken(saved)) {
      $("#token").value = saved;
      signIn(saved, state.wsUrl);
    } else {
      if (saved) sessionStorage.removeItem(TOKEN_KEY);
      showSignin(saved ? checkToken(saved) : null);
    }
    document.body.classList.add("ready");
  }

  document.addEventListener("DOMContentLoaded", main);
})();
