// Types for changecast.js, the browser client changecast serves at
// /changecast.js. Checked with tsc in .ci/run.

/** The event names the server sends (protocol.Events). */
export declare const EVENTS: readonly ["snapshot", "order", "message", "reset", "expired", "refused", "presence"];

export type EventName = (typeof EVENTS)[number];

export type State = "connecting" | "live" | "reconnecting" | "offline" | "closed";

/** The detail of a "status" event. */
export interface Status {
  state: State;
  /** Why the feed is not live: the server's error text, or a network failure. */
  reason?: string;
  /** The HTTP status the stream URL answered (0: no answer). */
  httpStatus?: number;
  /** When the next attempt starts, ms from now. */
  retryInMs?: number;
}

export type OrderStatus = "placed" | "preparing" | "out_for_delivery" | "delivered" | "cancelled";

export interface Order {
  id: string;
  customer: string;
  items: { sku: string; qty: number }[];
  status: OrderStatus;
  version: number;
  /** Every status the order has had, oldest first. */
  history: { status: OrderStatus; at: string }[];
  createdAt: string;
  updatedAt: string;
}

export interface Message {
  id: string;
  room: string;
  author: string;
  text: string;
  createdAt: string;
}

export interface Refusal {
  /** The topic as given, malformed or not. */
  topic: string;
  /** 400 malformed, 403 not granted, 404 unknown or not visible. */
  status: number;
  error: string;
}

/** The `data` of each event name (docs/api.md). */
export interface EventData {
  snapshot: { topic: string; order?: Order; messages?: Message[]; orders?: Order[] };
  /** `update` on the embedded store, `replace` on MongoDB: treat them alike. */
  order: { topic: string; op: "insert" | "update" | "replace" | "delete"; order: Order };
  message: { topic: string; op: "insert"; message: Message };
  reset: { topic: string; reason: "invalid-id" | "history-lost" };
  expired: { topic: string; reason: string };
  refused: Refusal;
  presence:
    | { topic: string; op: "sync"; users: { user: string; since: string }[] }
    | { topic: string; op: "join" | "leave"; user: string };
}

/** What a listener of a typed event receives. */
export interface FeedEvent<N extends string = string, D = unknown> {
  type: N;
  /** The event's id, "" for the events that carry none (reset, expired, refused, presence). */
  id: string;
  topic: string;
  data: D;
}

export interface Options {
  /** The multi-topic stream route (absolute for another origin); default "/api/events". */
  url?: string;
  /** Topics such as "rooms/lobby", "orders/<id>", "orders", "customers/<sub>". */
  topics: string[];
  /** Sent as access_token (EventSource cannot set headers). */
  token?: string;
  /** sessionStorage key of the last event id; null keeps it in memory only. Default "changecast.lastEventId". */
  storageKey?: string | null;
  /** Send cookies cross-origin; default false. */
  withCredentials?: boolean;
  /** Reconnect backoff bounds in ms; defaults 500 and 30000. */
  minDelay?: number;
  maxDelay?: number;
  /** More event names to dispatch. */
  events?: string[];
  /**
   * Share one stream among the tabs of this origin with the same url, token,
   * withCredentials and events: one tab leads (a Web Lock) and relays events
   * over a BroadcastChannel. Default true; off where Web Locks,
   * BroadcastChannel or crypto.subtle are missing (plain-HTTP origins).
   */
  share?: boolean;
}

/** "solo": this feed streams for itself; "lead": for every tab of its group; "follow": another tab streams for it. */
export type Role = "solo" | "lead" | "follow";

export declare class Feed extends EventTarget {
  constructor(options?: Options);
  readonly url: string;
  readonly token: string;
  readonly storageKey: string | null;
  readonly withCredentials: boolean;
  readonly minDelay: number;
  readonly maxDelay: number;
  readonly events: string[];
  readonly topics: string[];
  /** topic → its refusal, as the server last said. */
  readonly refused: Map<string, { status: number; error: string }>;
  /** The last status reported ("connecting" until the first). */
  readonly state: State;
  /** The id a new connection resumes after ("" for none). */
  readonly lastEventId: string;
  /** Whether this feed shares a stream with other tabs (the option, where supported). */
  readonly share: boolean;
  /** This feed's part in its share group. */
  readonly role: Role;

  /** Calls fn for each event called name; returns a function that removes fn. */
  on(name: "status", fn: (status: Status) => void): () => void;
  on<N extends EventName>(name: N, fn: (event: FeedEvent<N, EventData[N]>) => void): () => void;
  on(name: string, fn: (event: FeedEvent) => void): () => void;

  /** Reconnects with a new topic set from the same position. */
  setTopics(topics: string[]): void;
  /** Reconnects with another access token ("" for none). */
  setToken(token: string): void;
  /** Opens a new stream now, from the last id. */
  reconnect(): void;
  /** Ends the feed for good. */
  close(): void;
  /** The URL the next EventSource opens. */
  streamURL(): string;
}

/** Opens a feed. */
export declare function connect(options: Options): Feed;
