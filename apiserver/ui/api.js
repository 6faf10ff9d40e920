// The dashboard's only way to the cluster: the same HTTP API kubectl uses, with the cluster's bearer token (kept in
// sessionStorage for this tab only, never in a URL). Collections are kept current by a list and then a watch read
// as a stream (fetch, so the token goes in a header, which EventSource cannot send): a dropped stream resumes from
// the last resourceVersion seen, a 410 lists again, and changes are handed to listeners at most once a frame.

const TOKEN_KEY = "agora.token";
export const API = "/apis/agora/v1";
export const MANAGER = "agora-dashboard";

export class Unauthorized extends Error {}

export class ApiError extends Error {
  constructor(message, code, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers(extra) {
  const h = { Accept: "application/json", ...extra };
  const t = token();
  if (t) h.Authorization = "Bearer " + t;
  return h;
}

const authListeners = new Set();
/** Called with no argument whenever the server refuses the token (or its absence). */
export function onUnauthorized(listener) {
  authListeners.add(listener);
}

async function answer(response) {
  if (response.status === 401) {
    authListeners.forEach((l) => l());
    throw new Unauthorized("the cluster's token is needed");
  }
  const text = await response.text();
  let value = null;
  try {
    value = text ? JSON.parse(text) : null;
  } catch {
    value = { message: text };
  }
  if (!response.ok) {
    const causes = (value?.details?.causes || []).map((c) => `${c.field}: ${c.message}`).join("; ");
    const message = (value?.message || response.statusText) + (causes && !String(value?.message).includes(causes) ? ` (${causes})` : "");
    throw new ApiError(message, response.status, value);
  }
  return value;
}

/** One request; the answer's JSON, or an ApiError with the server's message. */
export async function request(path, { method = "GET", body, contentType = "application/json" } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": contentType }) };
  if (body !== undefined) init.body = typeof body === "string" ? body : JSON.stringify(body);
  return answer(await fetch(path, init));
}

export function path(plural, namespace, name, sub) {
  let p = API;
  if (namespace) p += `/namespaces/${encodeURIComponent(namespace)}`;
  p += `/${plural}`;
  if (name) p += `/${encodeURIComponent(name)}`;
  if (sub) p += `/${sub}`;
  return p;
}

/** Reads a streamed answer line by line. */
async function* lines(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, end);
      buffered = buffered.slice(end + 1);
      if (line.trim()) yield line;
    }
  }
  if (buffered.trim()) yield buffered;
}

/**
 * Every object of one kind (in every namespace), kept current. `subscribe(fn)` calls fn after changes, batched to
 * one call a frame; `items()` is the current objects.
 */
export class Collection {
  constructor(plural) {
    this.plural = plural;
    this.objects = new Map();
    this.listeners = new Set();
    this.resourceVersion = "";
    this.synced = false;
    this.error = null;
    this.pending = false;
    this.stopped = false;
    this.controller = null;
  }

  static key(object) {
    const m = object.metadata || {};
    return (m.namespace ? m.namespace + "/" : "") + m.name;
  }

  items() {
    return [...this.objects.values()];
  }

  get(namespace, name) {
    return this.objects.get((namespace ? namespace + "/" : "") + name);
  }

  subscribe(listener) {
    this.listeners.add(listener);
    if (this.synced) listener();
    return () => this.listeners.delete(listener);
  }

  changed() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.listeners.forEach((l) => l());
    });
  }

  start() {
    if (this.started) return this;
    this.started = true;
    this.run();
    return this;
  }

  async list() {
    const objects = new Map();
    let next = "";
    let resourceVersion = "";
    do {
      const query = `?limit=5000${next ? "&continue=" + encodeURIComponent(next) : ""}`;
      const list = await request(path(this.plural) + query);
      for (const item of list.items || []) objects.set(Collection.key(item), item);
      next = list.metadata?.continue || "";
      resourceVersion = resourceVersion || list.metadata?.resourceVersion || "";
    } while (next);
    this.objects = objects;
    this.resourceVersion = resourceVersion;
    this.synced = true;
    this.error = null;
    this.changed();
  }

  async run() {
    let delay = 250;
    while (!this.stopped) {
      try {
        if (!this.synced) await this.list();
        const started = performance.now();
        await this.watch();
        // A watch the server ended normally is opened again from where it stopped; one that ended at once (a
        // proxy closing it, say) waits first, so a tab never spins.
        if (performance.now() - started < 1000) {
          await new Promise((r) => setTimeout(r, delay));
          delay = Math.min(delay * 2, 5000);
        } else {
          delay = 250;
        }
      } catch (e) {
        if (e instanceof Gone) {
          this.synced = false;
          continue;
        }
        this.error = e;
        this.changed();
        if (e instanceof Unauthorized) {
          // Nothing to show without the token; start again when one is given.
          this.synced = false;
          await waitForToken();
          continue;
        }
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 5000);
      }
    }
  }

  async watch() {
    this.controller = new AbortController();
    const query = `?watch=true&allowWatchBookmarks=true&resourceVersion=${encodeURIComponent(this.resourceVersion)}`;
    const response = await fetch(path(this.plural) + query, { headers: headers(), signal: this.controller.signal });
    if (!response.ok) await answer(response);
    for await (const line of lines(response)) {
      const event = JSON.parse(line);
      const object = event.object || {};
      if (event.type === "ERROR") {
        if (object.code === 410) throw new Gone();
        throw new ApiError(object.message || "the watch failed", object.code, object);
      }
      if (object.metadata?.resourceVersion) this.resourceVersion = object.metadata.resourceVersion;
      if (event.type === "BOOKMARK") continue;
      if (event.type === "DELETED") this.objects.delete(Collection.key(object));
      else this.objects.set(Collection.key(object), object);
      this.lastEventAt = performance.now();
      this.changed();
    }
  }
}

class Gone extends Error {}

let tokenWaiters = [];
function waitForToken() {
  return new Promise((resolve) => tokenWaiters.push(resolve));
}
/** Wakes the collections that stopped for want of a token. */
export function tokenGiven() {
  const waiters = tokenWaiters;
  tokenWaiters = [];
  waiters.forEach((w) => w());
}

const collections = new Map();
/** The shared, started collection of a kind. */
export function collection(plural) {
  if (!collections.has(plural)) collections.set(plural, new Collection(plural).start());
  return collections.get(plural);
}

/** A task's log as it grows: calls `write(text)` with each piece until `signal` aborts. */
export async function followLog(namespace, name, { stderr = false, follow = true, signal, write }) {
  const query = `?follow=${follow}&tailLines=1000${stderr ? "&container=stderr" : ""}`;
  const response = await fetch(path("tasks", namespace, name, "log") + query, { headers: headers(), signal });
  if (!response.ok) await answer(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    write(decoder.decode(value, { stream: true }));
  }
}
