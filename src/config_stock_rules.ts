/**
 * `STOCK_RULES`: the JSON of per-channel stock rules, validated with zod into the model's
 * {@link StockRules}. Every problem names its JSON path (`STOCK_RULES.mercadolibre.percent`) and the
 * value found there, so a start-up error says exactly which key to fix.
 */
import { z } from "zod";
import { KNOWN_CHANNELS } from "./model/channel_name.ts";
import type { StockRules } from "./model/stock_rule.ts";

const shown = (value: unknown) => {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? text.slice(0, 60) + "…" : text;
};

const wholeAtLeastZero = z.unknown().superRefine((value, ctx) => {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > 1_000_000_000) {
    ctx.addIssue({
      code: "custom",
      message: `must be a whole number from 0 to 1000000000, got ${shown(value)}`,
    });
  }
}) as unknown as z.ZodType<number>;

const percent = z.unknown().superRefine((value, ctx) => {
  if (typeof value !== "number" || !Number.isFinite(value)) {
    ctx.addIssue({ code: "custom", message: `must be a number from 0 to 100, got ${shown(value)}` });
  } else if (value < 0 || value > 100) {
    ctx.addIssue({ code: "custom", message: `must be 0–100, got ${shown(value)}` });
  } else if (Math.abs(value * 100 - Math.round(value * 100)) > 1e-9) {
    ctx.addIssue({ code: "custom", message: `must have at most two decimals, got ${shown(value)}` });
  }
}) as unknown as z.ZodType<number>;

const fields = {
  buffer: wholeAtLeastZero.optional(),
  max: wholeAtLeastZero.optional(),
  percent: percent.optional(),
};

const nonEmptyKey = z.string().min(1, "must not be empty");
const object = (what: string) => ({
  error: (issue: { input?: unknown }) => `must be ${what}, got ${shown(issue.input)}`,
});

const ruleSchema = z.strictObject(fields, object("an object of buffer, max, percent"));
const storeSchema = z.strictObject(
  {
    ...fields,
    skus: z.record(nonEmptyKey, ruleSchema, object('an object {"<SKU prefix>": {…}}')).optional(),
  },
  object("an object of buffer, max, percent, skus"),
);
const channelSchema = z.strictObject(
  {
    ...fields,
    skus: z.record(nonEmptyKey, ruleSchema, object('an object {"<SKU prefix>": {…}}')).optional(),
    stores: z.record(nonEmptyKey, storeSchema, object('an object {"<tienda_id>": {…}}')).optional(),
  },
  object("an object of buffer, max, percent, skus, stores"),
);
const rulesSchema = z.strictObject(
  Object.fromEntries(KNOWN_CHANNELS.map((name) => [name, channelSchema.optional()])),
  object(`an object per channel (${KNOWN_CHANNELS.join(", ")})`),
);

/** One problem with `STOCK_RULES`: the JSON path (`STOCK_RULES.shopify.buffer`) and what is wrong there. */
export interface StockRulesProblem {
  path: string;
  message: string;
}

/** Parses and validates `STOCK_RULES`; the rules, or every problem by JSON path. */
export function parseStockRules(text: string): { rules: StockRules } | { problems: StockRulesProblem[] } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    return {
      problems: [{
        path: "STOCK_RULES",
        message: `must be JSON like {"mercadolibre": {"buffer": 2, "max": 40}} (${(error as Error).message})`,
      }],
    };
  }
  const result = rulesSchema.safeParse(parsed);
  if (result.success) return { rules: result.data as StockRules };
  const problems: StockRulesProblem[] = [];
  for (const issue of result.error.issues) {
    const at = ["STOCK_RULES", ...issue.path.map(String)];
    if (issue.code === "unrecognized_keys") {
      const channelLevel = issue.path.length === 0;
      for (const key of issue.keys) {
        problems.push({
          path: [...at, key].join("."),
          message: channelLevel
            ? `unknown channel; known: ${KNOWN_CHANNELS.join(", ")}`
            : `unknown key; known: ${knownKeys(issue.path).join(", ")}`,
        });
      }
    } else {
      problems.push({ path: at.join("."), message: issue.message });
    }
  }
  return { problems };
}

/** The keys allowed where an unknown one was found, by its depth in the document. */
function knownKeys(path: PropertyKey[]): string[] {
  const base = ["buffer", "max", "percent"];
  // channel | channel.skus.<p> | channel.stores.<id> | channel.stores.<id>.skus.<p>
  if (path.length === 1) return [...base, "skus", "stores"];
  if (path.length === 3 && path[1] === "stores") return [...base, "skus"];
  return base;
}
