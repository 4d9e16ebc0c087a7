/**
 * Headless Chromium for browser tests: Debian's `chromium` package (CI installs
 * it in .ci/run), driven by playwright-core, which downloads no browser itself.
 * `CHROMIUM_PATH` points at another binary.
 */
import { type Browser, chromium } from "playwright-core";

const CANDIDATES = [
  "/usr/bin/chromium",
  "/usr/lib/chromium/chromium",
  "/usr/bin/chromium-browser",
  "/usr/bin/google-chrome",
];

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** The Chromium binary to use, or undefined when none is installed. */
export function findChromium(): string | undefined {
  const fromEnv = Deno.env.get("CHROMIUM_PATH");
  if (fromEnv) return isFile(fromEnv) ? fromEnv : undefined;
  return CANDIDATES.find(isFile);
}

/** Set at load time so tests can use it for `ignore`. */
export const CHROMIUM_PATH: string | undefined = findChromium();

const MISSING = "no Chromium found (install Debian's `chromium` or set CHROMIUM_PATH)";

/**
 * Why browser tests are skipped (printed once), or undefined when they run. In CI
 * (`CI=true`, where .ci/run installs Chromium) they always run, and fail without it.
 */
export const NO_CHROMIUM: string | undefined = CHROMIUM_PATH || Deno.env.get("CI") === "true"
  ? undefined
  : (() => {
    const why = `${MISSING}: skipping browser tests`;
    console.warn(why);
    return why;
  })();

/** Launches headless Chromium. `--no-sandbox`: CI runs as root, where Chromium's sandbox refuses to start. */
export async function launchChromium(): Promise<Browser> {
  if (!CHROMIUM_PATH) throw new Error(MISSING);
  return await chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    timeout: 30_000,
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
  });
}
