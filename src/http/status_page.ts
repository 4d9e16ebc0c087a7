/**
 * The operator status page served at `GET /`: one self-contained HTML document
 * (inline CSS and JS, inline SVG, no external assets) that polls `GET /status`
 * (same origin) and draws it. The document itself holds no data, so it can be
 * served without authentication; the operator token typed into the page (kept
 * in sessionStorage, this tab only) is sent as `Authorization: Bearer …` on the
 * /status requests.
 *
 * Query parameters the page honours:
 * - `refresh=<ms>`: the poll interval (default 5000, clamped to 100 ms … 1 h).
 *
 * Stable hooks (for tests and scripts): `body[data-state=loading|ok|error|auth]`,
 * `body[data-updates]` (successful renders), `#banner[data-kind=error|auth]`,
 * `#auth[data-attention]` / `#token` / `#token-form`, `#last-updated[data-time][data-stale]`,
 * `#mode`, `#page-version`, `#service-version`, `#overall[data-health=ok|down|unknown]`,
 * `#queue [data-field=depth|consumers|dead-letters|failed-total] .value`,
 * `#channels [data-channel=NAME][data-health=ok|down|unknown]` with
 * `[data-field=health|detail|pending|sending|failed|oldest-pending|budget|token-expiry|applied-total]`
 * and `svg.sparkline[data-points][data-total]` (a `polyline` of 60 points),
 * `#failures tbody tr[data-reason][data-channel][data-event-id]` with cells
 * `td.when|channel|sku|store|reason|error|replay`, `code.replay-cmd`,
 * `code.replay-curl` and `button.copy`.
 *
 * Every string from /status reaches the DOM through `textContent` or
 * `setAttribute` (never innerHTML), so SKUs with quotes, `<`, or backslashes
 * show as typed. The page carries its own Content-Security-Policy (meta tag):
 * only this document's script and style (by hash) and same-origin fetches. A
 * CSP header added by the server must still allow them (or be left off for `/`).
 */
import { createHash } from "node:crypto";
import { VERSION } from "../version.ts";
import { STATUS_PAGE_STYLE as STYLE } from "./status_style.ts";

// Plain JS (no template literals: this file embeds it in one).
const SCRIPT = String.raw`
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";
  var TOKEN_KEY = "marketplace-sync.token";
  var MINUTE = 60000;
  var CHANNEL_NAMES = { shopify: "Shopify", mercadolibre: "MercadoLibre" };
  var params = new URLSearchParams(location.search);
  var refreshMs = Math.min(3600000, Math.max(100, Number(params.get("refresh")) || 5000));
  var statusUrl = new URL("status", location.href).href;
  var replayUrl = new URL("dlq/replay", location.href).href;

  var state = { updates: 0, lastOk: null, failing: false, timer: 0, inflight: null, failuresKey: null,
    focusedToken: false };

  function $(id) { return document.getElementById(id); }
  function setAttrs(el, attrs) {
    for (var k in attrs || {}) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") el.textContent = String(v);
      else el.setAttribute(k, String(v));
    }
  }
  function append(el, children) {
    for (var i = 0; i < children.length; i++) {
      var c = children[i];
      if (c === null || c === undefined || c === false) continue;
      if (Array.isArray(c)) append(el, c);
      else el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }
  // Replaces an element's children (skipping null/false, unlike replaceChildren, which prints "null").
  function fill(el) {
    el.replaceChildren();
    return append(el, Array.prototype.slice.call(arguments, 1));
  }
  function h(tag, attrs) {
    var el = document.createElement(tag);
    setAttrs(el, attrs);
    return append(el, Array.prototype.slice.call(arguments, 2));
  }
  function svg(tag, attrs) {
    var el = document.createElementNS(SVGNS, tag);
    setAttrs(el, attrs);
    return append(el, Array.prototype.slice.call(arguments, 2));
  }
  function obj(v) { return v !== null && typeof v === "object" && !Array.isArray(v) ? v : {}; }
  function num(v) { return typeof v === "number" && isFinite(v) ? v : null; }
  function text(v) {
    if (v === null || v === undefined) return "";
    return typeof v === "string" ? v : typeof v === "object" ? JSON.stringify(v) : String(v);
  }
  var intFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  function fmtInt(v) { return num(v) === null ? "—" : intFmt.format(v); }
  function parseTime(v) {
    if (typeof v !== "string" && typeof v !== "number") return null;
    var t = new Date(v).getTime();
    return isFinite(t) ? t : null;
  }
  function pad2(n) { return (n < 10 ? "0" : "") + n; }
  function clock(ms) {
    var d = new Date(ms);
    return pad2(d.getHours()) + ":" + pad2(d.getMinutes()) + ":" + pad2(d.getSeconds());
  }
  function stamp(ms, nowMs) {
    var d = new Date(ms);
    if (Math.abs(nowMs - ms) < 20 * 3600 * 1000) return clock(ms);
    return d.getFullYear() + "-" + pad2(d.getMonth() + 1) + "-" + pad2(d.getDate()) + " " + clock(ms);
  }
  function human(sec) {
    if (num(sec) === null) return "—";
    sec = Math.max(0, sec);
    if (sec < 1) return "<1 s";
    if (sec < 60) return Math.floor(sec) + " s";
    if (sec < 3600) return Math.floor(sec / 60) + " min";
    if (sec < 86400) {
      var m = Math.floor((sec % 3600) / 60);
      return Math.floor(sec / 3600) + " h" + (m ? " " + m + " min" : "");
    }
    var hr = Math.floor((sec % 86400) / 3600);
    return Math.floor(sec / 86400) + " d" + (hr ? " " + hr + " h" : "");
  }
  function channelName(key) { return CHANNEL_NAMES[key] || key; }
  function healthOf(c) { return c.healthy === true ? "ok" : c.healthy === false ? "down" : "unknown"; }
  // Single-quotes a shell word unless it is plainly safe.
  function shq(s) { return /^[A-Za-z0-9._:\/@%+=,-]+$/.test(s) ? s : "'" + s.replace(/'/g, "'\\''") + "'"; }
  function replayCommand(id) { return "deno task dlq -- replay --event-id " + shq(id); }
  function replayCurl(id) {
    return "curl -X POST -H \"Authorization: Bearer $ADMIN_TOKEN\" -H 'Content-Type: application/json' " +
      shq(replayUrl) + " -d " + shq(JSON.stringify({ event_ids: [id] }));
  }

  // --- token -------------------------------------------------------------------
  function getToken() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
  }
  function setToken(v) {
    try {
      if (v) sessionStorage.setItem(TOKEN_KEY, v); else sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* storage disabled: the token lives only in the field */ }
    showTokenState();
  }
  function showTokenState() {
    $("token-state").textContent = getToken() ? "A token is set for this tab." : "No token set.";
  }

  // --- status line / banner ------------------------------------------------------
  function setBanner(kind, message) {
    var b = $("banner");
    if (!kind) { b.hidden = true; b.removeAttribute("data-kind"); b.textContent = ""; return; }
    b.hidden = false;
    b.setAttribute("data-kind", kind);
    if (b.textContent !== message) b.textContent = message;
  }
  function showLastUpdated() {
    var el = $("last-updated");
    var every = refreshMs >= 1000 ? Math.round(refreshMs / 1000) + " s" : refreshMs + " ms";
    if (state.lastOk === null) {
      el.textContent = state.failing ? "Not loaded yet — retrying every " + every : "Loading…";
      return;
    }
    var ago = human((Date.now() - state.lastOk) / 1000);
    el.textContent = (state.failing ? "Stale — last updated " : "Last updated ") + clock(state.lastOk) +
      " (" + ago + " ago) · every " + every;
    el.setAttribute("data-time", new Date(state.lastOk).toISOString());
    el.setAttribute("data-stale", state.failing ? "true" : "false");
  }

  // --- rendering -------------------------------------------------------------------
  function stat(label, value, field, level) {
    return h("div", { class: "stat", "data-field": field, "data-level": level || null },
      h("span", { class: "value", text: value }), h("span", { class: "label", text: label }));
  }

  function renderHeader(data) {
    var mode = text(data.mode);
    var m = $("mode");
    m.hidden = !mode;
    m.textContent = mode;
    m.className = "badge " + (mode === "live" ? "ok" : "warn");
    m.title = mode === "sandbox" ? "Syncing to the built-in sandboxes: no real store is touched" : "";
    $("service-version").textContent = data.version !== undefined ? "service " + text(data.version) : "";
  }

  function renderOverall(channels) {
    var names = Object.keys(channels);
    var down = names.filter(function (n) { return healthOf(channels[n]) === "down"; });
    var unknown = names.filter(function (n) { return healthOf(channels[n]) === "unknown"; });
    var health = down.length ? "down" : unknown.length || !names.length ? "unknown" : "ok";
    var el = $("overall");
    el.setAttribute("data-health", health);
    var headline;
    if (!names.length) headline = "No channels reported";
    else if (health === "ok") {
      headline = names.length === 1 ? "The channel is healthy" : "All " + names.length + " channels healthy";
    } else if (health === "down") {
      headline = down.length + " of " + names.length + " channel" + (names.length === 1 ? "" : "s") +
        " not healthy";
    }
    else headline = "Health unknown for " + unknown.map(channelName).join(", ");
    var list = down.map(function (n) {
      var detail = text(channels[n].detail);
      return h("li", { "data-channel": n },
        h("strong", { text: channelName(n) }), detail ? ": " + detail : "");
    });
    fill(
      el,
      h("span", { class: "badge " + (health === "ok" ? "ok" : health === "down" ? "down" : "warn"),
        text: health === "ok" ? "healthy" : health === "down" ? "down" : "unknown" }),
      h("strong", { text: headline }),
      list.length ? h("ul", null, list) : null,
    );
    document.title = (health === "down" ? "DOWN · " : "") + "marketplace-sync status";
  }

  function renderQueue(data) {
    var q = obj(data.queue);
    var consumers = num(q.consumers), dlq = num(q.dead_letters), failed = num(data.failed_total);
    fill(
      $("queue"),
      h("h2", { text: "Queue" }),
      q.name !== undefined ? h("p", { class: "qname" }, h("code", { text: text(q.name) })) : null,
      h("div", { class: "stats" },
        stat("messages waiting", fmtInt(q.depth), "depth", num(q.depth) > 0 ? "warn" : null),
        stat("consumers", fmtInt(consumers), "consumers", consumers === 0 ? "bad" : null),
        stat("dead letters", fmtInt(dlq), "dead-letters", dlq > 0 ? "bad" : null),
        stat("failed changes", fmtInt(failed), "failed-total", failed > 0 ? "bad" : null)),
    );
  }

  // 60 one-minute buckets ending at the server's current minute; missing minutes are 0.
  function minuteSeries(points, nowMs) {
    var counts = new Map(), latest = null;
    (Array.isArray(points) ? points : []).forEach(function (p) {
      p = obj(p);
      var t = parseTime(p.minute), c = num(p.count);
      if (t === null || c === null) return;
      var m = Math.floor(t / MINUTE) * MINUTE;
      counts.set(m, (counts.get(m) || 0) + c);
      if (latest === null || m > latest) latest = m;
    });
    var end = Math.floor(nowMs / MINUTE) * MINUTE;
    if (latest !== null && latest > end) end = latest;
    var out = [];
    for (var i = 59; i >= 0; i--) {
      var minute = end - i * MINUTE;
      out.push({ minute: minute, count: counts.get(minute) || 0 });
    }
    return out;
  }

  function sparkline(name, series) {
    var W = 120, H = 32, step = W / (series.length - 1);
    var total = 0, max = 0;
    series.forEach(function (p) { total += p.count; if (p.count > max) max = p.count; });
    var scale = max > 0 ? (H - 4) / max : 0;
    var pts = series.map(function (p, i) {
      return [Math.round(i * step * 100) / 100, Math.round((H - 2 - p.count * scale) * 100) / 100];
    });
    var line = pts.map(function (p) { return p[0] + "," + p[1]; }).join(" ");
    var last = series[series.length - 1].count;
    var label = channelName(name) + ": " + total + " change" + (total === 1 ? "" : "s") +
      " applied in the last 60 minutes; peak " + max + " per minute; " + last + " in the latest minute";
    var hits = series.map(function (p, i) {
      return svg("rect", { class: "hit", x: Math.max(0, i * step - step / 2), y: 0, width: step, height: H },
        svg("title", { text: clock(p.minute).slice(0, 5) + " — " + p.count + " applied" }));
    });
    return svg("svg", { class: "sparkline", viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none",
      role: "img", "aria-label": label, "data-points": series.length, "data-total": total },
      svg("title", { text: label }),
      svg("path", { class: "area",
        d: "M0," + H + " L" + line.replace(/ /g, " L") + " L" + W + "," + H + " Z" }),
      svg("polyline", { class: "line", points: line }),
      svg("g", { "aria-hidden": "true" }, hits));
  }

  function budgetCell(b) {
    b = obj(b);
    var level = num(b.level), max = num(b.max);
    if (level === null && max === null) return h("dd", { "data-field": "budget", text: "—" });
    var pct = level !== null && max ? Math.max(0, Math.min(100, (level / max) * 100)) : null;
    var fill = h("span");
    if (pct !== null) fill.style.width = pct.toFixed(1) + "%";
    return h("dd", { "data-field": "budget" },
      fmtInt(level) + " / " + fmtInt(max) + (pct !== null ? " (" + Math.round(pct) + "%)" : ""),
      pct === null ? null : h("div", { class: "bar", role: "meter", "aria-label": "API budget left",
        "aria-valuemin": 0, "aria-valuemax": max, "aria-valuenow": level,
        "data-level": pct < 10 ? "bad" : pct < 25 ? "warn" : null }, fill));
  }

  function tokenCell(v, nowMs) {
    var t = parseTime(v);
    if (t === null) return h("dd", { "data-field": "token-expiry", text: text(v) });
    var left = (t - nowMs) / 1000;
    var words = left <= 0 ? "expired " + human(-left) + " ago" : "expires in " + human(left);
    return h("dd", { "data-field": "token-expiry", title: new Date(t).toISOString() },
      h("span", { class: "badge " + (left <= 0 ? "down" : left < 3600 ? "warn" : ""), text: words }));
  }

  function renderChannel(name, c, nowMs) {
    var health = healthOf(c);
    var backlog = obj(c.backlog);
    var series = minuteSeries(c.applied_per_minute, nowMs);
    var total = series.reduce(function (s, p) { return s + p.count; }, 0);
    var detail = text(c.detail);
    var kv = [
      h("dt", { text: "Oldest pending" }),
      h("dd", { "data-field": "oldest-pending",
        text: c.oldest_pending_seconds === null ? "nothing pending" : human(c.oldest_pending_seconds) }),
      h("dt", { text: "API budget" }), budgetCell(c.budget),
    ];
    if (c.token_expires_at !== null && c.token_expires_at !== undefined) {
      kv.push(h("dt", { text: "Token" }), tokenCell(c.token_expires_at, nowMs));
    }
    var pending = num(backlog.pending), failed = num(backlog.failed);
    return h("article", { class: "card", "data-channel": name, "data-health": health },
      h("div", { class: "card-head" },
        h("h2", { text: channelName(name) }),
        h("span", { class: "badge " + (health === "ok" ? "ok" : health === "down" ? "down" : "warn"),
          "data-field": "health",
          text: health === "ok" ? "healthy" : health === "down" ? "down" : "unknown" })),
      detail ? h("p", { class: "detail", "data-field": "detail", text: detail }) : null,
      h("div", { class: "stats" },
        stat("pending", fmtInt(pending), "pending", pending > 0 ? "warn" : null),
        stat("sending", fmtInt(backlog.sending), "sending"),
        stat("failed", fmtInt(failed), "failed", failed > 0 ? "bad" : null)),
      h("dl", { class: "kv" }, kv),
      h("div", { class: "spark" },
        h("div", { class: "spark-head" },
          h("span", { text: "Applied per minute, last hour" }),
          h("strong", { "data-field": "applied-total", text: intFmt.format(total) + " applied" })),
        sparkline(name, series),
        h("div", { class: "spark-axis", "aria-hidden": "true" },
          h("span", { text: clock(series[0].minute).slice(0, 5) }),
          h("span", { text: clock(series[series.length - 1].minute).slice(0, 5) }))),
    );
  }

  function renderChannels(channels, nowMs) {
    var names = Object.keys(channels);
    fill($("channels"), names.length
      ? names.map(function (n) { return renderChannel(n, channels[n], nowMs); })
      : [h("p", { class: "panel muted", text: "No channel is enabled." })]);
  }

  function failuresOf(data, channels) {
    var list;
    if (Array.isArray(data.last_errors)) {
      list = data.last_errors.map(obj);
    } else {
      list = [];
      Object.keys(channels).forEach(function (n) {
        (Array.isArray(channels[n].last_errors) ? channels[n].last_errors : []).forEach(function (e) {
          e = obj(e);
          list.push(Object.assign({ channel: n }, e));
        });
      });
    }
    return list
      .map(function (e, i) { return { e: e, i: i, t: parseTime(e.at) }; })
      .sort(function (a, b) {
        return (b.t === null ? -Infinity : b.t) - (a.t === null ? -Infinity : a.t) || a.i - b.i;
      })
      .map(function (x) { return x.e; });
  }

  function copyButton(value, what) {
    var b = h("button", { type: "button", class: "copy", "aria-label": "Copy the " + what, text: "Copy" });
    b.addEventListener("click", function () {
      var done = function (ok) {
        b.textContent = ok ? "Copied" : "Select & copy";
        setTimeout(function () { b.textContent = "Copy"; }, 1500);
      };
      var fallback = function () {
        var code = b.parentNode.querySelector("code");
        var range = document.createRange();
        range.selectNodeContents(code);
        var sel = getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
        var ok = false;
        try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
        done(ok);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(value).then(function () { done(true); }, fallback);
      } else fallback();
    });
    return b;
  }

  function renderFailures(data, channels, nowMs) {
    var list = failuresOf(data, channels);
    var key = JSON.stringify(list) + "|" + Math.floor(nowMs / 3600000);
    if (key === state.failuresKey) return; // unchanged: keep selections and open details
    state.failuresKey = key;
    var rows = list.map(function (e) {
      var id = text(e.event_id);
      var t = parseTime(e.at);
      var reason = text(e.reason);
      var cmd = id ? replayCommand(id) : "";
      var curl = id ? replayCurl(id) : "";
      return h("tr", { "data-reason": reason, "data-channel": text(e.channel), "data-event-id": id },
        h("td", { class: "when", "data-label": "Time", title: t === null ? null : new Date(t).toISOString(),
          text: t === null ? text(e.at) : stamp(t, nowMs) }),
        h("td", { class: "channel", "data-label": "Channel", text: channelName(text(e.channel)) }),
        h("td", { class: "sku", "data-label": "SKU" },
          e.sku !== undefined && e.sku !== null ? h("code", { text: text(e.sku) }) : "—"),
        h("td", { class: "store", "data-label": "Store" },
          text(e.tienda_id) ? h("code", { text: text(e.tienda_id) }) : "—"),
        h("td", { class: "reason", "data-label": "Reason" },
          reason ? h("code", { class: "reason", text: reason }) : "—"),
        h("td", { class: "error", "data-label": "Error", text: text(e.error) }),
        h("td", { class: "replay", "data-label": "Replay" }, id
          ? h("div", { class: "replay-box" },
            h("div", { class: "cmd" },
              h("code", { class: "replay-cmd", text: cmd }), copyButton(cmd, "replay command")),
            h("details", null, h("summary", { text: "or over HTTP (curl)" }),
              h("div", { class: "cmd" },
                h("code", { class: "replay-curl", text: curl }), copyButton(curl, "curl command"))))
          : h("span", { class: "muted", text: "no event id" })),
      );
    });
    if (!rows.length) {
      rows = [h("tr", { class: "empty" }, h("td", { colspan: 7, text: "No recent failures." }))];
    }
    fill($("failures-body"), rows);
    $("failures-count").textContent = list.length
      ? list.length + " recent failure" + (list.length === 1 ? "" : "s") +
        ". Fix the cause (for sku_not_found: give the listing that SKU), then replay the event."
      : "Nothing failed recently.";
  }

  function render(data) {
    var nowMs = parseTime(data.time);
    if (nowMs === null) nowMs = Date.now();
    var raw = obj(data.channels), channels = {};
    Object.keys(raw).forEach(function (n) { channels[n] = obj(raw[n]); });
    renderHeader(data);
    renderOverall(channels);
    renderQueue(data);
    renderChannels(channels, nowMs);
    renderFailures(data, channels, nowMs);
    $("content").hidden = false;
  }

  // --- polling -------------------------------------------------------------------
  function setState(s) { document.body.setAttribute("data-state", s); }

  async function readBody(res) {
    var body = await res.text();
    try { return JSON.parse(body); } catch (e) { return body; }
  }
  function messageOf(body) {
    if (body && typeof body === "object") return text(body.message || body.error);
    return typeof body === "string" ? body.slice(0, 300) : "";
  }

  async function poll() {
    clearTimeout(state.timer);
    if (state.inflight) state.inflight.abort();
    var ctl = new AbortController();
    state.inflight = ctl;
    var timeout = setTimeout(function () { ctl.abort(); }, Math.max(refreshMs, 10000));
    try {
      var headers = { Accept: "application/json" };
      var token = getToken();
      if (token) headers.Authorization = "Bearer " + token;
      var res = await fetch(statusUrl, { headers: headers, cache: "no-store", credentials: "same-origin",
        signal: ctl.signal });
      var body = await readBody(res);
      if (state.inflight !== ctl) return;
      if (res.status === 401 || res.status === 403) {
        state.failing = true;
        setState("auth");
        setBanner("auth", (messageOf(body) || "HTTP " + res.status) +
          (token ? " — the token was refused; enter another one below."
            : " — enter the operator token below."));
        var auth = $("auth");
        auth.open = true;
        auth.setAttribute("data-attention", "true");
        if (!state.focusedToken) { state.focusedToken = true; $("token").focus(); }
      } else if (!res.ok) {
        throw new Error("HTTP " + res.status + (messageOf(body) ? ": " + messageOf(body) : ""));
      } else if (!body || typeof body !== "object" || Array.isArray(body)) {
        throw new Error("the answer is not a JSON object");
      } else {
        render(body);
        state.updates++;
        state.lastOk = Date.now();
        state.failing = false;
        document.body.setAttribute("data-updates", String(state.updates));
        $("auth").setAttribute("data-attention", "false");
        setBanner(null);
        setState("ok");
      }
    } catch (e) {
      if (state.inflight !== ctl) return; // superseded by a newer poll
      state.failing = true;
      setState("error");
      var why = ctl.signal.aborted
        ? "no answer within " + Math.round(Math.max(refreshMs, 10000) / 1000) + " s"
        : e && e.message ? e.message : String(e);
      setBanner("error", "Could not load " + new URL(statusUrl).pathname + ": " + why + ". Retrying every " +
        (refreshMs >= 1000 ? Math.round(refreshMs / 1000) + " s" : refreshMs + " ms") + ".");
    } finally {
      clearTimeout(timeout);
      if (state.inflight === ctl) {
        state.inflight = null;
        showLastUpdated();
        state.timer = setTimeout(poll, refreshMs);
      }
    }
  }

  $("token-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    setToken($("token").value.trim());
    $("token").value = "";
    poll();
  });
  $("token-clear").addEventListener("click", function () {
    setToken("");
    $("token").value = "";
    poll();
  });
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible" && !state.inflight) poll();
  });
  setInterval(showLastUpdated, 1000);
  showTokenState();
  showLastUpdated();
  poll();
})();
`;

const sha256 = (s: string) => `'sha256-${createHash("sha256").update(s, "utf8").digest("base64")}'`;

const CSP = [
  "default-src 'none'",
  `script-src ${sha256(SCRIPT)}`,
  `style-src ${sha256(STYLE)}`,
  "img-src data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
].join("; ");

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

/**
 * The status page for a given service version. The document carries no status
 * data (it fetches `/status`), so it is safe to serve without authentication.
 */
export function statusPageHtml(version: string = VERSION): string {
  const v = escapeHtml(version);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="referrer" content="no-referrer">
<meta http-equiv="Content-Security-Policy" content="${escapeHtml(CSP)}">
<title>marketplace-sync status</title>
<link rel="icon" href="data:,">
<style>${STYLE}</style>
</head>
<body data-state="loading" data-updates="0">
<header class="top">
  <h1>marketplace-sync</h1>
  <span id="mode" class="badge" hidden></span>
  <span class="spacer"></span>
  <p id="last-updated">Loading…</p>
</header>
<main>
  <div id="banner" role="alert" hidden></div>
  <details id="auth" data-attention="false">
    <summary>Operator token</summary>
    <form id="token-form" autocomplete="off">
      <label for="token">Bearer token</label>
      <input id="token" name="token" type="password" autocomplete="off" spellcheck="false"
        placeholder="ADMIN_TOKEN (not needed in sandbox mode on loopback)">
      <button type="submit">Use token</button>
      <button type="button" id="token-clear">Forget</button>
      <span id="token-state" class="muted"></span>
    </form>
  </details>
  <div id="content" class="stack" hidden>
  <section id="overall" class="panel" data-health="unknown"></section>
  <section id="queue" class="panel" aria-label="Queue"></section>
  <section id="channels" aria-label="Channels"></section>
  <section class="panel" aria-labelledby="failures-title">
    <h2 id="failures-title">Last failures</h2>
    <p id="failures-count" class="muted">Loading…</p>
    <div class="table-wrap">
      <table id="failures">
        <thead><tr><th scope="col">Time</th><th scope="col">Channel</th><th scope="col">SKU</th>
          <th scope="col">Store</th><th scope="col">Reason</th><th scope="col">Error</th>
          <th scope="col">Replay</th></tr></thead>
        <tbody id="failures-body"></tbody>
      </table>
    </div>
  </section>
  </div>
</main>
<footer>marketplace-sync <span id="page-version">${v}</span> <span id="service-version"></span> ·
  reads <code>GET /status</code></footer>
<script>${SCRIPT}</script>
</body>
</html>
`;
}

/** The page for this build's version. */
export const STATUS_PAGE_HTML: string = statusPageHtml(VERSION);
