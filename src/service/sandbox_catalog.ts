/**
 * The built-in sandboxes' catalog (stores, products, stock): `SANDBOX_CATALOG` or the
 * default one, loaded once and only when a marketplace is not configured — a live
 * instance never loads it (docs/DECISIONS.md, "Memory").
 */
import type { Config } from "../config.ts";
import type { Catalog } from "../sandbox/catalog.ts";

/** A loader that reads the catalog on its first call and returns the same one after. */
export function sandboxCatalogLoader(config: Config): () => Promise<Catalog> {
  let catalog: Promise<Catalog> | undefined;
  return () =>
    catalog ??= import("../sandbox/catalog.ts").then(({ defaultCatalog, loadCatalog }) =>
      config.SANDBOX_CATALOG ? loadCatalog(config.SANDBOX_CATALOG) : defaultCatalog()
    );
}
