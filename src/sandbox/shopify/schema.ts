/**
 * The Shopify Admin GraphQL schema the sandbox serves: a committed subset of the
 * published 2026-10 introspection (see scripts/extract_shopify_schema.ts), built
 * once with graphql-js so every request is validated against Shopify's real types.
 */
import { buildClientSchema, type GraphQLSchema, type IntrospectionQuery } from "graphql";
import subset from "./schema_2026-10.json" with { type: "json" };

/** API version whose schema this is. */
export const SHOPIFY_SCHEMA_VERSION = "2026-10";

let cached: GraphQLSchema | undefined;

/** The executable-shape schema (built on first use, then shared). */
export function shopifySchema(): GraphQLSchema {
  cached ??= buildClientSchema(subset as unknown as IntrospectionQuery);
  return cached;
}

/**
 * The published description of an enum value (Shopify's own wording), used as the
 * message of the user errors the sandbox returns.
 */
export function enumValueDescription(enumName: string, value: string): string {
  const type = (subset as unknown as IntrospectionQuery).__schema.types.find((t) => t.name === enumName);
  const entry = type && "enumValues" in type ? type.enumValues.find((v) => v.name === value) : undefined;
  if (!entry) throw new Error(`${enumName}.${value} is not in the Shopify schema`);
  return entry.description ?? value;
}
