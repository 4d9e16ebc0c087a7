/**
 * Extracts the part of Shopify's published Admin GraphQL schema (2026-10) that the
 * Shopify sandbox serves, into `src/sandbox/shopify/schema_2026-10.json`.
 *
 * Source: npm package `@shopify/dev-mcp` (pinned version), file
 * `dist/data/admin_2026-10.json.gz`, Shopify's own introspection result. The full
 * schema is ~11 MB and ~3,500 types; the sandbox models inventory and orders, so the
 * subset keeps:
 * - the root fields we call (see {@link ROOT_FIELDS}) with all their arguments,
 * - for each object type reached, only the fields the sandbox can answer
 *   ({@link OBJECT_FIELDS}); every other field of the real type is left out, so a
 *   document asking for it fails validation instead of getting invented data,
 * - every input object, enum and scalar reachable from the kept arguments, whole,
 * - interfaces whose fields the kept objects fully implement (`Node`,
 *   `DisplayableError`), with `possibleTypes` cut to the kept objects,
 * - every directive (including `@idempotent`).
 * Each kept type or field is copied verbatim, so the subset can be checked
 * against the published file ({@link compareWithPublished}).
 *
 * Run: `deno task schema:extract` (writes the file); add `--check` to only compare.
 */

/** Published package that ships Shopify's introspection JSON. */
export const DEV_MCP_PACKAGE = "@shopify/dev-mcp";
/** Pinned version: bump deliberately, then re-extract and review the diff. */
export const DEV_MCP_VERSION = "1.16.0";
/** Path of the Admin 2026-10 schema inside the package. */
export const SCHEMA_PATH_IN_PACKAGE = "dist/data/admin_2026-10.json.gz";
/** SHA-256 of that file in the pinned version, so a swapped file is noticed. */
export const PUBLISHED_SCHEMA_SHA256 = "f3b522f264556925eada700e795e4a002a9cba83444ebcc6c0d724254a0c6593";
/** Where the subset is committed. */
export const SUBSET_PATH = new URL("../src/sandbox/shopify/schema_2026-10.json", import.meta.url);

/** Root fields the service (and so the sandbox) uses. */
export const ROOT_FIELDS: Record<string, readonly string[]> = {
  QueryRoot: [
    "bulkOperation",
    "currentBulkOperation",
    "inventoryItem",
    "inventoryItems",
    "location",
    "locations",
    "orders",
    "productVariant",
    "productVariants",
  ],
  Mutation: ["bulkOperationRunQuery", "inventoryAdjustQuantities", "inventorySetQuantities"],
};

/**
 * Fields kept on each object type; `"*"` keeps them all. Only what the sandbox's
 * in-memory state can answer truthfully.
 */
export const OBJECT_FIELDS: Record<string, readonly string[] | "*"> = {
  ProductVariant: ["displayName", "id", "inventoryItem", "inventoryQuantity", "sku", "title"],
  ProductVariantConnection: "*",
  ProductVariantEdge: "*",
  PageInfo: "*",
  InventoryItem: ["id", "inventoryLevel", "inventoryLevels", "sku", "tracked"],
  InventoryItemConnection: "*",
  InventoryItemEdge: "*",
  InventoryLevelConnection: "*",
  InventoryLevelEdge: "*",
  InventoryLevel: ["id", "isActive", "item", "location", "quantities"],
  InventoryQuantity: ["id", "name", "quantity", "updatedAt"],
  Location: ["id", "inventoryLevels", "isActive", "name"],
  LocationConnection: "*",
  LocationEdge: "*",
  InventoryAdjustQuantitiesPayload: "*",
  InventorySetQuantitiesPayload: "*",
  InventoryAdjustmentGroup: ["changes", "createdAt", "id", "reason", "referenceDocumentUri"],
  InventoryChange: "*",
  InventoryAdjustQuantitiesUserError: "*",
  InventorySetQuantitiesUserError: "*",
  BulkOperation: "*",
  BulkOperationRunQueryPayload: "*",
  BulkOperationUserError: "*",
  // Orders (issue #14): what the catch-up poll reads — the lines sold, the units put back.
  OrderConnection: "*",
  OrderEdge: "*",
  Order: [
    "cancelledAt",
    "createdAt",
    "id",
    "legacyResourceId",
    "lineItems",
    "name",
    "refunds",
    "retailLocation",
    "updatedAt",
  ],
  LineItemConnection: "*",
  LineItemEdge: "*",
  LineItem: ["id", "name", "quantity", "sku"],
  Refund: ["createdAt", "id", "legacyResourceId", "refundLineItems"],
  RefundLineItemConnection: "*",
  RefundLineItemEdge: "*",
  RefundLineItem: ["lineItem", "location", "quantity", "restockType", "restocked"],
};

/** A `__Type` entry of an introspection result, as Shopify publishes it. */
// deno-lint-ignore no-explicit-any
export type IntrospectionTypeJson = Record<string, any> & { name: string; kind: string };
/** A `__Schema` of an introspection result. */
export interface IntrospectionSchemaJson {
  queryType: { name: string } | null;
  mutationType: { name: string } | null;
  subscriptionType: { name: string } | null;
  types: IntrospectionTypeJson[];
  // deno-lint-ignore no-explicit-any
  directives: Record<string, any>[];
  // deno-lint-ignore no-explicit-any
  [key: string]: any;
}

interface TypeRef {
  kind: string;
  name: string | null;
  ofType: TypeRef | null;
}

function namedType(ref: TypeRef): string {
  let r = ref;
  while (r.ofType) r = r.ofType;
  if (!r.name) throw new Error("type reference without a name");
  return r.name;
}

/** Builds the subset from the published `__Schema` (pure; order follows the source). */
export function extractSubset(published: IntrospectionSchemaJson): IntrospectionSchemaJson {
  const byName = new Map(published.types.map((t) => [t.name, t]));
  const keep = new Map<string, IntrospectionTypeJson>();
  const queue: string[] = [];
  const want = (name: string) => {
    if (!keep.has(name) && !queue.includes(name)) queue.push(name);
  };
  const fieldFilter = (type: IntrospectionTypeJson): (name: string) => boolean => {
    const roots = ROOT_FIELDS[type.name];
    if (roots) return (n) => roots.includes(n);
    const listed = OBJECT_FIELDS[type.name];
    if (listed === "*") return () => true;
    if (listed) return (n) => listed.includes(n);
    throw new Error(`object type ${type.name} is reachable but has no field list in OBJECT_FIELDS`);
  };

  Object.keys(ROOT_FIELDS).forEach(want);
  while (queue.length) {
    const name = queue.shift()!;
    const type = byName.get(name);
    if (!type) throw new Error(`type ${name} is not in the published schema`);
    const copy: IntrospectionTypeJson = { ...type };
    if (type.kind === "OBJECT") {
      const accept = fieldFilter(type);
      copy.fields = type.fields.filter((f: { name: string }) => accept(f.name));
      const missing = (ROOT_FIELDS[name] ?? (Array.isArray(OBJECT_FIELDS[name]) ? OBJECT_FIELDS[name] : []))
        .filter((f) => !copy.fields.some((k: { name: string }) => k.name === f));
      if (missing.length) {
        throw new Error(`${name} has no field(s) ${missing.join(", ")} in the published schema`);
      }
    }
    keep.set(name, copy);
    for (const field of copy.fields ?? []) {
      want(namedType(field.type));
      for (const arg of field.args ?? []) want(namedType(arg.type));
    }
    for (const input of copy.inputFields ?? []) want(namedType(input.type));
  }

  // Interfaces: keep one only where every kept implementor carries all its fields,
  // otherwise graphql-js would (rightly) reject the object as not implementing it.
  for (const type of [...keep.values()]) {
    if (type.kind !== "OBJECT" || !type.interfaces) continue;
    type.interfaces = type.interfaces.filter((ref: TypeRef) => {
      const iface = byName.get(namedType(ref))!;
      const ok = iface.fields.every((f: { name: string }) =>
        type.fields.some((k: { name: string }) => k.name === f.name)
      );
      if (ok && !keep.has(iface.name)) {
        keep.set(iface.name, { ...iface });
        for (const f of iface.fields) {
          for (
            const t of [
              f.type,
              ...f.args.map((a: { type: TypeRef }) => a.type),
            ]
          ) {
            if (!keep.has(namedType(t))) throw new Error(`interface ${iface.name} needs ${namedType(t)}`);
          }
        }
      }
      return ok;
    });
  }
  for (const type of keep.values()) {
    if (type.kind === "INTERFACE") {
      type.possibleTypes = type.possibleTypes.filter((ref: TypeRef) => {
        const t = keep.get(namedType(ref));
        return t?.interfaces?.some((i: TypeRef) => i.name === type.name) ?? false;
      });
    }
  }

  return {
    description: published.description ?? null,
    queryType: published.queryType,
    mutationType: published.mutationType,
    subscriptionType: null,
    types: published.types.filter((t) => keep.has(t.name)).map((t) => keep.get(t.name)!),
    directives: published.directives,
  };
}

/** One difference between the subset and the published schema. */
export interface SchemaDifference {
  where: string;
  problem: string;
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Checks that every type, field, argument, input field, enum value and directive
 * in `subset` is exactly as published, and that the subset leaves out only fields,
 * interfaces and possible types (never changes one). Returns the differences.
 */
export function compareWithPublished(
  subset: IntrospectionSchemaJson,
  published: IntrospectionSchemaJson,
): SchemaDifference[] {
  const out: SchemaDifference[] = [];
  const byName = new Map(published.types.map((t) => [t.name, t]));
  for (const type of subset.types) {
    const real = byName.get(type.name);
    if (!real) {
      out.push({ where: type.name, problem: "type is not in the published schema" });
      continue;
    }
    for (const key of Object.keys({ ...real, ...type })) {
      if (key === "fields" || key === "interfaces" || key === "possibleTypes") continue;
      if (!sameJson(type[key], real[key])) out.push({ where: `${type.name}.${key}`, problem: "differs" });
    }
    for (const field of type.fields ?? []) {
      const realField = real.fields?.find((f: { name: string }) => f.name === field.name);
      if (!realField) out.push({ where: `${type.name}.${field.name}`, problem: "field is not published" });
      else if (!sameJson(field, realField)) {
        out.push({ where: `${type.name}.${field.name}`, problem: "field differs" });
      }
    }
    if (type.fields && real.fields && type.kind !== "OBJECT") {
      if (!sameJson(type.fields, real.fields)) {
        out.push({ where: type.name, problem: "interface fields cut" });
      }
    }
    for (
      const [key, list] of [["interfaces", type.interfaces], ["possibleTypes", type.possibleTypes]] as const
    ) {
      for (const ref of list ?? []) {
        if (!real[key]?.some((r: TypeRef) => sameJson(r, ref))) {
          out.push({ where: `${type.name}.${key}`, problem: `${ref.name} is not published there` });
        }
      }
    }
  }
  for (const directive of subset.directives) {
    const real = published.directives.find((d) => d.name === directive.name);
    if (!sameJson(directive, real)) out.push({ where: `@${directive.name}`, problem: "directive differs" });
  }
  for (const key of ["queryType", "mutationType"] as const) {
    if (!sameJson(subset[key], published[key])) out.push({ where: key, problem: "differs" });
  }
  return out;
}

function denoNpmCacheDir(): string | undefined {
  const denoDir = Deno.env.get("DENO_DIR");
  if (denoDir) return `${denoDir}/npm/registry.npmjs.org`;
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  const home = Deno.env.get("HOME");
  const base = xdg ?? (home ? `${home}/.cache` : undefined);
  return base ? `${base}/deno/npm/registry.npmjs.org` : undefined;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

async function run(cmd: string, args: string[], cwd: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/**
 * Finds the published schema file: `SHOPIFY_DEV_MCP_DIR` (an unpacked package), the
 * Deno npm cache, an earlier download, or else `npm pack` of the pinned version
 * (the package is not a deno.json import because it drags in the Shopify CLI).
 */
export async function locatePublishedSchema(): Promise<string> {
  const candidates = [
    Deno.env.get("SHOPIFY_DEV_MCP_DIR"),
    denoNpmCacheDir() && `${denoNpmCacheDir()}/${DEV_MCP_PACKAGE}/${DEV_MCP_VERSION}`,
  ];
  for (const dir of candidates) {
    if (dir && await exists(`${dir}/${SCHEMA_PATH_IN_PACKAGE}`)) return `${dir}/${SCHEMA_PATH_IN_PACKAGE}`;
  }
  const tmp = Deno.env.get("TMPDIR") ?? "/tmp";
  const workDir = `${tmp}/marketplace-sync-shopify-schema/${DEV_MCP_VERSION}`;
  const target = `${workDir}/package/${SCHEMA_PATH_IN_PACKAGE}`;
  if (await exists(target)) return target;
  await Deno.mkdir(workDir, { recursive: true });
  const tarball = (await run("npm", ["pack", `${DEV_MCP_PACKAGE}@${DEV_MCP_VERSION}`, "--silent"], workDir))
    .trim().split("\n").at(-1)!;
  await run("tar", ["-xzf", tarball, `package/${SCHEMA_PATH_IN_PACKAGE}`], workDir);
  await Deno.remove(`${workDir}/${tarball}`);
  return target;
}

function hex(bytes: ArrayBuffer): string {
  return [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Reads, checks (SHA-256) and decompresses the published Admin 2026-10 schema. */
export async function loadPublishedSchema(path?: string): Promise<IntrospectionSchemaJson> {
  const file = path ?? await locatePublishedSchema();
  const gz = await Deno.readFile(file);
  const digest = hex(await crypto.subtle.digest("SHA-256", gz));
  if (digest !== PUBLISHED_SCHEMA_SHA256) {
    throw new Error(
      `${file} has SHA-256 ${digest}, expected ${PUBLISHED_SCHEMA_SHA256} (${DEV_MCP_VERSION})`,
    );
  }
  const text = await new Response(new Blob([gz]).stream().pipeThrough(new DecompressionStream("gzip")))
    .text();
  const json = JSON.parse(text);
  return json.data?.__schema ?? json.__schema;
}

/** Serializes the subset the way it is committed (stable, diff-friendly). */
export function renderSubset(subset: IntrospectionSchemaJson): string {
  const doc = {
    _source:
      `npm ${DEV_MCP_PACKAGE}@${DEV_MCP_VERSION} ${SCHEMA_PATH_IN_PACKAGE} (sha256 ${PUBLISHED_SCHEMA_SHA256}); ` +
      "generated by scripts/extract_shopify_schema.ts, do not edit",
    __schema: subset,
  };
  return JSON.stringify(doc, null, 2) + "\n";
}

if (import.meta.main) {
  const published = await loadPublishedSchema();
  const subset = extractSubset(published);
  const text = renderSubset(subset);
  if (Deno.args.includes("--check")) {
    // Compared as data: `deno fmt` owns the committed file's layout.
    const committed = JSON.parse(await Deno.readTextFile(SUBSET_PATH));
    if (JSON.stringify(committed) !== JSON.stringify(JSON.parse(text))) {
      console.error("src/sandbox/shopify/schema_2026-10.json is stale: run deno task schema:extract");
      Deno.exit(1);
    }
    console.log("subset is up to date");
  } else {
    await Deno.writeTextFile(SUBSET_PATH, text);
    await run(Deno.execPath(), ["fmt", "--quiet", SUBSET_PATH.pathname], ".");
    console.log(
      `wrote ${subset.types.length} types, ${subset.directives.length} directives to ${SUBSET_PATH.pathname}`,
    );
  }
}
