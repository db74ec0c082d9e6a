// api.js — the REST calls: JSON in and out, the token as a Bearer
// header, and errors as APIError with the server's message.
import { state } from "./state.js";
import { askForToken } from "./token.js";

/** APIError is a failed call: status (0: no answer), the server's message, and its `allowed` if any. */
export class APIError extends Error {
  constructor(status, message, allowed) {
    super(message);
    this.status = status;
    this.allowed = allowed;
  }
}

/** api calls method path with a JSON body (if not undefined) and returns the answer's JSON. */
export async function api(method, path, body, extraHeaders) {
  const headers = { Accept: "application/json", ...(state.token ? { Authorization: "Bearer " + state.token } : {}), ...(extraHeaders || {}) };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new APIError(0, "The server cannot be reached. Try again in a moment.");
  }
  if (!res.ok) {
    const err = await errorOf(res);
    if (res.status === 401) askForToken(state.token ? "The server did not accept this token." : "This server needs an access token.");
    throw err;
  }
  try {
    return await res.json();
  } catch {
    throw new APIError(res.status, "The server sent an unreadable answer.");
  }
}

async function errorOf(res) {
  try {
    const body = await res.json();
    if (body && typeof body.error === "string") {
      return new APIError(res.status, body.error, Array.isArray(body.allowed) ? body.allowed : undefined);
    }
  } catch {
    // not JSON
  }
  return new APIError(res.status, res.statusText || "request failed");
}
