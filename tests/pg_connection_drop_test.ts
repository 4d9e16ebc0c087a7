/**
 * The Postgres driver survives connections dropped inside transactions (issue #12 item 9,
 * docs/RELIABILITY.md finding 3). postgres.js 3.4.9 wrote a transaction's ROLLBACK to a connection whose
 * socket it had already nulled, and its setImmediate flush threw `TypeError: Cannot read properties of null
 * (reading 'write')` outside any promise: the process died. deno.json maps "postgres" to the patched copy
 * in vendor/postgres-3.4.9 (its README says what changed).
 *
 * A child process runs transactions while this test terminates its backends (found by application_name,
 * unique to the run: no other backend is touched) every 150 ms. The process must outlive every kill and
 * keep committing, and a transaction after the kills must succeed on the same pool.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { DATABASE_URL, integration, uniqueName } from "./helpers.ts";

const ROOT = new URL("../", import.meta.url).pathname;

integration(
  "a backend terminated inside a transaction rejects that transaction and never kills the process",
  async () => {
    const applicationName = uniqueName("pgdrop");
    const admin = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net",
        "--allow-env",
        "tests/fixtures/pg_transactions_child.ts",
        DATABASE_URL,
        applicationName,
        "6",
      ],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const output = child.output();
    let exited = false;
    output.finally(() => exited = true);
    let killed = 0;
    try {
      const started = Date.now();
      // Kill for 5 s of the child's 6: the last second shows the pool working again.
      while (!exited && Date.now() - started < 5_000) {
        await new Promise((r) => setTimeout(r, 150));
        const rows = await admin`
        select pg_terminate_backend(pid) as done from pg_stat_activity
        where application_name = ${applicationName} and pid <> pg_backend_pid()`;
        killed += rows.filter((r) => r.done).length;
      }
    } finally {
      await admin.end();
    }
    const { code, stdout, stderr } = await output;
    const err = new TextDecoder().decode(stderr);
    assert.equal(code, 0, `the process died after ${killed} backend kills:\n${err.slice(0, 1500)}`);
    assert.ok(killed >= 10, `backends terminated: ${killed}`);
    const report = JSON.parse(new TextDecoder().decode(stdout).trim().split("\n").at(-1)!);
    assert.ok(report.committed > 0, `transactions committed: ${JSON.stringify(report)}`);
    assert.equal(report.after, 1, "a transaction after the kills commits on the same pool");
    // Only connection errors: a transaction whose backend died is rejected, nothing else goes wrong.
    for (const reason of Object.keys(report.errors)) {
      assert.match(
        reason,
        /CONNECTION_CLOSED|CONNECTION_DESTROYED|57P01|ECONNRESET|EPIPE|CONNECT_TIMEOUT/,
        JSON.stringify(report),
      );
    }
  },
);
