/**
 * The operator status page served at `GET /`: one self-contained HTML document
 * (inline CSS and JS, inline SVG, no external assets) that polls `GET /status`
 * (same origin) and draws it. The server renders the document's frame here
 * (Hono JSX); ./browser/status_client.ts fills it from /status in the browser.
 * The document itself holds no data, so it can be served without
 * authentication; the operator token typed into the page (kept in
 * sessionStorage, this tab only) is sent as `Authorization: Bearer …` on the
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
 * The page carries its own Content-Security-Policy (meta tag): only this
 * document's script and style (by hash) and same-origin fetches. A CSP header
 * added by the server must still allow them (or be left off for `/`).
 */
import { createHash } from "node:crypto";
import type { FC } from "hono/jsx";
import { VERSION } from "../version.ts";
import { statusClient, type StatusClientSettings } from "./browser/status_client.ts";
import { STATUS_PAGE_STYLE } from "./status_style.ts";

const CLIENT_SETTINGS: StatusClientSettings = {
  tokenKey: "marketplace-sync.token",
  channelNames: { shopify: "Shopify", mercadolibre: "MercadoLibre" },
};

/** JSON for inside a <script>: `<` escaped, so no value can close the element or open a comment. */
function scriptJson(value: unknown): string {
  return JSON.stringify(value).replaceAll("<", "\\u003c");
}

/**
 * The page's one script: the client function's source (JavaScript: Deno has
 * stripped its types), called with its settings.
 */
const SCRIPT = `(${statusClient.toString()})(${scriptJson(CLIENT_SETTINGS)});`;
// An inline script ends at the first "</script"; the client's source must never hold one.
if (/<\/script|<!--/i.test(SCRIPT)) throw new Error("the status page's script contains </script or <!--");

const sha256 = (s: string) => `'sha256-${createHash("sha256").update(s, "utf8").digest("base64")}'`;

const CSP = [
  "default-src 'none'",
  `script-src ${sha256(SCRIPT)}`,
  `style-src ${sha256(STATUS_PAGE_STYLE)}`,
  "img-src data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
].join("; ");

/** The document head: metadata, the CSP, and the inline stylesheet. */
const Head: FC = () => (
  <head>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <meta name="color-scheme" content="light dark" />
    <meta name="referrer" content="no-referrer" />
    <meta http-equiv="Content-Security-Policy" content={CSP} />
    <title>marketplace-sync status</title>
    <link rel="icon" href="data:," />
    <style dangerouslySetInnerHTML={{ __html: STATUS_PAGE_STYLE }} />
  </head>
);

/** The top bar: the service's mode (filled by the client) and when the data was last updated. */
const TopBar: FC = () => (
  <header class="top">
    <h1>marketplace-sync</h1>
    <span id="mode" class="badge" hidden></span>
    <span class="spacer"></span>
    <p id="last-updated">Loading…</p>
  </header>
);

/** The operator token field: opened by the client when /status answers 401/403. */
const TokenForm: FC = () => (
  <details id="auth" data-attention="false">
    <summary>Operator token</summary>
    <form id="token-form" autocomplete="off">
      <label for="token">Bearer token</label>
      <input
        id="token"
        name="token"
        type="password"
        autocomplete="off"
        spellcheck={false}
        placeholder="ADMIN_TOKEN (not needed in sandbox mode on loopback)"
      />
      <button type="submit">Use token</button>
      <button type="button" id="token-clear">Forget</button>
      <span id="token-state" class="muted"></span>
    </form>
  </details>
);

/** The last failures, with a replay command for each (rows drawn by the client). */
const Failures: FC = () => (
  <section class="panel" aria-labelledby="failures-title">
    <h2 id="failures-title">Last failures</h2>
    <p id="failures-count" class="muted">Loading…</p>
    <div class="table-wrap">
      <table id="failures">
        <thead>
          <tr>
            <th scope="col">Time</th>
            <th scope="col">Channel</th>
            <th scope="col">SKU</th>
            <th scope="col">Store</th>
            <th scope="col">Reason</th>
            <th scope="col">Error</th>
            <th scope="col">Replay</th>
          </tr>
        </thead>
        <tbody id="failures-body"></tbody>
      </table>
    </div>
  </section>
);

/** Where /status is drawn: hidden until the first successful answer. */
const Content: FC = () => (
  <div id="content" class="stack" hidden>
    <section id="overall" class="panel" data-health="unknown"></section>
    <section id="queue" class="panel" aria-label="Queue"></section>
    <section id="channels" aria-label="Channels"></section>
    <section id="orders" class="panel" aria-label="Marketplace orders"></section>
    <Failures />
  </div>
);

/** The page's version (this build) and the service's (from /status, filled by the client). */
const Footer: FC<{ version: string }> = ({ version }) => (
  <footer>
    marketplace-sync <span id="page-version">{version}</span> <span id="service-version"></span> · reads{" "}
    <code>GET /status</code>
  </footer>
);

/** The whole document. */
const StatusPage: FC<{ version: string }> = ({ version }) => (
  <html lang="en">
    <Head />
    <body data-state="loading" data-updates="0">
      <TopBar />
      <main>
        <div id="banner" role="alert" hidden></div>
        <TokenForm />
        <Content />
      </main>
      <Footer version={version} />
      <script dangerouslySetInnerHTML={{ __html: SCRIPT }} />
    </body>
  </html>
);

/**
 * The status page for a given service version. The document carries no status
 * data (it fetches `/status`), so it is safe to serve without authentication.
 */
export function statusPageHtml(version: string = VERSION): string {
  const page = <StatusPage version={version} />;
  // Every component here is synchronous; a Promise would mean one became async.
  if (page instanceof Promise) throw new Error("the status page rendered asynchronously");
  return `<!doctype html>\n${page}\n`;
}

/** The page for this build's version. */
export const STATUS_PAGE_HTML: string = statusPageHtml(VERSION);
