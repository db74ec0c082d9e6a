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
// feed.on(name, fn) returns a function that removes fn; the feed is also an
// EventTarget whose events are CustomEvents carrying the same object in `detail`.

export const EVENTS = ["snapshot", "order", "message", "reset", "expired", "refused", "presence"];
// The events that carry an id, a position a stream resumes after; the
// others' MessageEvent.lastEventId is only the connection's last id.
const WITH_ID = new Set(["snapshot", "order", "message"]);
const feeds = new Set(); // open feeds, to retry at once when the browser is back online

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
    this.#attempt = 0;
    feeds.add(this);
    // Open after the caller has attached its listeners, so that the first
    // status ("connecting") is seen; setTopics or reconnect before then
    // opens at once.
    queueMicrotask(() => {
      if (!this.#closed && !this.#es && !this.#timer && !this.#probe) this.#open();
    });
  }

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
    if (next.join("\n") === this.topics.join("\n") && (this.#es || this.#timer || this.#probe)) return;
    this.topics = next;
    for (const t of this.refused.keys()) if (!next.includes(t)) this.refused.delete(t);
    this.reconnect();
  }

  /** setToken reconnects with another access token ("" for none). */
  setToken(token) {
    this.token = token || "";
    this.refused.clear();
    this.reconnect();
  }

  /** reconnect opens a new stream now, from the last id. */
  reconnect() {
    if (this.#closed) return;
    this.#attempt = 0;
    this.#open();
  }

  /** close ends the feed for good. */
  close() {
    this.#stop();
    this.#closed = true;
    feeds.delete(this);
    this.#status("closed");
  }

  /** streamURL is the URL the next EventSource opens. */
  streamURL() {
    const u = new URL(this.url, location.href);
    u.searchParams.delete("topic");
    for (const t of this.topics) u.searchParams.append("topic", t);
    if (this.lastEventId) u.searchParams.set("lastEventId", this.lastEventId);
    if (this.token) u.searchParams.set("access_token", this.token);
    return u.href;
  }

  #stop() {
    clearTimeout(this.#timer);
    this.#timer = 0;
    this.#probe?.abort();
    this.#probe = null;
    this.#es?.close();
    this.#es = null;
  }

  #open() {
    this.#stop();
    if (this.#closed) return;
    const es = new EventSource(this.streamURL(), { withCredentials: this.withCredentials });
    this.#es = es;
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
        if (this.#es === es) this.#event(type, e);
      });
    }
  }

  #event(type, e) {
    if (e.lastEventId && e.lastEventId !== this.lastEventId) {
      this.lastEventId = e.lastEventId;
      this.#save();
    }
    let data = null;
    try {
      data = JSON.parse(e.data);
    } catch {
      data = e.data;
    }
    const topic = (data && typeof data.topic === "string" && data.topic) || "";
    if (type === "refused") this.refused.set(topic, { status: data?.status, error: data?.error });
    else if (topic) this.refused.delete(topic);
    const id = WITH_ID.has(type) || !EVENTS.includes(type) ? e.lastEventId || "" : "";
    this.dispatchEvent(new CustomEvent(type, { detail: { type, id, topic, data } }));
    if (type === "expired") {
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
    if (listed) {
      refusals = listed.filter((r) => r && this.topics.includes(r.topic));
    } else if (status === 403 || status === 404) {
      refusals = this.topics.map((topic) => ({ topic, status, error: reason }));
    }
    this.#retry(status, reason, Math.max(wait, client ? this.maxDelay : 0));
    for (const r of refusals) {
      const data = { topic: r.topic, status: r.status, error: r.error };
      this.refused.set(r.topic, { status: r.status, error: r.error });
      this.dispatchEvent(new CustomEvent("refused", { detail: { type: "refused", id: "", topic: r.topic, data } }));
    }
  }

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
    this.dispatchEvent(new CustomEvent("status", { detail }));
  }

  #statusKey = "";

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
