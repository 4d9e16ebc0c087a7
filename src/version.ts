/** The service version, reported by /healthz and in the start-up log line. */
export const VERSION = "0.1.0";
