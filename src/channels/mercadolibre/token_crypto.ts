/**
 * Encryption at rest for stored OAuth tokens: AES-256-GCM with a key derived
 * (HKDF-SHA-256) from the app's client secret, so a copy of the ledger alone
 * does not hand out a seller's MercadoLibre account.
 */

const PREFIX = "v1:";
const encoder = new TextEncoder();

function toBase64(bytes: Uint8Array): string {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text);
}

function fromBase64(text: string): Uint8Array {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

/** Encrypts and decrypts token strings with one derived key. */
export class TokenCipher {
  private constructor(private readonly key: CryptoKey) {}

  /** Derives the key from a secret (the MeLi client secret). */
  static async fromSecret(secret: string): Promise<TokenCipher> {
    const material = await crypto.subtle.importKey("raw", encoder.encode(secret), "HKDF", false, [
      "deriveKey",
    ]);
    const key = await crypto.subtle.deriveKey(
      {
        name: "HKDF",
        hash: "SHA-256",
        salt: encoder.encode("marketplace-sync"),
        info: encoder.encode("oauth_token v1"),
      },
      material,
      { name: "AES-GCM", length: 256 },
      false,
      ["encrypt", "decrypt"],
    );
    return new TokenCipher(key);
  }

  /** `v1:` + base64(iv ‖ ciphertext). */
  async encrypt(plain: string): Promise<string> {
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const sealed = new Uint8Array(
      await crypto.subtle.encrypt({ name: "AES-GCM", iv }, this.key, encoder.encode(plain)),
    );
    const out = new Uint8Array(iv.length + sealed.length);
    out.set(iv);
    out.set(sealed, iv.length);
    return PREFIX + toBase64(out);
  }

  /** The plain text, or undefined when it was sealed with another key (the secret changed). */
  async decrypt(stored: string): Promise<string | undefined> {
    if (!stored.startsWith(PREFIX)) return undefined;
    try {
      const bytes = fromBase64(stored.slice(PREFIX.length));
      const plain = await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: bytes.slice(0, 12) },
        this.key,
        bytes.slice(12),
      );
      return new TextDecoder().decode(plain);
    } catch {
      return undefined;
    }
  }
}

/** A short, non-reversible fingerprint of a token (SHA-256, hex, 16 chars): safe to store and log. */
export async function fingerprint(token: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(token)));
  return [...digest.slice(0, 8)].map((b) => b.toString(16).padStart(2, "0")).join("");
}
