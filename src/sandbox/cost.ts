/**
 * Shopify's calculated query cost and the leaky bucket it is charged against.
 *
 * Published rules (https://shopify.dev/docs/apps/build/apis/graphql-admin/rate-limits):
 * a scalar or enum field costs 0, an object 1, a connection 2 plus the objects it
 * asks for (`first`/`last` times the cost of one node), a mutation 10. Approximations:
 * pageInfo and edge cursors are free, a plain (non-connection) list of objects costs
 * like one object, interfaces/unions are not needed by the subset, and Shopify's
 * per-field overrides are not modeled. The actual cost uses the same rules with the
 * number of nodes really returned, so the bucket is refunded the difference, as
 * Shopify does.
 *
 * Bucket defaults (Standard plan): restore 100 points/s (same page); 2,000 points of
 * capacity as reported in `throttleStatus.maximumAvailable` by Standard stores
 * (community.shopify.dev thread 23101). A single query may not ask for more than
 * 1,000 points (MAX_COST_EXCEEDED).
 */
import {
  type FieldNode,
  type FragmentDefinitionNode,
  getArgumentValues,
  getDirectiveValues,
  getNamedType,
  getNullableType,
  GraphQLIncludeDirective,
  type GraphQLObjectType,
  type GraphQLSchema,
  GraphQLSkipDirective,
  isCompositeType,
  isListType,
  isObjectType,
  Kind,
  type OperationDefinitionNode,
  type SelectionNode,
  type SelectionSetNode,
} from "graphql";

/** Shopify's limit on one query's requested cost. */
export const MAX_SINGLE_QUERY_COST = 1000;
/** Cost of any mutation field. */
export const MUTATION_COST = 10;

/** Bucket settings: capacity and points restored per second. */
export interface BucketSettings {
  maximumAvailable: number;
  restoreRate: number;
}

/** The Standard plan bucket. */
export const STANDARD_PLAN_BUCKET: BucketSettings = { maximumAvailable: 2000, restoreRate: 100 };

/** `extensions.cost.throttleStatus` as Shopify reports it. */
export interface ThrottleStatus {
  maximumAvailable: number;
  currentlyAvailable: number;
  restoreRate: number;
}

/** A leaky bucket of cost points (per app and shop, so one per sandbox). */
export class LeakyBucket {
  #available: number;
  #at: number;

  constructor(readonly settings: BucketSettings, readonly now: () => number = Date.now) {
    this.#available = settings.maximumAvailable;
    this.#at = now();
  }

  #refill(): void {
    const t = this.now();
    const restored = ((t - this.#at) / 1000) * this.settings.restoreRate;
    this.#available = Math.min(this.settings.maximumAvailable, this.#available + restored);
    this.#at = t;
  }

  /** Takes `cost` points if they are there; false (and nothing taken) otherwise. */
  tryTake(cost: number): boolean {
    this.#refill();
    if (this.#available < cost) return false;
    this.#available -= cost;
    return true;
  }

  /** Gives back points charged but not used (requested − actual). */
  refund(points: number): void {
    this.#refill();
    this.#available = Math.min(this.settings.maximumAvailable, this.#available + Math.max(0, points));
  }

  /** Current state, rounded down as Shopify shows it. */
  status(): ThrottleStatus {
    this.#refill();
    return {
      maximumAvailable: this.settings.maximumAvailable,
      currentlyAvailable: Math.floor(this.#available),
      restoreRate: this.settings.restoreRate,
    };
  }
}

/** What the cost walk needs to know about the request. */
export interface CostInput {
  schema: GraphQLSchema;
  operation: OperationDefinitionNode;
  fragments: Record<string, FragmentDefinitionNode>;
  variables: Record<string, unknown>;
}

function included(node: SelectionNode, variables: Record<string, unknown>): boolean {
  if (getDirectiveValues(GraphQLSkipDirective, node, variables)?.if === true) return false;
  return getDirectiveValues(GraphQLIncludeDirective, node, variables)?.if !== false;
}

/** Fields of a selection set, fragments inlined (the subset has no abstract types). */
export function fieldsOf(
  set: SelectionSetNode,
  input: Pick<CostInput, "fragments" | "variables">,
): FieldNode[] {
  const out: FieldNode[] = [];
  for (const sel of set.selections) {
    if (!included(sel, input.variables)) continue;
    if (sel.kind === Kind.FIELD) out.push(sel);
    else if (sel.kind === Kind.INLINE_FRAGMENT) out.push(...fieldsOf(sel.selectionSet, input));
    else {
      const frag = input.fragments[sel.name.value];
      if (frag) out.push(...fieldsOf(frag.selectionSet, input));
    }
  }
  return out;
}

function isConnection(type: GraphQLObjectType): boolean {
  return type.name.endsWith("Connection");
}

type Data = Record<string, unknown> | null | undefined;

/**
 * Cost of a selection on `parent`. With `data` undefined this is the requested
 * (worst-case) cost; with the response data it is the actual cost.
 */
function selectionCost(
  parent: GraphQLObjectType,
  set: SelectionSetNode,
  input: CostInput,
  data: Data,
  actual: boolean,
): number {
  let total = 0;
  for (const field of fieldsOf(set, input)) {
    if (field.name.value === "__typename") continue;
    const def = parent.getFields()[field.name.value];
    if (!def) continue;
    const named = getNamedType(def.type);
    if (!isCompositeType(named) || !isObjectType(named) || !field.selectionSet) continue;
    const key = field.alias?.value ?? field.name.value;
    const value = actual ? (data?.[key] as unknown) : undefined;
    if (actual && value === undefined) continue; // not resolved (error before it)
    if (isConnection(named)) {
      const args = getArgumentValues(def, field, input.variables);
      total += connectionCost(named, field.selectionSet, input, value as Data, actual, args);
    } else if (isListType(getNullableType(def.type))) {
      const items = actual ? (value as Data[] | null) ?? [] : [undefined];
      total += 1 +
        Math.max(0, ...items.map((item) => childCost(named, field.selectionSet!, input, item, actual)));
    } else {
      total += 1 + childCost(named, field.selectionSet, input, value as Data, actual);
    }
  }
  return total;
}

function childCost(
  type: GraphQLObjectType,
  set: SelectionSetNode,
  input: CostInput,
  data: Data,
  actual: boolean,
) {
  if (actual && data == null) return 0;
  return selectionCost(type, set, input, data, actual);
}

function connectionCost(
  type: GraphQLObjectType,
  set: SelectionSetNode,
  input: CostInput,
  data: Data,
  actual: boolean,
  args: Record<string, unknown>,
): number {
  if (actual && data == null) return 2;
  const fields = type.getFields();
  const nodeType = getNamedType(fields.nodes.type) as GraphQLObjectType;
  // One node's cost, whether asked through `nodes` or `edges { node }`; the two
  // name the same objects, so the larger selection is charged, not both.
  const perNode = (node: Data): number => {
    let cost = 0;
    for (const f of fieldsOf(set, input)) {
      if (f.name.value === "nodes" && f.selectionSet) {
        cost = Math.max(cost, 1 + childCost(nodeType, f.selectionSet, input, node, actual));
      } else if (f.name.value === "edges" && f.selectionSet) {
        for (const e of fieldsOf(f.selectionSet, input)) {
          if (e.name.value === "node" && e.selectionSet) {
            cost = Math.max(cost, 1 + childCost(nodeType, e.selectionSet, input, node, actual));
          }
        }
      }
    }
    return cost;
  };
  if (!actual) {
    const n = Number(args.first ?? args.last ?? 0);
    return 2 + n * perNode(undefined);
  }
  const nodes = firstList(set, input, data);
  return 2 + nodes.reduce((sum, node) => sum + perNode(node), 0);
}

/** The returned nodes of a connection, from `nodes` or `edges[].node`. */
function firstList(set: SelectionSetNode, input: CostInput, data: Data): Data[] {
  for (const f of fieldsOf(set, input)) {
    const key = f.alias?.value ?? f.name.value;
    const value = data?.[key];
    if (f.name.value === "nodes" && Array.isArray(value)) return value as Data[];
    if (f.name.value === "edges" && Array.isArray(value) && f.selectionSet) {
      const nodeField = fieldsOf(f.selectionSet, input).find((e) => e.name.value === "node");
      const nodeKey = nodeField ? (nodeField.alias?.value ?? "node") : undefined;
      return (value as Data[]).map((edge) => (nodeKey ? edge?.[nodeKey] as Data : undefined));
    }
  }
  return [];
}

function rootType(input: CostInput): GraphQLObjectType {
  const type = input.operation.operation === "mutation"
    ? input.schema.getMutationType()
    : input.schema.getQueryType();
  if (!type) throw new Error(`schema has no ${input.operation.operation} type`);
  return type;
}

/** Worst-case cost of the operation, charged before it runs. */
export function requestedQueryCost(input: CostInput): number {
  if (input.operation.operation === "mutation") {
    return fieldsOf(input.operation.selectionSet, input).filter((f) => f.name.value !== "__typename").length *
      MUTATION_COST;
  }
  return selectionCost(rootType(input), input.operation.selectionSet, input, undefined, false);
}

/** Cost of what was actually returned. */
export function actualQueryCost(input: CostInput, data: Record<string, unknown> | null | undefined): number {
  if (data == null) return 0;
  if (input.operation.operation === "mutation") {
    return fieldsOf(input.operation.selectionSet, input)
      .filter((f) => f.name.value !== "__typename" && data[f.alias?.value ?? f.name.value] !== undefined)
      .length * MUTATION_COST;
  }
  return selectionCost(rootType(input), input.operation.selectionSet, input, data, true);
}
