/** The marketplaces this service can keep in step: the one list config, ledger and channels share. */
export const KNOWN_CHANNELS = ["shopify", "mercadolibre"] as const;
/** A marketplace channel name. */
export type ChannelName = typeof KNOWN_CHANNELS[number];
