/**
 * `PUT /items/{id}` and `PUT /items/{id}/variations/{vid}` of the MercadoLibre
 * sandbox: strict body validation (unknown fields, types, ranges, all causes at
 * once), then the item's rules (closed, under review, Full, variations), then a plan
 * that the caller applies only if no fault intervenes, so a refused or conflicting
 * write changes nothing.
 *
 * Updatable fields MeLi has but the sandbox does not model (pictures, description,
 * shipping, …) are refused as `sandbox_unsupported` rather than silently accepted.
 */
import {
  cause,
  invalidBody,
  invalidFields,
  type MeliCause,
  meliError,
  type MeliFailure,
  sandboxUnsupported,
  validationError,
} from "./errors.ts";
import { type ItemState, type MeliAttribute, MeliItems, type VariationState } from "./items.ts";

const ITEM_FIELDS = ["available_quantity", "status", "price", "title", "variations"];
const VARIATION_FIELDS = [
  "available_quantity",
  "price",
  "seller_custom_field",
  "attribute_combinations",
  "attributes",
];
// Fields MeLi lets a seller update that the sandbox has no model for.
const UNMODELED_ITEM_FIELDS = [
  "attributes",
  "pictures",
  "description",
  "shipping",
  "sale_terms",
  "video_id",
  "listing_type_id",
  "condition",
  "buying_mode",
  "seller_custom_field",
  "warranty",
  "channels",
];
const UNMODELED_VARIATION_FIELDS = ["picture_ids", "sale_terms"];
const SETTABLE_STATUSES = ["active", "paused", "closed"];

type Json = Record<string, unknown>;

/** A validated variation change. */
export interface VariationPatch {
  id?: number;
  available_quantity?: number;
  price?: number;
  seller_custom_field?: string | null;
  attribute_combinations?: MeliAttribute[];
  attributes?: MeliAttribute[];
}

/** A validated item change. */
export interface ItemPatch {
  available_quantity?: number;
  status?: "active" | "paused" | "closed";
  price?: number;
  title?: string;
  variations?: VariationPatch[];
}

/** An accepted write, not applied yet. */
export interface Plan {
  /** Listings whose stock the write sets: `itemId` or `itemId/variationId`. */
  stockKeys: string[];
  /** True when stock fields were sent but the seller's account ignores them (multi-origin). */
  stockIgnored: boolean;
  apply(): void;
}

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function unknownFields(
  body: Json,
  known: string[],
  unmodeled: string[],
  prefix: string,
): MeliFailure | undefined {
  const keys = Object.keys(body);
  const bad = keys.filter((k) => !known.includes(k) && !unmodeled.includes(k));
  if (bad.length > 0) return invalidFields(bad.map((k) => prefix + k));
  const unsupported = keys.filter((k) => unmodeled.includes(k));
  if (unsupported.length > 0) {
    return sandboxUnsupported(`updating ${unsupported.map((k) => prefix + k).join(", ")}`);
  }
}

function parseAttributes(value: unknown, ref: string, causes: MeliCause[]): MeliAttribute[] | undefined {
  const ok = Array.isArray(value) &&
    value.every((a) =>
      isObject(a) && typeof a.id === "string" && a.id !== "" &&
      ["name", "value_id", "value_name"].every((k) =>
        a[k] === undefined || a[k] === null || typeof a[k] === "string"
      )
    );
  if (!ok) {
    causes.push(cause(`${ref}.invalid`, `${ref} must be a list of {id, value_name | value_id}`, [ref]));
    return undefined;
  }
  return (value as Json[]).map((a) => ({
    id: a.id as string,
    name: (a.name as string | undefined) ?? "",
    value_id: (a.value_id as string | null | undefined) ?? null,
    value_name: (a.value_name as string | null | undefined) ?? null,
  }));
}

/** Validates the common fields of a variation body; `ref` is the path causes name. */
function parseVariationFields(body: Json, ref: string, causes: MeliCause[]): VariationPatch {
  const patch: VariationPatch = {};
  const q = body.available_quantity;
  if (q !== undefined) {
    if (typeof q === "number" && Number.isInteger(q) && q >= 0) patch.available_quantity = q;
    else {
      causes.push(cause(
        "item.available_quantity.invalid",
        `${ref}.available_quantity must be an integer greater than or equal to 0, got ${JSON.stringify(q)}`,
        [`${ref}.available_quantity`],
      ));
    }
  }
  const price = body.price;
  if (price !== undefined) {
    if (typeof price === "number" && Number.isFinite(price) && price > 0) patch.price = price;
    else {causes.push(
        cause("item.price.invalid", `${ref}.price must be a number greater than 0`, [`${ref}.price`]),
      );}
  }
  const scf = body.seller_custom_field;
  if (scf !== undefined) {
    if (scf === null || typeof scf === "string") patch.seller_custom_field = scf;
    else {
      causes.push(cause(
        "item.seller_custom_field.invalid",
        `${ref}.seller_custom_field must be a string or null`,
        [`${ref}.seller_custom_field`],
      ));
    }
  }
  for (const key of ["attribute_combinations", "attributes"] as const) {
    if (body[key] !== undefined) patch[key] = parseAttributes(body[key], `${ref}.${key}`, causes);
  }
  return patch;
}

/** Validates a `PUT /items/{id}` body. */
export function parseItemPatch(body: unknown): ItemPatch | MeliFailure {
  if (!isObject(body)) return invalidBody("PUT /items/{id}");
  const unknown = unknownFields(body, ITEM_FIELDS, UNMODELED_ITEM_FIELDS, "");
  if (unknown) return unknown;
  const causes: MeliCause[] = [];
  const { price, available_quantity } = parseVariationFields(body, "item", causes);
  const patch: ItemPatch = { price, available_quantity };
  if (body.status !== undefined) {
    if (typeof body.status === "string" && SETTABLE_STATUSES.includes(body.status)) {
      patch.status = body.status as ItemPatch["status"];
    } else {
      causes.push(cause("item.status.invalid", `status must be one of ${SETTABLE_STATUSES.join(", ")}`, [
        "item.status",
      ]));
    }
  }
  if (body.title !== undefined) {
    if (typeof body.title === "string" && body.title.trim() !== "" && body.title.length <= 60) {
      patch.title = body.title;
    } else {causes.push(
        cause("item.title.invalid", "title must be a non-empty string of 60 characters at most", [
          "item.title",
        ]),
      );}
  }
  if (body.variations !== undefined) {
    if (!Array.isArray(body.variations)) {
      causes.push(cause("item.variations.invalid", "variations must be a list", ["item.variations"]));
    } else {
      patch.variations = [];
      for (const [i, v] of body.variations.entries()) {
        const ref = `item.variations[${i}]`;
        if (!isObject(v)) {
          causes.push(cause("item.variations.invalid", `${ref} must be an object`, [ref]));
          continue;
        }
        const bad = unknownFields(
          v,
          ["id", ...VARIATION_FIELDS],
          UNMODELED_VARIATION_FIELDS,
          `variations[${i}].`,
        );
        if (bad) return bad;
        const entry: VariationPatch = parseVariationFields(v, ref, causes);
        if (v.id !== undefined) {
          if (typeof v.id === "number" && Number.isInteger(v.id) && v.id > 0) entry.id = v.id;
          else {causes.push(
              cause("item.variations.id.invalid", `${ref}.id must be a variation id`, [`${ref}.id`]),
            );}
        }
        patch.variations.push(entry);
      }
    }
  }
  return causes.length > 0 ? validationError(causes) : patch;
}

/** Validates a `PUT /items/{id}/variations/{vid}` body. */
export function parseVariationPatch(body: unknown): VariationPatch | MeliFailure {
  if (!isObject(body)) return invalidBody("PUT /items/{id}/variations/{variation_id}");
  const unknown = unknownFields(body, VARIATION_FIELDS, UNMODELED_VARIATION_FIELDS, "");
  if (unknown) return unknown;
  const causes: MeliCause[] = [];
  const patch = parseVariationFields(body, "variation", causes);
  return causes.length > 0 ? validationError(causes) : patch;
}

/** The item rules every write meets first: closed is final, under review is frozen, Full owns the stock. */
function stateRefusal(item: ItemState, touchesStock: boolean): MeliFailure | undefined {
  if (item.status === "closed") {
    const message = `Cannot modify a closed item: ${item.id} has status closed, which is final`;
    const c = cause("item.status.closed", message, ["item.status"]);
    return { status: 400, body: meliError(400, "field_not_updatable", message, [c]), invalid: false };
  }
  if (item.status === "under_review") {
    const message =
      `Item is under review and cannot be modified until MercadoLibre ends the review: ${item.id}`;
    const c = cause("item.status.under_review", message, ["item.status"], "moderations");
    return { status: 403, body: meliError(403, "forbidden", message, [c]), invalid: false };
  }
  if (touchesStock && item.logisticType === "fulfillment") {
    const message =
      `available_quantity of ${item.id} cannot be modified: its stock is managed by MercadoLibre Full (logistic_type fulfillment)`;
    const c = cause(
      "item.available_quantity.fulfillment",
      message,
      ["item.available_quantity"],
      "fulfillment",
    );
    return { status: 400, body: meliError(400, "field_not_updatable", message, [c]), invalid: false };
  }
}

function mergeAttributes(current: MeliAttribute[], changes: MeliAttribute[]): MeliAttribute[] {
  const out = current.map((a) => ({ ...a }));
  for (const c of changes) {
    const i = out.findIndex((a) => a.id === c.id);
    const merged = { ...c, name: c.name || out[i]?.name || c.id };
    if (i >= 0) out[i] = merged;
    else out.push(merged);
  }
  return out;
}

function applyVariation(v: VariationState, patch: VariationPatch, ignoreStock: boolean): void {
  if (patch.available_quantity !== undefined && !ignoreStock) v.availableQuantity = patch.available_quantity;
  if (patch.price !== undefined) v.price = patch.price;
  if (patch.seller_custom_field !== undefined) v.sellerCustomField = patch.seller_custom_field;
  if (patch.attribute_combinations) {
    v.attributeCombinations = mergeAttributes(v.attributeCombinations, patch.attribute_combinations);
  }
  if (patch.attributes) v.attributes = mergeAttributes(v.attributes, patch.attributes);
}

/** Checks a validated item change against the item; a plan to apply, or the refusal. */
export function planItemUpdate(
  items: MeliItems,
  item: ItemState,
  patch: ItemPatch,
  ignoreStock: boolean,
): Plan | MeliFailure {
  const live = items.variationsOf(item);
  const causes: MeliCause[] = [];
  if (patch.available_quantity !== undefined && item.hasVariations) {
    causes.push(cause(
      "item.available_quantity.has_variations",
      `Item ${item.id} has variations: update available_quantity on its variations, not on the item`,
      ["item.available_quantity"],
    ));
  }
  if (patch.variations) {
    if (!item.hasVariations) {
      return sandboxUnsupported(`adding variations to ${item.id}, an item without variations`);
    }
    if (patch.variations.length === 0) return sandboxUnsupported("deleting every variation of an item");
    if (patch.variations.some((v) => v.id === undefined)) {
      return sandboxUnsupported("creating variations (a variations entry without id)");
    }
    const seen = new Set<number>();
    patch.variations.forEach((v, i) => {
      if (!live.some((x) => x.id === v.id) || seen.has(v.id!)) {
        causes.push(cause(
          "item.variations.id.invalid",
          `Variation ${v.id} does not belong to item ${item.id} or is repeated`,
          [`item.variations[${i}].id`],
        ));
      }
      seen.add(v.id!);
    });
  }
  if (causes.length > 0) return validationError(causes);
  const stockEntries = (patch.variations ?? []).filter((v) => v.available_quantity !== undefined);
  const touchesStock = patch.available_quantity !== undefined || stockEntries.length > 0;
  const refused = stateRefusal(item, touchesStock);
  if (refused) return refused;
  // The total the item would have, to judge a reactivation in the same request.
  const kept = patch.variations ? live.filter((v) => patch.variations!.some((p) => p.id === v.id)) : live;
  const quantity = (v: VariationState) =>
    ignoreStock ? v.availableQuantity : patch.variations?.find((p) => p.id === v.id)?.available_quantity ??
      v.availableQuantity;
  const total = item.hasVariations
    ? kept.reduce((s, v) => s + quantity(v), 0)
    : ignoreStock
    ? item.availableQuantity
    : patch.available_quantity ?? item.availableQuantity;
  if (patch.status === "active" && total === 0) {
    const message = `Cannot activate item ${item.id}: its available_quantity is 0`;
    const c = cause("item.status.out_of_stock", message, ["item.status", "item.available_quantity"]);
    return { status: 400, body: meliError(400, "bad_request", message, [c]), invalid: false };
  }
  const stockKeys = ignoreStock ? [] : [
    ...(patch.available_quantity !== undefined ? [item.id] : []),
    ...stockEntries.map((v) => `${item.id}/${v.id}`),
  ];
  return {
    stockKeys,
    stockIgnored: ignoreStock && touchesStock,
    apply: () => {
      if (patch.available_quantity !== undefined && !ignoreStock) {
        item.availableQuantity = patch.available_quantity;
      }
      if (patch.price !== undefined) {
        item.price = patch.price;
        for (const v of live) v.price = patch.price;
      }
      if (patch.title !== undefined) item.title = patch.title;
      if (patch.variations) {
        // MeLi deletes the variations a `variations` list leaves out.
        for (const v of live) {
          const change = patch.variations.find((p) => p.id === v.id);
          if (change) applyVariation(v, change, ignoreStock);
          else v.deleted = true;
        }
      }
      if (patch.status === "active") {
        item.status = "active";
        item.subStatus = [];
      } else if (patch.status === "paused") {
        item.status = "paused";
        item.subStatus = total === 0 ? ["out_of_stock"] : [];
      } else if (patch.status === "closed") {
        item.status = "closed";
        item.subStatus = [];
      }
      items.applyStockRules(item);
      item.lastUpdated = new Date(items.now()).toISOString();
      // The user product takes the stock written, and its other items show it.
      if (!ignoreStock && patch.available_quantity !== undefined) items.stockWritten(item, null);
      for (const v of ignoreStock ? [] : stockEntries) {
        items.stockWritten(item, live.find((x) => x.id === v.id)!);
      }
    },
  };
}

/** Checks a validated variation change against its item and variation. */
export function planVariationUpdate(
  items: MeliItems,
  item: ItemState,
  variation: VariationState,
  patch: VariationPatch,
  ignoreStock: boolean,
): Plan | MeliFailure {
  const touchesStock = patch.available_quantity !== undefined;
  const refused = stateRefusal(item, touchesStock);
  if (refused) return refused;
  return {
    stockKeys: touchesStock && !ignoreStock ? [`${item.id}/${variation.id}`] : [],
    stockIgnored: ignoreStock && touchesStock,
    apply: () => {
      applyVariation(variation, patch, ignoreStock);
      items.applyStockRules(item);
      item.lastUpdated = new Date(items.now()).toISOString();
      if (touchesStock && !ignoreStock) items.stockWritten(item, variation);
    },
  };
}
