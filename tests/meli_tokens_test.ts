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
import {
  AuthUnavailableError,
  OAuthTokens,
  type OAuthTokensOptions,
} from "../src/channels/mercadolibre/tokens.ts";
import { migrate } from "../src/ledger/migrate.ts";
import { startMeliSandbox } from "../src/sandbox/mercadolibre/sandbox.ts";
import { resetLogging, setupLogging } from "../src/log.ts";
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

/** A schema with the ledger, an OAuthTokens factory on the sandbox, and cleanup. */
async function tokenLedger(sandbox: Awaited<ReturnType<typeof startMeliSandbox>>, timeoutMs: number) {
  const schema = uniqueName("msync_tok");
  const sql = postgres(DATABASE_URL, { max: 3, onnotice: () => {}, connection: { search_path: schema } });
  await sql.unsafe(`create schema ${schema}`);
  await migrate(sql, schema);
  const seed = sandbox.currentRefreshToken();
  const make = (extra: Partial<OAuthTokensOptions> = {}) =>
    new OAuthTokens({
      sql,
      baseUrl: sandbox.url,
      clientId: sandbox.clientId,
      clientSecret: sandbox.clientSecret,
      refreshToken: seed,
      timeoutMs,
      ...extra,
    });
  const chain = async () => (await sql<{ status: string }[]>`select status from oauth_token`)[0]?.status;
  return {
    sql,
    make,
    chain,
    async drop() {
      await sql.unsafe(`drop schema if exists ${schema} cascade`);
      await sql.end();
    },
  };
}

/**
 * The next start: with every access token expired, a new token holder refreshes from the stored
 * pair, never replaying a spent refresh token, and the stored chain stays ok.
 */
async function assertRestartContinuesChain(
  sandbox: Awaited<ReturnType<typeof startMeliSandbox>>,
  ledger: Awaited<ReturnType<typeof tokenLedger>>,
): Promise<void> {
  sandbox.expireAccessTokens();
  await ledger.make().get();
  assert.equal(sandbox.stats().refreshFailures, 0, "the spent refresh token was never replayed");
  assert.equal(await ledger.chain(), "ok");
}

integration(
  "a refresh answered after MELI_TIMEOUT is kept: the rotated pair is stored, the chain is not invalid_grant",
  async () => {
    // MeLi takes 1.2 s to answer the refresh; the service waits 300 ms (MELI_TIMEOUT).
    const sandbox = await startMeliSandbox({ faults: { latencyMs: 1_200 } });
    const ledger = await tokenLedger(sandbox, 300);
    const tokens = ledger.make();
    try {
      await assert.rejects(tokens.get(), AuthUnavailableError, "the caller stops waiting at MELI_TIMEOUT");
      await waitFor(() => sandbox.stats().refreshes === 1, "MeLi rotated the refresh token");
      sandbox.setFaults({ latencyMs: 0 });
      await waitFor(async () => await ledger.chain() === "ok", "the late answer's pair stored", 5_000);
      const token = await tokens.get();
      const me = await fetch(`${sandbox.url}/users/me`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(me.status, 200, "the late answer's access token is used");
      await me.body?.cancel();
      // A restart continues the chain from the stored (rotated) refresh token.
      await assertRestartContinuesChain(sandbox, ledger);
    } finally {
      await tokens.close();
      await ledger.drop();
      await sandbox.close();
    }
  },
);

integration(
  "shutdown in the middle of a refresh waits for MeLi's answer and stores the rotated pair",
  async () => {
    const sandbox = await startMeliSandbox({ faults: { latencyMs: 800 } });
    const ledger = await tokenLedger(sandbox, 5_000);
    const tokens = ledger.make();
    try {
      const shutdown = new AbortController();
      const waiting = tokens.get(shutdown.signal);
      await new Promise((r) => setTimeout(r, 200)); // the refresh is on its way to MeLi
      shutdown.abort();
      await assert.rejects(waiting, AuthUnavailableError);
      await tokens.close(); // what the service does before closing the ledger
      assert.equal(sandbox.stats().refreshes, 1, "MeLi rotated the refresh token");
      assert.equal(await ledger.chain(), "ok", "the rotated pair is stored before shutdown ends");
      sandbox.setFaults({ latencyMs: 0 });
      await assertRestartContinuesChain(sandbox, ledger); // the next start
    } finally {
      await tokens.close();
      await ledger.drop();
      await sandbox.close();
    }
  },
);

integration(
  "a refresh that never gets an answer does not turn the stored chain into invalid_grant",
  async () => {
    // MeLi rotates the token but its answer never arrives (cut after 400 ms); the next refresh
    // with the old token is refused with invalid_grant.
    const sandbox = await startMeliSandbox({ faults: { latencyMs: 900 } });
    const ledger = await tokenLedger(sandbox, 400);
    const tokens = ledger.make({ answerCapMs: 400 });
    try {
      await assert.rejects(tokens.get(), AuthUnavailableError);
      await waitFor(() => sandbox.stats().refreshes === 1, "MeLi rotated the refresh token");
      sandbox.setFaults({ latencyMs: 0 });
      const refused = await tokens.get().then(() => undefined, (e) => e as AuthUnavailableError);
      assert.ok(refused instanceof AuthUnavailableError, "no token can be had");
      assert.equal(sandbox.stats().refreshFailures, 1, "MeLi refused the spent token");
      assert.notEqual(await ledger.chain(), "invalid_grant", "the stored chain is not marked invalid_grant");
      assert.equal(tokens.health().ok, false);
      assert.match(tokens.health().detail ?? "", /got no answer/);
    } finally {
      await tokens.close();
      await ledger.drop();
      await sandbox.close();
    }
  },
);

/** Captures the service's log lines (JSON) until the returned stop is awaited. */
async function captureLogs(): Promise<{ lines: string[]; stop: () => Promise<void> }> {
  const lines: string[] = [];
  await setupLogging({ level: "debug", format: "json", write: (line) => lines.push(line) });
  return { lines, stop: resetLogging };
}

integration(
  "shutdown stops waiting for a slow refresh at its deadline and warns that it was still in flight",
  async () => {
    // MeLi takes 3 s to answer; the shutdown budget left for the tokens is 500 ms.
    const sandbox = await startMeliSandbox({ faults: { latencyMs: 3_000 } });
    const ledger = await tokenLedger(sandbox, 200);
    const tokens = ledger.make();
    const logs = await captureLogs();
    try {
      await assert.rejects(tokens.get(), AuthUnavailableError, "the caller stops waiting at MELI_TIMEOUT");
      const began = Date.now();
      await tokens.close(began + 500);
      const took = Date.now() - began;
      assert.ok(took < 1_500, `close() kept to its deadline (took ${took} ms)`);
      const warned = logs.lines.filter((l) => /still in flight/.test(l));
      assert.equal(
        warned.length,
        1,
        `one warning says the refresh was still in flight:\n${logs.lines.join("")}`,
      );
      assert.equal(JSON.parse(warned[0]).level, "warning");
      const [row] = await ledger.sql<{ error: string | null }[]>`select error from oauth_token`;
      assert.match(row?.error ?? "", /^unanswered refresh:/, "the chain says its last refresh got no answer");
    } finally {
      await logs.stop();
      // Let the refresh finish before the ledger goes away.
      await waitFor(
        async () => (await ledger.sql`select 1 from oauth_token where error is null`).length === 1,
        "the late pair stored",
        6_000,
      ).catch(() => {});
      await tokens.close();
      await ledger.drop();
      await sandbox.close();
    }
  },
);

integration(
  "a refresh that could not connect leaves the chain untouched: a later invalid_grant is permanent and paused",
  async () => {
    const sandbox = await startMeliSandbox({});
    const ledger = await tokenLedger(sandbox, 2_000);
    // A loopback port nobody listens on: the connection is refused, nothing reaches MeLi.
    const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (closed.addr as Deno.NetAddr).port;
    closed.close();
    const refreshToken = "TG-never-issued-by-meli";
    const refused = ledger.make({ refreshToken, baseUrl: `http://127.0.0.1:${port}` });
    const tokens = ledger.make({ refreshToken });
    try {
      const down = await refused.get().then(() => undefined, (e) => e as AuthUnavailableError);
      assert.ok(down instanceof AuthUnavailableError && !down.permanent, "MeLi unreachable: transient");
      const rows = await ledger.sql<{ error: string | null }[]>`select error from oauth_token`;
      assert.equal(rows.length, 0, `nothing was sent, so the chain is not marked: ${JSON.stringify(rows)}`);

      const grant = await tokens.get().then(() => undefined, (e) => e as AuthUnavailableError);
      assert.ok(grant instanceof AuthUnavailableError, "no token can be had");
      assert.equal(grant.permanent, true, `a genuine invalid_grant is permanent: ${grant.message}`);
      assert.equal(await ledger.chain(), "invalid_grant");
      for (let i = 0; i < 5; i++) await assert.rejects(tokens.get(), AuthUnavailableError);
      assert.equal(sandbox.stats().refreshFailures, 1, "one POST /oauth/token, then the pause");
    } finally {
      await refused.close();
      await tokens.close();
      await ledger.drop();
      await sandbox.close();
    }
  },
);

integration(
  "an unanswered first refresh then invalid_grant: reported as a lost answer, paused like a broken chain, no decryption warning",
  async () => {
    const sandbox = await startMeliSandbox({ faults: { latencyMs: 900 } });
    const ledger = await tokenLedger(sandbox, 400);
    const tokens = ledger.make({ answerCapMs: 400 });
    const logs = await captureLogs();
    try {
      // No token row yet: the unanswered refresh is the chain's first.
      await assert.rejects(tokens.get(), AuthUnavailableError);
      await waitFor(() => sandbox.stats().refreshes === 1, "MeLi rotated the refresh token");
      sandbox.setFaults({ latencyMs: 0 });
      await assert.rejects(tokens.get(), /got no answer/);
      assert.equal(sandbox.stats().refreshFailures, 1);
      const misleading = logs.lines.filter((l) => /cannot be decrypted/.test(l));
      assert.deepEqual(misleading, [], "no pair was ever stored: nothing to decrypt");
      for (let i = 0; i < 5; i++) await assert.rejects(tokens.get(), /got no answer/);
      assert.equal(sandbox.stats().refreshFailures, 1, "no POST /oauth/token per get(): paused");
      assert.notEqual(await ledger.chain(), "invalid_grant");
    } finally {
      await logs.stop();
      await tokens.close();
      await ledger.drop();
      await sandbox.close();
    }
  },
);
