/**
 * The status page's browser side: polls `GET /status` (same origin, with the
 * operator token from sessionStorage) and draws it into the server-rendered
 * document of ../status_page.tsx, whose ids and `data-*` hooks it fills.
 *
 * The server inlines this function's source into the page:
 * `(${statusClient})(settings)`. Deno hands TypeScript to V8 with the types
 * stripped, so `Function.prototype.toString` gives plain JavaScript — no build
 * step. That only works while the function is self-contained: it may use
 * browser globals and its parameter, and types from anywhere (they are erased),
 * but no value from an import or from this module's top level — those would be
 * undefined in the browser. The browser tests in tests/status_page_test.ts run
 * it for real.
 *
 * Every string from /status reaches the DOM through `textContent` or
 * `setAttribute` (never innerHTML), so SKUs with quotes, `<` or backslashes show
 * as typed. Everything read from /status is `unknown` and read defensively: an
 * older or newer service may answer with fields missing or shaped otherwise.
 */
import type { ChannelName } from "../../model/channel_name.ts";
import type {
  Browser,
  Element,
  HTMLDetailsElement,
  HTMLElement,
  HTMLInputElement,
  Node,
  SVGElement,
} from "./dom.ts";

/** Values the server hands the page's script (inlined as JSON). */
export interface StatusClientSettings {
  /** The sessionStorage key the operator token is kept under (this tab only). */
  tokenKey: string;
  /** How each channel is named on the page; a key the page does not know shows as sent. */
  channelNames: Readonly<Record<ChannelName, string>>;
}

/** A parsed JSON object from /status (anything else reads as `{}`). */
type Fields = Record<string, unknown>;
/** Attributes for {@link h}/{@link svg}: null, undefined and false are left off; `text` sets textContent. */
type Attrs = Record<string, string | number | boolean | null | undefined>;
/** Children for {@link h}/{@link svg}: null, undefined and false are skipped, arrays flattened. */
type Child = Node | string | number | null | undefined | false | Child[];
type Health = "ok" | "down" | "unknown";
type BannerKind = "error" | "auth";
/** One minute of a channel's applied-changes series (start of the minute, epoch ms). */
interface MinuteCount {
  minute: number;
  count: number;
}
interface PollState {
  /** Successful renders (`body[data-updates]`). */
  updates: number;
  /** When the last successful render happened (epoch ms). */
  lastOk: number | null;
  /** The last poll failed (stale data, or nothing shown yet). */
  failing: boolean;
  timer: ReturnType<typeof setTimeout> | undefined;
  /** The poll under way; a newer poll aborts and supersedes it. */
  inflight: AbortController | null;
  /** What the failures table last showed, so an unchanged list keeps selections and open details. */
  failuresKey: string | null;
  /** The token field was focused once after a 401 (never again: it would steal focus every poll). */
  focusedToken: boolean;
}

/** The page's script (see the module comment: self-contained), called once when the page loads. */
export function statusClient(settings: StatusClientSettings): void {
  // The page inlines this into a classic script, which is not strict by default.
  "use strict";
  // The DOM's globals, typed through ./dom.ts (Deno's own types have no document).
  const { document, Node, isSecureContext, navigator } = globalThis as Browser;
  const SVGNS = "http://www.w3.org/2000/svg";
  const MINUTE = 60000;
  const params = new URLSearchParams(location.search);
  // `?refresh=<ms>`: the poll interval (default 5 s, clamped to 100 ms … 1 h).
  const refreshMs = Math.min(3600000, Math.max(100, Number(params.get("refresh")) || 5000));
  const statusUrl = new URL("status", location.href).href;
  const replayUrl = new URL("dlq/replay", location.href).href;

  const state: PollState = {
    updates: 0,
    lastOk: null,
    failing: false,
    timer: undefined,
    inflight: null,
    failuresKey: null,
    focusedToken: false,
  };

  // --- DOM helpers -----------------------------------------------------------------
  function byId(id: string): HTMLElement {
    const el = document.getElementById(id);
    if (!el) throw new Error(`the page has no #${id}`);
    return el;
  }
  function setAttrs(el: Element, attrs: Attrs | null): void {
    for (const [k, v] of Object.entries(attrs ?? {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") el.textContent = String(v);
      else el.setAttribute(k, String(v));
    }
  }
  function append(el: Element, children: Child[]): Element {
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      if (Array.isArray(c)) append(el, c);
      else el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }
  // Replaces an element's children (skipping null/false, unlike replaceChildren, which prints "null").
  function fill(el: Element, ...children: Child[]): Element {
    el.replaceChildren();
    return append(el, children);
  }
  function h(tag: string, attrs: Attrs | null, ...children: Child[]): HTMLElement {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }
  function svg(tag: string, attrs: Attrs | null, ...children: Child[]): SVGElement {
    const el = document.createElementNS(SVGNS, tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  // --- reading /status ------------------------------------------------------------------
  function obj(v: unknown): Fields {
    return v !== null && typeof v === "object" && !Array.isArray(v) ? v as Fields : {};
  }
  function num(v: unknown): number | null {
    return typeof v === "number" && Number.isFinite(v) ? v : null;
  }
  function text(v: unknown): string {
    if (v === null || v === undefined) return "";
    return typeof v === "string" ? v : typeof v === "object" ? JSON.stringify(v) : String(v);
  }
  const intFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  function fmtInt(v: unknown): string {
    const n = num(v);
    return n === null ? "—" : intFmt.format(n);
  }
  function parseTime(v: unknown): number | null {
    if (typeof v !== "string" && typeof v !== "number") return null;
    const t = new Date(v).getTime();
    return Number.isFinite(t) ? t : null;
  }

  // --- words and numbers -----------------------------------------------------------------
  function pad2(n: number): string {
    return (n < 10 ? "0" : "") + n;
  }
  function clock(ms: number): string {
    const d = new Date(ms);
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  }
  function stamp(ms: number, nowMs: number): string {
    const d = new Date(ms);
    if (Math.abs(nowMs - ms) < 20 * 3600 * 1000) return clock(ms);
    return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${clock(ms)}`;
  }
  function human(seconds: unknown): string {
    const n = num(seconds);
    if (n === null) return "—";
    const sec = Math.max(0, n);
    if (sec < 1) return "<1 s";
    if (sec < 60) return `${Math.floor(sec)} s`;
    if (sec < 3600) return `${Math.floor(sec / 60)} min`;
    if (sec < 86400) {
      const m = Math.floor((sec % 3600) / 60);
      return `${Math.floor(sec / 3600)} h${m ? ` ${m} min` : ""}`;
    }
    const hr = Math.floor((sec % 86400) / 3600);
    return `${Math.floor(sec / 86400)} d${hr ? ` ${hr} h` : ""}`;
  }
  function every(): string {
    return refreshMs >= 1000 ? `${Math.round(refreshMs / 1000)} s` : `${refreshMs} ms`;
  }
  function channelName(key: string): string {
    const names: Readonly<Record<string, string>> = settings.channelNames;
    return Object.hasOwn(names, key) ? names[key] : key;
  }
  function healthOf(c: Fields): Health {
    return c.healthy === true ? "ok" : c.healthy === false ? "down" : "unknown";
  }
  function healthBadge(health: Health): string {
    return `badge ${health === "ok" ? "ok" : health === "down" ? "down" : "warn"}`;
  }
  function healthWord(health: Health): string {
    return health === "ok" ? "healthy" : health === "down" ? "down" : "unknown";
  }
  // Single-quotes a shell word unless it is plainly safe.
  function shq(s: string): string {
    return /^[A-Za-z0-9._:\/@%+=,-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`;
  }
  function replayCommand(id: string): string {
    return `deno task dlq -- replay --event-id ${shq(id)}`;
  }
  function replayCurl(id: string): string {
    return `curl -X POST -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' ` +
      `${shq(replayUrl)} -d ${shq(JSON.stringify({ event_ids: [id] }))}`;
  }

  // --- token -------------------------------------------------------------------------
  function getToken(): string {
    try {
      return sessionStorage.getItem(settings.tokenKey) || "";
    } catch {
      return "";
    }
  }
  function setToken(v: string): void {
    try {
      if (v) sessionStorage.setItem(settings.tokenKey, v);
      else sessionStorage.removeItem(settings.tokenKey);
    } catch {
      // storage disabled: the token lives only in the field
    }
    showTokenState();
  }
  function showTokenState(): void {
    byId("token-state").textContent = getToken() ? "A token is set for this tab." : "No token set.";
  }

  // --- status line / banner ------------------------------------------------------------
  function setBanner(kind: BannerKind | null, message = ""): void {
    const b = byId("banner");
    if (!kind) {
      b.hidden = true;
      b.removeAttribute("data-kind");
      b.textContent = "";
      return;
    }
    b.hidden = false;
    b.setAttribute("data-kind", kind);
    if (b.textContent !== message) b.textContent = message;
  }
  function showLastUpdated(): void {
    const el = byId("last-updated");
    if (state.lastOk === null) {
      el.textContent = state.failing ? `Not loaded yet — retrying every ${every()}` : "Loading…";
      return;
    }
    const ago = human((Date.now() - state.lastOk) / 1000);
    el.textContent = `${state.failing ? "Stale — last updated " : "Last updated "}${clock(state.lastOk)}` +
      ` (${ago} ago) · every ${every()}`;
    el.setAttribute("data-time", new Date(state.lastOk).toISOString());
    el.setAttribute("data-stale", state.failing ? "true" : "false");
  }

  // --- rendering ------------------------------------------------------------------------
  function stat(label: string, value: string, field: string, level: string | null = null): HTMLElement {
    return h(
      "div",
      { class: "stat", "data-field": field, "data-level": level },
      h("span", { class: "value", text: value }),
      h("span", { class: "label", text: label }),
    );
  }

  function renderHeader(data: Fields): void {
    const mode = text(data.mode);
    const m = byId("mode");
    m.hidden = !mode;
    m.textContent = mode;
    m.className = `badge ${mode === "live" ? "ok" : "warn"}`;
    m.title = mode === "sandbox" ? "Syncing to the built-in sandboxes: no real store is touched" : "";
    byId("service-version").textContent = data.version !== undefined ? `service ${text(data.version)}` : "";
  }

  function renderOverall(channels: Record<string, Fields>): void {
    const names = Object.keys(channels);
    const down = names.filter((n) => healthOf(channels[n]) === "down");
    const unknown = names.filter((n) => healthOf(channels[n]) === "unknown");
    const health: Health = down.length ? "down" : unknown.length || !names.length ? "unknown" : "ok";
    const el = byId("overall");
    el.setAttribute("data-health", health);
    let headline: string;
    if (!names.length) headline = "No channels reported";
    else if (health === "ok") {
      headline = names.length === 1 ? "The channel is healthy" : `All ${names.length} channels healthy`;
    } else if (health === "down") {
      headline = `${down.length} of ${names.length} channel${names.length === 1 ? "" : "s"} not healthy`;
    } else headline = `Health unknown for ${unknown.map(channelName).join(", ")}`;
    const list = down.map((n) => {
      const detail = text(channels[n].detail);
      return h(
        "li",
        { "data-channel": n },
        h("strong", { text: channelName(n) }),
        detail ? `: ${detail}` : "",
      );
    });
    fill(
      el,
      h("span", { class: healthBadge(health), text: healthWord(health) }),
      h("strong", { text: headline }),
      list.length ? h("ul", null, list) : null,
    );
    document.title = `${health === "down" ? "DOWN · " : ""}marketplace-sync status`;
  }

  function renderQueue(data: Fields): void {
    const q = obj(data.queue);
    const depth = num(q.depth), consumers = num(q.consumers), dlq = num(q.dead_letters);
    const failed = num(data.failed_total);
    fill(
      byId("queue"),
      h("h2", { text: "Queue" }),
      q.name !== undefined ? h("p", { class: "qname" }, h("code", { text: text(q.name) })) : null,
      h(
        "div",
        { class: "stats" },
        stat("messages waiting", fmtInt(depth), "depth", (depth ?? 0) > 0 ? "warn" : null),
        stat("consumers", fmtInt(consumers), "consumers", consumers === 0 ? "bad" : null),
        stat("dead letters", fmtInt(dlq), "dead-letters", (dlq ?? 0) > 0 ? "bad" : null),
        stat("failed changes", fmtInt(failed), "failed-total", (failed ?? 0) > 0 ? "bad" : null),
      ),
    );
  }

  // 60 one-minute buckets ending at the server's current minute; missing minutes are 0.
  function minuteSeries(points: unknown, nowMs: number): MinuteCount[] {
    const counts = new Map<number, number>();
    let latest: number | null = null;
    for (const point of Array.isArray(points) ? points : []) {
      const p = obj(point);
      const t = parseTime(p.minute), c = num(p.count);
      if (t === null || c === null) continue;
      const m = Math.floor(t / MINUTE) * MINUTE;
      counts.set(m, (counts.get(m) || 0) + c);
      if (latest === null || m > latest) latest = m;
    }
    let end = Math.floor(nowMs / MINUTE) * MINUTE;
    if (latest !== null && latest > end) end = latest;
    const out: MinuteCount[] = [];
    for (let i = 59; i >= 0; i--) {
      const minute = end - i * MINUTE;
      out.push({ minute, count: counts.get(minute) || 0 });
    }
    return out;
  }

  function sparkline(name: string, series: MinuteCount[]): SVGElement {
    const W = 120, H = 32, step = W / (series.length - 1);
    let total = 0, max = 0;
    for (const p of series) {
      total += p.count;
      if (p.count > max) max = p.count;
    }
    const scale = max > 0 ? (H - 4) / max : 0;
    const line = series
      .map((p, i) =>
        `${Math.round(i * step * 100) / 100},${Math.round((H - 2 - p.count * scale) * 100) / 100}`
      )
      .join(" ");
    const last = series[series.length - 1].count;
    const label = `${channelName(name)}: ${total} change${total === 1 ? "" : "s"} applied in the last 60 ` +
      `minutes; peak ${max} per minute; ${last} in the latest minute`;
    const hits = series.map((p, i) =>
      svg(
        "rect",
        { class: "hit", x: Math.max(0, i * step - step / 2), y: 0, width: step, height: H },
        svg("title", { text: `${clock(p.minute).slice(0, 5)} — ${p.count} applied` }),
      )
    );
    return svg(
      "svg",
      {
        class: "sparkline",
        viewBox: `0 0 ${W} ${H}`,
        preserveAspectRatio: "none",
        role: "img",
        "aria-label": label,
        "data-points": series.length,
        "data-total": total,
      },
      svg("title", { text: label }),
      svg("path", { class: "area", d: `M0,${H} L${line.replace(/ /g, " L")} L${W},${H} Z` }),
      svg("polyline", { class: "line", points: line }),
      svg("g", { "aria-hidden": "true" }, hits),
    );
  }

  function budgetCell(budget: unknown): HTMLElement {
    const b = obj(budget);
    const level = num(b.level), max = num(b.max);
    if (level === null && max === null) return h("dd", { "data-field": "budget", text: "—" });
    const pct = level !== null && max ? Math.max(0, Math.min(100, (level / max) * 100)) : null;
    const used = h("span", null);
    // Set through the CSSOM: the CSP refuses style attributes in the markup, not this.
    if (pct !== null) used.style.width = `${pct.toFixed(1)}%`;
    return h(
      "dd",
      { "data-field": "budget" },
      `${fmtInt(level)} / ${fmtInt(max)}${pct !== null ? ` (${Math.round(pct)}%)` : ""}`,
      pct === null ? null : h(
        "div",
        {
          class: "bar",
          role: "meter",
          "aria-label": "API budget left",
          "aria-valuemin": 0,
          "aria-valuemax": max,
          "aria-valuenow": level,
          "data-level": pct < 10 ? "bad" : pct < 25 ? "warn" : null,
        },
        used,
      ),
    );
  }

  function tokenCell(v: unknown, nowMs: number): HTMLElement {
    const t = parseTime(v);
    if (t === null) return h("dd", { "data-field": "token-expiry", text: text(v) });
    const left = (t - nowMs) / 1000;
    const words = left <= 0 ? `expired ${human(-left)} ago` : `expires in ${human(left)}`;
    return h(
      "dd",
      { "data-field": "token-expiry", title: new Date(t).toISOString() },
      h("span", { class: `badge ${left <= 0 ? "down" : left < 3600 ? "warn" : ""}`, text: words }),
    );
  }

  function renderChannel(name: string, c: Fields, nowMs: number): HTMLElement {
    const health = healthOf(c);
    const backlog = obj(c.backlog);
    const series = minuteSeries(c.applied_per_minute, nowMs);
    const total = series.reduce((s, p) => s + p.count, 0);
    const detail = text(c.detail);
    const kv: HTMLElement[] = [
      h("dt", { text: "Oldest pending" }),
      h("dd", {
        "data-field": "oldest-pending",
        text: c.oldest_pending_seconds === null ? "nothing pending" : human(c.oldest_pending_seconds),
      }),
      h("dt", { text: "API budget" }),
      budgetCell(c.budget),
    ];
    if (c.token_expires_at !== null && c.token_expires_at !== undefined) {
      kv.push(h("dt", { text: "Token" }), tokenCell(c.token_expires_at, nowMs));
    }
    const pending = num(backlog.pending), failed = num(backlog.failed);
    return h(
      "article",
      { class: "card", "data-channel": name, "data-health": health },
      h(
        "div",
        { class: "card-head" },
        h("h2", { text: channelName(name) }),
        h("span", { class: healthBadge(health), "data-field": "health", text: healthWord(health) }),
      ),
      detail ? h("p", { class: "detail", "data-field": "detail", text: detail }) : null,
      h(
        "div",
        { class: "stats" },
        stat("pending", fmtInt(pending), "pending", (pending ?? 0) > 0 ? "warn" : null),
        stat("sending", fmtInt(backlog.sending), "sending"),
        stat("failed", fmtInt(failed), "failed", (failed ?? 0) > 0 ? "bad" : null),
      ),
      h("dl", { class: "kv" }, kv),
      h(
        "div",
        { class: "spark" },
        h(
          "div",
          { class: "spark-head" },
          h("span", { text: "Applied per minute, last hour" }),
          h("strong", { "data-field": "applied-total", text: `${intFmt.format(total)} applied` }),
        ),
        sparkline(name, series),
        h(
          "div",
          { class: "spark-axis", "aria-hidden": "true" },
          h("span", { text: clock(series[0].minute).slice(0, 5) }),
          h("span", { text: clock(series[series.length - 1].minute).slice(0, 5) }),
        ),
      ),
    );
  }

  function renderChannels(channels: Record<string, Fields>, nowMs: number): void {
    const names = Object.keys(channels);
    fill(
      byId("channels"),
      names.length
        ? names.map((n) => renderChannel(n, channels[n], nowMs))
        : [h("p", { class: "panel muted", text: "No channel is enabled." })],
    );
  }

  // The top-level list when the service sends one, else each channel's; newest first.
  function failuresOf(data: Fields, channels: Record<string, Fields>): Fields[] {
    let list: Fields[];
    if (Array.isArray(data.last_errors)) {
      list = data.last_errors.map(obj);
    } else {
      list = [];
      for (const n of Object.keys(channels)) {
        const errors = channels[n].last_errors;
        for (const e of Array.isArray(errors) ? errors : []) list.push({ channel: n, ...obj(e) });
      }
    }
    return list
      .map((e, i) => ({ e, i, t: parseTime(e.at) }))
      .sort((a, b) => (b.t === null ? -Infinity : b.t) - (a.t === null ? -Infinity : a.t) || a.i - b.i)
      .map((x) => x.e);
  }

  function copyButton(value: string, what: string): HTMLElement {
    const b = h("button", { type: "button", class: "copy", "aria-label": `Copy the ${what}`, text: "Copy" });
    b.addEventListener("click", () => {
      const done = (ok: boolean) => {
        b.textContent = ok ? "Copied" : "Select & copy";
        setTimeout(() => {
          b.textContent = "Copy";
        }, 1500);
      };
      // Without the Clipboard API (plain http on another host): select the command and try execCommand.
      const fallback = () => {
        const code = b.parentElement?.querySelector("code");
        const sel = document.getSelection();
        if (!code || !sel) return done(false);
        const range = document.createRange();
        range.selectNodeContents(code);
        sel.removeAllRanges();
        sel.addRange(range);
        let ok = false;
        try {
          ok = document.execCommand("copy");
        } catch {
          ok = false;
        }
        done(ok);
      };
      if (navigator.clipboard && isSecureContext) {
        navigator.clipboard.writeText(value).then(() => done(true), fallback);
      } else fallback();
    });
    return b;
  }

  function replayBox(id: string): HTMLElement {
    const cmd = replayCommand(id);
    const curl = replayCurl(id);
    return h(
      "div",
      { class: "replay-box" },
      h(
        "div",
        { class: "cmd" },
        h("code", { class: "replay-cmd", text: cmd }),
        copyButton(cmd, "replay command"),
      ),
      h(
        "details",
        null,
        h("summary", { text: "or over HTTP (curl)" }),
        h(
          "div",
          { class: "cmd" },
          h("code", { class: "replay-curl", text: curl }),
          copyButton(curl, "curl command"),
        ),
      ),
    );
  }

  function failureRow(e: Fields, nowMs: number): HTMLElement {
    const id = text(e.event_id);
    const t = parseTime(e.at);
    const reason = text(e.reason);
    return h(
      "tr",
      { "data-reason": reason, "data-channel": text(e.channel), "data-event-id": id },
      h("td", {
        class: "when",
        "data-label": "Time",
        title: t === null ? null : new Date(t).toISOString(),
        text: t === null ? text(e.at) : stamp(t, nowMs),
      }),
      h("td", { class: "channel", "data-label": "Channel", text: channelName(text(e.channel)) }),
      h(
        "td",
        { class: "sku", "data-label": "SKU" },
        e.sku !== undefined && e.sku !== null ? h("code", { text: text(e.sku) }) : "—",
      ),
      h(
        "td",
        { class: "store", "data-label": "Store" },
        text(e.tienda_id) ? h("code", { text: text(e.tienda_id) }) : "—",
      ),
      h(
        "td",
        { class: "reason", "data-label": "Reason" },
        reason ? h("code", { class: "reason", text: reason }) : "—",
      ),
      h("td", { class: "error", "data-label": "Error", text: text(e.error) }),
      h(
        "td",
        { class: "replay", "data-label": "Replay" },
        id ? replayBox(id) : h("span", { class: "muted", text: "no event id" }),
      ),
    );
  }

  function renderFailures(data: Fields, channels: Record<string, Fields>, nowMs: number): void {
    const list = failuresOf(data, channels);
    // The hour is in the key so "HH:MM:SS" stamps turn into dates once they are a day old.
    const key = `${JSON.stringify(list)}|${Math.floor(nowMs / 3600000)}`;
    if (key === state.failuresKey) return; // unchanged: keep selections and open details
    state.failuresKey = key;
    const rows = list.length
      ? list.map((e) => failureRow(e, nowMs))
      : [h("tr", { class: "empty" }, h("td", { colspan: 7, text: "No recent failures." }))];
    fill(byId("failures-body"), rows);
    byId("failures-count").textContent = list.length
      ? `${list.length} recent failure${list.length === 1 ? "" : "s"}. ` +
        "Fix the cause (for sku_not_found: give the listing that SKU), then replay the event."
      : "Nothing failed recently.";
  }

  // Marketplace orders per origin: received in the last hour, their lag to the ledger, the POS's backlog.
  function renderOrders(data: Fields): void {
    const orders = obj(data.orders);
    const origins = obj(orders.by_origin);
    const names = Object.keys(origins);
    const unpublished = num(orders.pos_outbox_unpublished);
    const seconds = (v: unknown) => num(v) === null ? "—" : `${num(v)} s`;
    const rows = names.map((name) => {
      const o = obj(origins[name]);
      const lag = obj(o.lag_seconds);
      const pos = obj(o.not_recorded_by_pos);
      const quarantined = num(o.deliveries_quarantined) ?? 0;
      return h(
        "tr",
        { "data-origin": name },
        h("th", { scope: "row", text: name }),
        h("td", { text: fmtInt(num(o.received_last_hour)) }),
        h("td", { text: `${seconds(lag.p50)} / ${seconds(lag.p95)} / ${seconds(lag.max)}` }),
        h("td", { text: `${fmtInt(num(pos.orders))} (${fmtInt(num(pos.units))} units)` }),
        h("td", { text: fmtInt(quarantined), class: quarantined > 0 ? "bad" : null }),
      );
    });
    fill(
      byId("orders"),
      h("h2", { text: "Marketplace orders" }),
      names.length === 0 ? h("p", { class: "muted", text: "No marketplace order yet." }) : h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          null,
          h(
            "thead",
            null,
            h(
              "tr",
              null,
              h("th", { scope: "col", text: "From" }),
              h("th", { scope: "col", text: "Orders (last hour)" }),
              h("th", { scope: "col", text: "Lag p50 / p95 / max" }),
              h("th", { scope: "col", text: "Not recorded by the POS" }),
              h("th", { scope: "col", text: "Quarantined" }),
            ),
          ),
          h("tbody", null, rows),
        ),
      ),
      h("p", {
        class: (unpublished ?? 0) > 0 ? "warn" : "muted",
        text: `POS messages waiting in the outbox: ${fmtInt(unpublished)}`,
      }),
    );
  }

  function render(data: Fields): void {
    const nowMs = parseTime(data.time) ?? Date.now();
    const raw = obj(data.channels);
    const channels: Record<string, Fields> = {};
    for (const n of Object.keys(raw)) channels[n] = obj(raw[n]);
    renderHeader(data);
    renderOverall(channels);
    renderQueue(data);
    renderChannels(channels, nowMs);
    renderOrders(data);
    renderFailures(data, channels, nowMs);
    byId("content").hidden = false;
  }

  // --- polling ----------------------------------------------------------------------------
  function setState(s: "ok" | "error" | "auth"): void {
    document.body.setAttribute("data-state", s);
  }

  async function readBody(res: Response): Promise<unknown> {
    const body = await res.text();
    try {
      return JSON.parse(body);
    } catch {
      return body;
    }
  }
  function messageOf(body: unknown): string {
    if (body && typeof body === "object") {
      const b = body as Fields;
      return text(b.message || b.error);
    }
    return typeof body === "string" ? body.slice(0, 300) : "";
  }
  function errorMessage(e: unknown): string {
    const message = e !== null && typeof e === "object" ? (e as Fields).message : undefined;
    return message ? String(message) : String(e);
  }

  function showUnauthorized(status: number, body: unknown, token: string): void {
    state.failing = true;
    setState("auth");
    setBanner(
      "auth",
      (messageOf(body) || `HTTP ${status}`) +
        (token ? " — the token was refused; enter another one below." : " — enter the operator token below."),
    );
    const auth = byId("auth") as HTMLDetailsElement;
    auth.open = true;
    auth.setAttribute("data-attention", "true");
    if (!state.focusedToken) {
      state.focusedToken = true;
      byId("token").focus();
    }
  }

  function showRendered(): void {
    state.updates++;
    state.lastOk = Date.now();
    state.failing = false;
    document.body.setAttribute("data-updates", String(state.updates));
    byId("auth").setAttribute("data-attention", "false");
    setBanner(null);
    setState("ok");
  }

  async function poll(): Promise<void> {
    clearTimeout(state.timer);
    if (state.inflight) state.inflight.abort();
    const ctl = new AbortController();
    state.inflight = ctl;
    const timeoutMs = Math.max(refreshMs, 10000);
    const timeout = setTimeout(() => ctl.abort(), timeoutMs);
    try {
      const headers: Record<string, string> = { Accept: "application/json" };
      const token = getToken();
      if (token) headers.Authorization = `Bearer ${token}`;
      const res = await fetch(statusUrl, {
        headers,
        cache: "no-store",
        credentials: "same-origin",
        signal: ctl.signal,
      });
      const body = await readBody(res);
      if (state.inflight !== ctl) return;
      if (res.status === 401 || res.status === 403) {
        showUnauthorized(res.status, body, token);
      } else if (!res.ok) {
        throw new Error(`HTTP ${res.status}${messageOf(body) ? `: ${messageOf(body)}` : ""}`);
      } else if (!body || typeof body !== "object" || Array.isArray(body)) {
        throw new Error("the answer is not a JSON object");
      } else {
        render(body as Fields);
        showRendered();
      }
    } catch (e) {
      if (state.inflight !== ctl) return; // superseded by a newer poll
      state.failing = true;
      setState("error");
      const why = ctl.signal.aborted ? `no answer within ${Math.round(timeoutMs / 1000)} s` : errorMessage(e);
      setBanner(
        "error",
        `Could not load ${new URL(statusUrl).pathname}: ${why}. Retrying every ${every()}.`,
      );
    } finally {
      clearTimeout(timeout);
      if (state.inflight === ctl) {
        state.inflight = null;
        showLastUpdated();
        state.timer = setTimeout(poll, refreshMs);
      }
    }
  }

  // --- start -------------------------------------------------------------------------------
  const tokenField = byId("token") as HTMLInputElement;
  byId("token-form").addEventListener("submit", (ev: Event) => {
    ev.preventDefault();
    setToken(tokenField.value.trim());
    tokenField.value = "";
    poll();
  });
  byId("token-clear").addEventListener("click", () => {
    setToken("");
    tokenField.value = "";
    poll();
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && !state.inflight) poll();
  });
  setInterval(showLastUpdated, 1000);
  showTokenState();
  showLastUpdated();
  poll();
}
