/**
 * The MercadoLibre token chain when the ledger refuses the new pair in the
 * middle of a refresh: MeLi has already spent the old refresh token, so the
 * pair it minted must survive until the ledger takes it.
 *
 * The refusal is made by renaming the table while the refresh call is in
 * flight, not by cutting the connection: postgres.js 3.4.9 can throw an
 * uncaught error when a connection dies under a query (docs/RELIABILITY.md),
 * which would end the test process rather than test our code.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { OAuthTokens } from "../src/channels/mercadolibre/tokens.ts";
import { migrate } from "../src/ledger/migrate.ts";
import { startMeliSandbox } from "../src/sandbox/mercadolibre.ts";
import { DATABASE_URL, integration, uniqueName, waitFor } from "./helpers.ts";

integration("the ledger refuses a refreshed pair: kept in memory, used, stored once it can be", async () => {
  const sandbox = await startMeliSandbox({ faults: { latencyMs: 800 } });
  const schema = uniqueName("msync_tok");
  const sql = postgres(DATABASE_URL, { max: 3, onnotice: () => {}, connection: { search_path: schema } });
  const make = () =>
    new OAuthTokens({
      sql,
      baseUrl: sandbox.url,
      clientId: sandbox.clientId,
      clientSecret: sandbox.clientSecret,
      refreshToken: sandbox.currentRefreshToken(),
      timeoutMs: 5_000,
    });
  const tokens = make();
  try {
    await sql.unsafe(`create schema ${schema}`);
    await migrate(sql, schema);
    const pending = tokens.get();
    await new Promise((r) => setTimeout(r, 300)); // the call to /oauth/token takes 800 ms
    await sql`alter table oauth_token rename to oauth_token_away`;
    const token = await pending;
    assert.equal(sandbox.stats().refreshes, 1);
    const me = await fetch(`${sandbox.url}/users/me`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(me.status, 200, "the pair kept in memory works");
    await me.body?.cancel();
    assert.equal((await sql`select 1 from oauth_token_away`).length, 0, "nothing stored while refused");
    await sql`alter table oauth_token_away rename to oauth_token`;
    await waitFor(
      async () => (await sql`select 1 from oauth_token where status = 'ok'`).length === 1,
      "stored",
    );
    // A restart with the same (spent) MELI_REFRESH_TOKEN continues from the stored pair.
    sandbox.expireAccessTokens();
    await make().get();
    assert.equal(sandbox.stats().refreshes, 2);
    assert.equal(sandbox.stats().refreshFailures, 0, "the spent refresh token was never replayed");
  } finally {
    tokens.close();
    await sql.unsafe(`drop schema if exists ${schema} cascade`);
    await sql.end();
    await sandbox.close();
  }
});
