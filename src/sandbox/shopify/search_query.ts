/**
 * Shopify's search syntax (https://shopify.dev/docs/api/usage/search-syntax), the part
 * the sandbox needs: terms `field:value` or bare `value`, implicit AND, `OR`, `AND`,
 * `-`/`NOT` negation, values quoted with `"` or `'` (backslash escapes inside), bare
 * values with backslash escapes for the special characters `: \ ( )`, and a trailing
 * `*` for a prefix match, and — where the caller allows them — the range comparators
 * `<`, `<=`, `>`, `>=` after a field (`updated_at:>='2026-12-04T18:00:00Z'`; a bare value
 * then runs to the next space, colons included). Grouping parentheses are refused
 * rather than guessed at, and so are ranges where the caller does not allow them.
 */

/** One search term. `field` is undefined for a bare term (Shopify's "default" field). */
export interface SearchTerm {
  field?: string;
  value: string;
  /** Unquoted value ending in an unescaped `*`. */
  prefix: boolean;
  negated: boolean;
  /** A range term's comparator (`updated_at:>=…`); undefined for an equality term. */
  comparator?: "<" | "<=" | ">" | ">=";
}

/** Options of {@link parseSearchQuery}. */
export interface SearchParseOptions {
  /** Whether range comparators are accepted (the caller compares them); refused otherwise. */
  ranges?: boolean;
}

/** A parsed query: OR of AND-groups of terms. An empty query matches everything. */
export type SearchQuery = SearchTerm[][];

/** The query string could not be parsed (or uses syntax the sandbox does not model). */
export class SearchSyntaxError extends Error {
  override name = "SearchSyntaxError";
}

const SPECIAL = new Set([":", "\\", "(", ")"]);

function isSpace(c: string): boolean {
  return c === " " || c === "\t" || c === "\n" || c === "\r";
}

/** Parses a Shopify search query string. */
export function parseSearchQuery(input: string, options: SearchParseOptions = {}): SearchQuery {
  const groups: SearchQuery = [[]];
  let i = 0;
  let negateNext = false;

  const readQuoted = (quote: string): string => {
    let out = "";
    i++; // opening quote
    while (i < input.length) {
      const c = input[i];
      if (c === "\\") {
        if (i + 1 >= input.length) throw new SearchSyntaxError("dangling backslash in quoted value");
        out += input[i + 1];
        i += 2;
      } else if (c === quote) {
        i++;
        return out;
      } else {
        out += c;
        i++;
      }
    }
    throw new SearchSyntaxError(`unterminated ${quote}-quoted value`);
  };

  // A bare word up to whitespace; stops at an unescaped ':' so the caller can see a field.
  const readBare = (): { text: string; sawEscape: boolean; endedAtColon: boolean } => {
    let text = "";
    let sawEscape = false;
    while (i < input.length && !isSpace(input[i])) {
      const c = input[i];
      if (c === "\\") {
        if (i + 1 >= input.length) throw new SearchSyntaxError("dangling backslash");
        text += input[i + 1];
        sawEscape = true;
        i += 2;
        continue;
      }
      if (c === ":") return { text, sawEscape, endedAtColon: true };
      if (c === "(" || c === ")") {
        throw new SearchSyntaxError("grouping with parentheses is not supported by the sandbox; escape them");
      }
      text += c;
      i++;
    }
    return { text, sawEscape, endedAtColon: false };
  };

  const readValue = (): { value: string; prefix: boolean; comparator?: SearchTerm["comparator"] } => {
    const c = input[i];
    if (c === '"' || c === "'") return { value: readQuoted(c), prefix: false };
    if (c === ">" || c === "<" || c === "=") {
      const comparator = /^(<=|>=|<|>)/.exec(input.slice(i))?.[1] as SearchTerm["comparator"];
      if (!options.ranges || !comparator) {
        throw new SearchSyntaxError("range comparators are not supported by the sandbox for this field");
      }
      i += comparator!.length;
      const q = input[i];
      if (q === '"' || q === "'") return { value: readQuoted(q), prefix: false, comparator };
      const start = i;
      while (i < input.length && !isSpace(input[i])) i++;
      if (i === start) throw new SearchSyntaxError(`missing value after ${comparator}`);
      return { value: input.slice(start, i), prefix: false, comparator };
    }
    const start = i;
    const bare = readBare();
    if (bare.endedAtColon) throw new SearchSyntaxError(`unescaped ':' in value at ${i}`);
    if (!bare.text) throw new SearchSyntaxError(`missing value at ${start}`);
    // Only an unescaped trailing '*' makes a prefix query.
    const raw = input.slice(start, i);
    if (raw.endsWith("*") && !raw.endsWith("\\*")) return { value: bare.text.slice(0, -1), prefix: true };
    return { value: bare.text, prefix: false };
  };

  while (i < input.length) {
    if (isSpace(input[i])) {
      i++;
      continue;
    }
    if (input[i] === "-" && i + 1 < input.length && !isSpace(input[i + 1])) {
      negateNext = true;
      i++;
      continue;
    }
    if (input[i] === '"' || input[i] === "'") {
      groups.at(-1)!.push({ value: readQuoted(input[i]), prefix: false, negated: negateNext });
      negateNext = false;
      continue;
    }
    const start = i;
    const word = readBare();
    if (word.endedAtColon) {
      if (!word.text || word.sawEscape) throw new SearchSyntaxError(`bad field name at ${start}`);
      i++; // the ':'
      if (i >= input.length || isSpace(input[i])) {
        throw new SearchSyntaxError(`missing value for ${word.text}`);
      }
      const { value, prefix, comparator } = readValue();
      groups.at(-1)!.push({
        field: word.text.toLowerCase(),
        value,
        prefix,
        negated: negateNext,
        ...(comparator ? { comparator } : {}),
      });
      negateNext = false;
      continue;
    }
    if (!word.sawEscape && word.text === "OR") {
      if (groups.at(-1)!.length === 0) throw new SearchSyntaxError("OR without a term before it");
      groups.push([]);
      continue;
    }
    if (!word.sawEscape && word.text === "AND") continue;
    if (!word.sawEscape && word.text === "NOT") {
      negateNext = true;
      continue;
    }
    const raw = input.slice(start, i);
    const prefix = raw.endsWith("*") && !raw.endsWith("\\*");
    groups.at(-1)!.push({ value: prefix ? word.text.slice(0, -1) : word.text, prefix, negated: negateNext });
    negateNext = false;
  }
  if (groups.at(-1)!.length === 0 && groups.length > 1) {
    throw new SearchSyntaxError("OR without a term after it");
  }
  return groups.filter((g) => g.length > 0);
}

/**
 * Escapes a value for use inside a double-quoted search value (`sku:"…"`): a
 * backslash before `"` and `\`. The service's Shopify adapter must do the same.
 */
export function quoteSearchValue(value: string): string {
  return `"${value.replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`;
}

/** True when `c` must be escaped in an unquoted value. */
export function isSpecialSearchCharacter(c: string): boolean {
  return SPECIAL.has(c);
}

/** How a sandbox resource answers one term; `undefined` means the field is unknown. */
export type TermMatcher<T> = (item: T, term: SearchTerm) => boolean | undefined;

/** Result of {@link filterBySearch}: matches plus Shopify-style warnings for unknown fields. */
export interface SearchResult<T> {
  items: T[];
  warnings: { field: string; message: string }[];
}

/**
 * Filters `items` by a parsed query. Terms on fields the matcher does not know are
 * ignored with a warning, as Shopify does ("Invalid search field for this query.").
 */
export function filterBySearch<T>(
  items: readonly T[],
  query: SearchQuery,
  match: TermMatcher<T>,
): SearchResult<T> {
  const warnings: { field: string; message: string }[] = [];
  const unknown = new Set<string>();
  const termHolds = (item: T, term: SearchTerm): boolean => {
    const hit = match(item, term);
    if (hit === undefined) {
      if (term.field && !unknown.has(term.field)) {
        unknown.add(term.field);
        warnings.push({ field: term.field, message: "Invalid search field for this query." });
      }
      return true;
    }
    return term.negated ? !hit : hit;
  };
  const result = query.length === 0
    ? [...items]
    : items.filter((item) => query.some((group) => group.every((term) => termHolds(item, term))));
  return { items: result, warnings };
}

/** Case-insensitive equality, or prefix when the term asks for one. */
export function textMatches(actual: string | null | undefined, term: SearchTerm): boolean {
  if (actual == null) return false;
  const a = actual.toLowerCase();
  const v = term.value.toLowerCase();
  return term.prefix ? a.startsWith(v) : a === v;
}
