/**
 * Bulk query operations of the Shopify sandbox: `bulkOperationRunQuery` checked the
 * way Shopify checks it, run in the background (CREATED → RUNNING → COMPLETED after a
 * configurable delay, or FAILED on request), and the result written as JSONL to the
 * storage stand-in (./storage.ts), whose signed URL the operation's `url` then holds.
 *
 * Facts (shopify.dev, "Perform bulk operations with the GraphQL Admin API", and the
 * 2026-10 schema): in API versions 2026-01 and later an app may run up to five bulk
 * query operations per shop at once; the query must hold at least one connection, at
 * most five, nested at most two deep, and may not start at `node`/`nodes`; the result
 * has one JSON object per line, one line per connection node, a nested connection's
 * nodes on lines of their own carrying `__parentId` (the id of the node they belong
 * to); `groupObjects` (default false since 2026-01) puts those lines right after their
 * parent, and without it they may come anywhere — the sandbox then writes every root
 * node first, the farthest from grouped a client can meet. A completed operation
 * that found nothing has no `url`. The user-error wording (`Invalid bulk query: …`,
 * the connection rules, "A bulk query operation for this app and shop is already in
 * progress: …") is the one quoted from Shopify's answers by public clients; where none
 * was found (several top-level fields) the message is ours.
 */
import {
  type DocumentNode,
  type ExecutionResult,
  type FieldNode,
  type FragmentDefinitionNode,
  getNamedType,
  getNullableType,
  getOperationAST,
  GraphQLError,
  type GraphQLObjectType,
  isListType,
  isObjectType,
  Kind,
  type OperationDefinitionNode,
  parse,
  type SelectionSetNode,
  validate,
} from "graphql";
import { fieldsOf } from "../cost.ts";
import { shopifyValidationError } from "./errors.ts";
import { shopifySchema } from "./schema.ts";
import type { BulkStorage } from "./storage.ts";

/** Bulk query operations one app may run per shop at once (API 2026-01 and later). */
export const MAX_RUNNING_BULK_QUERIES = 5;
/** Connections one bulk query may hold. */
export const MAX_BULK_CONNECTIONS = 5;
/** How deep connections may nest in a bulk query. */
export const MAX_BULK_CONNECTION_DEPTH = 2;

/** `BulkOperationStatus`. */
export type BulkOperationStatus =
  | "CANCELED"
  | "CANCELING"
  | "COMPLETED"
  | "CREATED"
  | "EXPIRED"
  | "FAILED"
  | "RUNNING";

/** `BulkOperationErrorCode`: why an operation failed. */
export type BulkOperationErrorCode = "ACCESS_DENIED" | "INTERNAL_SERVER_ERROR" | "TIMEOUT";

/** A `BulkOperation` as the API shows it (UnsignedInt64 fields are strings, as Shopify sends them). */
export interface BulkOperationRecord {
  id: string;
  type: "QUERY";
  status: BulkOperationStatus;
  query: string;
  createdAt: string;
  completedAt: string | null;
  errorCode: BulkOperationErrorCode | null;
  objectCount: string;
  rootObjectCount: string;
  fileSize: string | null;
  url: string | null;
  partialDataUrl: string | null;
}

/** A `BulkOperationUserError`. */
export interface BulkUserError {
  field: string[] | null;
  message: string;
  code: "INVALID" | "LIMIT_REACHED" | "OPERATION_IN_PROGRESS";
}

/** What `bulkOperationRunQuery` answers. */
export interface RunQueryPayload {
  bulkOperation: BulkOperationRecord | null;
  userErrors: BulkUserError[];
}

/** What the operations need from the sandbox. */
export interface BulkOperationsOptions {
  storage: BulkStorage;
  /** Runs a checked bulk query over the shop, every connection whole (no page limits). */
  execute(document: DocumentNode): Promise<ExecutionResult>;
  /** How long an operation runs before it completes (or fails), in ms. */
  delayMs: number;
  /** The failure to inject into operations that finish now; null: they complete. */
  failure(): BulkOperationErrorCode | null;
  now?: () => number;
}

const ID_BASE = 4_000_000_000_000;

function invalid(message: string): BulkUserError {
  return { field: ["query"], message, code: "INVALID" };
}

function isConnection(type: GraphQLObjectType): boolean {
  return type.name.endsWith("Connection");
}

/** The type of a connection's nodes. */
function nodeType(connection: GraphQLObjectType): GraphQLObjectType {
  return getNamedType(connection.getFields().nodes.type) as GraphQLObjectType;
}

interface Checked {
  document: DocumentNode;
  operation: OperationDefinitionNode;
  fragments: Record<string, FragmentDefinitionNode>;
}

/** Shopify's checks of a bulk query: the errors, or the parsed document to run. */
export function checkBulkQuery(query: string): { errors: BulkUserError[] } | Checked {
  let document: DocumentNode;
  try {
    document = parse(query);
  } catch (e) {
    if (e instanceof GraphQLError) return { errors: [invalid(`Invalid bulk query: ${e.message}`)] };
    throw e;
  }
  const schema = shopifySchema();
  const operation = getOperationAST(document);
  if (operation && operation.operation !== "query") {
    return { errors: [invalid("Invalid operation type. Only `query` operations are supported.")] };
  }
  const validation = validate(schema, document);
  if (validation.length) {
    return {
      errors: validation.map((e) => invalid(`Invalid bulk query: ${shopifyValidationError(e).message}`)),
    };
  }
  if (!operation) {
    return { errors: [invalid("Invalid bulk query: a bulk query holds exactly one operation")] };
  }
  if (operation.variableDefinitions?.length) {
    return { errors: [invalid("Invalid bulk query: a bulk query takes no variables")] };
  }
  const fragments: Record<string, FragmentDefinitionNode> = {};
  for (const def of document.definitions) {
    if (def.kind === Kind.FRAGMENT_DEFINITION) fragments[def.name.value] = def;
  }
  const input = { fragments, variables: {} };
  const errors: BulkUserError[] = [];
  const roots = fieldsOf(operation.selectionSet, input);
  if (roots.length > 1) errors.push(invalid("Bulk queries must query a single top-level field."));
  for (const root of roots) {
    if (root.name.value === "node" || root.name.value === "nodes") {
      errors.push(invalid(`Bulk queries cannot contain a top level \`${root.name.value}\` field.`));
    }
  }
  let connections = 0;
  let deepest = 0;
  let inList = false;
  const viaNodes: string[] = [];
  const withoutParentId: string[] = [];
  const walk = (
    type: GraphQLObjectType,
    set: SelectionSetNode,
    depth: number,
    list: boolean,
    id: boolean,
  ) => {
    for (const field of fieldsOf(set, input)) {
      const def = type.getFields()[field.name.value];
      const named = def && getNamedType(def.type);
      if (!named || !isObjectType(named) || !field.selectionSet) continue;
      if (!isConnection(named)) {
        walk(named, field.selectionSet, depth, list || isListType(getNullableType(def.type)), id);
        continue;
      }
      connections++;
      deepest = Math.max(deepest, depth + 1);
      if (list) inList = true;
      if (depth > 0 && !id) withoutParentId.push(field.name.value);
      for (const part of fieldsOf(field.selectionSet, input)) {
        if (part.name.value === "nodes") viaNodes.push(field.name.value);
        if (part.name.value !== "edges" || !part.selectionSet) continue;
        for (const node of fieldsOf(part.selectionSet, input)) {
          if (node.name.value !== "node" || !node.selectionSet) continue;
          const selectsId = fieldsOf(node.selectionSet, input)
            .some((f: FieldNode) => f.name.value === "id" && !f.alias);
          walk(nodeType(named), node.selectionSet, depth + 1, false, selectsId);
        }
      }
    }
  };
  walk(schema.getQueryType()!, operation.selectionSet, 0, false, false);
  if (viaNodes.length) {
    errors.push(invalid(
      `All connection fields in a bulk query must select their contents using 'edges' > 'node', e.g: '${
        viaNodes[0]
      } { edges { node {'. Selecting via 'nodes' is not supported. Invalid connection fields: '${
        viaNodes.join("', '")
      }'.`,
    ));
  }
  if (deepest > MAX_BULK_CONNECTION_DEPTH) {
    errors.push(invalid(
      `Bulk queries cannot contain connections with a nesting depth greater than ${MAX_BULK_CONNECTION_DEPTH}.`,
    ));
  }
  if (connections > MAX_BULK_CONNECTIONS) {
    errors.push(invalid(`Bulk queries cannot contain more than ${MAX_BULK_CONNECTIONS} connections.`));
  }
  if (withoutParentId.length) {
    errors.push(invalid(
      "The parent 'node' field for a nested connection must select the 'id' field without an alias and " +
        `must be of 'ID' return type. Connection fields without 'id': ${withoutParentId.join(", ")}.`,
    ));
  }
  if (inList) {
    errors.push(
      invalid("Queries that contain a connection field within a list field are not currently supported."),
    );
  }
  if (connections === 0 && errors.length === 0) {
    errors.push(invalid("Bulk queries must contain at least one connection."));
  }
  return errors.length ? { errors } : { document, operation, fragments };
}

/** One JSONL line before it is written: its connection depth orders ungrouped output. */
interface Line {
  depth: number;
  text: string;
}

/**
 * The JSONL of an executed bulk query: one line per connection node, nested
 * connections' nodes on lines of their own with `__parentId` (written last, as
 * Shopify does). Grouped: each node's children right after it; ungrouped: every
 * root node first, then the next level.
 */
export function toJsonl(
  checked: Checked,
  data: Record<string, unknown>,
  groupObjects: boolean,
): { lines: string[]; roots: number } {
  const input = { fragments: checked.fragments, variables: {} };
  const out: Line[] = [];
  type Json = Record<string, unknown>;

  const connection = (type: GraphQLObjectType, set: SelectionSetNode, value: unknown, parent?: string) => {
    if (value == null) return;
    const depth = parent === undefined ? 0 : 1;
    for (const part of fieldsOf(set, input)) {
      if (part.name.value !== "edges" || !part.selectionSet) continue;
      const edges = (value as Json)[part.alias?.value ?? "edges"] as Json[] | null;
      for (const node of fieldsOf(part.selectionSet, input)) {
        if (node.name.value !== "node" || !node.selectionSet) continue;
        for (const edge of edges ?? []) {
          const data = edge?.[node.alias?.value ?? "node"] as Json | null;
          if (data == null) continue;
          const slot = out.push({ depth, text: "" }) - 1;
          const line = project(nodeType(type), node.selectionSet, data, data.id as string | undefined);
          out[slot].text = JSON.stringify(parent === undefined ? line : { ...line, __parentId: parent });
        }
      }
    }
  };

  /** The node's own fields; connections below it go out as lines of their own. */
  const project = (type: GraphQLObjectType, set: SelectionSetNode, value: Json, owner?: string): Json => {
    const line: Json = {};
    for (const field of fieldsOf(set, input)) {
      const key = field.alias?.value ?? field.name.value;
      if (!(key in value)) continue;
      const v = value[key];
      const def = type.getFields()[field.name.value];
      const named = def && getNamedType(def.type);
      if (!named || !isObjectType(named) || !field.selectionSet || v == null) {
        line[key] = v;
      } else if (isConnection(named)) {
        connection(named, field.selectionSet, v, owner);
      } else {
        line[key] = Array.isArray(v)
          ? v.map((item) => item == null ? item : project(named, field.selectionSet!, item as Json, owner))
          : project(named, field.selectionSet, v as Json, owner);
      }
    }
    return line;
  };

  project(shopifySchema().getQueryType()!, checked.operation.selectionSet, data);
  const ordered = groupObjects ? out : [...out].sort((a, b) => a.depth - b.depth); // sort is stable
  return { lines: ordered.map((l) => l.text), roots: out.filter((l) => l.depth === 0).length };
}

/** The shop's bulk operations. */
export class BulkOperations {
  #records = new Map<string, BulkOperationRecord>();
  #timers = new Set<ReturnType<typeof setTimeout>>();
  #seq = 0;
  readonly #now: () => number;

  constructor(private readonly options: BulkOperationsOptions) {
    this.#now = options.now ?? Date.now;
  }

  /** `bulkOperationRunQuery`: checks the query and the app's running operations, then starts it. */
  run(query: string, groupObjects: boolean): RunQueryPayload {
    const checked = checkBulkQuery(query);
    if ("errors" in checked) return { bulkOperation: null, userErrors: checked.errors };
    const running = [...this.#records.values()].filter((r) =>
      r.status === "CREATED" || r.status === "RUNNING" || r.status === "CANCELING"
    );
    if (running.length >= MAX_RUNNING_BULK_QUERIES) {
      return {
        bulkOperation: null,
        userErrors: [{
          field: null,
          code: "OPERATION_IN_PROGRESS",
          message: `A bulk query operation for this app and shop is already in progress: ${
            running.map((r) => r.id).join(", ")
          }.`,
        }],
      };
    }
    const record: BulkOperationRecord = {
      id: `gid://shopify/BulkOperation/${ID_BASE + ++this.#seq}`,
      type: "QUERY",
      status: "CREATED",
      query,
      createdAt: new Date(this.#now()).toISOString(),
      completedAt: null,
      errorCode: null,
      objectCount: "0",
      rootObjectCount: "0",
      fileSize: null,
      url: null,
      partialDataUrl: null,
    };
    this.#records.set(record.id, record);
    // Answered CREATED, as Shopify does; RUNNING from then on (the sandbox starts it at once).
    const answer = { ...record };
    record.status = "RUNNING";
    this.#later(this.options.delayMs, () => this.#finish(record, checked, groupObjects));
    return { bulkOperation: answer, userErrors: [] };
  }

  /** The operation with this id (a copy), if any. */
  get(id: string): BulkOperationRecord | undefined {
    const r = this.#records.get(id);
    return r && { ...r };
  }

  /** `currentBulkOperation`: the app's most recent operation of this type. */
  current(type: "QUERY" | "MUTATION"): BulkOperationRecord | undefined {
    return type === "QUERY" ? [...this.#records.values()].map((r) => ({ ...r })).at(-1) : undefined;
  }

  /** Every operation so far, oldest first (copies). */
  list(): BulkOperationRecord[] {
    return [...this.#records.values()].map((r) => ({ ...r }));
  }

  /** Stops the operations' timers (the sandbox is closing). */
  close(): void {
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
  }

  #later(ms: number, run: () => void | Promise<void>): void {
    const timer = setTimeout(async () => {
      this.#timers.delete(timer);
      await run();
    }, ms);
    this.#timers.add(timer);
  }

  async #finish(record: BulkOperationRecord, checked: Checked, groupObjects: boolean): Promise<void> {
    const failure = this.options.failure();
    if (failure) {
      Object.assign(record, { status: "FAILED", errorCode: failure });
      return;
    }
    let written: { lines: string[]; roots: number; body: Uint8Array; url: string | null };
    try {
      const result = await this.options.execute(checked.document);
      if (result.errors?.length || !result.data) throw new Error(result.errors?.[0]?.message ?? "no data");
      const { lines, roots } = toJsonl(checked, result.data as Record<string, unknown>, groupObjects);
      const body = new TextEncoder().encode(lines.map((l) => l + "\n").join(""));
      const url = lines.length
        ? await this.options.storage.put(`${crypto.randomUUID().replaceAll("-", "")}-final`, body)
        : null;
      written = { lines, roots, body, url };
    } catch {
      Object.assign(record, { status: "FAILED", errorCode: "INTERNAL_SERVER_ERROR" });
      return;
    }
    const { lines, roots, body, url } = written;
    Object.assign(record, {
      status: "COMPLETED",
      completedAt: new Date(this.#now()).toISOString(),
      objectCount: String(lines.length),
      rootObjectCount: String(roots),
      fileSize: lines.length ? String(body.byteLength) : null,
      url,
    });
  }
}
