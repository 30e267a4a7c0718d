/**
 * WebSocket text frames built once and written as they are to every socket
 * that sends the same message (a fan-out's transition), instead of ws
 * framing the message again per socket: ws writes a header and the payload
 * as two writes joined by cork/uncork into a writev, per send. Measured on
 * 1,000 loopback sockets with a 1.4 KB message: 14–22 µs of CPU per send
 * through `ws.send`, 12–15 µs as one prebuilt frame.
 *
 * Only for sockets where this is what ws would have written: the server
 * offers no extensions (`perMessageDeflate: false`), so a frame is never
 * compressed and ws's sender never holds frames back; writes to the socket
 * then keep the order in which ws and this module make them.
 */

const frames = new WeakMap<Buffer, Buffer>();

/** A final, unmasked text frame (RFC 6455 §5.2) holding `payload` (UTF-8). */
export function textFrame(payload: Buffer): Buffer {
  let frame = frames.get(payload);
  if (frame !== undefined) return frame;
  const n = payload.length;
  const headerLength = n < 126 ? 2 : n < 65536 ? 4 : 10;
  frame = Buffer.allocUnsafe(headerLength + n);
  frame[0] = 0x81; // FIN, opcode 1 (text)
  if (n < 126) {
    frame[1] = n;
  } else if (n < 65536) {
    frame[1] = 126;
    frame.writeUInt16BE(n, 2);
  } else {
    frame[1] = 127;
    frame.writeBigUInt64BE(BigInt(n), 2);
  }
  payload.copy(frame, headerLength);
  frames.set(payload, frame);
  return frame;
}
