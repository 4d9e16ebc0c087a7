/**
 * A `text[]` parameter written out as Postgres's array literal (`{"a","b",NULL}`), for queries sent with
 * `sql.unsafe(text, params)` on the POS connection. postgres.js serializes a JS array by the array type it
 * has fetched from the server; a fresh client whose first query carries one can send it before the types
 * are known, as a bare `a,b` that Postgres refuses ("malformed array literal" — seen on the POS catalog's
 * first page). A literal string is the same value on every client; the query casts it (`$1::text[]`).
 */
export function textArrayLiteral(values: readonly (string | null)[]): string {
  const items = values.map((v) =>
    v === null ? "NULL" : `"${v.replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`
  );
  return `{${items.join(",")}}`;
}
