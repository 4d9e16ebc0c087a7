/**
 * The log secret scanner (issue #7 item 4), shared by the secret-scan test, the
 * fuzz test and the chaos suite: given captured output and the secret values a
 * run was configured with (or that a sandbox minted), it says on which lines any
 * of them appears — as is, URL-encoded or JSON-escaped.
 */
import { SECRET_VARIABLES } from "../../src/config.ts";

/** One place a secret was found. `line` is 1-based. */
export interface SecretHit {
  secret: string;
  line: number;
}

/** Shorter values are too common to mean anything when found (e.g. `guest`). */
export const MIN_SECRET_LENGTH = 8;

/** The spellings of a secret worth looking for: raw, URL-encoded, JSON-escaped. */
function spellings(secret: string): string[] {
  const forms = new Set([secret, encodeURIComponent(secret), JSON.stringify(secret).slice(1, -1)]);
  return [...forms];
}

/**
 * Every line of `text` that contains one of `secrets` (in any of its spellings).
 * Throws when a secret is shorter than {@link MIN_SECRET_LENGTH}: scanning for
 * `guest` would find noise, and silently skipping it would hide a gap.
 */
export function scanForSecrets(text: string, secrets: Iterable<string>): SecretHit[] {
  const wanted = [...new Set(secrets)];
  for (const secret of wanted) {
    if (secret.length < MIN_SECRET_LENGTH) {
      throw new Error(`secret "${secret.slice(0, 2)}…" is shorter than ${MIN_SECRET_LENGTH} characters`);
    }
  }
  const hits: SecretHit[] = [];
  const lines = text.split("\n");
  for (const [index, line] of lines.entries()) {
    for (const secret of wanted) {
      if (spellings(secret).some((form) => line.includes(form))) hits.push({ secret, line: index + 1 });
    }
  }
  return hits;
}

/** A secret shown safely in a report: its first 4 characters and its length. */
export function maskSecret(secret: string): string {
  return `${secret.slice(0, 4)}…(${secret.length} chars)`;
}

/**
 * A readable report of hits: where, which secret (masked), and the line with
 * every secret masked, so the report itself leaks nothing.
 */
export function describeHits(
  source: string,
  text: string,
  hits: SecretHit[],
  secrets: Iterable<string>,
): string {
  const lines = text.split("\n");
  const all = [...new Set(secrets)].sort((a, b) => b.length - a.length);
  return hits.map((hit) => {
    let shown = lines[hit.line - 1] ?? "";
    for (const secret of all) {
      for (const form of spellings(secret)) shown = shown.replaceAll(form, `<${maskSecret(secret)}>`);
    }
    return `${source}:${hit.line}: ${maskSecret(hit.secret)} in: ${shown.slice(0, 400)}`;
  }).join("\n");
}

/**
 * The secret values in a service environment: the variables the config marks
 * secret, and the password of every `*_URL` variable. Values shorter than
 * {@link MIN_SECRET_LENGTH} are returned in `tooShort` instead, so a caller can
 * say what it could not scan for.
 */
export function secretsFromEnv(
  env: Record<string, string | undefined>,
): { secrets: string[]; tooShort: string[] } {
  const found: string[] = [];
  for (const [name, value] of Object.entries(env)) {
    if (!value) continue;
    if (SECRET_VARIABLES.has(name)) found.push(value);
    else if (name.endsWith("_URL") && URL.canParse(value)) {
      const password = decodeURIComponent(new URL(value).password);
      if (password) found.push(password);
    }
  }
  const unique = [...new Set(found)];
  return {
    secrets: unique.filter((s) => s.length >= MIN_SECRET_LENGTH),
    tooShort: unique.filter((s) => s.length < MIN_SECRET_LENGTH).map((s) => s.slice(0, 2) + "…"),
  };
}
