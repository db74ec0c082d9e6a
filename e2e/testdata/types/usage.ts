// Compiled by .ci/run (tsc --noEmit --strict) against static/changecast.d.ts:
// the README's use of the client module type-checks, and wrong uses do not.
import { connect, EVENTS, Feed, type Status, type FeedEvent } from "../../../static/changecast.js";

const feed: Feed = connect({ topics: ["rooms/lobby", "orders/0123456789abcdef01234567"], token: "" });
feed.on("status", (s: Status) => {
  const state: "connecting" | "live" | "reconnecting" | "offline" | "closed" = s.state;
  console.log(state, s.reason ?? "", s.httpStatus ?? 0, s.retryInMs ?? 0);
});
feed.on("message", ({ data }) => console.log(`${data.message.author}: ${data.message.text}`));
feed.on("order", ({ data, id }) => console.log(data.order.status, data.order.version, id.length));
feed.on("snapshot", ({ data }) => console.log(data.order?.status, data.messages?.length));
feed.on("refused", ({ topic, data }) => console.warn(topic, data.status, data.error));
feed.on("presence", ({ data }) => console.log(data.op === "sync" ? data.users.length : data.user));
const off = feed.on("custom", (e: FeedEvent) => console.log(e.type, e.data));
off();
feed.setTopics(["rooms/lobby"]);
feed.setToken("");
feed.reconnect();
console.log(feed.streamURL(), feed.state, feed.lastEventId, feed.refused.get("rooms/lobby")?.status, EVENTS.length);
feed.close();
connect({ url: "https://changecast.example.com/api/events", topics: ["orders/x"], storageKey: null, withCredentials: true, minDelay: 1, maxDelay: 2, events: ["custom"] });

// @ts-expect-error topics are required
connect({ token: "x" });
// @ts-expect-error a message's text is a string
feed.on("message", ({ data }) => data.message.text.toFixed());
// @ts-expect-error no such state
feed.on("status", (s) => s.state === "online");
// @ts-expect-error the order's status is one of five
feed.on("order", ({ data }) => data.order.status === "shipped");
const alone: Feed = connect({ topics: ["rooms/lobby"], share: false });
const role: "solo" | "lead" | "follow" = alone.role;
console.log(role, alone.share);
