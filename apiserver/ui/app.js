// The dashboard: pages drawn from live collections (see api.js). Every page re-renders its data when a collection it
// reads changes (at most once a frame); long lists draw only the rows in view, so 10,000 agents or apps stay quick.
// Text from the cluster is only ever set as text (never as HTML).

import {
  ApiError,
  MANAGER,
  Unauthorized,
  collection,
  followLog,
  onUnauthorized,
  path,
  request,
  setToken,
  token,
  tokenGiven,
} from "./api.js";

// ---------- small helpers ----------

/** An element: h("a", {href: "#/"}, "text", child, ...). Strings become text nodes. */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key === "class") element.className = value;
    else if (key === "style") element.style.cssText = value;
    else element.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

function svg(tag, attrs = {}, ...children) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) element.setAttribute(key, value);
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** Plain code-point order: `localeCompare` costs a microsecond a call, too much for 10,000 rows a frame. */
const byString = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

const number = (n) => (Number.isFinite(n) ? String(Math.round(n * 1000) / 1000) : "0");

export function age(timestamp, now = Date.now()) {
  if (!timestamp) return "";
  const seconds = Math.floor((now - Date.parse(timestamp)) / 1000);
  if (seconds < 0) return "0s";
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours}h${minutes % 60 ? (minutes % 60) + "m" : ""}`;
  return `${Math.floor(hours / 24)}d`;
}

function localTime(timestamp) {
  if (!timestamp) return "";
  const date = new Date(timestamp);
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  return `${date.toLocaleString()} (${zone})`;
}

function condition(object, type) {
  return (object?.status?.conditions || []).find((c) => c.type === type);
}

function bar(used, total, label) {
  const share = total > 0 ? Math.min(1, used / total) : 0;
  const tone = share > 0.9 ? "high" : share > 0.6 ? "mid" : "low";
  return h(
    "div",
    { class: "bar", role: "meter", "aria-label": label, "aria-valuemin": "0", "aria-valuemax": String(total), "aria-valuenow": String(used) },
    h("div", { class: `fill ${tone}`, style: `width:${(share * 100).toFixed(1)}%` }),
    h("span", {}, `${label} ${number(used)}/${number(total)}`),
  );
}

function table(headers, rows, caption) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      caption ? h("caption", {}, caption) : null,
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: String(headers.length), class: "none" }, "none"))),
    ),
  );
}

const row = (...cells) => h("tr", {}, cells.map((c) => h("td", {}, c)));
const link = (href, text) => h("a", { href }, text);
const stateBadge = (word) => h("span", { class: `badge ${toneOf(word)}` }, word || "—");

function toneOf(word) {
  if (["Running", "Finished", "Succeeded", "True", "Ready", "Healthy", "Outstanding"].includes(word)) return "good";
  if (["Failed", "Lost", "Gone", "Killed", "Dropped", "False", "Error", "Unreachable", "DeadlineExceeded"].includes(word)) return "bad";
  if (["Staging", "Starting", "Killing", "Cordoned", "Replaced", "Unknown"].includes(word)) return "warn";
  return "plain";
}

/** An ISO 8601 repeating interval in words: `R/2026-01-01T00:00:00Z/PT5M` → `every 5 minutes`. */
export function scheduleInWords(schedule, { short = false } = {}) {
  if (!schedule) return "";
  const parts = schedule.split("/");
  const period = parts[parts.length - 1];
  const repeat = parts[0].match(/^R(\d*)$/);
  const match = period.match(/^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$/);
  if (!match) return schedule;
  const units = ["year", "month", "week", "day", "hour", "minute", "second"];
  const words = match
    .slice(1)
    .map((v, i) => (v ? (Number(v) === 1 ? units[i] : `${v} ${units[i]}s`) : null))
    .filter(Boolean);
  let said = `every ${words.join(" ")}`;
  if (repeat && repeat[1]) said += `, ${repeat[1]} times`;
  if (parts.length === 3 && parts[1] && !short) said += ` from ${parts[1]}`;
  return said;
}

// ---------- the shell: routing, the token, messages ----------

const main = () => document.getElementById("main");
let current = null; // the page shown: {stop()}

function say(message, kind = "info") {
  const box = document.getElementById("message");
  box.textContent = message;
  box.className = `message ${kind}`;
  if (message) setTimeout(() => box.textContent === message && (box.textContent = ""), 8000);
}

async function act(what, work) {
  try {
    await work();
    say(`${what}: done`, "good");
  } catch (e) {
    say(`${what} failed: ${e instanceof Unauthorized ? "the token is needed" : e.message}`, "bad");
  }
}

function askForToken() {
  const dialog = document.getElementById("token-dialog");
  if (!dialog.open) dialog.showModal();
  document.getElementById("token-input").focus();
}

function setupToken() {
  const dialog = document.getElementById("token-dialog");
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = document.getElementById("token-input").value.trim();
    if (!value) return;
    setToken(value);
    document.getElementById("token-input").value = "";
    dialog.close();
    tokenGiven();
    route();
  });
  document.getElementById("forget-token").addEventListener("click", () => {
    setToken(null);
    location.reload();
  });
  onUnauthorized(() => {
    main().replaceChildren(h("p", { class: "none" }, "This cluster needs its token to show anything."));
    askForToken();
  });
}

/**
 * Shows a page that draws `render()` whenever one of `kinds` changes, once the `required` ones (all, unless given)
 * are listed; the others fill in as they arrive (render checks `collection(kind).synced`).
 */
function live(kinds, render, required = kinds) {
  const target = main();
  const sources = kinds.map(collection);
  const needed = required.map(collection);
  const draw = () => {
    if (!needed.every((s) => s.synced)) {
      const failed = sources.find((s) => s.error);
      if (failed && !(failed.error instanceof Unauthorized)) {
        target.replaceChildren(h("p", { class: "message bad" }, `cannot read ${failed.plural}: ${failed.error.message}`));
      }
      return;
    }
    render(target);
    document.body.dataset.ready = "true";
    // When this page was first drawn with what it needs (the benchmark's "interactive").
    window.__agoraRendered ??= performance.now();
  };
  const stops = sources.map((s) => s.subscribe(draw));
  draw();
  return { stop: () => stops.forEach((s) => s()) };
}

function route() {
  current?.stop();
  document.body.dataset.ready = "false";
  window.__agoraRendered = undefined;
  const parts = (location.hash.replace(/^#\/?/, "") || "").split("/").map(decodeURIComponent);
  for (const a of document.querySelectorAll("nav a")) {
    a.setAttribute("aria-current", a.getAttribute("href") === `#/${parts[0] || ""}` ? "page" : "false");
  }
  const [page, namespace, name] = parts;
  main().replaceChildren(h("p", { class: "none" }, "loading…"));
  if (page === "apps" && name) current = appPage(namespace, name);
  else if (page === "apps") current = appsPage();
  else if (page === "cronjobs" && name) current = jobPage(namespace, name);
  else if (page === "cronjobs") current = jobsPage();
  else if (page === "tasks" && name) current = taskPage(namespace, name);
  else current = overview();
  main().focus({ preventScroll: true });
}

// ---------- virtual lists ----------

/**
 * A scrolling list that draws only what is in view: `items` with `renderRow(item)`, each `rowHeight` px high, in
 * `columns` per row (a grid when more than 1, fitted to the width when "auto" with `minWidth`).
 */
class Virtual {
  constructor({ rowHeight, minWidth = 0, renderItem, label, height = 0.7 }) {
    this.rowHeight = rowHeight;
    this.height = height;
    this.minWidth = minWidth;
    this.renderItem = renderItem;
    this.items = [];
    this.viewport = h("div", { class: "virtual", role: "list", "aria-label": label, tabindex: "0" });
    this.spacer = h("div", { class: "spacer" });
    this.window = h("div", { class: "window" });
    this.spacer.append(this.window);
    this.viewport.append(this.spacer);
    this.viewport.addEventListener("scroll", () => this.draw());
    new ResizeObserver(() => this.draw()).observe(this.viewport);
  }

  set(items) {
    this.items = items;
    this.draw();
  }

  draw() {
    const width = this.viewport.clientWidth || 800;
    const columns = this.minWidth ? Math.max(1, Math.floor(width / this.minWidth)) : 1;
    const rows = Math.ceil(this.items.length / columns);
    this.spacer.style.height = `${rows * this.rowHeight}px`;
    // As tall as its rows, up to a share of the window; it scrolls beyond.
    this.viewport.style.height = `${Math.min(rows * this.rowHeight + 8, Math.max(240, window.innerHeight * this.height))}px`;
    const first = Math.max(0, Math.floor(this.viewport.scrollTop / this.rowHeight) - 2);
    const visible = Math.ceil((this.viewport.clientHeight || 600) / this.rowHeight) + 4;
    const slice = this.items.slice(first * columns, (first + visible) * columns);
    this.window.style.transform = `translateY(${first * this.rowHeight}px)`;
    this.window.style.gridTemplateColumns = `repeat(${columns}, minmax(0, 1fr))`;
    this.window.replaceChildren(...slice.map((item) => {
      const element = this.renderItem(item);
      element.setAttribute("role", "listitem");
      element.style.height = `${this.rowHeight - 6}px`;
      return element;
    }));
  }
}

// ---------- overview ----------

function agentState(agent) {
  if (agent.spec?.unschedulable) return "Cordoned";
  const ready = condition(agent, "Ready");
  if (ready?.status === "True") return "Ready";
  return "Unreachable";
}

function agentTile(agent) {
  const total = agent.spec?.resources || {};
  const used = agent.status?.allocated || {};
  const state = agentState(agent);
  const attributes = Object.entries(agent.spec?.attributes || {}).map(([k, v]) => `${k}=${v}`).join(", ");
  return h(
    "div",
    { class: `tile ${toneOf(state === "Ready" ? "Ready" : state)}`, title: attributes ? `attributes: ${attributes}` : "no attributes" },
    h("div", { class: "tile-head" }, h("strong", {}, agent.metadata.name), stateBadge(state)),
    bar(used.cpus || 0, total.cpus || 0, "cpus"),
    bar(used.mem || 0, total.mem || 0, "mem"),
    bar(used.disk || 0, total.disk || 0, "disk"),
  );
}

function overview() {
  const tiles = new Virtual({ rowHeight: 96, minWidth: 220, renderItem: agentTile, label: "agents", height: 0.6 });
  // Only what the page shows: 10,000 agents are enough to list; apps and tasks have pages of their own.
  return live(["agents", "frameworks", "offers", "events"], (target) => {
    const agents = collection("agents").items().sort((a, b) => byString(a.metadata.name, b.metadata.name));
    const sum = { cpus: [0, 0], mem: [0, 0], disk: [0, 0] };
    let ready = 0;
    for (const agent of agents) {
      if (agentState(agent) === "Ready") ready++;
      for (const r of ["cpus", "mem", "disk"]) {
        sum[r][0] += agent.status?.allocated?.[r] || 0;
        sum[r][1] += agent.spec?.resources?.[r] || 0;
      }
    }
    const frameworks = collection("frameworks").items();
    const offers = collection("offers").items().filter((o) => (o.status?.phase || "Outstanding") === "Outstanding");
    const events = collection("events")
      .items()
      .sort((a, b) => Date.parse(b.lastTimestamp || 0) - Date.parse(a.lastTimestamp || 0))
      .slice(0, 15);
    const maxShare = Math.max(0.0001, ...frameworks.map((f) => f.status?.dominantShare || 0));
    tiles.set(agents);
    if (!target.querySelector(".overview")) {
      target.replaceChildren(
        h(
          "div",
          { class: "overview" },
          h("h1", {}, "Cluster"),
          h("section", { class: "totals", "aria-label": "cluster totals" }),
          h("h2", {}, "Agents"),
          tiles.viewport,
          h("div", { class: "columns" },
            h("section", { class: "frameworks" }),
            h("section", { class: "offers" })),
          h("section", { class: "events" }),
        ),
      );
    }
    target.querySelector(".totals").replaceChildren(
      h("div", { class: "stat" }, h("b", { "data-testid": "agent-count" }, String(agents.length)), ` agents, ${ready} ready`),
      h("div", { class: "stat" }, h("b", {}, String(frameworks.length)), " frameworks"),
      h("div", { class: "stat" }, h("b", {}, String(offers.length)), " offers outstanding"),
      bar(sum.cpus[0], sum.cpus[1], "cpus"),
      bar(sum.mem[0], sum.mem[1], "mem MiB"),
      bar(sum.disk[0], sum.disk[1], "disk MiB"),
    );
    target.querySelector(".frameworks").replaceChildren(
      h("h2", {}, "Frameworks: dominant share (DRF)"),
      frameworks.length
        ? h("div", { class: "chart", role: "list" }, frameworks.map((f) => {
            const share = f.status?.dominantShare || 0;
            const connected = condition(f, "Connected")?.status === "True";
            return h("div", { class: "chart-row", role: "listitem" },
              h("span", { class: "chart-label" }, f.metadata.name),
              h("div", { class: "chart-bar" }, h("div", { class: "fill low", style: `width:${((share / maxShare) * 100).toFixed(1)}%` })),
              h("span", {}, `${number(share)} · weight ${number(f.spec?.weight ?? 1)} · roles ${(f.spec?.roles || ["*"]).join(",")}${connected ? "" : " · disconnected"}`));
          }))
        : h("p", { class: "none" }, "no frameworks"),
    );
    target.querySelector(".offers").replaceChildren(
      h("h2", {}, `Outstanding offers (${offers.length})`),
      table(["offer", "framework", "agent", "cpus", "mem"], offers.slice(0, 20).map((o) =>
        row(o.metadata.name, o.spec.framework, o.spec.agent, number(o.spec.resources?.cpus), number(o.spec.resources?.mem)))),
    );
    target.querySelector(".events").replaceChildren(h("h2", {}, "Newest events"), eventsTable(events));
  }, ["agents"]);
}

function eventsTable(events) {
  return table(
    ["last seen", "type", "reason", "object", "message"],
    events.map((e) =>
      row(
        age(e.lastTimestamp),
        stateBadge(e.type === "Warning" ? "Warning" : e.type || "Normal"),
        e.reason,
        `${(e.involvedObject?.kind || "").toLowerCase()}/${e.involvedObject?.name || ""}`,
        e.message || "",
      ),
    ),
  );
}

function eventsAbout(kind, namespace, name) {
  return collection("events")
    .items()
    .filter((e) => e.involvedObject?.kind === kind && e.involvedObject?.name === name && (e.metadata.namespace === namespace || !namespace))
    .sort((a, b) => Date.parse(a.lastTimestamp || 0) - Date.parse(b.lastTimestamp || 0));
}

// ---------- apps ----------

function healthBar(status, wanted) {
  const healthy = status?.tasksHealthy || 0;
  const unhealthy = status?.tasksUnhealthy || 0;
  const staged = status?.tasksStaged || 0;
  const total = Math.max(wanted, healthy + unhealthy + staged, 1);
  const part = (n, tone) => h("div", { class: `fill ${tone}`, style: `width:${((n / total) * 100).toFixed(1)}%` });
  return h(
    "div",
    { class: "bar health", role: "img", "aria-label": `${healthy} healthy, ${unhealthy} unhealthy, ${staged} staged of ${wanted}` },
    h("div", { class: "stack" }, part(healthy, "low"), part(unhealthy, "high"), part(staged, "mid")),
  );
}

function appRow(app) {
  const s = app.status || {};
  const wanted = app.spec?.instances ?? 1;
  return h(
    "div",
    { class: "list-row" },
    h("span", { class: "name" }, link(`#/apps/${app.metadata.namespace}/${app.metadata.name}`, app.metadata.name), h("small", {}, app.metadata.namespace)),
    h("span", { "data-testid": "instances" }, `${s.tasksRunning || 0}/${wanted} running`),
    h("span", {}, `${s.tasksHealthy || 0} healthy, ${s.tasksStaged || 0} staged`),
    healthBar(s, wanted),
    h("span", { class: "mono" }, s.version || ""),
    h("span", { class: "why" }, waitingFor(app)),
  );
}

/** Why an App is not where it was asked to be: its deployment's step and wait, or why instances wait for offers. */
export function waitingFor(app) {
  const d = app.status?.deployment;
  if (d) return `${d.step}${d.waiting ? ": " + d.waiting : ""}`;
  const scheduled = condition(app, "Scheduled");
  return scheduled?.status === "False" ? scheduled.message || scheduled.reason || "" : "";
}

/** A page listing every object of `kind` by namespace and name, drawing only the rows in view. */
function listPage({ kind, title, rowHeight, renderItem, rowClass, heads, empty }) {
  const list = new Virtual({ rowHeight, renderItem, label: kind });
  return live([kind], (target) => {
    const objects = collection(kind).items().sort((a, b) => byString(Collection_key(a), Collection_key(b)));
    list.set(objects);
    if (!target.contains(list.viewport)) {
      target.replaceChildren(
        h("h1", {}, title),
        h("div", { class: `list-row ${rowClass} list-head`, "aria-hidden": "true" }, heads.map((x) => h("span", {}, x))),
        objects.length ? list.viewport : h("p", { class: "none" }, empty),
      );
    }
  });
}

function appsPage() {
  return listPage({
    kind: "apps",
    title: "Apps",
    rowHeight: 52,
    renderItem: appRow,
    rowClass: "",
    heads: ["name", "running", "health", "", "version", "deployment"],
    empty: "No apps yet: agora apply -f an App manifest.",
  });
}

const Collection_key = (o) => `${o.metadata.namespace}/${o.metadata.name}`;

function portsOf(task) {
  const host = task.status?.host || location.hostname;
  return (task.spec?.ports || []).map((p) => h("a", { href: `http://${host}:${p.port}/`, target: "_blank", rel: "noopener" }, String(p.port)));
}

function tasksTable(tasks, withFailure) {
  return table(
    ["task", "agent", "ports", "state", "health", "age", ...(withFailure ? ["last failure"] : [])],
    tasks
      .sort((a, b) => Date.parse(b.metadata.creationTimestamp || 0) - Date.parse(a.metadata.creationTimestamp || 0))
      .map((t) =>
        row(
          link(`#/tasks/${t.metadata.namespace}/${t.metadata.name}`, t.metadata.name),
          t.spec.agent,
          portsOf(t),
          stateBadge(t.status?.state),
          t.status?.healthy === undefined ? "" : t.status.healthy ? "healthy" : "unhealthy",
          age(t.metadata.creationTimestamp),
          ...(withFailure ? [t.status?.state === "Failed" ? t.status?.message || "" : ""] : []),
        ),
      ),
  );
}

function appPage(namespace, name) {
  const controls = h("section", { class: "controls", "aria-label": "actions" });
  const scaleInput = h("input", { type: "number", min: "0", id: "scale-input", "aria-describedby": "scale-help" });
  const scaleForm = h(
    "form",
    {
      class: "inline",
      onsubmit: (event) => {
        event.preventDefault();
        const instances = Number(scaleInput.value);
        act(`scale ${name} to ${instances}`, () =>
          request(path("apps", namespace, name, "scale") + `?fieldManager=${MANAGER}`, {
            method: "PATCH",
            contentType: "application/merge-patch+json",
            body: { spec: { replicas: instances } },
          }),
        );
      },
    },
    h("label", { for: "scale-input" }, "Instances "),
    scaleInput,
    h("button", { type: "submit", id: "scale-button" }, "Scale"),
    h("small", { id: "scale-help" }, " through the scale subresource, as kubectl scale"),
  );
  controls.append(scaleForm);
  const data = h("div");
  let filled = false;
  return live(["apps", "tasks", "appversions", "events"], (target) => {
    const app = collection("apps").get(namespace, name);
    if (!target.contains(data)) target.replaceChildren(h("h1", {}, `App ${namespace}/${name}`), controls, data);
    if (!app) {
      data.replaceChildren(h("p", { class: "none" }, "No such app (or it was deleted)."));
      return;
    }
    if (!filled || document.activeElement !== scaleInput) scaleInput.value = String(app.spec.instances ?? 1);
    filled = true;
    const s = app.status || {};
    const d = s.deployment;
    const tasks = collection("tasks").items().filter((t) => t.metadata.namespace === namespace && t.metadata.labels?.["agora.dev/app"] === name);
    const versions = collection("appversions")
      .items()
      .filter((v) => v.metadata.namespace === namespace && v.spec?.app === name)
      .sort((a, b) => Date.parse(b.metadata.creationTimestamp || 0) - Date.parse(a.metadata.creationTimestamp || 0));
    const current = s.version;
    data.replaceChildren(
      h("dl", { class: "facts" },
        h("dt", {}, "instances"), h("dd", { "data-testid": "app-instances" }, `${app.spec.instances ?? 1} wanted: ${s.tasksRunning || 0} running, ${s.tasksHealthy || 0} healthy, ${s.tasksStaged || 0} staged, ${s.tasksUnhealthy || 0} unhealthy`),
        h("dt", {}, "health"), h("dd", {}, healthBar(s, app.spec.instances ?? 1)),
        h("dt", {}, "command"), h("dd", { class: "mono" }, app.spec.cmd || (app.spec.args || []).join(" ") || "(the image's entrypoint)"),
        h("dt", {}, "image"), h("dd", {}, app.spec.container?.image || "none: the host's file system, read-only"),
        h("dt", {}, "resources"), h("dd", {}, `cpus ${number(app.spec.cpus ?? 1)}, mem ${number(app.spec.mem ?? 128)} MiB, disk ${number(app.spec.disk ?? 0)} MiB`),
        h("dt", {}, "version"), h("dd", { class: "mono" }, current || ""),
        h("dt", {}, "deployment"), h("dd", { class: "why" }, d ? `to ${d.to}: ${d.step} (${d.new} new, ${d.healthy} healthy, ${d.old} old)${d.waiting ? " — " + d.waiting : ""}` : "none under way"),
        waitingFor(app) && !d ? [h("dt", {}, "waiting for"), h("dd", { class: "why" }, waitingFor(app))] : null,
        s.lastTaskFailure ? [h("dt", {}, "last failure"), h("dd", {}, `${s.lastTaskFailure.task} ${s.lastTaskFailure.state}: ${s.lastTaskFailure.message || ""} (${age(s.lastTaskFailure.timestamp)} ago)`)] : null,
      ),
      h("h2", {}, "Tasks"),
      tasksTable(tasks, true),
      h("h2", {}, "Versions"),
      table(
        ["version", "recorded", ""],
        versions.map((v) =>
          row(
            h("span", { class: "mono" }, v.spec.version),
            age(v.metadata.creationTimestamp) + " ago",
            v.spec.version === current
              ? h("span", { class: "badge good" }, "running")
              : h("button", { type: "button", onclick: () => rollback(app, v) }, `Roll back to ${v.spec.version}`),
          ),
        ),
      ),
      h("h2", {}, "Events"),
      eventsTable(eventsAbout("App", namespace, name)),
    );
  });
}

async function rollback(app, version) {
  const { namespace, name } = app.metadata;
  if (!confirm(`Roll ${namespace}/${name} back to version ${version.spec.version}? Its instances roll over to that version.`)) return;
  await act(`roll back ${name} to ${version.spec.version}`, async () => {
    const fresh = await request(path("apps", namespace, name));
    const spec = structuredClone(version.spec.template);
    spec.instances = fresh.spec.instances;
    fresh.spec = spec;
    await request(path("apps", namespace, name) + `?fieldManager=${MANAGER}`, { method: "PUT", body: fresh });
  });
}

// ---------- cronjobs ----------

function jobRow(job) {
  const s = job.status || {};
  const spec = job.spec || {};
  return h(
    "div",
    { class: "list-row jobs" },
    h("span", { class: "name" }, link(`#/cronjobs/${job.metadata.namespace}/${job.metadata.name}`, job.metadata.name), h("small", {}, job.metadata.namespace)),
    h("span", {}, spec.schedule ? [scheduleInWords(spec.schedule, { short: true }), h("small", { class: "mono" }, spec.schedule)] : `after ${(spec.parents || []).join(", ")}`),
    h("span", {}, s.nextScheduleTime ? localTime(s.nextScheduleTime) : spec.disabled ? "disabled" : ""),
    h("span", {}, s.lastSuccess ? `ok ${age(s.lastSuccess)} ago` : "", s.lastError ? h("small", { class: "bad" }, `error ${age(s.lastError)} ago`) : null),
    h("span", {}, `${s.successCount || 0} ok · ${s.errorCount || 0} failed · ${s.missedRuns || 0} missed`),
  );
}

function jobsPage() {
  return listPage({
    kind: "cronjobs",
    title: "CronJobs",
    rowHeight: 56,
    renderItem: jobRow,
    rowClass: "jobs",
    heads: ["name", "schedule", "next run", "last", "counters"],
    empty: "No cronjobs yet.",
  });
}

/** The namespace's jobs drawn in layers, parents left of children, each colored by its last result. */
export function graph(jobs) {
  const names = new Map(jobs.map((j) => [j.metadata.name, j]));
  const depth = new Map();
  const depthOf = (name, seen = new Set()) => {
    if (depth.has(name)) return depth.get(name);
    if (seen.has(name)) return 0; // a cycle: admission refuses them, but draw what is there
    seen.add(name);
    const parents = (names.get(name)?.spec?.parents || []).filter((p) => names.has(p));
    const d = parents.length ? 1 + Math.max(...parents.map((p) => depthOf(p, seen))) : 0;
    depth.set(name, d);
    return d;
  };
  jobs.forEach((j) => depthOf(j.metadata.name));
  const layers = [];
  for (const j of jobs) (layers[depth.get(j.metadata.name)] ||= []).push(j.metadata.name);
  const W = 170, H = 56, GX = 60, GY = 20;
  const position = new Map();
  layers.forEach((layer, x) => layer.sort().forEach((name, y) => position.set(name, [x * (W + GX) + 10, y * (H + GY) + 10])));
  const width = layers.length * (W + GX) + 20;
  const height = Math.max(...layers.map((l) => l.length), 1) * (H + GY) + 20;
  const result = (job) => {
    const s = job.status || {};
    if (!s.lastSuccess && !s.lastError) return "none";
    return Date.parse(s.lastError || 0) > Date.parse(s.lastSuccess || 0) ? "bad" : "good";
  };
  const edges = [];
  for (const job of jobs) {
    for (const parent of job.spec?.parents || []) {
      if (!position.has(parent)) continue;
      const [x1, y1] = position.get(parent);
      const [x2, y2] = position.get(job.metadata.name);
      edges.push(svg("line", { x1: x1 + W, y1: y1 + H / 2, x2, y2: y2 + H / 2, class: "edge", "marker-end": "url(#arrow)" }));
    }
  }
  const nodes = jobs.map((job) => {
    const [x, y] = position.get(job.metadata.name);
    return svg("g", { class: `node ${result(job)}`, transform: `translate(${x},${y})` },
      svg("title", {}, `${job.metadata.name}: ${result(job) === "none" ? "no run yet" : result(job) === "good" ? "last run succeeded" : "last run failed"}`),
      svg("rect", { width: W, height: H, rx: 8 }),
      svg("text", { x: 10, y: 22 }, job.metadata.name),
      svg("text", { x: 10, y: 42, class: "small" }, job.spec?.schedule ? scheduleInWords(job.spec.schedule, { short: true }) : "after its parents"));
  });
  return svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": "the dependency graph of the namespace's jobs" },
    svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 8, markerHeight: 8, orient: "auto" }, svg("path", { d: "M0,0 L10,5 L0,10 z" }))),
    edges, nodes);
}

function jobPage(namespace, name) {
  const data = h("div");
  const runNow = h("button", {
    type: "button",
    id: "run-now",
    onclick: () =>
      act(`run ${name} now`, async () => {
        const id = `ui-${Date.now().toString(36)}`;
        await request(path("cronjobs", namespace, name, "trigger"), { method: "POST", body: { id } });
      }),
  }, "Run now");
  return live(["cronjobs", "tasks", "events"], (target) => {
    if (!target.contains(data)) target.replaceChildren(h("h1", {}, `CronJob ${namespace}/${name}`), h("section", { class: "controls" }, runNow, h("small", {}, " one run now, whatever the schedule (the trigger subresource)")), data);
    const job = collection("cronjobs").get(namespace, name);
    if (!job) {
      data.replaceChildren(h("p", { class: "none" }, "No such cronjob (or it was deleted)."));
      return;
    }
    const s = job.status || {};
    const spec = job.spec;
    const runs = s.runs || [];
    const longest = Math.max(1, ...runs.map((r) => (Date.parse(r.finishedAt || 0) - Date.parse(r.createdAt || 0)) / 1000));
    const jobs = collection("cronjobs").items().filter((j) => j.metadata.namespace === namespace);
    const tasks = collection("tasks").items().filter((t) => t.metadata.namespace === namespace && t.metadata.labels?.["agora.dev/cronjob"] === name);
    data.replaceChildren(
      h("dl", { class: "facts" },
        h("dt", {}, "schedule"), h("dd", {}, spec.schedule ? `${scheduleInWords(spec.schedule)} (${spec.schedule}${spec.scheduleTimeZone ? ", " + spec.scheduleTimeZone : ""})` : `after ${(spec.parents || []).join(", ")}`),
        h("dt", {}, "next run"), h("dd", {}, s.nextScheduleTime ? localTime(s.nextScheduleTime) : spec.disabled ? "disabled (a trigger still runs)" : "—"),
        h("dt", {}, "command"), h("dd", { class: "mono" }, spec.command || (spec.args || []).join(" ")),
        h("dt", {}, "runs"), h("dd", { "data-testid": "job-counters" }, `${s.successCount || 0} succeeded, ${s.errorCount || 0} failed, ${s.missedRuns || 0} missed, ${s.skippedRuns || 0} skipped; active: ${(s.active || []).join(", ") || "none"}`),
      ),
      h("h2", {}, "Recent runs"),
      table(
        ["task", "instant", "lateness", "duration", "result", "attempt"],
        runs.map((r) => {
          const started = Date.parse(r.createdAt || 0);
          const seconds = ((Date.parse(r.finishedAt || 0) - started) / 1000) || 0;
          const late = r.instant ? ((started - Date.parse(r.instant)) / 1000).toFixed(1) + " s" : "manual";
          return row(
            link(`#/tasks/${namespace}/${r.task}`, r.task),
            r.instant ? localTime(r.instant) : `trigger ${r.trigger || ""}`,
            late,
            h("div", { class: "bar timeline" }, h("div", { class: `fill ${r.result === "Succeeded" ? "low" : "high"}`, style: `width:${((seconds / longest) * 100).toFixed(1)}%` }), h("span", {}, `${seconds.toFixed(1)} s`)),
            stateBadge(r.result),
            String(r.attempt ?? 0),
          );
        }),
      ),
      h("h2", {}, `Dependencies in ${namespace}`),
      h("div", { class: "graph" }, graph(jobs)),
      h("h2", {}, "Tasks"),
      tasksTable(tasks, false),
      h("h2", {}, "Events"),
      eventsTable(eventsAbout("CronJob", namespace, name)),
    );
  });
}

// ---------- tasks ----------

function taskPage(namespace, name) {
  const data = h("div");
  const output = h("pre", { class: "log", "aria-live": "polite", "aria-label": "log", tabindex: "0", id: "log" });
  const stream = h("select", { id: "log-stream" }, h("option", { value: "stdout" }, "stdout"), h("option", { value: "stderr" }, "stderr"));
  const follow = h("input", { type: "checkbox", id: "log-follow", checked: true });
  let reading = null;
  const read = () => {
    reading?.abort();
    reading = new AbortController();
    output.textContent = "";
    followLog(namespace, name, {
      stderr: stream.value === "stderr",
      follow: follow.checked,
      signal: reading.signal,
      write: (text) => {
        const atBottom = output.scrollTop + output.clientHeight >= output.scrollHeight - 4;
        output.append(text);
        if (atBottom) output.scrollTop = output.scrollHeight;
      },
    }).catch((e) => {
      if (e.name !== "AbortError") output.append(`\n[${e instanceof ApiError && e.code === 404 ? "no log yet" : e.message}]\n`);
    });
  };
  stream.addEventListener("change", read);
  follow.addEventListener("change", read);
  const logs = h("section", { class: "logs" },
    h("h2", {}, "Log"),
    h("div", { class: "inline" }, h("label", { for: "log-stream" }, "stream "), stream, h("label", { for: "log-follow" }, " follow "), follow),
    output);
  let started = false;
  const page = live(["tasks", "events"], (target) => {
    if (!target.contains(data)) target.replaceChildren(h("h1", {}, `Task ${namespace}/${name}`), data, logs);
    const task = collection("tasks").get(namespace, name);
    if (!task) {
      data.replaceChildren(h("p", { class: "none" }, "No such task (or it was deleted)."));
      return;
    }
    if (!started) {
      started = true;
      read();
    }
    const s = task.status || {};
    const owner = task.metadata.labels?.["agora.dev/app"]
      ? link(`#/apps/${namespace}/${task.metadata.labels["agora.dev/app"]}`, `app/${task.metadata.labels["agora.dev/app"]}`)
      : task.metadata.labels?.["agora.dev/cronjob"]
        ? link(`#/cronjobs/${namespace}/${task.metadata.labels["agora.dev/cronjob"]}`, `cronjob/${task.metadata.labels["agora.dev/cronjob"]}`)
        : task.spec.framework;
    const history = [
      ["created", task.metadata.creationTimestamp, "Staging"],
      ["started", s.startedAt, "Running"],
      ["finished", s.finishedAt, s.state],
    ].filter(([, t]) => t);
    data.replaceChildren(
      h("dl", { class: "facts" },
        h("dt", {}, "state"), h("dd", {}, stateBadge(s.state), s.reason ? ` ${s.reason}` : "", s.message ? ` — ${s.message}` : ""),
        h("dt", {}, "owner"), h("dd", {}, owner),
        h("dt", {}, "agent"), h("dd", {}, task.spec.agent),
        h("dt", {}, "ports"), h("dd", {}, portsOf(task)),
        h("dt", {}, "health"), h("dd", {}, s.healthy === undefined ? "not checked" : `${s.healthy ? "healthy" : "unhealthy"}${s.lastHealthCheck?.message ? " — " + s.lastHealthCheck.message : ""}`),
        h("dt", {}, "usage"), h("dd", {}, s.usage ? `${number(s.usage.cpuSeconds)} s CPU, ${number(s.usage.memoryBytes / 1048576)} MiB memory` : "—"),
        s.exitCode !== undefined ? [h("dt", {}, "exit code"), h("dd", {}, String(s.exitCode))] : null,
      ),
      h("h2", {}, "Status history"),
      table(["when", "what", "state"], history.map(([what, t, state]) => row(`${localTime(t)} (${age(t)} ago)`, what, stateBadge(state)))),
      h("h2", {}, "Conditions"),
      table(["type", "status", "reason", "message"], (s.conditions || []).map((c) => row(c.type, stateBadge(c.status), c.reason || "", c.message || ""))),
      h("h2", {}, "Events"),
      eventsTable(eventsAbout("Task", namespace, name)),
    );
  });
  return { stop: () => { reading?.abort(); page.stop(); } };
}

// ---------- start ----------

export function start() {
  setupToken();
  window.addEventListener("hashchange", route);
  document.getElementById("token-state").textContent = token() ? "token given for this tab" : "";
  route();
}
