// changecast.js — a small browser client for changecast's Server-Sent Events.
// No dependencies; served by changecast at /changecast.js. Copy it freely.
//
//   import { connect } from "/changecast.js";
//   const feed = connect({ topics: ["rooms/lobby", "orders/" + id], token });
//   feed.on("status", (s) => console.log(s.state, s.reason ?? ""));
//   feed.on("message", (e) => console.log(e.data.message.text, "id", e.id));
//   feed.on("refused", (e) => console.warn(e.topic, e.data.status, e.data.error));
//   feed.setTopics(["rooms/lobby"]);   // same position: nothing lost or repeated
//   feed.close();
//
// What it does beyond a plain EventSource:
//   - one EventSource for a set of topics (`topic=` repeated), never two at once;
//   - the last event id is kept in sessionStorage, so a reload resumes
//     (`lastEventId` query parameter) instead of starting over;
//   - whenever the EventSource reaches CLOSED (a non-200 answer, a network
//     error, Firefox giving up on a cross-origin stream), it learns the status
//     with a HEAD request (and the JSON error with a GET), then opens a new one
//     from the last id after an exponential, jittered delay (0.5 s → 30 s, at
//     least what Retry-After asks; 30 s after a 4xx, which retrying rarely fixes);
//   - "status" events: {state: "connecting"|"live"|"reconnecting"|"offline"|"closed",
//     reason, httpStatus, retryInMs}; the first ("connecting") comes after
//     connect() returns (the EventSource opens on a microtask), so listeners
//     added right after connect() see it;
//   - typed events, each {type, id, topic, data}: order, message, snapshot,
//     reset, expired, refused, presence (plus options.events); `id` is ""
//     for the events that carry none (reset, expired, refused, presence);
//   - a refused topic (malformed 400, not granted 403, unknown 404) is one
//     "refused" event while the others stream. When every topic is refused
//     the feed reports "offline" (with the HTTP status) and then one
//     "refused" per topic, and rechecks quietly (no "reconnecting") every
//     30 s: a refusal is never followed by a status that hides it.
//     A topic refused with 503 (the app's backend could not be asked) is
//     asked again: the stream reopens from its position after about 5 s.
//   - sharing (option `share`, on by default where Web Locks and
//     BroadcastChannel exist): the tabs of an origin with the same stream
//     URL and token hold one EventSource among them. One tab leads (a Web
//     Lock) and streams the union of every tab's topics; it relays each
//     event over a BroadcastChannel and each tab keeps only its own topics'
//     events, exactly once and in order (by id). When the leader goes,
//     another tab takes the lock and resumes from the earliest position a
//     tab holds. The leader says it is there every 5 s; a tab that hears
//     nothing from it for 15 s (a frozen tab, a debugger, alert()) takes
//     the lock from it. A tab with no position yet streams alone until its
//     snapshots arrive, then joins; so does a tab whose stored position is
//     later than where the group's stream starts (ids of two deployments
//     do not order). `feed.role` is "solo", "lead" or "follow".
// feed.on(name, fn) returns a function that removes fn; the feed is also an
// EventTarget whose events are CustomEvents carrying the same object in `detail`.

export const EVENTS = ["snapshot", "order", "message", "reset", "expired", "refused", "presence"];
// The events that carry an id, a position a stream resumes after; the
// others' MessageEvent.lastEventId is only the connection's last id.
const WITH_ID = new Set(["snapshot", "order", "message"]);
const feeds = new Set(); // open feeds, to retry at once when the browser is back online
// The most topics a shared stream names: the server's default
// TOPICS_PER_STREAM. A tab whose topics would take it further streams alone.
const SHARED_TOPICS = 32;
// The leader says it is there every BEAT ms; a follower that hears nothing
// from it for WATCH ms asks, and takes the lead if no answer comes.
const BEAT = 5000;
const WATCH = 15000;
// Sharing needs both (secure contexts only: HTTPS or localhost).
const canShare = () => typeof navigator !== "undefined" && !!navigator.locks && typeof BroadcastChannel === "function" && !!globalThis.crypto?.subtle;

/** connect opens a feed; see the top of this file for the options. */
export function connect(options) {
  return new Feed(options);
}

export class Feed extends EventTarget {
  /**
   * @param {object} o
   * @param {string} [o.url="/api/events"] the multi-topic stream route (absolute for another origin)
   * @param {string[]} o.topics topics such as "rooms/lobby", "orders/<id>"
   * @param {string} [o.token] sent as access_token (EventSource cannot set headers)
   * @param {string|null} [o.storageKey="changecast.lastEventId"] sessionStorage key; null keeps the id in memory only
   * @param {boolean} [o.withCredentials=false] send cookies cross-origin
   * @param {number} [o.minDelay=500] @param {number} [o.maxDelay=30000] reconnect backoff bounds, ms
   * @param {string[]} [o.events] more event names to dispatch
   * @param {boolean} [o.share] share one stream among this origin's tabs (default: where supported)
   */
  constructor(o = {}) {
    super();
    this.url = o.url || "/api/events";
    this.token = o.token || "";
    this.storageKey = o.storageKey === undefined ? "changecast.lastEventId" : o.storageKey;
    this.withCredentials = !!o.withCredentials;
    this.minDelay = o.minDelay ?? 500;
    this.maxDelay = o.maxDelay ?? 30000;
    this.events = [...EVENTS, ...(o.events || [])];
    this.topics = [...(o.topics || [])];
    this.refused = new Map(); // topic → {status, error}, as the server last said
    this.state = "connecting";
    this.lastEventId = this.#load();
    this.share = (o.share ?? true) && canShare();
    this.role = "solo";
    this.#fresh = !this.lastEventId;
    this.#attempt = 0;
    feeds.add(this);
    // A closing tab says so at once (else the leader finds its lock gone
    // within seconds).
    if (this.share) addEventListener("pagehide", this.#pagehide);
    // Open after the caller has attached its listeners, so that the first
    // status ("connecting") is seen; setTopics or reconnect before then
    // opens at once.
    queueMicrotask(() => {
      if (!this.#closed && !this.#es && !this.#timer && !this.#probe && !this.#sh && !this.#joining) this.#start();
    });
  }

  #pagehide = (e) => e.persisted || this.#post({ k: "bye" });
  #es = null; // the one EventSource, or null
  #timer = 0; // pending reconnect
  #probe = null; // AbortController of a running status check
  #attempt;
  #closed = false;

  /** on calls fn(detail) for each event called name; it returns a remover. */
  on(name, fn) {
    const h = (e) => fn(e.detail);
    this.addEventListener(name, h);
    return () => this.removeEventListener(name, h);
  }

  /** setTopics reconnects with a new topic set from the same position. */
  setTopics(topics) {
    const next = [...topics];
    if (next.join("\n") === this.topics.join("\n") && (this.#es || this.#timer || this.#probe || this.#sh)) return;
    this.topics = next;
    for (const t of this.refused.keys()) if (!next.includes(t)) this.refused.delete(t);
    if (this.#sh && !this.#moved()) this.#shareTopics();
    else if (!this.#sh) this.reconnect();
  }

  /** setToken reconnects with another access token ("" for none). */
  setToken(token) {
    this.token = token || "";
    this.refused.clear();
    if (!this.share) return this.reconnect();
    this.#rejoin(); // another token is another group
  }

  /** reconnect opens a new stream now, from the last id. */
  reconnect() {
    if (this.#closed || this.#moved() || this.role === "follow") return; // a follower's stream is the leader's
    this.#attempt = 0;
    this.#open();
  }

  /** close ends the feed for good. */
  close() {
    this.#leave();
    this.#stop();
    this.#closed = true;
    removeEventListener("pagehide", this.#pagehide);
    feeds.delete(this);
    this.#status("closed");
  }

  /** streamURL is the URL the next EventSource opens. */
  streamURL() {
    const u = new URL(this.url, location.href);
    u.searchParams.delete("topic");
    const lead = this.#sh?.lead;
    for (const t of lead ? this.#union() : this.topics) u.searchParams.append("topic", t);
    const from = lead ? this.#from() : this.lastEventId;
    if (from) u.searchParams.set("lastEventId", from);
    if (this.token) u.searchParams.set("access_token", this.token);
    return u.href;
  }

  #stop() {
    clearTimeout(this.#timer);
    this.#timer = 0;
    clearTimeout(this.#again);
    this.#again = 0;
    this.#probe?.abort();
    this.#probe = null;
    this.#es?.close();
    this.#es = null;
  }

  #open() {
    this.#stop();
    if (this.#closed || this.role === "follow") return;
    const sh = this.#sh?.lead ? this.#sh : null;
    if (sh && !this.#union().length) return; // no tab watches anything
    const url = this.streamURL();
    const es = new EventSource(url, { withCredentials: this.withCredentials });
    this.#es = es;
    if (sh) this.#opened(sh, new URL(url).searchParams.get("lastEventId") || "");
    if (this.#statusKey === "") this.#status("connecting");
    else if (this.state !== "live" && !this.#allRefused()) this.#status("reconnecting", this.#last);
    es.onopen = () => {
      this.#attempt = 0;
      this.#status("live");
    };
    es.onerror = () => {
      if (this.#es !== es) return;
      if (es.readyState === EventSource.CONNECTING) {
        this.#status("reconnecting"); // the browser retries by itself
        return;
      }
      es.close(); // CLOSED: the browser gave up; find out why, then retry
      this.#es = null;
      this.#diagnose();
    };
    for (const type of this.events) {
      es.addEventListener(type, (e) => {
        if (this.#es !== es) return;
        if (type === "refused") this.#unavailable(es, e.data);
        if (this.#sh?.lead) this.#post({ k: "ev", g: this.#sh.g, type, last: e.lastEventId, data: e.data });
        this.#event(type, e);
      });
    }
  }

  #event(type, e) {
    let data = null;
    try {
      data = JSON.parse(e.data);
    } catch {
      data = e.data;
    }
    const topic = (data && typeof data.topic === "string" && data.topic) || "";
    if (this.#sh) {
      if (!this.#shared(type, e.lastEventId || "", topic, data)) return;
    } else if (e.lastEventId && (WITH_ID.has(type) || !EVENTS.includes(type))) {
      this.#trusted = true;
      if (this.#alone) {
        this.#alone = false;
        queueMicrotask(() => this.#maybeJoin());
      }
      if (e.lastEventId !== this.lastEventId) {
        this.lastEventId = e.lastEventId;
        this.#save();
      }
    }
    if (!this.#sh && this.share && this.#fresh && (WITH_ID.has(type) || type === "refused")) {
      this.#snapped.add(topic);
      queueMicrotask(() => this.#maybeJoin());
    }
    if (type === "refused") this.refused.set(topic, { status: data?.status, error: data?.error });
    else if (topic) this.refused.delete(topic);
    const id = WITH_ID.has(type) || !EVENTS.includes(type) ? e.lastEventId || "" : "";
    this.dispatchEvent(new CustomEvent(type, { detail: { type, id, topic, data } }));
    if (type === "expired" && this.role !== "follow") {
      // The token ran out: the stream ends, and retrying with it is useless.
      this.#stop();
      this.#retry(401, "the access token expired", this.maxDelay);
    }
  }

  // #diagnose asks the same URL for its status (HEAD opens no stream) and,
  // for an error, its JSON text; then schedules the next attempt.
  async #diagnose() {
    const ctrl = new AbortController();
    this.#probe = ctrl;
    const init = { cache: "no-store", signal: ctrl.signal, credentials: this.withCredentials ? "include" : "same-origin" };
    let status = 0;
    let reason = "the server cannot be reached";
    let wait = 0;
    let listed = null; // the answer's `refused` list, if any
    try {
      const url = this.streamURL();
      const head = await fetch(url, { ...init, method: "HEAD" });
      status = head.status;
      wait = 1000 * (Number(head.headers.get("Retry-After")) || 0);
      if (!head.ok) {
        reason = head.statusText || "HTTP " + status;
        const res = await fetch(url, init);
        if (!res.ok) {
          // An error answer is short; a 200 would be a stream: not read.
          const body = await res.json().catch(() => null);
          if (body && typeof body.error === "string") reason = body.error;
          if (body && Array.isArray(body.refused)) listed = body.refused;
        }
      }
    } catch {
      if (this.#probe !== ctrl) return; // stopped or replaced meanwhile
    }
    if (this.#probe !== ctrl) return;
    ctrl.abort();
    this.#probe = null;
    if (status >= 200 && status < 300) {
      this.#open(); // it is back: no wait
      return;
    }
    const client = status >= 400 && status < 500 && status !== 408 && status !== 429;
    // Every topic was refused (else the answer is 200 with `refused`
    // events): say so per topic, as the server would have, after the
    // status, so that the refusal is the last word.
    let refusals = [];
    const topics = this.#sh?.lead ? this.#union() : this.topics;
    if (listed) {
      refusals = listed.filter((r) => r && topics.includes(r.topic));
    } else if (status === 403 || status === 404) {
      refusals = topics.map((topic) => ({ topic, status, error: reason }));
    }
    this.#retry(status, reason, Math.max(wait, client ? this.maxDelay : 0));
    for (const r of refusals) {
      const data = JSON.stringify({ topic: r.topic, status: r.status, error: r.error });
      if (this.#sh?.lead) this.#post({ k: "ev", g: this.#sh.g, type: "refused", last: "", data });
      this.#event("refused", { lastEventId: "", data });
    }
  }

  // #unavailable: a `refused` with 503 on stream es means the app's
  // backend could not be asked about the topic; the server says to retry
  // (Retry-After 5, which an event cannot carry): the stream reopens from
  // its position, with the topic, after about 5 s.
  #unavailable(es, raw) {
    let status = 0;
    try {
      status = JSON.parse(raw)?.status;
    } catch {
      return;
    }
    if (status !== 503 || this.#again) return;
    this.#again = setTimeout(() => {
      this.#again = 0;
      if (this.#es === es) this.reconnect();
    }, Math.round(5000 * (0.8 + Math.random() * 0.4)));
  }

  #again = 0; // pending retry of a topic refused with 503

  // #allRefused: the server refused every topic, as far as the feed knows.
  #allRefused() {
    return this.topics.length > 0 && this.topics.every((t) => this.refused.has(t));
  }

  #retry(httpStatus, reason, minDelay) {
    const cap = Math.min(this.maxDelay, this.minDelay * 2 ** this.#attempt++);
    const delay = Math.max(minDelay, Math.round(cap / 2 + (Math.random() * cap) / 2));
    this.#last = { reason, httpStatus, retryInMs: delay };
    this.#status(httpStatus ? "offline" : "reconnecting", this.#last);
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#open(), delay);
  }

  #last = undefined;

  #status(state, extra) {
    if (state === "live") this.#last = undefined;
    const detail = { state, ...(extra || {}) };
    const key = JSON.stringify(detail);
    if (key === this.#statusKey) return;
    this.#statusKey = key;
    this.state = state;
    if (this.#sh?.lead && state !== "closed") this.#post({ k: "status", detail });
    this.dispatchEvent(new CustomEvent("status", { detail }));
  }

  #statusKey = "";

  // Sharing one stream among tabs. Messages on the group's channel, each
  // {k, from, ...}: "hello" (a tab's topics and position: it joined, changed
  // topics or answers "lead"), "bye", "lead" (a new leader asks who is
  // there), "open" (the leader opened stream g from position `at`; the
  // members listed are covered by it), "cover" (one more member covered by
  // g), "full" (a member whose topics do not fit: it streams alone), "ev"
  // (an event of stream g), "status" (the leader's status), "beat" (the
  // leader is there), "ping" (a follower asks for a beat). A
  // member covered by g holds every event of its topics up to the last id
  // g brought, so it takes only ids after its own position.
  #sh = null; // the group: {name, me, seq, ch, stop, members, lead, leader, g, n, topics, wait, prune, heard, pinged, watch, leadNow}
  #joining = false;
  #fresh; // no position at start: join once every topic's snapshot arrived
  #trusted = false; // lastEventId came from a stream (not from storage)
  #alone = false; // streaming alone until the server answered a stored position
  #snapped = new Set(); // topics whose snapshot (or refusal) arrived while alone
  #snapAt = new Map(); // topic → id of the last snapshot delivered

  #start() {
    if (this.share && this.#joinable()) this.#join();
    else this.#open();
  }

  #joinable() {
    if (this.#alone) return false;
    if (!this.#fresh) return true;
    return !!this.lastEventId && this.topics.every((t) => this.#snapped.has(t) || this.refused.has(t));
  }

  #maybeJoin() {
    if (this.share && !this.#closed && !this.#sh && !this.#joining && this.#joinable()) this.#join();
  }

  async #join() {
    this.#joining = true;
    const { token, url } = this;
    let name;
    try {
      const key = [new URL(url, location.href).href, token, this.withCredentials, [...this.events].sort().join(",")].join("\n");
      const sum = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key)));
      name = "changecast " + [...sum].map((b) => b.toString(16).padStart(2, "0")).join("");
    } catch {
      this.share = false; // no sharing here: as before
    }
    this.#joining = false;
    if (this.#closed || this.#sh) return;
    if (!this.share || token !== this.token || url !== this.url) return this.#start();
    const stop = new AbortController();
    const sh = { name, url, me: crypto.randomUUID(), seq: 0, ch: new BroadcastChannel(name), stop, members: new Map(), lead: false, leader: "", g: "", n: 0, topics: [], wait: 0, prune: 0, cover: "", heard: Date.now(), pinged: 0, watch: 0, leadNow: null };
    this.#sh = sh;
    this.#fresh = false;
    sh.ch.onmessage = (e) => this.#sh === sh && this.#onShare(e.data);
    const hold = () => (stop.signal.aborted ? undefined : new Promise((r) => stop.signal.addEventListener("abort", r)));
    const leadNow = () => {
      if (this.#sh !== sh) return undefined;
      this.#lead();
      return hold();
    };
    sh.leadNow = leadNow;
    // A leader whose lock another tab stole (it hung) follows again.
    const stolen = () => this.#sh === sh && sh.lead && this.#rejoin();
    // This member's own lock lives as long as it does: the leader drops
    // members whose lock is gone (a closed or crashed tab).
    navigator.locks.request(name + " " + sh.me, { signal: stop.signal }, hold).catch(() => {});
    navigator.locks
      .request(name, { ifAvailable: true }, (lock) => (lock ? leadNow() : null))
      .then((r) => {
        if (r !== null || this.#sh !== sh) return;
        // Another tab leads: follow it, and wait in line for the lock.
        this.role = "follow";
        this.#stop();
        if (this.#statusKey === "") this.#status("connecting");
        this.#hello();
        sh.heard = Date.now();
        sh.watch = setInterval(() => this.#watch(sh), WATCH / 6);
        return navigator.locks.request(name, { signal: stop.signal }, leadNow);
      })
      .catch(stolen);
  }

  // #watch: a follower that has heard nothing from the leader for WATCH
  // asks it (a hidden tab's timers may be slowed, its messages are not);
  // with no answer it takes the lock from it: a leader that holds the
  // lock without running (a frozen tab, a debugger, alert()) would
  // otherwise stop the group's events for good. Each tab takes only ids
  // after its own position, so nothing comes twice whoever streams.
  #watch(sh) {
    if (this.#sh !== sh || sh.lead) return;
    const now = Date.now();
    if (now - sh.heard < WATCH) return;
    if (!sh.pinged) {
      sh.pinged = now;
      this.#post({ k: "ping" });
    } else if (now - sh.pinged >= WATCH / 6) {
      sh.pinged = 0;
      sh.heard = now;
      navigator.locks.request(sh.name, { steal: true }, sh.leadNow).catch(() => this.#sh === sh && sh.lead && this.#rejoin());
    }
  }

  // #moved: the page changed feed.url since the feed joined its group; it
  // joins the group of the new URL instead.
  #moved() {
    if (!this.#sh || this.#sh.url === this.url) return false;
    this.#rejoin();
    return true;
  }

  #rejoin() {
    this.#leave();
    this.#stop();
    if (!this.#closed) this.#start();
  }

  #post(m) {
    const sh = this.#sh;
    if (sh) sh.ch.postMessage({ ...m, from: sh.me });
  }

  #hello() {
    this.#post({ k: "hello", topics: this.topics, pos: this.lastEventId, seq: this.#sh.seq });
  }

  #lead() {
    const sh = this.#sh;
    this.role = "lead";
    sh.lead = true;
    sh.members.delete(sh.leader); // the leader before is gone
    sh.leader = sh.me;
    sh.prune = setInterval(() => this.#prune(), 2000);
    clearInterval(sh.watch);
    sh.watch = setInterval(() => this.#post({ k: "beat" }), BEAT);
    this.#post({ k: "lead" });
    if (this.#es && sh.members.size === 0) {
      // The tab streamed alone until now: that stream becomes the group's.
      this.#opened(sh, this.lastEventId);
      return;
    }
    // Members answer "lead" with where they are; open once they have.
    for (const m of sh.members.values()) m.answered = false;
    clearTimeout(sh.wait);
    sh.wait = setTimeout(() => this.#regroup(), sh.members.size ? 150 : 0);
  }

  // #opened: the leader's new stream is generation g, from position
  // `from`, covering every member.
  #opened(sh, from) {
    sh.g = sh.me + "/" + ++sh.n;
    sh.topics = this.#union();
    for (const m of sh.members.values()) m.cover = sh.g;
    this.#post({ k: "open", g: sh.g, at: from, members: [...sh.members].map(([id, m]) => [id, m.seq]) });
  }

  #regroup() {
    const sh = this.#sh;
    clearTimeout(sh.wait);
    sh.wait = 0;
    this.reconnect();
  }

  #onShare(m) {
    const sh = this.#sh;
    // What a leader said after another tab took the lock from it does not
    // count (it hung with messages still to send).
    if (["open", "cover", "full", "status", "beat", "ev"].includes(m.k)) {
      if (!sh.leader) sh.leader = m.from;
      else if (m.from !== sh.leader) return;
    }
    if (m.from === sh.leader || m.k === "lead") {
      sh.heard = Date.now();
      sh.pinged = 0;
    }
    switch (m.k) {
      case "ping":
        // Answered from a timer: a frozen tab still hears messages, but
        // runs neither its timers nor its EventSource's events.
        if (sh.lead) setTimeout(() => this.#sh === sh && sh.lead && this.#post({ k: "beat" }), 0);
        return;
      case "hello": {
        const was = sh.members.get(m.from);
        const member = { topics: m.topics, pos: m.pos, seq: m.seq, cover: "", answered: true, at: Date.now() };
        sh.members.set(m.from, member);
        if (!sh.lead) return;
        if (this.#union().length > SHARED_TOPICS) {
          sh.members.delete(m.from);
          this.#post({ k: "full", id: m.from });
          return;
        }
        if (this.#statusKey) this.#post({ k: "status", detail: JSON.parse(this.#statusKey) });
        if (sh.wait) {
          // Taking over: open as soon as every member said where it is.
          if ([...sh.members.values()].every((x) => x.answered)) this.#regroup();
          return;
        }
        if (sh.g && was && was.seq === m.seq && was.cover === sh.g) {
          member.cover = sh.g; // it only said where it is
        } else if (this.#es && sh.g && m.topics.every((t) => sh.topics.includes(t)) && m.pos === this.lastEventId && !m.topics.some((t) => t.startsWith("rooms/"))) {
          // Everything after its position is still to come on g. Only the
          // same position: ids of two deployments do not order, and a
          // restarted stream answers a foreign one with `reset`. A room
          // needs a restart too: its presence `sync` comes only then.
          member.cover = sh.g;
          this.#post({ k: "cover", g: sh.g, id: m.from, seq: m.seq });
          this.#shrink(); // it may have dropped a topic no one else has
        } else {
          this.#regroup(); // it needs the stream from earlier, or more topics
        }
        return;
      }
      case "bye":
        sh.members.delete(m.from);
        if (sh.lead) this.#shrink();
        return;
      case "lead":
        // Another tab took the lock from this one (it hung): it follows.
        if (sh.lead) return this.#rejoin();
        sh.members.delete(sh.leader);
        sh.leader = m.from;
        this.#hello();
        return;
      case "open": {
        sh.leader = m.from;
        const mine = m.members.find(([id]) => id === sh.me);
        const pos = this.lastEventId;
        if (mine && mine[1] === sh.seq && (!m.at || !pos || m.at === pos || (this.#trusted && m.at < pos))) {
          sh.cover = m.g;
        } else if (mine && mine[1] === sh.seq && !this.#trusted) {
          // A position from storage, later than the stream's start: it
          // may be another deployment's, which ids do not order against.
          // The tab streams alone until the server has answered it.
          this.#alone = true;
          this.#rejoin();
        } else if (mine) {
          // The leader has yet to hear this tab's last hello, and will
          // answer it: saying it again would keep the two out of step.
          sh.cover = "";
        } else {
          // The leader does not know where this tab is: say it anew.
          sh.cover = "";
          sh.seq++;
          this.#hello();
        }
        return;
      }
      case "full":
        if (m.id !== sh.me) return;
        // Its topics do not fit on the group's stream: it streams alone.
        this.#leave();
        this.share = false;
        this.#open();
        return;
      case "cover":
        if (m.id === sh.me && m.seq === sh.seq) sh.cover = m.g;
        return;
      case "ev":
        if (m.g === sh.cover) this.#event(m.type, { lastEventId: m.last, data: m.data });
        return;
      case "status":
        if (!sh.lead) {
          const { state, ...extra } = m.detail;
          this.#status(state, extra);
        }
        return;
    }
  }

  // #shared decides whether this member takes a relayed (or its own
  // stream's) event, and moves its position on: ids after the position
  // only, of its own topics only. Every event on a stream that covers the
  // member moves its position, whatever its topic.
  #shared(type, last, topic, data) {
    if (type === "reset") {
      // The stream started over (the position was unknown or too old):
      // the ids that follow may be of another deployment.
      this.lastEventId = "";
      this.#snapAt.clear();
    }
    const mine = this.#wants(topic, data);
    if (!(WITH_ID.has(type) || !EVENTS.includes(type)) || !last) return mine;
    const seen = type === "snapshot" ? last < this.lastEventId || this.#snapAt.get(topic) === last : last <= this.lastEventId;
    if (last > this.lastEventId) {
      this.#trusted = true;
      this.lastEventId = last;
      this.#save();
    }
    if (seen || !mine) return false;
    if (type === "snapshot") this.#snapAt.set(topic, last);
    return true;
  }

  // #wants: an event of topic is this member's. List topics ("orders",
  // "customers/<sub>") get their members' order events, which carry the
  // order's own topic.
  #wants(topic, data) {
    if (this.topics.includes(topic)) return true;
    if (!topic.startsWith("orders/")) return false;
    return this.topics.includes("orders") || (!!data?.order?.customer && this.topics.includes("customers/" + data.order.customer));
  }

  // #union: the topics of every member, the leader's first.
  #union() {
    const u = new Set(this.topics);
    for (const m of this.#sh.members.values()) for (const t of m.topics) u.add(t);
    return [...u];
  }

  // #from: where the leader's next stream starts: the earliest position of
  // the leader and of the members its stream does not cover (all of them
  // before its first stream: a new leader knows none covered). An earlier
  // start than a member needs is safe: each takes only ids after its own.
  #from() {
    let from = this.lastEventId;
    for (const m of this.#sh.members.values()) {
      if (this.#sh.g && m.cover === this.#sh.g) continue; // it holds what the leader holds
      if (m.topics.length && m.pos && (!from || m.pos < from)) from = m.pos;
    }
    return from;
  }

  #shareTopics() {
    const sh = this.#sh;
    sh.seq++;
    if (sh.lead) {
      if (this.#union().join("\n") !== sh.topics.join("\n")) this.reconnect();
      return;
    }
    sh.cover = ""; // until the leader's stream has the new topics
    this.#hello();
  }

  // #shrink reconnects when the members' topics no longer need all the stream's.
  #shrink() {
    const sh = this.#sh;
    const u = this.#union();
    if (!sh.wait && (u.length !== sh.topics.length || u.some((t) => !sh.topics.includes(t)))) this.reconnect();
  }

  async #prune() {
    const sh = this.#sh;
    const { held = [], pending = [] } = await navigator.locks.query();
    if (this.#sh !== sh) return;
    const live = new Set([...held, ...pending].map((l) => l.name));
    let gone = false;
    for (const [id, m] of sh.members) {
      if (!live.has(sh.name + " " + id) && Date.now() - m.at > 3000) {
        sh.members.delete(id);
        gone = true;
      }
    }
    if (gone) this.#shrink();
  }

  // #leave quits the group: the leader's stream ends, the lock goes to the
  // next tab in line.
  #leave() {
    const sh = this.#sh;
    this.#joining = false;
    if (!sh) return;
    this.#post({ k: "bye" });
    this.#sh = null;
    sh.stop.abort();
    clearInterval(sh.prune);
    clearInterval(sh.watch);
    clearTimeout(sh.wait);
    sh.ch.close();
    if (this.role === "lead") this.#stop();
    this.role = "solo";
  }

  #load() {
    try {
      return (this.storageKey && sessionStorage.getItem(this.storageKey)) || "";
    } catch {
      return ""; // storage is optional
    }
  }

  #save() {
    try {
      if (this.storageKey) sessionStorage.setItem(this.storageKey, this.lastEventId);
    } catch {
      // storage is optional
    }
  }
}

if (typeof window !== "undefined") {
  window.addEventListener("online", () => {
    for (const f of feeds) if (f.state === "offline" || f.state === "reconnecting") f.reconnect();
  });
}
