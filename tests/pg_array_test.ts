/**
 * text[] parameters as array literals: every value comes back as it went, on a fresh client's first query
 * (where postgres.js's own array serialization may not know the server's types yet).
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { textArrayLiteral } from "../src/pos/pg_array.ts";
import { DATABASE_URL, integration } from "./helpers.ts";

Deno.test("a text[] literal quotes every value and escapes quotes and backslashes", () => {
  assert.equal(textArrayLiteral([]), "{}");
  assert.equal(
    textArrayLiteral(["a", null, 'say "hi"', "C:\\x", "a,b", "{}"]),
    '{"a",NULL,"say \\"hi\\"","C:\\\\x","a,b","{}"}',
  );
});

integration(
  "a text[] literal is read back exactly by Postgres, as a fresh client's first query",
  async () => {
    const values = [
      "11111111-1111-4111-8111-111111111111",
      "a,b",
      'd"e',
      "back\\slash",
      "{braces}",
      " spaced ",
      "NULL",
    ];
    for (let i = 0; i < 5; i++) {
      const sql = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
      try {
        // Element by element, server side (postgres.js's own parsing of a returned array is not what is tested).
        const rows = await sql.unsafe(
          "select v, v is null as missing from unnest($1::text[]) with ordinality as t(v, n) order by n",
          [textArrayLiteral([...values, null])],
        );
        assert.deepEqual(rows.map((r) => r.missing ? null : r.v), [...values, null]);
      } finally {
        await sql.end();
      }
    }
  },
);
