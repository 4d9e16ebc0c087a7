/**
 * One GraphQL request against the sandbox shop, in Shopify's order: parse, validate
 * against the published schema, coerce variables, Shopify's own request checks
 * (`@idempotent` required, `changeFromQuantity` present, input arrays ≤ 250), cost
 * and the leaky bucket, then execution with graphql-js on the real schema. Every
 * GraphQL-level answer is HTTP 200 with `errors` and/or `data` and `extensions.cost`.
 */
import {
  type DocumentNode,
  execute,
  type FragmentDefinitionNode,
  getArgumentValues,
  getDirectiveValues,
  getOperationAST,
  getVariableValues,
  GraphQLError,
  type GraphQLFormattedError,
  Kind,
  type OperationDefinitionNode,
  parse,
  validate,
} from "graphql";
import {
  actualQueryCost,
  type CostInput,
  fieldsOf,
  type LeakyBucket,
  MAX_SINGLE_QUERY_COST,
  requestedQueryCost,
} from "../cost.ts";
import {
  maxCostExceededError,
  MISSING_QUERY_BODY,
  requestError,
  shopifyValidationError,
  throttledError,
} from "./errors.ts";
import { IDEMPOTENT_MUTATIONS, type ShopifyContext, shopifyRoot } from "./resolvers.ts";
import { shopifySchema } from "./schema.ts";

/** Shopify's maximum size of any input array. */
export const MAX_INPUT_ARRAY = 250;

/** How a request ended, for stats. */
export type Outcome = "executed" | "invalid" | "throttled" | "cost_exceeded" | "bad_request";

/** An HTTP answer to a GraphQL request. */
export interface GraphQLHttpAnswer {
  status: number;
  body: unknown;
  outcome: Outcome;
  /** Points the request kept from the bucket: its actual cost once run (refund applied), else none. */
  points?: number;
}

/** What the pipeline needs besides the request. */
export interface PipelineDeps {
  bucket: LeakyBucket;
  /** Force THROTTLED whatever the bucket holds (fault). */
  throttleAll: boolean;
  context: ShopifyContext;
}

const INPUT_LISTS = [
  { field: "inventoryAdjustQuantities", list: "changes", type: "InventoryChangeInput" },
  { field: "inventorySetQuantities", list: "quantities", type: "InventoryQuantityInput" },
];

/**
 * Shopify's checks that the schema cannot express: they refuse the request before
 * anything runs (top-level errors, no data).
 */
function shopifyRequestErrors(input: CostInput): GraphQLFormattedError[] {
  if (input.operation.operation !== "mutation") return [];
  const errors: GraphQLFormattedError[] = [];
  const mutation = input.schema.getMutationType()!;
  const idempotent = input.schema.getDirective("idempotent")!;
  for (const field of fieldsOf(input.operation.selectionSet, input)) {
    const def = mutation.getFields()[field.name.value];
    if (!def) continue;
    const where = { locations: field.loc ? [locationOf(field.loc)] : undefined, path: [field.name.value] };
    const args = getArgumentValues(def, field, input.variables) as { input?: Record<string, unknown> };
    for (const spec of INPUT_LISTS.filter((s) => s.field === def.name)) {
      const list = args.input?.[spec.list];
      if (!Array.isArray(list)) continue;
      if (list.length > MAX_INPUT_ARRAY) {
        errors.push(requestError(
          `The input array size of ${list.length} is greater than the maximum allowed of ${MAX_INPUT_ARRAY}.`,
          "MAX_INPUT_SIZE_EXCEEDED",
          { ...where, path: [...where.path, "input", spec.list] },
        ));
      }
      // Nullable in the schema, yet Shopify requires the key (null opts out of the check).
      list.forEach((item: Record<string, unknown>, i) => {
        if (!("changeFromQuantity" in item)) {
          errors.push(requestError(
            `${spec.type} must include the following argument: changeFromQuantity.`,
            "INVALID_FIELD_ARGUMENTS",
            { ...where, path: [...where.path, "input", spec.list, i] },
          ));
        }
      });
    }
    if (IDEMPOTENT_MUTATIONS.has(def.name)) {
      const directive = getDirectiveValues(idempotent, field, input.variables);
      if (!directive) {
        errors.push(requestError(
          "The @idempotent directive is required for this mutation but was not provided.",
          "BAD_REQUEST",
          where,
        ));
      } else if (!String(directive.key).trim()) {
        errors.push(requestError(
          "The idempotency key cannot be an empty string or whitespace only.",
          "BAD_REQUEST",
          where,
        ));
      }
    }
  }
  return errors;
}

function locationOf(loc: { startToken: { line: number; column: number } }) {
  return { line: loc.startToken.line, column: loc.startToken.column };
}

function answer(body: Record<string, unknown>, outcome: Outcome): GraphQLHttpAnswer {
  return { status: 200, body, outcome };
}

/** Runs one GraphQL request body (already JSON-decoded) against the sandbox shop. */
export async function runShopifyGraphQL(body: unknown, deps: PipelineDeps): Promise<GraphQLHttpAnswer> {
  const schema = shopifySchema();
  const { bucket, context } = deps;
  const request = (body ?? {}) as { query?: unknown; variables?: unknown; operationName?: unknown };
  if (typeof request.query !== "string" || !request.query.trim()) {
    return { status: 400, body: MISSING_QUERY_BODY, outcome: "bad_request" };
  }
  const cost = (requested: number, actual: number | null) => ({
    cost: { requestedQueryCost: requested, actualQueryCost: actual, throttleStatus: bucket.status() },
  });
  const invalid = (errors: GraphQLFormattedError[]) => answer({ errors, extensions: cost(0, 0) }, "invalid");

  let document: DocumentNode;
  try {
    document = parse(request.query);
  } catch (e) {
    if (e instanceof GraphQLError) return invalid([e.toJSON()]);
    throw e;
  }
  const validation = validate(schema, document);
  if (validation.length) return invalid(validation.map(shopifyValidationError));

  const operationName = typeof request.operationName === "string" ? request.operationName : undefined;
  const operation: OperationDefinitionNode | null | undefined = getOperationAST(document, operationName);
  if (!operation) {
    return invalid([{
      message: operationName
        ? `No operation named "${operationName}"`
        : "An operation name is required when the document has several operations",
    }]);
  }
  const variableInput = request.variables && typeof request.variables === "object"
    ? request.variables as Record<string, unknown>
    : {};
  const coerced = getVariableValues(schema, operation.variableDefinitions ?? [], variableInput);
  if (coerced.errors) return invalid(coerced.errors.map((e) => e.toJSON()));

  const fragments: Record<string, FragmentDefinitionNode> = {};
  for (const def of document.definitions) {
    if (def.kind === Kind.FRAGMENT_DEFINITION) fragments[def.name.value] = def;
  }
  const costInput: CostInput = { schema, operation, fragments, variables: coerced.coerced };

  const requestErrors = shopifyRequestErrors(costInput);
  if (requestErrors.length) return invalid(requestErrors);

  const requested = requestedQueryCost(costInput);
  const ceiling = Math.min(MAX_SINGLE_QUERY_COST, bucket.settings.maximumAvailable);
  if (requested > ceiling) {
    return answer(
      { errors: [maxCostExceededError(requested, ceiling)], extensions: cost(requested, null) },
      "cost_exceeded",
    );
  }
  if (deps.throttleAll || !bucket.tryTake(requested)) {
    return answer({ errors: [throttledError()], extensions: cost(requested, null) }, "throttled");
  }

  // Queries wait before reading; mutations wait inside, holding their idempotency key.
  if (operation.operation === "query") await context.latency();
  const result = await execute({
    schema,
    document,
    rootValue: shopifyRoot(context),
    contextValue: context,
    variableValues: coerced.coerced,
    operationName,
  });
  await context.latency();
  const actual = actualQueryCost(costInput, result.data as Record<string, unknown> | null | undefined);
  bucket.refund(requested - actual);
  const extensions: Record<string, unknown> = cost(requested, actual);
  if (context.searchWarnings.length) extensions.search = context.searchWarnings;
  return {
    ...answer({
      ...(result.errors ? { errors: result.errors.map((e) => e.toJSON()) } : {}),
      data: result.data ?? null,
      extensions,
    }, "executed"),
    points: actual,
  };
}
