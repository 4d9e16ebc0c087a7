/**
 * The Shopify sandbox's stand-in for the host that serves bulk operation results.
 *
 * Shopify hands out a bulk operation's JSONL as a signed Google Cloud Storage URL
 * (`https://storage.googleapis.com/shopify-tiers-assets-prod-us-east1/bulk-operation-outputs/<key>-final?GoogleAccessId=…&Expires=…&Signature=…`,
 * as seen in responses quoted by public clients). That host is not the shop: the
 * signature in the URL is the only credential, and the shop's access token has no
 * business travelling there. So this listener is separate from the API's — another
 * port, and URLs that name `localhost` rather than `127.0.0.1` (src/permissions.ts
 * grants both), so a client that attaches its shop credentials by host would not
 * match it — and it refuses any request carrying `X-Shopify-Access-Token` (or an
 * `Authorization` header), counting it as a leak for tests to assert on.
 *
 * Files are served as a stream of small chunks (optionally paced), so a client that
 * reads line by line can be seen to start before the download ends.
 */
import { logger } from "../../log.ts";

const log = logger("sandbox");

/** The bucket path Shopify's result URLs use. */
const BUCKET = "shopify-tiers-assets-prod-us-east1";
/** Result URLs expire seven days after they are issued (BulkOperation.url). */
export const RESULT_URL_TTL_MS = 7 * 24 * 3600_000;
const CHUNK_BYTES = 16 * 1024;

/** Options of {@link startBulkStorage}. */
export interface BulkStorageOptions {
  /** TCP port on localhost; 0 (default) picks a free one. */
  port?: number;
  /** Pause between two chunks of a download, in ms (0: as fast as the client reads). */
  chunkDelayMs?: number;
  /** Clock (ms), for expiry. */
  now?: () => number;
}

/** One download, as far as it got. */
export interface DownloadProgress {
  /** The file's key (not the signed URL). */
  key: string;
  size: number;
  /** Bytes handed to the connection so far. */
  sent: number;
  done: boolean;
}

/** Counters since start. */
export interface BulkStorageStats {
  /** Downloads started (valid signature, nothing refused). */
  downloads: number;
  /** Requests refused because they carried the shop's access token or another credential. */
  credentialsRefused: number;
  /** Requests refused for a missing, wrong or expired signature, or an unknown file. */
  refused: number;
}

/** The running storage listener. */
export interface BulkStorage {
  /** Base URL, e.g. `http://localhost:41235`. */
  readonly url: string;
  /** Stores a file and returns its signed URL (valid {@link RESULT_URL_TTL_MS}). */
  put(name: string, body: Uint8Array): Promise<string>;
  downloads(): DownloadProgress[];
  stats(): BulkStorageStats;
  close(): Promise<void>;
}

function xmlError(status: number, code: string, message: string): Response {
  // Google Cloud Storage answers errors in XML.
  const body =
    `<?xml version='1.0' encoding='UTF-8'?><Error><Code>${code}</Code><Message>${message}</Message></Error>`;
  return new Response(body, { status, headers: { "content-type": "application/xml; charset=UTF-8" } });
}

function hex(bytes: ArrayBuffer): string {
  return [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Starts the storage listener on localhost and resolves once it listens. */
export async function startBulkStorage(options: BulkStorageOptions = {}): Promise<BulkStorage> {
  const now = options.now ?? Date.now;
  const key = await crypto.subtle.generateKey({ name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const sign = async (text: string) =>
    hex(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(text)));
  const files = new Map<string, Uint8Array>();
  const progress: DownloadProgress[] = [];
  const stats: BulkStorageStats = { downloads: 0, credentialsRefused: 0, refused: 0 };
  /** Pauses between chunks under way, ended at once on close (so shutdown need not wait for them). */
  const pacing = new Map<ReturnType<typeof setTimeout>, () => void>();
  let closing = false;

  const serve = async (req: Request): Promise<Response> => {
    if (req.headers.has("x-shopify-access-token") || req.headers.has("authorization")) {
      stats.credentialsRefused++;
      log.warning("Shopify sandbox storage refused a request carrying the shop's credentials", {
        mark: "error",
      });
      return xmlError(
        400,
        "InvalidArgument",
        "This host serves signed URLs: the shop's access token must not be sent here.",
      );
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      stats.refused++;
      return xmlError(405, "MethodNotAllowed", "The specified method is not allowed against this resource.");
    }
    const url = new URL(req.url);
    const name = url.pathname.replace(`/${BUCKET}/`, "");
    const expires = Number(url.searchParams.get("Expires"));
    const signature = url.searchParams.get("Signature") ?? "";
    if (signature !== await sign(`${url.pathname}\n${expires}`)) {
      stats.refused++;
      return xmlError(
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided.",
      );
    }
    if (!(expires * 1000 > now())) {
      stats.refused++;
      return xmlError(400, "ExpiredToken", "Invalid argument.");
    }
    const body = files.get(name);
    if (!body) {
      stats.refused++;
      return xmlError(404, "NoSuchKey", "The specified key does not exist.");
    }
    const headers = {
      "content-type": "application/jsonl",
      "content-length": String(body.byteLength),
    };
    if (req.method === "HEAD") return new Response(null, { headers });
    stats.downloads++;
    const download: DownloadProgress = { key: name, size: body.byteLength, sent: 0, done: false };
    progress.push(download);
    const delay = options.chunkDelayMs ?? 0;
    const stream = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (download.sent > 0 && delay > 0 && !closing) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(() => {
              pacing.delete(timer);
              resolve();
            }, delay);
            pacing.set(timer, resolve);
          });
        }
        const chunk = body.subarray(download.sent, download.sent + CHUNK_BYTES);
        download.sent += chunk.byteLength;
        controller.enqueue(chunk);
        if (download.sent >= body.byteLength) {
          download.done = true;
          controller.close();
        }
      },
      cancel() {
        download.done = true;
      },
    }, { highWaterMark: 0 });
    return new Response(body.byteLength === 0 ? null : stream, { headers });
  };

  const { promise: listening, resolve: onListen } = Promise.withResolvers<void>();
  const server = Deno.serve(
    { hostname: "localhost", port: options.port ?? 0, onListen: () => onListen() },
    serve,
  );
  await listening;
  const url = `http://localhost:${server.addr.port}`;

  return {
    url,
    put: async (name, body) => {
      const path = `/${BUCKET}/bulk-operation-outputs/${name}`;
      files.set(`bulk-operation-outputs/${name}`, body);
      const expires = Math.floor((now() + RESULT_URL_TTL_MS) / 1000);
      const signature = await sign(`${path}\n${expires}`);
      return `${url}${path}?GoogleAccessId=sandbox%40shopify-tiers.iam.gserviceaccount.com&Expires=${expires}&Signature=${signature}`;
    },
    downloads: () => progress.map((d) => ({ ...d })),
    stats: () => ({ ...stats }),
    close: async () => {
      closing = true;
      for (const [timer, resume] of pacing) {
        clearTimeout(timer);
        resume();
      }
      pacing.clear();
      await server.shutdown();
    },
  };
}
