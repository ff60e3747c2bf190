// `src/events/types.ts` names Node's Buffer in a publisher-side type (`EventInput`) that the
// browser never uses; this stands in for it so the client compiles without Node's types.
interface Buffer extends Uint8Array {}
