/**
 * Available stock (issue #14): what the POS holds minus the units of marketplace orders the POS has not
 * recorded yet (and that were not put back). Every ABSOLUTE write reads it — MercadoLibre's mirror mode,
 * Shopify's ruled listings, resync targets — so a Shopify order lowers MercadoLibre at once and a
 * MercadoLibre order is never written back up by a mirror write, whether or not the POS ever consumes
 * `marketplace.sales.created`. Delta writes need no change: an order reaches them as its own delta.
 */
import {
  PosStockReader,
  type PosStockReaderOptions,
  type StockKey,
  type StockReading,
  StockSourceUnavailableError,
} from "./stock.ts";

/** Units held by unrecorded marketplace orders, per (store, SKU), in the order asked. */
export type UnrecordedUnits = (keys: { tiendaId: string; sku: string }[]) => Promise<number[]>;

/**
 * The POS stock reader that answers available stock: each reading the POS gives, less the units of
 * marketplace orders at that store and SKU the POS has not recorded. It is a {@link PosStockReader}, so
 * every reader of POS stock (channels, resync, the POS catalog) takes it unchanged.
 */
export class AvailableStockReader extends PosStockReader {
  constructor(options: PosStockReaderOptions, private readonly unrecorded: UnrecordedUnits) {
    super(options);
  }

  /**
   * Available stock of many products; a product the POS has no stock for stays unknown.
   * @throws StockSourceUnavailableError when the POS or the ledger (the orders held) cannot be read now.
   */
  override async readMany(keys: StockKey[]): Promise<StockReading[]> {
    const readings = await super.readMany(keys);
    const found = readings.flatMap((r, i) => r.found ? [i] : []);
    if (found.length === 0) return readings;
    let held: number[];
    try {
      held = await this.unrecorded(found.map((i) => ({ tiendaId: keys[i].tiendaId, sku: keys[i].sku })));
    } catch (error) {
      // Without the orders the number could undo an online sale: wait and retry, as with the POS down.
      throw new StockSourceUnavailableError(`ledger (marketplace orders held): ${(error as Error).message}`);
    }
    found.forEach((i, j) => {
      const reading = readings[i];
      if (reading.found && held[j] > 0) {
        readings[i] = { ...reading, quantity: reading.quantity - held[j], heldByOrders: held[j] };
      }
    });
    return readings;
  }
}
