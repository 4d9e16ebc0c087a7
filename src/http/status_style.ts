/**
 * The status page's stylesheet (inlined by ./status_page.tsx; its CSP allows it by hash). Light and dark
 * follow `prefers-color-scheme`; below 760 px the failures table stacks into labelled rows.
 */
export const STATUS_PAGE_STYLE: string = `
:root {
  color-scheme: light dark;
  --bg: #f5f6f8; --fg: #1c1f24; --muted: #5d6570; --card: #ffffff; --border: #d9dee4;
  --ok: #1a7f37; --ok-bg: #dafbe1; --bad: #c62828; --bad-bg: #ffebe9; --warn: #8a5a00; --warn-bg: #fff4c2;
  --accent: #0a66d8; --code-bg: #eef1f4; --track: #e3e7ec;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0f1216; --fg: #e6e8eb; --muted: #9aa4af; --card: #171b21; --border: #2b323b;
    --ok: #3fb950; --ok-bg: #12261a; --bad: #ff7b72; --bad-bg: #3a1618; --warn: #e3b341; --warn-bg: #33290f;
    --accent: #58a6ff; --code-bg: #232a33; --track: #262d36;
  }
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
.top { display: flex; flex-wrap: wrap; align-items: center; gap: .5rem 1rem; padding: .8rem 1.25rem;
  background: var(--card); border-bottom: 1px solid var(--border); }
.top h1 { font-size: 1.1rem; margin: 0; font-weight: 650; }
.top .spacer { flex: 1 1 auto; }
#last-updated { color: var(--muted); margin: 0; font-variant-numeric: tabular-nums; }
#last-updated[data-stale="true"] { color: var(--warn); }
main { max-width: 1240px; margin: 0 auto; padding: 1rem 1.25rem 2rem; display: grid; gap: 1rem; }
main > *, .stack > * { min-width: 0; }
.stack { display: grid; gap: 1rem; }
h2 { font-size: 1rem; margin: 0 0 .6rem; font-weight: 650; }
.badge { display: inline-block; padding: .05rem .5rem; border-radius: 999px; font-size: .8rem;
  font-weight: 600;
  border: 1px solid var(--border); background: var(--code-bg); color: var(--fg); white-space: nowrap; }
.badge.ok { background: var(--ok-bg); color: var(--ok); border-color: transparent; }
.badge.down { background: var(--bad-bg); color: var(--bad); border-color: transparent; }
.badge.warn { background: var(--warn-bg); color: var(--warn); border-color: transparent; }
#banner { padding: .7rem 1rem; border-radius: 8px; border: 1px solid var(--bad); background: var(--bad-bg);
  color: var(--fg); overflow-wrap: anywhere; }
#banner[data-kind="auth"] { border-color: var(--warn); background: var(--warn-bg); }
#auth { background: var(--card); border: 1px solid var(--border); border-radius: 8px; padding: .5rem 1rem; }
#auth[data-attention="true"] { border: 2px solid var(--warn); }
#auth summary { cursor: pointer; color: var(--muted); }
#auth[data-attention="true"] summary { color: var(--fg); font-weight: 600; }
#token-form { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; margin-top: .5rem; }
#token { flex: 1 1 16rem; min-width: 0; }
input, button { font: inherit; color: inherit; }
input { padding: .35rem .5rem; border: 1px solid var(--border); border-radius: 6px; background: var(--bg); }
button { padding: .3rem .7rem; border: 1px solid var(--border); border-radius: 6px;
  background: var(--code-bg);
  cursor: pointer; }
button:hover { border-color: var(--accent); }
button:focus-visible, input:focus-visible, summary:focus-visible {
  outline: 2px solid var(--accent); outline-offset: 1px; }
.muted { color: var(--muted); }
.panel { background: var(--card); border: 1px solid var(--border); border-radius: 8px; padding: 1rem; }
#overall { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: center; font-size: 1.05rem; }
#overall[data-health="ok"] { border-left: 5px solid var(--ok); }
#overall[data-health="down"] { border-left: 5px solid var(--bad); }
#overall[data-health="unknown"] { border-left: 5px solid var(--warn); }
#overall ul { margin: 0; padding-left: 1.2rem; font-size: .95rem; overflow-wrap: anywhere; }
.stats { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: .5rem; }
#queue .stats { grid-template-columns: repeat(4, minmax(0, 1fr)); }
.stat { background: var(--bg); border-radius: 6px; padding: .45rem .6rem; }
.stat .value { display: block; font-size: 1.35rem; font-weight: 650; font-variant-numeric: tabular-nums; }
.stat .label { display: block; color: var(--muted); font-size: .8rem; }
.stat[data-level="bad"] .value { color: var(--bad); }
.stat[data-level="warn"] .value { color: var(--warn); }
#queue .qname { margin: -.3rem 0 .6rem; color: var(--muted); overflow-wrap: anywhere; }
#channels { display: grid; gap: 1rem;
  grid-template-columns: repeat(auto-fit, minmax(min(100%, 22rem), 1fr)); }
.card { background: var(--card); border: 1px solid var(--border); border-radius: 8px; padding: 1rem;
  display: grid; gap: .7rem; align-content: start; min-width: 0; }
.card[data-health="down"] { border-color: var(--bad); box-shadow: inset 4px 0 0 var(--bad); }
.card-head { display: flex; justify-content: space-between; align-items: center; gap: .5rem; }
.card-head h2 { margin: 0; }
.detail { margin: 0; padding: .4rem .6rem; border-radius: 6px; background: var(--bad-bg);
  overflow-wrap: anywhere; }
.card[data-health="ok"] .detail { background: var(--code-bg); }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: .3rem .8rem; margin: 0; }
dl.kv dt { color: var(--muted); }
dl.kv dd { margin: 0; font-variant-numeric: tabular-nums; min-width: 0; overflow-wrap: anywhere; }
.bar { height: 8px; border-radius: 4px; background: var(--track); overflow: hidden; margin-top: .2rem; }
.bar > span { display: block; height: 100%; background: var(--accent); }
.bar[data-level="warn"] > span { background: var(--warn); }
.bar[data-level="bad"] > span { background: var(--bad); }
.spark-head { display: flex; justify-content: space-between; gap: .5rem; flex-wrap: wrap;
  color: var(--muted); font-size: .85rem; }
.spark-head strong { color: var(--fg); font-variant-numeric: tabular-nums; }
svg.sparkline { display: block; width: 100%; height: 44px; margin-top: .25rem; background: var(--bg);
  border-radius: 4px; }
svg.sparkline .line { fill: none; stroke: var(--accent); stroke-width: 1.6; vector-effect: non-scaling-stroke;
  stroke-linejoin: round; }
svg.sparkline .area { fill: var(--accent); opacity: .15; }
svg.sparkline .hit { fill: transparent; }
svg.sparkline .hit:hover { fill: var(--accent); opacity: .2; }
.spark-axis { display: flex; justify-content: space-between; color: var(--muted); font-size: .75rem; }
.table-wrap { overflow-x: auto; }
#failures { width: 100%; border-collapse: collapse; }
#failures caption { text-align: left; color: var(--muted); padding-bottom: .5rem; }
#failures th, #failures td { text-align: left; vertical-align: top; padding: .45rem .5rem;
  border-bottom: 1px solid var(--border); }
#failures th { color: var(--muted); font-weight: 600; font-size: .85rem; white-space: nowrap; }
#failures td.when { white-space: nowrap; font-variant-numeric: tabular-nums; }
#failures td.error, #failures td.sku, #failures td.store { overflow-wrap: anywhere; }
#failures td.error { min-width: 12rem; }
#failures td.sku { min-width: 8rem; }
#failures td.store { min-width: 9rem; }
#failures td.store code { overflow-wrap: normal; }
#failures td.replay { min-width: 18rem; }
#failures tr.empty td { color: var(--muted); text-align: center; padding: 1rem; }
code { font: 12px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
  background: var(--code-bg); padding: .1rem .3rem; border-radius: 4px; overflow-wrap: anywhere; }
code.reason { color: var(--bad); background: var(--bad-bg); white-space: nowrap; overflow-wrap: normal; }
.cmd { display: flex; gap: .4rem; align-items: flex-start; }
.cmd code { flex: 1 1 auto; min-width: 0; }
.cmd button { flex: none; padding: .1rem .5rem; font-size: .8rem; }
.replay details { margin-top: .3rem; }
.replay summary { cursor: pointer; color: var(--muted); font-size: .8rem; }
.replay details .cmd { margin-top: .3rem; }
footer { max-width: 1240px; margin: 0 auto; padding: 0 1.25rem 1.5rem; color: var(--muted);
  font-size: .8rem; }
@media (max-width: 760px) {
  .top, main, footer { padding-left: .75rem; padding-right: .75rem; }
  #queue .stats { grid-template-columns: repeat(2, minmax(0, 1fr)); }
  .stat .value { font-size: 1.2rem; }
  #failures thead { display: none; }
  #failures, #failures tbody, #failures tr, #failures td { display: block; width: 100%; }
  #failures tr { padding: .5rem 0; border-bottom: 1px solid var(--border); }
  #failures td { display: grid; grid-template-columns: 5.5rem minmax(0, 1fr); gap: .5rem; border: 0;
    padding: .15rem 0; min-width: 0; }
  #failures td::before { content: attr(data-label); color: var(--muted); font-size: .85rem; }
  #failures td > * { justify-self: start; max-width: 100%; }
  #failures td > .replay-box { justify-self: stretch; }
  #failures td.error, #failures td.replay, #failures td.sku, #failures td.store { min-width: 0; }
  #failures td.store code { overflow-wrap: anywhere; }
  #failures tr.empty td { display: block; }
  #failures tr.empty td::before { content: none; }
}
`;
