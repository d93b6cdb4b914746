/** node-postgres' internal value serialisation (pg/lib/utils.js has no published types). */
declare module 'pg/lib/utils.js' {
  const utils: {
    /** What pg sends for a parameter value: a string, a Buffer or null. */
    prepareValue(value: unknown): string | Buffer | null;
  };
  export default utils;
}
