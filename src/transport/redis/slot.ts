/** Redis Cluster's key slot: CRC16 (XMODEM) of the key, or of its hash tag, modulo 16384. */

const TABLE = new Uint16Array(256);
for (let byte = 0; byte < 256; byte++) {
  let crc = byte << 8;
  for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  TABLE[byte] = crc;
}

export const SLOT_COUNT = 16384;

export function keySlot(key: string | Buffer): number {
  let bytes = typeof key === 'string' ? Buffer.from(key) : key;
  // Only the part between the first { and the next } counts, when it is not empty.
  const open = bytes.indexOf(0x7b);
  if (open >= 0) {
    const close = bytes.indexOf(0x7d, open + 1);
    if (close > open + 1) bytes = bytes.subarray(open + 1, close);
  }
  let crc = 0;
  for (const byte of bytes) crc = ((crc << 8) & 0xffff) ^ (TABLE[((crc >> 8) ^ byte) & 0xff] as number);
  return crc % SLOT_COUNT;
}
