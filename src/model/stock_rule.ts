/**
 * Per-channel stock rules (`STOCK_RULES`): what a marketplace listing shows of the POS's stock — a
 * percentage of it, minus a safety buffer, capped at a maximum. Rules are set per channel and may be
 * overridden per store, per SKU prefix and per store + SKU prefix. Pure words and arithmetic: no I/O.
 */
import type { ChannelName } from "./channel_name.ts";

/** One rule as configured: every field optional (an unset field is inherited from a less specific rule). */
export interface StockRuleFields {
  /** Units kept back from the channel (a whole number ≥ 0). */
  buffer?: number;
  /** Most units the channel ever shows (a whole number ≥ 0). */
  max?: number;
  /** Share of the POS stock the channel shows, 0–100 (at most two decimals). */
  percent?: number;
}

/** A store's overrides: its own fields, and per SKU prefix (store + prefix, the most specific level). */
export interface StoreStockRules extends StockRuleFields {
  skus?: Record<string, StockRuleFields>;
}

/** A channel's rules: channel-wide fields, per SKU prefix, and per store (tienda_id). */
export interface ChannelStockRules extends StockRuleFields {
  skus?: Record<string, StockRuleFields>;
  stores?: Record<string, StoreStockRules>;
}

/** `STOCK_RULES`, validated: per channel name. Empty: no listing has a rule. */
export type StockRules = Partial<Record<ChannelName, ChannelStockRules>>;

/** The rule that applies to one listing, every field settled. */
export interface StockRule {
  buffer: number;
  /** Undefined: no maximum. */
  max: number | undefined;
  percent: number;
}

/**
 * Whether any level of `channel`'s rules sets a field that changes something (a buffer above 0, a
 * maximum, a percentage under 100): `{"shopify": {}}` or `{"buffer": 0}` everywhere is no rule, and the
 * channel keeps its plain paths.
 */
export function hasRules(rules: StockRules | undefined, channel: ChannelName): boolean {
  const own = rules?.[channel];
  if (!own) return false;
  const sets = (f: StockRuleFields) =>
    (f.buffer ?? 0) > 0 || f.max !== undefined || (f.percent !== undefined && f.percent !== 100);
  const levels: StockRuleFields[] = [
    own,
    ...Object.values(own.skus ?? {}),
    ...Object.values(own.stores ?? {}).flatMap((store) => [store, ...Object.values(store.skus ?? {})]),
  ];
  return levels.some(sets);
}

/**
 * The rule for a SKU at a store on a channel, or undefined when none applies. Levels from the
 * least to the most specific — channel, store, SKU prefix (shorter before longer), store + SKU
 * prefix (shorter before longer) — are laid over each other field by field, so the most specific
 * level that sets a field wins and the fields it leaves unset are inherited. A settled rule that
 * changes nothing (percent 100, buffer 0, no max) is no rule: the listing keeps the plain path.
 */
export function resolveRule(
  rules: StockRules | undefined,
  channel: ChannelName,
  tiendaId: string,
  sku: string,
): StockRule | undefined {
  const own = rules?.[channel];
  if (!own) return undefined;
  const store = own.stores?.[tiendaId];
  const layers: StockRuleFields[] = [
    own,
    ...(store ? [store] : []),
    ...matchingPrefixes(own.skus, sku),
    ...matchingPrefixes(store?.skus, sku),
  ];
  const merged: StockRuleFields = {};
  for (const layer of layers) {
    if (layer.buffer !== undefined) merged.buffer = layer.buffer;
    if (layer.max !== undefined) merged.max = layer.max;
    if (layer.percent !== undefined) merged.percent = layer.percent;
  }
  const rule: StockRule = { buffer: merged.buffer ?? 0, max: merged.max, percent: merged.percent ?? 100 };
  return rule.buffer === 0 && rule.max === undefined && rule.percent === 100 ? undefined : rule;
}

/** The overrides whose prefix starts `sku`, shortest first (the longest is laid last: it wins). */
function matchingPrefixes(skus: Record<string, StockRuleFields> | undefined, sku: string): StockRuleFields[] {
  if (!skus) return [];
  return Object.keys(skus).filter((prefix) => sku.startsWith(prefix))
    .sort((a, b) => a.length - b.length).map((prefix) => skus[prefix]);
}

/**
 * What a listing under `rule` shows for a POS quantity: `clamp(floor(q × percent / 100) − buffer, 0, max)`.
 * The percentage is computed in hundredths of a percent, in integers, so 10 × 70 % is exactly 7.
 */
export function applyRule(rule: StockRule, quantity: number): number {
  const hundredths = Math.round(rule.percent * 100);
  const share = Math.floor((quantity * hundredths) / 10_000);
  const kept = Math.max(0, share - rule.buffer);
  return rule.max === undefined ? kept : Math.min(kept, rule.max);
}

/**
 * What a marketplace quantity kept for several stores together (a Shopify location they share)
 * shows: each store's rule applied to its own quantity, summed, and never below 0. Stores without a
 * rule count as they are (no rule anywhere: the plain `max(0, sum)`).
 */
export function placeQuantity(parts: readonly { rule: StockRule | undefined; quantity: number }[]): number {
  let total = 0;
  for (const part of parts) total += part.rule ? applyRule(part.rule, part.quantity) : part.quantity;
  return Math.max(0, total);
}

/** The rule in words, for reports and logs: "percent 50, buffer 2, max 40" (the order it is applied in). */
export function describeRule(rule: StockRule | undefined): string {
  if (!rule) return "";
  const words: string[] = [];
  if (rule.percent !== 100) words.push(`percent ${rule.percent}`);
  if (rule.buffer !== 0) words.push(`buffer ${rule.buffer}`);
  if (rule.max !== undefined) words.push(`max ${rule.max}`);
  return words.join(", ");
}

/** The rules of several stores sharing one place, in words: one text, or "store: rule; …" when they differ. */
export function describeRules(parts: readonly { tiendaId: string; rule: StockRule | undefined }[]): string {
  const texts = parts.map((p) => describeRule(p.rule));
  if (texts.every((t) => t === texts[0])) return texts[0] ?? "";
  return parts.map((p, i) => `${p.tiendaId}: ${texts[i] || "none"}`).join("; ");
}
